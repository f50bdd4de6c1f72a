//! End to end: a CRI client of another gRPC implementation (Python `grpcio`, on gRPC's C core)
//! talks to krio over the unix socket, whatever `:authority` it sends, and gets
//! `Unimplemented` for methods krio does not know, so that it can fall back.
//!
//! Needs `python3` with `grpcio` (scripts/install-deps.sh installs it); fails loudly without.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod common;

use std::path::Path;

use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn grpcio_client_with_any_authority_and_unknown_methods() {
    let d = Daemon::start().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/grpcio_client.py");
    let out = tokio::process::Command::new("python3")
        .arg(&script)
        .arg(&d.socket)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("grpc_proxy")
        .output()
        .await
        .expect("python3 must be installed (scripts/install-deps.sh)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the grpcio client failed (is grpcio installed? scripts/install-deps.sh): {stderr}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    for channel in ["default", "socket_path", "localhost"] {
        let version = &v[format!("version_{channel}")];
        assert_eq!(version["ok"], true, "{channel}: {v:#}");
        assert_eq!(version["runtime_name"], "krio", "{channel}: {v:#}");
        assert_eq!(version["runtime_api_version"], "v1", "{channel}: {v:#}");
        assert_eq!(
            v[format!("status_{channel}")]["ok"],
            true,
            "{channel}: {v:#}"
        );
    }
    for key in ["unknown_method", "unknown_service", "unknown_package"] {
        assert_eq!(v[key]["ok"], false, "{key}: {v:#}");
        assert_eq!(v[key]["code"], "UNIMPLEMENTED", "{key}: {v:#}");
    }
    // The daemon is still serving its own clients.
    let mut rt = d.runtime().await;
    rt.version(krio_cri::v1::VersionRequest::default())
        .await
        .unwrap();
}
