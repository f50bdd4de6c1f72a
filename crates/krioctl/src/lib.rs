//! krioctl: a crictl-style debugging CLI speaking CRI v1 (gRPC over a unix
//! socket) to any runtime endpoint.
//!
//! The binary is a thin `main` over [`commands::run`]; the modules below are
//! public so their pieces (config loading, log decoding, table layout) can be
//! reused and tested.

#![warn(missing_docs)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod error;
pub mod logs;
pub mod output;
pub mod resolve;
pub mod table;
