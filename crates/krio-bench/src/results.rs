//! The machine-readable result of one workload run (one JSON file per workload, runtime and round).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};
use crate::stats::Summary;

/// Version of the JSON layout written by this crate.
pub const SCHEMA_VERSION: u32 = 1;

/// Unit of a metric's samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Milliseconds (wall clock, measured by the driver around the gRPC call).
    Ms,
    /// Bytes.
    Bytes,
    /// A plain count (e.g. number of shim processes).
    Count,
}

/// Raw samples of one metric plus their summary.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Unit of every sample.
    pub unit: Unit,
    /// Every sample, in the order measured.
    pub samples: Vec<f64>,
    /// Summary of `samples`; filled by [`WorkloadResult::finish`].
    #[serde(default)]
    pub summary: Option<Summary>,
}

/// Result of one workload against one runtime in one round.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadResult {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Runtime label, e.g. `containerd`, `krio`, `floor`.
    pub runtime: String,
    /// Workload name: `start`, `teardown`, `calls`, `memory`, `pull`.
    pub workload: String,
    /// Round number in the alternating A B A B schedule (0-based).
    pub round: u32,
    /// When the workload started, nanoseconds since the Unix epoch.
    pub started_unix_ns: i64,
    /// Wall time of the whole workload, milliseconds.
    pub duration_ms: f64,
    /// Parameters the workload ran with (iterations, image, ...).
    pub params: BTreeMap<String, serde_json::Value>,
    /// Metrics by name.
    pub metrics: BTreeMap<String, Metric>,
    #[serde(skip)]
    started: Option<Instant>,
}

fn unix_ns_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl WorkloadResult {
    /// Starts a result, stamping the start time now.
    pub fn new(runtime: &str, workload: &str, round: u32) -> Self {
        WorkloadResult {
            schema: SCHEMA_VERSION,
            runtime: runtime.to_owned(),
            workload: workload.to_owned(),
            round,
            started_unix_ns: unix_ns_now(),
            duration_ms: 0.0,
            params: BTreeMap::new(),
            metrics: BTreeMap::new(),
            started: Some(Instant::now()),
        }
    }

    /// Records a parameter.
    pub fn param(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.params.insert(key.to_owned(), value.into());
    }

    /// Appends one sample to metric `name` (created with `unit` on first use).
    pub fn push(&mut self, name: &str, unit: Unit, value: f64) {
        self.metrics
            .entry(name.to_owned())
            .or_insert_with(|| Metric {
                unit,
                samples: Vec::new(),
                summary: None,
            })
            .samples
            .push(value);
    }

    /// Computes every metric's summary and the workload's duration.
    pub fn finish(&mut self) {
        if let Some(t) = self.started {
            self.duration_ms = t.elapsed().as_secs_f64() * 1e3;
        }
        for m in self.metrics.values_mut() {
            m.summary = Summary::from_samples(&m.samples);
        }
    }

    /// File name used in an output directory: `<runtime>-r<round>-<workload>.json`.
    pub fn file_name(&self) -> String {
        format!("{}-r{}-{}.json", self.runtime, self.round, self.workload)
    }

    /// Writes the result as pretty JSON into `dir` (created if missing); returns the file path.
    ///
    /// # Errors
    /// [`BenchError::Io`] or [`BenchError::Json`].
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        fs::create_dir_all(dir).map_err(|e| BenchError::io("creating", dir, e))?;
        let path = dir.join(self.file_name());
        let text = serde_json::to_string_pretty(self).map_err(|source| BenchError::Json {
            path: path.clone(),
            source,
        })?;
        fs::write(&path, text).map_err(|e| BenchError::io("writing", &path, e))?;
        Ok(path)
    }

    /// Reads a result file.
    ///
    /// # Errors
    /// [`BenchError::Io`] or [`BenchError::Json`].
    pub fn read(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|e| BenchError::io("reading", path, e))?;
        serde_json::from_str(&text).map_err(|source| BenchError::Json {
            path: path.to_owned(),
            source,
        })
    }
}

/// Milliseconds since `t`, as f64.
pub fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = WorkloadResult::new("containerd", "start", 2);
        r.param("runs", 3);
        r.push("total", Unit::Ms, 3.0);
        r.push("total", Unit::Ms, 1.0);
        r.finish();
        let p = r.write(dir.path()).unwrap();
        assert!(p.ends_with("containerd-r2-start.json"));
        let back = WorkloadResult::read(&p).unwrap();
        assert_eq!(back.metrics["total"].samples, vec![3.0, 1.0]);
        assert_eq!(back.metrics["total"].summary.as_ref().unwrap().p50, 2.0);
        assert_eq!(back.params["runs"], 3);
    }
}
