//! The per-container monitor: owns stdio, writes CRI logs, records the exit code.
//!
//! Modelled on conmon / conmon-rs. The daemon calls [`spawn`] once per container; the `krio-monitor` binary
//! detaches, runs the OCI runtime's `create`, reports the container pid over a sync pipe, then stays alive for
//! the container's lifetime: it copies the container's stdout/stderr into the CRI log file
//! ([`logwriter`]), reaps the container's init (it is a child subreaper), writes the [`ExitStatus`] to
//! [`MonitorConfig::exit_file`] and exits. `SIGUSR1` makes it reopen the log file (CRI `ReopenContainerLog`);
//! it writes the outcome to [`log_reopen_status_path`] for the daemon to read. The log file is only ever opened
//! as a regular file, never through a link ([`logfile`]). Every child it starts (the runtime) begins with no
//! signal blocked or ignored.
//!
//! `krio-monitor exec-wait` is a small helper for `ExecSync`: it runs `runc exec --detach` as a child
//! subreaper and exits with the exec'd process's status.
//!
//! The same binary also provides a minimal pod init for pod-level PID namespaces (`krio-monitor pod-init <pin>`,
//! see [`spawn_pod_init`] / [`stop_pod_init`]): PID 1 of a new PID namespace that only reaps children, pinned by
//! a bind mount, started without a pause image.
//!
//! Terminals and attach: with [`MonitorConfig::tty`] the runtime gets a console socket and the monitor keeps
//! the terminal's master (its output is logged as `stdout`); with [`MonitorConfig::stdin`] it keeps the
//! container's stdin open. Both are served to attach sessions on [`MonitorConfig::attach_socket`] with the
//! framed protocol of [`attach`], while the log is written as before.
//!
//! Not supported yet: OOM detection (`oom_killed` is always `false`).

pub mod attach;
mod attachsrv;
mod execwait;
pub mod logfile;
pub mod logwriter;
mod monitor;
mod podinit;
mod spawn;
mod sys;
mod types;

pub use monitor::{main_entry, run_with_args, write_exit_file};
pub use podinit::{pod_init_running, spawn_pod_init, stop_pod_init};
pub use spawn::{read_exit_file, spawn};
pub use sys::{reset_inherited_signals, reset_signals_on_exec};
pub use types::{
    log_reopen_status_path, start_status_path, ExitStatus, MonitorConfig, MonitorError, PodInit,
    PodInitMessage, Spawned, SyncMessage, DEFAULT_CREATE_TIMEOUT_SECS, DEFAULT_MAX_LOG_LINE,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_file_roundtrip() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit");
        assert_eq!(read_exit_file(&p).unwrap(), None);
        let st = ExitStatus {
            exit_code: 137,
            signal: Some(9),
            finished_at_ns: 1_700_000_000_000_000_001,
            oom_killed: false,
        };
        monitor::write_exit_file(&p, &st).unwrap();
        assert_eq!(read_exit_file(&p).unwrap(), Some(st));
        assert!(!dir.path().join("exit.tmp").exists());
        std::fs::write(&p, "{").unwrap();
        assert!(matches!(
            read_exit_file(&p),
            Err(MonitorError::ExitFileParse { .. })
        ));
    }

    #[test]
    fn config_validation() {
        let ok = MonitorConfig::new(
            "c1",
            "/b",
            "/usr/sbin/runc",
            "/run/r",
            Some("/l".into()),
            "/e",
            "/p",
        );
        ok.validate().unwrap();
        let json = serde_json::to_string(&ok).unwrap();
        let back: MonitorConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ok);
        let mut bad = ok.clone();
        bad.id = "-x".into();
        assert!(bad.validate().unwrap_err().to_string().contains("id"));
        let mut bad = ok.clone();
        bad.exit_file = "rel".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("exit_file"));
        let mut bad = ok;
        bad.log_path = Some("rel.log".into());
        assert!(bad.validate().unwrap_err().to_string().contains("log_path"));
    }
}
