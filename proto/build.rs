//! Compiles the Clinic `.proto` files into Rust without a system `protoc`.
//!
//! `protox` (a pure-Rust protobuf compiler) parses the files into a
//! `FileDescriptorSet`; tonic-prost-build generates messages, clients and
//! servers from it; the same set, with its imports, is written to `OUT_DIR`
//! so the services can serve it through gRPC reflection.

use std::{env, fs, path::PathBuf};

use prost::Message;

const PROTOS: &[&str] = &[
    "clinic/patients/v1/patients.proto",
    "clinic/patients/events/v1/events.proto",
    "clinic/studies/v1/studies.proto",
    "clinic/studies/guard/v1/guard.proto",
    "clinic/gateway/v1/gateway.proto",
    "clinic/audit/v1/audit.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out = PathBuf::from(env::var("OUT_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }

    let fds = protox::compile(PROTOS, [&root])?;
    fs::write(out.join("clinic_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
