//! Compiles the Clinic `.proto` files into Rust without a system `protoc`.
//!
//! `protox` (a pure-Rust protobuf compiler) parses the files into a
//! `FileDescriptorSet`; tonic-prost-build generates messages, clients and
//! servers from it; the same set, with its imports and every option (the
//! `google.api.http` routes included), is written to `OUT_DIR` for gRPC
//! reflection and Envoy's JSON transcoder.

use std::{env, fmt::Write, fs, path::PathBuf};

use prost_reflect::{DescriptorPool, Value};

const PROTOS: &[&str] = &[
    "clinic/api/v1/options.proto",
    "clinic/api/v1/changes.proto",
    "clinic/patients/v1/patients.proto",
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

    fs::write(out.join("access.rs"), access_table(&compiler.descriptor_pool())?)?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}

/// The `(clinic.api.v1.access)` option of every Clinic rpc that declares
/// one, as Rust: `(path, role, audited)` entries of `RPC_ACCESS`. An rpc
/// without the option is left out (and so refused; a test names it).
fn access_table(pool: &DescriptorPool) -> Result<String, Box<dyn std::error::Error>> {
    let access =
        pool.get_extension_by_name("clinic.api.v1.access").ok_or("clinic.api.v1.access is not declared")?;
    let mut table = String::from("&[\n");
    for service in pool.services().filter(|s| s.full_name().starts_with("clinic.")) {
        for method in service.methods() {
            let options = method.options();
            if !options.has_extension(&access) {
                continue;
            }
            let Value::Message(rule) = options.get_extension(&access).into_owned() else {
                return Err(format!("{}: the access option is not a message", method.full_name()).into());
            };
            let role = match rule.get_field_by_name("role").as_deref() {
                Some(Value::EnumNumber(n)) => *n,
                _ => 0,
            };
            let role = match role {
                1 => "Viewer",
                2 => "Clinician",
                3 => "Admin",
                4 => "Service",
                5 => "FeedReader",
                _ => return Err(format!("{} declares no role", method.full_name()).into()),
            };
            let audited = matches!(rule.get_field_by_name("audited").as_deref(), Some(Value::Bool(true)));
            writeln!(
                table,
                "    RpcAccess {{ path: \"/{}/{}\", role: api::v1::Role::{role}, audited: {audited} }},",
                service.full_name(),
                method.name()
            )?;
        }
    }
    table.push(']');
    Ok(table)
}
