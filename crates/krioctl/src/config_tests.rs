use super::*;
use krio_cri::v1::{ContainerConfig, PodSandboxConfig, PullImageRequest};
use std::path::PathBuf;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn examples(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples-config")
        .join(name)
}

#[test]
fn crictl_sample_sandbox_config() {
    let c = load_pod_config(&data("sandbox-config.json")).unwrap();
    let md = c.metadata.unwrap();
    assert_eq!(md.name, "nginx-sandbox");
    assert_eq!(md.namespace, "default");
    assert_eq!(md.attempt, 1);
    assert_eq!(md.uid, "hdishd83djaidwnduwk28bcsb");
    assert_eq!(c.log_directory, "/tmp");
    assert!(c.hostname.is_empty());
    assert!(c.labels.is_empty());
    assert!(c.port_mappings.is_empty());
    let linux = c.linux.unwrap();
    assert!(linux.cgroup_parent.is_empty());
    assert!(linux.security_context.is_none());
    assert!(c.dns_config.is_none());
}

#[test]
fn crictl_sample_container_config() {
    let c = load_container_config(&data("container-config.json")).unwrap();
    assert_eq!(c.metadata.unwrap().name, "busybox");
    assert_eq!(c.image.unwrap().image, "busybox");
    assert_eq!(c.command, vec!["top"]);
    assert_eq!(c.log_path, "busybox.0.log");
    assert!(!c.tty);
    assert!(c.linux.is_some());
}

#[test]
fn full_sandbox_config_with_enum_names() {
    let c = load_pod_config(&data("sandbox-config-full.json")).unwrap();
    assert_eq!(c.metadata.as_ref().unwrap().attempt, 3);
    assert_eq!(c.dns_config.as_ref().unwrap().options, vec!["ndots:5"]);
    assert_eq!(c.port_mappings.len(), 2);
    assert_eq!(c.port_mappings[0].host_port, 8080);
    assert_eq!(c.port_mappings[1].protocol, 1); // "UDP"
    assert_eq!(c.port_mappings[1].host_ip, "127.0.0.1");
    assert_eq!(c.labels["tier"], "front");
    let linux = c.linux.unwrap();
    assert_eq!(linux.sysctls["net.ipv4.ip_unprivileged_port_start"], "0");
    let sc = linux.security_context.unwrap();
    let ns = sc.namespace_options.unwrap();
    assert_eq!((ns.network, ns.pid, ns.ipc), (2, 1, 0));
    assert_eq!(sc.run_as_user.unwrap().value, 1000);
    assert_eq!(sc.seccomp.unwrap().profile_type, 0);
}

#[test]
fn yaml_variants() {
    let p = load_pod_config(&data("sandbox-config.yaml")).unwrap();
    assert_eq!(p.metadata.unwrap().uid, "hdishd83djaidwnduwk28bcsb");
    let ns = p
        .linux
        .unwrap()
        .security_context
        .unwrap()
        .namespace_options
        .unwrap();
    assert_eq!(ns.network, 2);

    let c = load_container_config(&data("container-config.yaml")).unwrap();
    assert_eq!(c.command, vec!["sh", "-c", "echo hi"]);
    assert_eq!(c.envs[0].key, "FOO");
    assert_eq!(c.mounts[0].propagation, 1);
    assert!(c.mounts[0].readonly);
    let linux = c.linux.unwrap();
    assert_eq!(
        linux.resources.as_ref().unwrap().memory_limit_in_bytes,
        64 << 20
    );
    assert_eq!(linux.resources.unwrap().cpu_shares, 512);
    assert_eq!(
        linux
            .security_context
            .unwrap()
            .capabilities
            .unwrap()
            .add_capabilities,
        vec!["NET_ADMIN"]
    );
}

#[test]
fn shipped_examples_parse() {
    let p = load_pod_config(&examples("pod-config.json")).unwrap();
    assert_eq!(p.metadata.unwrap().name, "busybox-pod");
    let c = load_container_config(&examples("container-config.json")).unwrap();
    assert_eq!(c.image.unwrap().image, "busybox");
}

#[test]
fn brief_examples_inline() {
    let p: PodSandboxConfig = from_value(
        parse_document(
            r#"{"metadata":{"name":"p","namespace":"default","uid":"u1","attempt":1},"log_directory":"/tmp/logs","linux":{}}"#,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(p.log_directory, "/tmp/logs");
    let c: ContainerConfig = from_value(
        parse_document(
            r#"{"metadata":{"name":"c"},"image":{"image":"busybox"},"command":["sh","-c","echo hi"],"log_path":"c.log"}"#,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(c.log_path, "c.log");
    assert!(c.linux.is_none());
}

#[test]
fn empty_document_is_all_defaults() {
    let p: PodSandboxConfig = from_value(serde_json::json!({})).unwrap();
    assert_eq!(p, PodSandboxConfig::default());
    let c: ContainerConfig = from_value(serde_json::json!({})).unwrap();
    assert_eq!(c, ContainerConfig::default());
    let r: PullImageRequest = from_value(serde_json::json!({"image": {}})).unwrap();
    assert_eq!(r.image.unwrap().image, "");
}

#[test]
fn camel_case_keys_and_nulls_accepted() {
    let p: PodSandboxConfig = from_value(serde_json::json!({
        "logDirectory": "/x",
        "metadata": {"name": "n", "uid": null},
        "portMappings": null,
    }))
    .unwrap();
    assert_eq!(p.log_directory, "/x");
    assert_eq!(p.metadata.unwrap().uid, "");
}

#[test]
fn int64_strings_accepted() {
    let c: ContainerConfig = from_value(serde_json::json!({
        "linux": {"resources": {"memory_limit_in_bytes": "1048576"}}
    }))
    .unwrap();
    assert_eq!(
        c.linux.unwrap().resources.unwrap().memory_limit_in_bytes,
        1 << 20
    );
}

#[test]
fn wrong_type_names_field() {
    let e = from_value::<PodSandboxConfig>(serde_json::json!({
        "metadata": {"name": 5}
    }))
    .unwrap_err();
    assert!(e.message.contains("metadata.name"), "{e}");

    let e = from_value::<PodSandboxConfig>(serde_json::json!({
        "linux": {"security_context": {"namespace_options": {"network": "BOGUS"}}}
    }))
    .unwrap_err();
    assert!(
        e.message
            .contains("linux.security_context.namespace_options.network"),
        "{e}"
    );

    let e = from_value::<ContainerConfig>(serde_json::json!({
        "command": "sh"
    }))
    .unwrap_err();
    assert!(e.message.contains("command"), "{e}");

    let e = from_value::<ContainerConfig>(serde_json::json!({
        "envs": [{"key": "A"}, {"key": 1}]
    }))
    .unwrap_err();
    assert!(e.message.contains("envs[1].key"), "{e}");

    // attempt is u32: a negative number must be rejected, not wrapped.
    let e = from_value::<PodSandboxConfig>(serde_json::json!({
        "metadata": {"attempt": -1}
    }))
    .unwrap_err();
    assert!(e.message.contains("metadata.attempt"), "{e}");
}

#[test]
fn unknown_fields_are_ignored_like_crictl() {
    let p: PodSandboxConfig = from_value(serde_json::json!({
        "metadata": {"name": "n"},
        "no_such_field": {"deep": [1, 2]}
    }))
    .unwrap();
    assert_eq!(p.metadata.unwrap().name, "n");
}

#[test]
fn syntax_errors_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.json");
    std::fs::write(&f, "{\"metadata\": [}").unwrap();
    match load_pod_config(&f) {
        Err(ConfigError::Syntax { path, .. }) => assert_eq!(path, f),
        other => panic!("unexpected {other:?}"),
    }
    match load_pod_config(&dir.path().join("missing.json")) {
        Err(ConfigError::Read { .. }) => {}
        other => panic!("unexpected {other:?}"),
    }
}
