//! Generates the CRI v1 types, clients and servers from `proto/runtime/v1/api.proto` with
//! `tonic-prost-build`, which runs `protoc` (Debian's `protobuf-compiler`; set `PROTOC` to
//! use another).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/runtime/v1/api.proto");
    tonic_prost_build::configure()
        // krioctl reads crictl-style JSON/YAML configs into these types, and krio-server
        // persists sandbox and container records holding them.
        // RPCs a server does not implement answer `Unimplemented`, which is what a client
        // needs in order to fall back (kubelet falls back from the Stream* calls to List*).
        .generate_default_stubs(true)
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // `KeyValue.value` (an environment value) is `bytes` on the wire; configs and records
        // keep it as text.
        .field_attribute(
            ".runtime.v1.KeyValue.value",
            "#[serde(with = \"crate::serde_text_bytes\")]",
        )
        .compile_protos(&["proto/runtime/v1/api.proto"], &["proto"])?;
    Ok(())
}
