//! Records as krio wrote them before the exit became one value (commit 32a0019): each must
//! load into today's types with the same meaning, and be written back byte for byte, so a
//! daemon upgraded in place (or downgraded) recovers every container and sandbox.

use super::*;

/// A running container's record, as `persist::write_json` wrote it.
pub(super) const RUNNING_CONTAINER: &str = r#"{
  "id": "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
  "sandbox_id": "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
  "config": {
    "metadata": {
      "name": "app",
      "attempt": 1
    },
    "image": {
      "image": "127.0.0.1:5000/busybox:latest",
      "annotations": {},
      "user_specified_image": "",
      "runtime_handler": "",
      "image_ref": ""
    },
    "command": [
      "sh",
      "-c",
      "sleep 1000"
    ],
    "args": [],
    "working_dir": "",
    "envs": [],
    "mounts": [],
    "devices": [],
    "labels": {
      "app": "web"
    },
    "annotations": {},
    "log_path": "app/1.log",
    "stdin": false,
    "stdin_once": false,
    "tty": false,
    "linux": null,
    "windows": null,
    "cdi_devices": [],
    "stop_signal": 0
  },
  "image_ref": "127.0.0.1:5000/busybox:latest",
  "image_id": "sha256:abababababababababababababababababababababababababababababababab",
  "image_digest_ref": "127.0.0.1:5000/busybox@sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
  "runtime_handler": "runc",
  "log_path": "/var/log/pods/ns_web_uid/app/1.log",
  "created_at": 1764780000000000000,
  "started_at": 1764780001000000000,
  "finished_at": 0,
  "exit_code": 0,
  "state": "Running",
  "reason": "",
  "message": "",
  "pid": 4242,
  "monitor_pid": 4240,
  "cgroups_path": "/krio/pod-5a5a5a5a5a5a/c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
  "subcontainer": false,
  "stop_signal": "SIGTERM",
  "user": {
    "uid": 1000,
    "gid": 3000,
    "groups": [
      3000,
      50000
    ]
  },
  "volume_image_ids": []
}"#;

/// An exited (OOM-killed) container's record.
const EXITED_CONTAINER: &str = r#"{
  "id": "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
  "sandbox_id": "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
  "config": {
    "metadata": {
      "name": "app",
      "attempt": 1
    },
    "image": {
      "image": "127.0.0.1:5000/busybox:latest",
      "annotations": {},
      "user_specified_image": "",
      "runtime_handler": "",
      "image_ref": ""
    },
    "command": [
      "sh",
      "-c",
      "sleep 1000"
    ],
    "args": [],
    "working_dir": "",
    "envs": [],
    "mounts": [],
    "devices": [],
    "labels": {
      "app": "web"
    },
    "annotations": {},
    "log_path": "app/1.log",
    "stdin": false,
    "stdin_once": false,
    "tty": false,
    "linux": null,
    "windows": null,
    "cdi_devices": [],
    "stop_signal": 0
  },
  "image_ref": "127.0.0.1:5000/busybox:latest",
  "image_id": "sha256:abababababababababababababababababababababababababababababababab",
  "image_digest_ref": "127.0.0.1:5000/busybox@sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
  "runtime_handler": "runc",
  "log_path": "/var/log/pods/ns_web_uid/app/1.log",
  "created_at": 1764780000000000000,
  "started_at": 1764780001000000000,
  "finished_at": 1764780009000000000,
  "exit_code": 137,
  "state": "Exited",
  "reason": "OOMKilled",
  "message": "",
  "pid": 4242,
  "monitor_pid": 4240,
  "cgroups_path": "/krio/pod-5a5a5a5a5a5a/c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
  "subcontainer": false,
  "stop_signal": "SIGTERM",
  "user": {
    "uid": 1000,
    "gid": 3000,
    "groups": [
      3000,
      50000
    ]
  },
  "volume_image_ids": []
}"#;

/// A container whose monitor died, with the message krio recorded.
const LOST_CONTAINER: &str = r#"{
  "id": "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
  "sandbox_id": "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
  "config": {
    "metadata": {
      "name": "app",
      "attempt": 1
    },
    "image": {
      "image": "127.0.0.1:5000/busybox:latest",
      "annotations": {},
      "user_specified_image": "",
      "runtime_handler": "",
      "image_ref": ""
    },
    "command": [
      "sh",
      "-c",
      "sleep 1000"
    ],
    "args": [],
    "working_dir": "",
    "envs": [],
    "mounts": [],
    "devices": [],
    "labels": {
      "app": "web"
    },
    "annotations": {},
    "log_path": "app/1.log",
    "stdin": false,
    "stdin_once": false,
    "tty": false,
    "linux": null,
    "windows": null,
    "cdi_devices": [],
    "stop_signal": 0
  },
  "image_ref": "127.0.0.1:5000/busybox:latest",
  "image_id": "sha256:abababababababababababababababababababababababababababababababab",
  "image_digest_ref": "127.0.0.1:5000/busybox@sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
  "runtime_handler": "runc",
  "log_path": "/var/log/pods/ns_web_uid/app/1.log",
  "created_at": 1764780000000000000,
  "started_at": 1764780001000000000,
  "finished_at": 1764780009000000000,
  "exit_code": 255,
  "state": "Exited",
  "reason": "MonitorLost",
  "message": "krio-monitor (pid 4240) died without recording the container's exit; the container's processes were killed",
  "pid": 4242,
  "monitor_pid": 4240,
  "cgroups_path": "/krio/pod-5a5a5a5a5a5a/c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
  "subcontainer": false,
  "stop_signal": "SIGTERM",
  "user": {
    "uid": 1000,
    "gid": 3000,
    "groups": [
      3000,
      50000
    ]
  },
  "volume_image_ids": []
}"#;

/// A container created from a checkpoint, waiting for StartContainer to restore it.
const RESTORE_PENDING_CONTAINER: &str = r#"{
  "id": "c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
  "sandbox_id": "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
  "config": {
    "metadata": {
      "name": "app",
      "attempt": 1
    },
    "image": {
      "image": "127.0.0.1:5000/busybox:latest",
      "annotations": {},
      "user_specified_image": "",
      "runtime_handler": "",
      "image_ref": ""
    },
    "command": [
      "sh",
      "-c",
      "sleep 1000"
    ],
    "args": [],
    "working_dir": "",
    "envs": [],
    "mounts": [],
    "devices": [],
    "labels": {
      "app": "web"
    },
    "annotations": {},
    "log_path": "app/1.log",
    "stdin": false,
    "stdin_once": false,
    "tty": false,
    "linux": null,
    "windows": null,
    "cdi_devices": [],
    "stop_signal": 0
  },
  "image_ref": "127.0.0.1:5000/busybox:latest",
  "image_id": "sha256:abababababababababababababababababababababababababababababababab",
  "image_digest_ref": "127.0.0.1:5000/busybox@sha256:cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd",
  "runtime_handler": "runc",
  "log_path": "/var/log/pods/ns_web_uid/app/1.log",
  "created_at": 1764780000000000000,
  "started_at": 0,
  "finished_at": 0,
  "exit_code": 0,
  "state": "Created",
  "reason": "",
  "message": "",
  "pid": 0,
  "monitor_pid": 0,
  "cgroups_path": "/krio/pod-5a5a5a5a5a5a/c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1c1",
  "subcontainer": false,
  "stop_signal": "SIGTERM",
  "user": null,
  "volume_image_ids": [],
  "restore_from": "/var/lib/krio/containers/x/checkpoint"
}"#;

/// A ready sandbox's record.
const READY_SANDBOX: &str = r#"{
  "id": "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
  "config": {
    "metadata": {
      "name": "web",
      "uid": "uid-1",
      "namespace": "ns",
      "attempt": 0
    },
    "hostname": "web",
    "log_directory": "/var/log/pods/ns_web_uid",
    "dns_config": null,
    "port_mappings": [],
    "labels": {
      "app": "web"
    },
    "annotations": {},
    "linux": null,
    "windows": null
  },
  "runtime_handler": "runc",
  "created_at": 1764779990000000000,
  "state": "Ready",
  "netns": "/run/krio/sandboxes/5a/ns/net",
  "ipcns": "/run/krio/sandboxes/5a/ns/ipc",
  "utsns": "/run/krio/sandboxes/5a/ns/uts",
  "pidns": "/run/krio/sandboxes/5a/ns/pid",
  "pod_init": {
    "pid": 4100,
    "start_time": 123456
  },
  "userns": null,
  "ips": [
    "10.88.0.5"
  ],
  "cgroup_parent": "/krio/pod-5a5a5a5a5a5a",
  "runtime_sandbox": false
}"#;

fn load(json: &str) -> ContainerRecord {
    let rec: ContainerRecord = serde_json::from_str(json).unwrap();
    assert_eq!(
        serde_json::to_string_pretty(&rec).unwrap(),
        json,
        "not written back as it was read"
    );
    rec
}

#[test]
fn a_running_container_record_loads_unchanged() {
    let rec = load(RUNNING_CONTAINER);
    assert_eq!(rec.id, "c1".repeat(32));
    assert_eq!(rec.sandbox_id, "5a".repeat(32));
    assert_eq!(rec.state, ContainerState::Running);
    assert_eq!(rec.exit, None);
    assert_eq!(
        (rec.created_at, rec.started_at),
        (1_764_780_000_000_000_000, 1_764_780_001_000_000_000)
    );
    assert_eq!((rec.pid, rec.monitor_pid), (4242, 4240));
    assert_eq!(rec.stop_signal.as_deref(), Some("SIGTERM"));
    assert_eq!(
        rec.user.as_ref().map(|u| u.groups.clone()),
        Some(vec![3000, 50000])
    );
    assert_eq!(rec.config.command, ["sh", "-c", "sleep 1000"]);
    assert!(!rec.restore_pending());
    let status = crate::runtime::container_status_of(&rec);
    assert_eq!(
        (
            status.exit_code,
            status.finished_at,
            status.reason.as_str(),
            status.message.as_str()
        ),
        (0, 0, "", "")
    );
}

#[test]
fn an_exited_container_record_loads_with_its_exit() {
    let rec = load(EXITED_CONTAINER);
    assert_eq!(rec.state, ContainerState::Exited);
    assert_eq!(
        rec.exit,
        Some(Exit {
            code: 137,
            finished_at: 1_764_780_009_000_000_000,
            reason: ExitReason::OOMKilled,
            message: String::new(),
        })
    );
    assert_eq!(rec.started_at, 1_764_780_001_000_000_000);
    let status = crate::runtime::container_status_of(&rec);
    assert_eq!(
        (status.exit_code, status.finished_at, status.reason.as_str()),
        (137, 1_764_780_009_000_000_000, "OOMKilled")
    );
    let rec = load(LOST_CONTAINER);
    let exit = rec.exit.clone().unwrap();
    assert_eq!((exit.code, exit.reason), (255, ExitReason::MonitorLost));
    assert!(
        exit.message.starts_with("krio-monitor (pid 4240) died"),
        "{}",
        exit.message
    );
    let status = crate::runtime::container_status_of(&rec);
    assert_eq!(status.reason, "MonitorLost");
    assert_eq!(status.message, exit.message);
}

#[test]
fn a_restore_pending_container_record_loads_pending() {
    let rec = load(RESTORE_PENDING_CONTAINER);
    assert_eq!(
        (rec.state, rec.pid, rec.monitor_pid),
        (ContainerState::Created, 0, 0)
    );
    assert_eq!(
        rec.restore_from.as_deref(),
        Some(std::path::Path::new(
            "/var/lib/krio/containers/x/checkpoint"
        ))
    );
    assert!(rec.restore_pending());
    assert_eq!(rec.exit, None);
}

#[test]
fn a_reason_krio_does_not_write_is_kept() {
    let json = EXITED_CONTAINER.replace("\"OOMKilled\"", "\"Evicted\"");
    let rec = load(&json);
    assert_eq!(
        rec.exit.as_ref().map(|e| &e.reason),
        Some(&ExitReason::Other("Evicted".into()))
    );
}

#[test]
fn a_ready_sandbox_record_loads_unchanged() {
    let rec: SandboxRecord = serde_json::from_str(READY_SANDBOX).unwrap();
    assert_eq!(serde_json::to_string_pretty(&rec).unwrap(), READY_SANDBOX);
    assert_eq!(rec.id, "5a".repeat(32));
    assert_eq!(rec.state, SandboxState::Ready);
    assert_eq!(rec.runtime_handler, "runc");
    assert_eq!(
        rec.netns.as_deref(),
        Some(std::path::Path::new("/run/krio/sandboxes/5a/ns/net"))
    );
    assert_eq!(
        rec.pod_init,
        Some(krio_monitor::PodInit {
            pid: 4100,
            start_time: 123456
        })
    );
    assert_eq!(rec.userns, None);
    assert_eq!(rec.ips, ["10.88.0.5"]);
    assert_eq!(rec.cgroup_parent, "/krio/pod-5a5a5a5a5a5a");
    assert!(!rec.runtime_sandbox);
    assert_eq!(SandboxRecord::reserved_name(&rec.config), "web_ns_uid-1_0");
}
