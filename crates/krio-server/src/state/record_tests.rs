//! The records' lifecycle: every transition, allowed and refused, and records as krio wrote
//! them before the exit became one value (commit 32a0019), which must load into today's types
//! with the same meaning and be written back byte for byte, so that a daemon upgraded in place
//! (or downgraded) recovers every container and sandbox.

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

/// A container record as krio wrote it: the text of [`RUNNING_CONTAINER`] with each
/// `(from, to)` of `changes` applied. Every `from` must stand in that text exactly once, so a
/// fixture names all it changes and cannot touch a field it did not mean.
fn container_record(changes: &[(&str, &str)]) -> String {
    let mut json = RUNNING_CONTAINER.to_string();
    for (from, to) in changes {
        assert_eq!(json.matches(from).count(), 1, "{from:?} in {json}");
        json = json.replacen(from, to, 1);
    }
    json
}

/// An exited (OOM-killed) container's record: how it differs from a running one.
const EXITED_CONTAINER: &[(&str, &str)] = &[
    (
        r#""finished_at": 0,"#,
        r#""finished_at": 1764780009000000000,"#,
    ),
    (r#""state": "Running","#, r#""state": "Exited","#),
    (r#""exit_code": 0,"#, r#""exit_code": 137,"#),
    (r#""reason": "","#, r#""reason": "OOMKilled","#),
];

/// A container whose monitor died, with the message krio recorded.
const LOST_CONTAINER: &[(&str, &str)] = &[
    (
        r#""finished_at": 0,"#,
        r#""finished_at": 1764780009000000000,"#,
    ),
    (r#""state": "Running","#, r#""state": "Exited","#),
    (r#""exit_code": 0,"#, r#""exit_code": 255,"#),
    (r#""reason": "","#, r#""reason": "MonitorLost","#),
    (
        r#""message": "","#,
        r#""message": "krio-monitor (pid 4240) died without recording the container's exit; the container's processes were killed","#,
    ),
];

/// A container created from a checkpoint, waiting for StartContainer to restore it.
const RESTORE_PENDING_CONTAINER: &[(&str, &str)] = &[
    (
        r#""started_at": 1764780001000000000,"#,
        r#""started_at": 0,"#,
    ),
    (r#""state": "Running","#, r#""state": "Created","#),
    (r#""pid": 4242,"#, r#""pid": 0,"#),
    (r#""monitor_pid": 4240,"#, r#""monitor_pid": 0,"#),
    (
        r#""user": {
    "uid": 1000,
    "gid": 3000,
    "groups": [
      3000,
      50000
    ]
  },"#,
        r#""user": null,"#,
    ),
    (
        r#""volume_image_ids": []
}"#,
        r#""volume_image_ids": [],
  "restore_from": "/var/lib/krio/containers/x/checkpoint"
}"#,
    ),
];

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
    assert_eq!(rec.id(), "c1".repeat(32));
    assert_eq!(rec.sandbox_id(), "5a".repeat(32));
    assert_eq!(rec.state(), ContainerState::Running);
    assert_eq!(rec.exit(), None);
    assert_eq!(
        (rec.created_at(), rec.started_at()),
        (1_764_780_000_000_000_000, 1_764_780_001_000_000_000)
    );
    assert_eq!((rec.pid(), rec.monitor_pid()), (4242, 4240));
    assert_eq!(rec.stop_signal(), Some("SIGTERM"));
    assert_eq!(
        rec.user().map(|u| u.groups.clone()),
        Some(vec![3000, 50000])
    );
    assert_eq!(rec.config().command, ["sh", "-c", "sleep 1000"]);
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
    let rec = load(&container_record(EXITED_CONTAINER));
    assert_eq!(rec.state(), ContainerState::Exited);
    assert_eq!(
        rec.exit(),
        Some(&Exit {
            code: 137,
            finished_at: 1_764_780_009_000_000_000,
            reason: ExitReason::OOMKilled,
            message: String::new(),
        })
    );
    assert_eq!(rec.started_at(), 1_764_780_001_000_000_000);
    let status = crate::runtime::container_status_of(&rec);
    assert_eq!(
        (status.exit_code, status.finished_at, status.reason.as_str()),
        (137, 1_764_780_009_000_000_000, "OOMKilled")
    );
    let rec = load(&container_record(LOST_CONTAINER));
    let exit = rec.exit().cloned().unwrap();
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
    let rec = load(&container_record(RESTORE_PENDING_CONTAINER));
    assert_eq!(
        (rec.state(), rec.pid(), rec.monitor_pid()),
        (ContainerState::Created, 0, 0)
    );
    assert_eq!(
        rec.restore_from(),
        Some(std::path::Path::new(
            "/var/lib/krio/containers/x/checkpoint"
        ))
    );
    assert!(rec.restore_pending());
    assert_eq!(rec.exit(), None);
}

#[test]
fn a_reason_krio_does_not_write_is_kept() {
    let json = container_record(EXITED_CONTAINER).replace("\"OOMKilled\"", "\"Evicted\"");
    let rec = load(&json);
    assert_eq!(
        rec.exit().map(|e| &e.reason),
        Some(&ExitReason::Other("Evicted".into()))
    );
}

#[test]
fn a_ready_sandbox_record_loads_unchanged() {
    let rec: SandboxRecord = serde_json::from_str(READY_SANDBOX).unwrap();
    assert_eq!(serde_json::to_string_pretty(&rec).unwrap(), READY_SANDBOX);
    assert_eq!(rec.id(), "5a".repeat(32));
    assert_eq!(rec.state(), SandboxState::Ready);
    assert_eq!(rec.runtime_handler(), "runc");
    assert_eq!(
        rec.netns(),
        Some(std::path::Path::new("/run/krio/sandboxes/5a/ns/net"))
    );
    assert_eq!(
        rec.pod_init(),
        Some(krio_monitor::PodInit {
            pid: 4100,
            start_time: 123456
        })
    );
    assert_eq!(rec.userns(), None);
    assert_eq!(rec.ips(), ["10.88.0.5"]);
    assert_eq!(rec.cgroup_parent(), "/krio/pod-5a5a5a5a5a5a");
    assert!(!rec.runtime_sandbox());
    assert_eq!(SandboxRecord::reserved_name(rec.config()), "web_ns_uid-1_0");
}

fn new_container() -> ContainerRecord {
    ContainerRecord::new(NewContainer {
        id: "c".repeat(64),
        sandbox_id: "5a".repeat(32),
        config: cri::ContainerConfig::default(),
        image_ref: "busybox".into(),
        image_id: format!("sha256:{}", "ab".repeat(32)),
        image_digest_ref: format!("sha256:{}", "ab".repeat(32)),
        runtime_handler: "runc".into(),
        log_path: String::new(),
        created_at: 1,
        cgroups_path: String::new(),
        subcontainer: false,
        stop_signal: None,
        volume_image_ids: Vec::new(),
    })
}

fn exit(code: i32, finished_at: i64, reason: ExitReason) -> Exit {
    Exit {
        code,
        finished_at,
        reason,
        message: String::new(),
    }
}

/// `e` refuses `transition` of the `kind` object `id` in `state`, and becomes a
/// FAILED_PRECONDITION status naming the kind, the id and the state.
fn assert_refused(e: TransitionError, id: &str, state: ObjectState, transition: Transition) {
    let kind = match state {
        ObjectState::Sandbox(_) => "sandbox",
        ObjectState::Container(_) => "container",
    };
    assert_eq!(
        (e.kind(), e.id.as_str(), e.state, e.transition),
        (kind, id, state, transition)
    );
    let server = ServerError::from(e);
    assert_eq!(server.code(), tonic::Code::FailedPrecondition);
    let status = tonic::Status::from(server);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    let msg = status.message();
    assert!(
        msg.starts_with(&format!("{kind} {id} is {state}: cannot ")),
        "{msg}"
    );
}

/// One transition attempted on a container record, for tables of refused transitions.
type Step = fn(&mut ContainerRecord) -> Result<(), TransitionError>;

#[test]
fn a_sandbox_becomes_ready_once_and_not_ready_at_any_time() {
    let id = "5a".repeat(32);
    let mut sb = SandboxRecord::new(id.clone(), Default::default(), "runc".into(), 1);
    assert_eq!(sb.state(), SandboxState::Creating);
    sb.mark_ready().unwrap();
    assert_eq!(sb.state(), SandboxState::Ready);
    assert_refused(
        sb.mark_ready().unwrap_err(),
        &id,
        ObjectState::Sandbox(SandboxState::Ready),
        Transition::Ready,
    );
    assert!(sb.mark_not_ready());
    assert_eq!(sb.state(), SandboxState::NotReady);
    // Stopping a stopped pod is no error, and changes nothing.
    assert!(!sb.mark_not_ready());
    assert_eq!(sb.state(), SandboxState::NotReady);
    // A stopped pod is never ready again.
    let e = sb.mark_ready().unwrap_err();
    assert_eq!(
        e.to_string(),
        format!("sandbox {id} is NotReady: cannot become Ready")
    );
    assert_refused(
        e,
        &id,
        ObjectState::Sandbox(SandboxState::NotReady),
        Transition::Ready,
    );
    assert_eq!(sb.state(), SandboxState::NotReady);
    // A pod whose creation never finished can be stopped too.
    let mut creating = SandboxRecord::new(id.clone(), Default::default(), "runc".into(), 1);
    assert!(creating.mark_not_ready());
    assert_eq!(creating.state(), SandboxState::NotReady);
}

#[test]
fn a_container_is_created_then_runs_then_exits_once() {
    let id = "c".repeat(64);
    let mut c = new_container();
    assert_eq!(
        (
            c.state(),
            c.exit(),
            c.pid(),
            c.monitor_pid(),
            c.started_at()
        ),
        (ContainerState::Created, None, 0, 0, 0)
    );
    c.record_processes(42, 41).unwrap();
    assert_eq!((c.pid(), c.monitor_pid()), (42, 41));
    c.check_start().unwrap();
    c.mark_started(100).unwrap();
    assert_eq!((c.state(), c.started_at()), (ContainerState::Running, 100));
    let running = ObjectState::Container(ContainerState::Running);
    let refused_while_running: [(&str, Step, Transition); 3] = [
        ("check_start", |c| c.check_start(), Transition::Start),
        ("mark_started", |c| c.mark_started(101), Transition::Start),
        (
            "record_processes",
            |c| c.record_processes(7, 6),
            Transition::RecordProcesses,
        ),
    ];
    for (name, step, transition) in refused_while_running {
        let Err(e) = step(&mut c) else {
            panic!("{name} allowed on a running container")
        };
        assert_refused(e, &id, running, transition);
    }
    assert_eq!((c.started_at(), c.pid()), (100, 42));
    c.mark_exited(exit(137, 200, ExitReason::OOMKilled))
        .unwrap();
    assert_eq!(c.state(), ContainerState::Exited);
    assert_eq!(c.exit(), Some(&exit(137, 200, ExitReason::OOMKilled)));
    assert_eq!(c.started_at(), 100);
    let exited = ObjectState::Container(ContainerState::Exited);
    // The first exit recorded stays.
    assert_refused(
        c.mark_exited(exit(0, 300, ExitReason::Completed))
            .unwrap_err(),
        &id,
        exited,
        Transition::Exit,
    );
    assert_eq!(c.exit(), Some(&exit(137, 200, ExitReason::OOMKilled)));
    let refused_once_exited: [(&str, Step, Transition); 4] = [
        ("check_start", |c| c.check_start(), Transition::Start),
        ("mark_started", |c| c.mark_started(400), Transition::Start),
        (
            "record_processes",
            |c| c.record_processes(7, 6),
            Transition::RecordProcesses,
        ),
        (
            "mark_not_restored",
            |c| c.mark_not_restored(400),
            Transition::EndUnrestored,
        ),
    ];
    for (name, step, transition) in refused_once_exited {
        let Err(e) = step(&mut c) else {
            panic!("{name} allowed on an exited container")
        };
        assert_refused(e, &id, exited, transition);
    }
    assert_eq!((c.state(), c.started_at()), (ContainerState::Exited, 100));
}

#[test]
fn a_container_killed_before_its_start_exits_from_created() {
    let mut c = new_container();
    c.record_processes(42, 41).unwrap();
    c.mark_exited(exit(137, 200, ExitReason::Error)).unwrap();
    assert_eq!(c.state(), ContainerState::Exited);
    // Never reported as exiting before it started.
    assert_eq!(c.started_at(), 200);
    let e = c.check_start().unwrap_err();
    assert_eq!(
        tonic::Status::from(ServerError::from(e.clone())).message(),
        format!("container {} is Exited: cannot start", "c".repeat(64))
    );
    assert_refused(
        e,
        c.id(),
        ObjectState::Container(ContainerState::Exited),
        Transition::Start,
    );
    // Only a container created from a checkpoint ends unrestored.
    let mut plain = new_container();
    assert_refused(
        plain.mark_not_restored(5).unwrap_err(),
        &"c".repeat(64),
        ObjectState::Container(ContainerState::Created),
        Transition::EndUnrestored,
    );
    assert_eq!(
        (plain.state(), plain.exit()),
        (ContainerState::Created, None)
    );
}

#[test]
fn a_restore_either_ends_unrestored_or_starts_and_forgets_its_image() {
    let mut c = new_container();
    c.set_restore_from("/var/lib/krio/containers/c/checkpoint".into());
    assert!(c.restore_pending());
    let mut stopped = c.clone();
    stopped.mark_not_restored(300).unwrap();
    assert_eq!(
        (
            stopped.state(),
            stopped.started_at(),
            stopped.restore_from()
        ),
        (ContainerState::Exited, 0, None)
    );
    assert_eq!(stopped.exit(), Some(&exit(0, 300, ExitReason::NotRestored)));
    assert!(!stopped.restore_pending());
    // StartContainer: the monitor restores it, then it runs.
    c.record_processes(42, 41).unwrap();
    assert!(!c.restore_pending());
    assert_refused(
        c.mark_not_restored(5).unwrap_err(),
        &"c".repeat(64),
        ObjectState::Container(ContainerState::Created),
        Transition::EndUnrestored,
    );
    c.mark_started(400).unwrap();
    assert_eq!(
        (c.state(), c.restore_from()),
        (ContainerState::Running, None)
    );
}

#[test]
fn a_container_of_unknown_state_can_exit_but_not_start() {
    let mut c: ContainerRecord =
        serde_json::from_str(&RUNNING_CONTAINER.replace("\"Running\"", "\"Unknown\"")).unwrap();
    assert_eq!(c.state(), ContainerState::Unknown);
    assert_refused(
        c.mark_started(5).unwrap_err(),
        c.id(),
        ObjectState::Container(ContainerState::Unknown),
        Transition::Start,
    );
    c.mark_exited(exit(255, 500, ExitReason::Unknown)).unwrap();
    assert_eq!(c.state(), ContainerState::Exited);
}

#[test]
fn exit_reasons_keep_their_cri_strings() {
    for (reason, s) in [
        (ExitReason::Completed, "Completed"),
        (ExitReason::Error, "Error"),
        (ExitReason::OOMKilled, "OOMKilled"),
        (ExitReason::MonitorLost, "MonitorLost"),
        (ExitReason::Unknown, "Unknown"),
        (ExitReason::NotRestored, "NotRestored"),
        (ExitReason::Other("Evicted".into()), "Evicted"),
    ] {
        assert_eq!(reason.as_str(), s);
        assert_eq!(reason.to_string(), s);
        assert_eq!(ExitReason::parse(s), reason);
    }
}
