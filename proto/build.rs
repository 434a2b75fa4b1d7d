//! Compiles the Clinic `.proto` files into Rust without a system `protoc`.
//!
//! `protox` (a pure-Rust protobuf compiler) parses the files into a
//! `FileDescriptorSet`; tonic-prost-build generates messages, clients and
//! servers from it; the same set, with its imports and every option (the
//! `google.api.http` routes included), is written to `OUT_DIR` for gRPC
//! reflection and Envoy's JSON transcoder.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "clinic/patients/v1/patients.proto",
    "clinic/patients/events/v1/events.proto",
    "clinic/studies/v1/studies.proto",
    "clinic/studies/guard/v1/guard.proto",
    "clinic/gateway/v1/gateway.proto",
    "clinic/audit/v1/audit.proto",
    "clinic/audit/intake/v1/intake.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    for vendored in ["google/api/annotations.proto", "google/api/http.proto"] {
        println!("cargo:rerun-if-changed={}", root.join(vendored).display());
    }

    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_imports(true).include_source_info(true).open_files(PROTOS)?;
    // protox's own encoding keeps the `google.api.http` options Envoy's
    // JSON transcoder needs; going through prost_types would drop them.
    fs::write(out.join("clinic_descriptor.bin"), compiler.encode_file_descriptor_set())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
