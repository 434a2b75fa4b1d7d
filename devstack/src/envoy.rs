//! Envoy's configuration, rendered from the one template in `envoy/`.

use std::collections::BTreeMap;

use clinic_common::defaults;

use crate::stack::Ports;

/// `envoy/envoy.yaml.tmpl`, the single source of Envoy's configuration.
pub const TEMPLATE: &str = include_str!("../../envoy/envoy.yaml.tmpl");

/// The committed compose variant, `envoy/envoy.compose.yaml`.
pub const COMPOSE_FILE: &str = "envoy/envoy.compose.yaml";

/// A placeholder the template uses but no value was given for.
#[derive(Debug, thiserror::Error)]
#[error("envoy template: no value for ${{{0}}}")]
pub struct MissingValue(pub String);

/// Where Envoy listens and where each service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// Host Envoy's gRPC listener binds.
    pub listen_host: String,
    /// Port of Envoy's gRPC listener.
    pub port: u16,
    /// Host Envoy's admin interface binds.
    pub admin_host: String,
    /// Port of Envoy's admin interface.
    pub admin_port: u16,
    /// patients-service host and port.
    pub patients: (String, u16),
    /// studies-service host and port.
    pub studies: (String, u16),
    /// gateway host and port.
    pub gateway: (String, u16),
}

impl Addresses {
    /// Everything on this machine's loopback, as `make up` runs it.
    pub fn local(ports: &Ports) -> Self {
        let lo = || defaults::LOCALHOST.to_owned();
        Self {
            listen_host: lo(),
            port: ports.envoy,
            admin_host: lo(),
            admin_port: ports.envoy_admin,
            patients: (lo(), ports.patients),
            studies: (lo(), ports.studies),
            gateway: (lo(), ports.gateway),
        }
    }

    /// Inside docker compose: Envoy listens on every interface of its
    /// container and reaches the services by their compose names.
    pub fn compose() -> Self {
        Self {
            listen_host: "0.0.0.0".into(),
            port: defaults::ENVOY_PORT,
            admin_host: defaults::LOCALHOST.into(),
            admin_port: defaults::ENVOY_ADMIN_PORT,
            patients: ("patients-service".into(), defaults::PATIENTS_PORT),
            studies: ("studies-service".into(), defaults::STUDIES_PORT),
            gateway: ("gateway".into(), defaults::GATEWAY_PORT),
        }
    }

    fn values(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("ENVOY_LISTEN_HOST", self.listen_host.clone()),
            ("ENVOY_PORT", self.port.to_string()),
            ("ENVOY_ADMIN_HOST", self.admin_host.clone()),
            ("ENVOY_ADMIN_PORT", self.admin_port.to_string()),
            ("PATIENTS_HOST", self.patients.0.clone()),
            ("PATIENTS_PORT", self.patients.1.to_string()),
            ("STUDIES_HOST", self.studies.0.clone()),
            ("STUDIES_PORT", self.studies.1.to_string()),
            ("GATEWAY_HOST", self.gateway.0.clone()),
            ("GATEWAY_PORT", self.gateway.1.to_string()),
        ])
    }
}

/// The template with every `${NAME}` replaced for `addresses`.
pub fn render(addresses: &Addresses) -> Result<String, MissingValue> {
    let values = addresses.values();
    let mut out = String::with_capacity(TEMPLATE.len());
    let mut rest = TEMPLATE;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end =
            rest[start..].find('}').map(|e| start + e).ok_or_else(|| MissingValue(rest[start..].into()))?;
        let name = &rest[start + 2..end];
        out.push_str(values.get(name).ok_or_else(|| MissingValue(name.into()))?);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The compose variant, with a header saying where it comes from.
pub fn render_compose() -> Result<String, MissingValue> {
    Ok(format!(
        "# GENERATED from envoy/envoy.yaml.tmpl by `clinic-dev envoy-config --compose`; do not edit.\n{}",
        render(&Addresses::compose())?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendering_fills_every_placeholder() {
        let yaml = render(&Addresses::local(&Ports::default())).unwrap();
        assert!(!yaml.contains("${"));
        assert!(yaml.contains("port_value: 50052"));
    }

    /// The committed compose file is exactly what the template renders to.
    #[test]
    fn the_committed_compose_config_is_up_to_date() {
        let committed =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/envoy.compose.yaml"))
                .expect("envoy/envoy.compose.yaml exists; run `clinic-dev envoy-config --compose`");
        assert_eq!(
            committed,
            render_compose().unwrap(),
            "run `clinic-dev envoy-config --compose` to regenerate it"
        );
    }
}
