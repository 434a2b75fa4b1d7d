//! Where every process of the local stack listens.

use clinic_core::defaults;

/// Where everything listens; [`Ports::default`] is the contract's ports.
#[derive(Debug, Clone, Copy)]
pub struct Ports {
    /// Envoy's plaintext listener (loopback, for local tools).
    pub envoy: u16,
    /// Envoy's TLS listener.
    pub envoy_tls: u16,
    /// Envoy's admin interface.
    pub envoy_admin: u16,
    /// patients-service.
    pub patients: u16,
    /// studies-service.
    pub studies: u16,
    /// gateway.
    pub gateway: u16,
    /// The FHIR endpoint.
    pub fhir: u16,
    /// The services' Prometheus endpoints: patients, studies, gateway, fhir.
    pub metrics: [u16; 4],
    /// Replicas of each service; replica `i` (from 0) listens on each of
    /// the first replica's ports plus `100 × i`.
    pub replicas: u16,
}

impl Ports {
    /// The ports of every replica of the service whose first replica is on
    /// `port`.
    pub fn replicas_of(&self, port: u16) -> impl Iterator<Item = u16> {
        (0..self.replicas.max(1)).map(move |i| port + 100 * i)
    }
}

impl Default for Ports {
    fn default() -> Self {
        Self {
            envoy: defaults::ENVOY_PORT,
            envoy_tls: defaults::ENVOY_TLS_PORT,
            envoy_admin: defaults::ENVOY_ADMIN_PORT,
            patients: defaults::PATIENTS_PORT,
            studies: defaults::STUDIES_PORT,
            gateway: defaults::GATEWAY_PORT,
            fhir: defaults::FHIR_PORT,
            metrics: [
                defaults::PATIENTS_METRICS_PORT,
                defaults::STUDIES_METRICS_PORT,
                defaults::GATEWAY_METRICS_PORT,
                defaults::FHIR_METRICS_PORT,
            ],
            replicas: 1,
        }
    }
}
