//! studies-service entry point: see [`clinic_host::service::main`].

/// mimalloc: fewer cycles per allocation than the system allocator on the
/// request path (measured with `make bench`, see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    clinic_host::service::main::<studies_service::Application>()
}
