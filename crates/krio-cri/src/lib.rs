//! krio's own bindings of the Container Runtime Interface, version 1 (`runtime.v1`), as of
//! the API that Kubernetes 1.36 speaks (cri-api v0.36): 35 `RuntimeService` and 6
//! `ImageService` RPCs.
//!
//! The types, clients and servers are generated at build time from the project's own
//! description of the API, `proto/runtime/v1/api.proto`, whose wire contract (package,
//! names, field numbers and types) matches the upstream API. Every message derives
//! `serde::Serialize` and `serde::Deserialize` with the protobuf field names in snake_case.
//!
//! The module shape is the usual tonic one: messages and enums in [`v1`], clients in
//! `v1::runtime_service_client` and `v1::image_service_client`, servers in
//! `v1::runtime_service_server` and `v1::image_service_server`.

/// CRI v1 (`runtime.v1`): messages, enums, clients and servers.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

/// The RPCs of `RuntimeService` and `ImageService` as `(service, method)`, in the order of
/// the `.proto`. Read from the `.proto` at build time so that docs and tests can check that
/// nothing is missing.
pub fn rpcs() -> Vec<(&'static str, &'static str)> {
    let mut out = Vec::new();
    let mut service = "";
    for line in PROTO.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("service ") {
            service = rest.split_whitespace().next().unwrap_or("");
        } else if let Some(rest) = line.strip_prefix("rpc ") {
            if let Some(name) = rest.split('(').next() {
                out.push((service, name.trim()));
            }
        }
    }
    out
}

/// The text of the `.proto` the bindings were generated from.
pub const PROTO: &str = include_str!("../proto/runtime/v1/api.proto");

pub mod serde_text_bytes {
    //! Serde for a `bytes` field that normally holds text (`KeyValue.value`): written as a
    //! string when it is UTF-8 and as a list of byte values otherwise; read from either, so
    //! crictl-style config files (`"value": "text"`) and records written when the field was a
    //! `string` both load.

    use serde::de::{self, SeqAccess, Visitor};
    use serde::{Deserializer, Serializer};

    /// Writes `v` as a string if it is UTF-8, else as a sequence of bytes.
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(v) {
            Ok(text) => s.serialize_str(text),
            Err(_) => s.collect_seq(v.iter()),
        }
    }

    /// Reads a string, a byte string, or a sequence of byte values (0 to 255).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_any(TextOrBytes)
    }

    struct TextOrBytes;

    impl<'de> Visitor<'de> for TextOrBytes {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a string or a list of byte values")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_unit<E: de::Error>(self) -> Result<Vec<u8>, E> {
            Ok(Vec::new())
        }

        fn visit_none<E: de::Error>(self) -> Result<Vec<u8>, E> {
            Ok(Vec::new())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::new();
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests;
