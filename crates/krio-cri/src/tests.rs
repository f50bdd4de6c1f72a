//! The bindings against byte sequences encoded by hand from the protobuf wire format
//! (tag = field number << 3 | wire type; varints little-endian base 128).

use prost::Message;

use crate::v1;

/// Encodes `msg` and checks the bytes, then decodes the bytes and checks the message.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(msg: M, wire: &[u8]) {
    assert_eq!(msg.encode_to_vec(), wire, "encoding {msg:?}");
    assert_eq!(M::decode(wire).unwrap(), msg, "decoding {wire:02x?}");
}

#[test]
fn version_request() {
    // field 1, wire type 2 (length-delimited): 0x0a, length 5, "0.1.0"
    round_trip(
        v1::VersionRequest {
            version: "0.1.0".into(),
        },
        b"\x0a\x050.1.0",
    );
}

#[test]
fn container_config_stop_signal() {
    // metadata (1, LEN) { name (1, LEN) "c" }; stop_signal (18, varint): tag 144 = 0x90 0x01,
    // SIGKILL = 13
    round_trip(
        v1::ContainerConfig {
            metadata: Some(v1::ContainerMetadata {
                name: "c".into(),
                attempt: 0,
            }),
            stop_signal: v1::Signal::Sigkill as i32,
            ..Default::default()
        },
        b"\x0a\x03\x0a\x01c\x90\x01\x0d",
    );
}

#[test]
fn mount_image_volume() {
    // container_path (1) "/v"; image (9, LEN: tag 0x4a) { image (1) "busybox" };
    // image_sub_path (10, LEN: tag 0x52) "etc"
    round_trip(
        v1::Mount {
            container_path: "/v".into(),
            image: Some(v1::ImageSpec {
                image: "busybox".into(),
                ..Default::default()
            }),
            image_sub_path: "etc".into(),
            ..Default::default()
        },
        b"\x0a\x02/v\x4a\x09\x0a\x07busybox\x52\x03etc",
    );
}

#[test]
fn update_pod_sandbox_resources() {
    // pod_sandbox_id (1) "p"; resources (3, LEN: tag 0x1a) { memory_limit_in_bytes (4,
    // varint: tag 0x20) 1 MiB = 0x80 0x80 0x40 }
    round_trip(
        v1::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: "p".into(),
            overhead: None,
            resources: Some(v1::LinuxContainerResources {
                memory_limit_in_bytes: 1 << 20,
                ..Default::default()
            }),
        },
        b"\x0a\x01p\x1a\x04\x20\x80\x80\x40",
    );
}

#[test]
fn status_response_handler_features() {
    // runtime_handlers (3, LEN: 0x1a) { name (1) "runc"; features (2, LEN: 0x12)
    // { recursive_read_only_mounts (1) true; user_namespaces (2) true } }
    round_trip(
        v1::StatusResponse {
            runtime_handlers: vec![v1::RuntimeHandler {
                name: "runc".into(),
                features: Some(v1::RuntimeHandlerFeatures {
                    recursive_read_only_mounts: true,
                    user_namespaces: true,
                }),
            }],
            ..Default::default()
        },
        b"\x1a\x0c\x0a\x04runc\x12\x04\x08\x01\x10\x01",
    );
}

#[test]
fn metric_and_psi() {
    // name (1) "m"; metric_type (3) GAUGE = 1; value (5, LEN: 0x2a) { value (1) 300 = 0xac 0x02 }
    round_trip(
        v1::Metric {
            name: "m".into(),
            metric_type: v1::MetricType::Gauge as i32,
            value: Some(v1::UInt64Value { value: 300 }),
            ..Default::default()
        },
        b"\x0a\x01m\x18\x01\x2a\x03\x08\xac\x02",
    );
    // Avg10 (2, wire type 1 = 64-bit: tag 0x11) 1.5 = 0x3ff8000000000000 little-endian
    round_trip(
        v1::PsiData {
            avg10: 1.5,
            ..Default::default()
        },
        b"\x11\x00\x00\x00\x00\x00\x00\xf8\x3f",
    );
}

#[test]
fn unknown_fields_are_skipped_not_fatal() {
    // A field number this API does not have (99, varint: tag 0x98 0x06) before a known one.
    let got = v1::VersionRequest::decode(&b"\x98\x06\x01\x0a\x01x"[..]).unwrap();
    assert_eq!(got.version, "x");
}

#[test]
fn rpc_list_has_every_service_method() {
    let rpcs = crate::rpcs();
    let runtime = rpcs.iter().filter(|(s, _)| *s == "RuntimeService").count();
    let image = rpcs.iter().filter(|(s, _)| *s == "ImageService").count();
    assert_eq!((runtime, image), (35, 6), "{rpcs:?}");
    assert!(rpcs.contains(&("RuntimeService", "UpdatePodSandboxResources")));
    assert!(rpcs.contains(&("ImageService", "StreamImages")));
}

#[test]
fn serde_uses_proto_field_names() {
    let json = serde_json::to_string(&v1::Mount {
        image_sub_path: "a".into(),
        ..Default::default()
    })
    .unwrap();
    assert!(json.contains("image_sub_path"), "{json}");
    assert!(json.contains("uid_mappings"), "{json}");
}

#[test]
fn env_value_serde_is_text_or_bytes() {
    let kv = v1::KeyValue {
        key: "A".into(),
        value: b"b c".to_vec(),
    };
    let text = serde_json::to_string(&kv).unwrap();
    assert_eq!(text, r#"{"key":"A","value":"b c"}"#);
    assert_eq!(serde_json::from_str::<v1::KeyValue>(&text).unwrap(), kv);
    let raw = v1::KeyValue {
        key: "A".into(),
        value: vec![0xff, 0x00],
    };
    let text = serde_json::to_string(&raw).unwrap();
    assert_eq!(text, r#"{"key":"A","value":[255,0]}"#);
    assert_eq!(serde_json::from_str::<v1::KeyValue>(&text).unwrap(), raw);
}
