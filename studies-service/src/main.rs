//! studies-service entry point: see [`clinic_common::service::main`].

/// mimalloc: fewer cycles per allocation than the system allocator on the
/// request path (measured with `make bench`, see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    clinic_common::service::main::<studies_service::Application>()
}
