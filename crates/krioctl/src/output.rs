//! JSON / YAML output shaped like crictl's (protobuf JSON conventions).
//!
//! crictl prints CRI messages with protobuf's JSON mapping: lowerCamelCase
//! field names and enum values by name (`"state": "CONTAINER_RUNNING"`). The
//! `krio-cri` serde derives give snake_case names and integers, so
//! [`to_crictl_json`] rewrites a serialized message: struct field names become
//! lowerCamelCase (map keys such as labels stay untouched) and the known enum
//! fields get their names. 64-bit integers stay JSON numbers (protobuf JSON
//! would quote them). For verbose calls, [`with_info`] embeds each `info`
//! entry parsed as JSON, as crictl does.

use serde::Serialize;
use serde_json::{Map, Value};

/// Which CRI object a serialized tree describes, so `state` can be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Containers: `state` is a `ContainerState`.
    Container,
    /// Pod sandboxes: `state` is a `PodSandboxState`.
    Pod,
    /// Anything else (images, runtime status): `state` is left alone.
    Other,
}

/// Output formats of `-o`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// crictl's column layout.
    Table,
    /// Indented JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Fields whose values are string maps: their keys are data, never renamed.
const MAP_FIELDS: [&str; 6] = [
    "labels",
    "annotations",
    "info",
    "label_selector",
    "sysctls",
    "unified",
];

/// Converts `snake_case` to `lowerCamelCase`.
pub fn snake_to_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut upper = false;
    for c in s.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn enum_name(field: &str, kind: Kind, v: i64) -> Option<&'static str> {
    let names: &[&str] = match (field, kind) {
        ("state", Kind::Container) => &[
            "CONTAINER_CREATED",
            "CONTAINER_RUNNING",
            "CONTAINER_EXITED",
            "CONTAINER_UNKNOWN",
        ],
        ("state", Kind::Pod) => &["SANDBOX_READY", "SANDBOX_NOTREADY"],
        ("network" | "pid" | "ipc" | "mode", _) => &["POD", "CONTAINER", "NODE", "TARGET"],
        ("protocol", _) => &["TCP", "UDP", "SCTP"],
        ("container_event_type", _) => &[
            "CONTAINER_CREATED_EVENT",
            "CONTAINER_STARTED_EVENT",
            "CONTAINER_STOPPED_EVENT",
            "CONTAINER_DELETED_EVENT",
        ],
        ("propagation", _) => &[
            "PROPAGATION_PRIVATE",
            "PROPAGATION_HOST_TO_CONTAINER",
            "PROPAGATION_BIDIRECTIONAL",
        ],
        ("profile_type", _) => &["RuntimeDefault", "Unconfined", "Localhost"],
        ("cgroup_driver", _) => &["SYSTEMD", "CGROUPFS"],
        _ => &[],
    };
    usize::try_from(v).ok().and_then(|i| names.get(i).copied())
}

/// Rewrites a serialized CRI message tree into crictl's JSON shape (see the
/// module docs). `kind` says what `state` fields mean; inside
/// `containers_statuses` they are container states.
pub fn to_crictl_json(value: Value, kind: Kind) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let nv = if MAP_FIELDS.contains(&k.as_str()) {
                    v
                } else if let Value::Number(n) = &v {
                    match n.as_i64().and_then(|i| enum_name(&k, kind, i)) {
                        Some(name) => Value::String(name.to_string()),
                        None => v,
                    }
                } else {
                    let child_kind = if k == "containers_statuses" {
                        Kind::Container
                    } else {
                        kind
                    };
                    to_crictl_json(v, child_kind)
                };
                out.insert(snake_to_camel(&k), nv);
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            Value::Array(items.into_iter().map(|v| to_crictl_json(v, kind)).collect())
        }
        other => other,
    }
}

/// Serializes a CRI message and rewrites it with [`to_crictl_json`].
///
/// Errors: the serializer's error (not expected for CRI messages).
pub fn message_json<T: Serialize>(msg: &T, kind: Kind) -> Result<Value, serde_json::Error> {
    Ok(to_crictl_json(serde_json::to_value(msg)?, kind))
}

/// Adds the verbose `info` map of a `*Status` response to `out` as an `info`
/// object, each value parsed as JSON when it is JSON (else kept as a string),
/// the way crictl's `inspect*` shows it. Leaves `out` unchanged if `info` is empty.
pub fn with_info<'a, I>(out: &mut Map<String, Value>, info: I)
where
    I: IntoIterator<Item = (&'a String, &'a String)>,
{
    let mut entries: Vec<(&String, &String)> = info.into_iter().collect();
    if entries.is_empty() {
        return;
    }
    entries.sort();
    let mut m = Map::new();
    for (k, v) in entries {
        let parsed = serde_json::from_str::<Value>(v).unwrap_or_else(|_| Value::String(v.clone()));
        m.insert(k.clone(), parsed);
    }
    out.insert("info".into(), Value::Object(m));
}

/// Renders a value as indented JSON or as YAML, with a trailing newline.
///
/// Errors: a message if serialization fails (not expected for JSON values).
pub fn render(value: &Value, format: Format) -> Result<String, String> {
    match format {
        Format::Yaml => serde_yaml::to_string(value).map_err(|e| e.to_string()),
        Format::Json | Format::Table => serde_json::to_string_pretty(value)
            .map(|mut s| {
                s.push('\n');
                s
            })
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use krio_cri::v1::{Container, ContainerMetadata, PodSandbox, PodSandboxMetadata};
    use serde_json::json;
    use std::collections::HashMap;

    #[test]
    fn container_json_is_camel_case_with_state_names() {
        let c = Container {
            id: "abc".into(),
            pod_sandbox_id: "pod1".into(),
            metadata: Some(ContainerMetadata {
                name: "c".into(),
                attempt: 1,
            }),
            state: 1,
            created_at: 42,
            labels: HashMap::from([("io.kubernetes.pod_name".to_string(), "x".to_string())]),
            ..Default::default()
        };
        let v = message_json(&c, Kind::Container).unwrap();
        assert_eq!(v["podSandboxId"], "pod1");
        assert_eq!(v["state"], "CONTAINER_RUNNING");
        assert_eq!(v["createdAt"], 42);
        assert_eq!(v["metadata"]["attempt"], 1);
        // Map keys are data and stay as they were.
        assert_eq!(v["labels"]["io.kubernetes.pod_name"], "x");
        assert!(v.get("pod_sandbox_id").is_none());
    }

    #[test]
    fn pod_states_and_nested_container_statuses() {
        let p = PodSandbox {
            id: "p".into(),
            metadata: Some(PodSandboxMetadata::default()),
            state: 1,
            ..Default::default()
        };
        let v = message_json(&p, Kind::Pod).unwrap();
        assert_eq!(v["state"], "SANDBOX_NOTREADY");
        let v = to_crictl_json(
            json!({"status": {"state": 0}, "containers_statuses": [{"state": 2}]}),
            Kind::Pod,
        );
        assert_eq!(v["status"]["state"], "SANDBOX_READY");
        assert_eq!(v["containersStatuses"][0]["state"], "CONTAINER_EXITED");
        let v = to_crictl_json(
            json!({"namespace_options": {"network": 2, "pid": 9}}),
            Kind::Other,
        );
        assert_eq!(v["namespaceOptions"]["network"], "NODE");
        assert_eq!(
            v["namespaceOptions"]["pid"], 9,
            "unknown values stay numbers"
        );
    }

    #[test]
    fn cgroup_driver_is_named() {
        let r = krio_cri::v1::RuntimeConfigResponse {
            linux: Some(krio_cri::v1::LinuxRuntimeConfiguration {
                cgroup_driver: krio_cri::v1::CgroupDriver::Cgroupfs as i32,
            }),
        };
        let v = message_json(&r, Kind::Other).unwrap();
        assert_eq!(v["linux"]["cgroupDriver"], "CGROUPFS", "{v}");
    }

    #[test]
    fn info_is_embedded_parsed() {
        let info = HashMap::from([
            ("config".to_string(), "{\"a\":1}".to_string()),
            ("plain".to_string(), "not json".to_string()),
        ]);
        let mut out = Map::new();
        with_info(&mut out, &info);
        assert_eq!(out["info"]["config"]["a"], 1);
        assert_eq!(out["info"]["plain"], "not json");
        let mut out = Map::new();
        with_info(&mut out, &HashMap::new());
        assert!(out.is_empty());
    }

    #[test]
    fn render_formats() {
        let v = json!({"a": [1, 2]});
        assert_eq!(
            render(&v, Format::Json).unwrap(),
            "{\n  \"a\": [\n    1,\n    2\n  ]\n}\n"
        );
        assert_eq!(render(&v, Format::Yaml).unwrap(), "a:\n- 1\n- 2\n");
        assert_eq!(snake_to_camel("runtime_api_version"), "runtimeApiVersion");
    }
}
