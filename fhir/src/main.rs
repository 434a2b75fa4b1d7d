//! fhir entry point: see [`clinic_host::service::main`].

/// mimalloc, as every Clinic server (see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    clinic_host::service::main::<fhir::Application>()
}
