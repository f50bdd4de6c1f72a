//! CRI benchmark driver: times CRI calls against any runtime endpoint.
//!
//! The driver speaks CRI v1 (`krio-cri`) over a unix socket and measures each gRPC call itself with a
//! monotonic clock. Workloads ([`workloads`]) write one [`results::WorkloadResult`] JSON per runtime,
//! workload and round; [`report::Results`] pools them into `results.json` and renders
//! `BENCHMARKS.md` and an SVG plot ([`plot`]). Memory figures come from /proc ([`procfs`]).

pub mod client;
pub mod error;
pub mod plot;
pub mod procfs;
pub mod report;
pub mod results;
pub mod stats;
pub mod workloads;

pub use client::CriClient;
pub use error::{BenchError, Result};
