//! Where everything listens by default: the contract's ports, written once.
//!
//! Every binary's configuration, `clinic-dev up`, the container health
//! probe and the Envoy configuration take their defaults from here; the
//! compose file and the README are checked against `--help`, which prints them.

/// patients-service's gRPC port.
pub const PATIENTS_PORT: u16 = 50051;
/// studies-service's gRPC port.
pub const STUDIES_PORT: u16 = 50052;
/// The gateway's gRPC port.
pub const GATEWAY_PORT: u16 = 50053;
/// patients-service's Prometheus metrics port.
pub const PATIENTS_METRICS_PORT: u16 = 9464;
/// studies-service's Prometheus metrics port.
pub const STUDIES_METRICS_PORT: u16 = 9465;
/// The gateway's Prometheus metrics port.
pub const GATEWAY_METRICS_PORT: u16 = 9466;
/// Default port of the FHIR endpoint.
pub const FHIR_PORT: u16 = 50054;
/// Default port of the FHIR endpoint's metrics.
pub const FHIR_METRICS_PORT: u16 = 9467;
/// Envoy's plaintext listener (loopback only).
pub const ENVOY_PORT: u16 = 8080;
/// Envoy's TLS listener, the front door for everything but local tools.
pub const ENVOY_TLS_PORT: u16 = 8443;
/// Envoy's admin interface (loopback only).
pub const ENVOY_ADMIN_PORT: u16 = 9901;
/// PostgreSQL's port.
pub const POSTGRES_PORT: u16 = 5432;
/// The database both services use.
pub const DATABASE: &str = "clinic";
/// The host of every local default.
pub const LOCALHOST: &str = "127.0.0.1";

/// Largest gRPC message any Clinic process sends or accepts, at every hop
/// (servers, clients between services, Envoy's buffers): far above what a
/// response holds, since every list is also bounded by bytes
/// (`paging::MAX_PAGE_BYTES`).
pub const MAX_MESSAGE_BYTES: usize = 16 << 20;

/// Applies [`MAX_MESSAGE_BYTES`] both ways to a generated gRPC server or
/// client: `clinic_core::bounded!(PatientServiceServer::new(api))`.
#[macro_export]
macro_rules! bounded {
    ($service:expr) => {
        $service
            .max_decoding_message_size($crate::defaults::MAX_MESSAGE_BYTES)
            .max_encoding_message_size($crate::defaults::MAX_MESSAGE_BYTES)
    };
}

/// `127.0.0.1:<port>`, a listen address on loopback.
pub fn listen_addr(port: u16) -> String {
    format!("{LOCALHOST}:{port}")
}

/// `http://127.0.0.1:<port>`, how a peer on this machine is reached.
pub fn uri(port: u16) -> String {
    format!("http://{LOCALHOST}:{port}")
}

/// The local default database URL of the service whose login role is
/// `role` (its password is its name on throwaway local clusters).
pub fn database_url(role: &str) -> String {
    format!("postgres://{role}:{role}@{LOCALHOST}:{POSTGRES_PORT}/{DATABASE}")
}
