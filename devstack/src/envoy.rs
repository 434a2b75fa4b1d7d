//! Envoy's configuration, rendered from the one template in `envoy/`.

use std::collections::BTreeMap;

use clinic_auth as auth;
use clinic_core::{context::Role, defaults};

use crate::ports::Ports;

/// `envoy/envoy.yaml.tmpl`, the single source of Envoy's configuration.
pub const TEMPLATE: &str = include_str!("../../envoy/envoy.yaml.tmpl");

/// The committed compose variant, `envoy/envoy.compose.yaml`.
pub const COMPOSE_FILE: &str = "envoy/envoy.compose.yaml";

/// A placeholder the template uses but no value was given for.
#[derive(Debug, thiserror::Error)]
#[error("envoy template: no value for ${{{0}}}")]
pub struct MissingValue(pub String);

/// Where Envoy listens, where each service is, and the files Envoy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Addresses {
    /// Host Envoy's plaintext listener binds (loopback: local tools only).
    pub listen_host: String,
    /// Port of Envoy's plaintext listener.
    pub port: u16,
    /// Host Envoy's TLS listener binds.
    pub tls_listen_host: String,
    /// Port of Envoy's TLS listener.
    pub tls_port: u16,
    /// Host Envoy's admin interface binds.
    pub admin_host: String,
    /// Port of Envoy's admin interface.
    pub admin_port: u16,
    /// patients-service's replicas: host and port of each.
    pub patients: Vec<(String, u16)>,
    /// studies-service's replicas.
    pub studies: Vec<(String, u16)>,
    /// The gateway's replicas.
    pub gateway: Vec<(String, u16)>,
    /// The FHIR endpoint's replicas.
    pub fhir: Vec<(String, u16)>,
    /// The `iss` and `aud` accepted tokens carry.
    pub issuer_audience: (String, String),
    /// The SDS resource file naming the certificate the TLS listener serves
    /// ([`tls_sds`]).
    pub tls_sds_file: String,
    /// The descriptor set of the API (with its HTTP routes) for the JSON
    /// transcoder.
    pub descriptor_file: String,
    /// Origins whose pages may call the API from a browser (CORS).
    pub cors_origins: Vec<String>,
    /// The OpenTelemetry collector (host, port) Envoy sends its spans to
    /// over OTLP/gRPC, if any.
    pub otel_collector: Option<(String, u16)>,
}

impl Addresses {
    /// Everything on this machine's loopback, as `make up` runs it, with the
    /// development credentials and the descriptor set at `descriptor_file`.
    pub fn local(ports: &Ports, tls_sds_file: &std::path::Path, descriptor_file: &std::path::Path) -> Self {
        let lo = || defaults::LOCALHOST.to_owned();
        let path = |p: std::path::PathBuf| p.display().to_string();
        Self {
            listen_host: lo(),
            port: ports.envoy,
            tls_listen_host: lo(),
            tls_port: ports.envoy_tls,
            admin_host: lo(),
            admin_port: ports.envoy_admin,
            patients: ports.replicas_of(ports.patients).map(|p| (lo(), p)).collect(),
            studies: ports.replicas_of(ports.studies).map(|p| (lo(), p)).collect(),
            gateway: ports.replicas_of(ports.gateway).map(|p| (lo(), p)).collect(),
            fhir: ports.replicas_of(ports.fhir).map(|p| (lo(), p)).collect(),
            issuer_audience: (auth::DEFAULT_ISSUER.into(), auth::DEFAULT_AUDIENCE.into()),
            tls_sds_file: path(tls_sds_file.to_owned()),
            descriptor_file: path(descriptor_file.to_owned()),
            cors_origins: Vec::new(),
            otel_collector: None,
        }
    }

    /// Inside docker compose: TLS on every interface of Envoy's container
    /// (the port compose publishes), plaintext on its loopback only, the
    /// services by their compose names, the certificate from its volume.
    pub fn compose() -> Self {
        Self {
            listen_host: defaults::LOCALHOST.into(),
            port: defaults::ENVOY_PORT,
            tls_listen_host: "0.0.0.0".into(),
            tls_port: defaults::ENVOY_TLS_PORT,
            admin_host: defaults::LOCALHOST.into(),
            admin_port: defaults::ENVOY_ADMIN_PORT,
            patients: vec![("patients-service".into(), defaults::PATIENTS_PORT)],
            studies: vec![("studies-service".into(), defaults::STUDIES_PORT)],
            gateway: vec![("gateway".into(), defaults::GATEWAY_PORT)],
            fhir: vec![("fhir".into(), defaults::FHIR_PORT)],
            issuer_audience: (auth::DEFAULT_ISSUER.into(), auth::DEFAULT_AUDIENCE.into()),
            tls_sds_file: COMPOSE_TLS_SDS_FILE.into(),
            descriptor_file: COMPOSE_DESCRIPTOR_FILE.into(),
            cors_origins: Vec::new(),
            otel_collector: None,
        }
    }

    fn values(&self) -> BTreeMap<&'static str, String> {
        BTreeMap::from([
            ("ENVOY_LISTEN_HOST", self.listen_host.clone()),
            ("ENVOY_PORT", self.port.to_string()),
            ("ENVOY_TLS_LISTEN_HOST", self.tls_listen_host.clone()),
            ("ENVOY_TLS_PORT", self.tls_port.to_string()),
            ("ENVOY_ADMIN_HOST", self.admin_host.clone()),
            ("ENVOY_ADMIN_PORT", self.admin_port.to_string()),
            ("PATIENTS_ENDPOINTS", endpoints(&self.patients)),
            ("STUDIES_ENDPOINTS", endpoints(&self.studies)),
            ("GATEWAY_ENDPOINTS", endpoints(&self.gateway)),
            ("FHIR_ENDPOINTS", endpoints(&self.fhir)),
            ("FHIR_HEALTH_NAME", fhir::HEALTH_NAME.to_owned()),
            ("JWKS_PATH", clinic_host::public::JWKS_PATH.to_owned()),
            ("JWT_ISSUER", self.issuer_audience.0.clone()),
            ("JWT_AUDIENCE", self.issuer_audience.1.clone()),
            ("TLS_SDS_FILE", self.tls_sds_file.clone()),
            ("RBAC_POLICIES", rbac_policies(26)),
            ("DESCRIPTOR_FILE", self.descriptor_file.clone()),
            ("PAGE_PREFIX", gateway::site::PAGE_PREFIX.to_owned()),
            ("CORS_ORIGINS", cors_matchers(&self.cors_origins)),
            ("TRACING", self.otel_collector.as_ref().map(|_| TRACING.to_owned()).unwrap_or_default()),
            (
                "OTEL_RUNTIME",
                self.otel_collector.as_ref().map(|_| OTEL_RUNTIME.to_owned()).unwrap_or_default(),
            ),
            (
                "OTEL_CLUSTER",
                self.otel_collector
                    .as_ref()
                    .map(|(host, port)| otel_cluster(host, *port))
                    .unwrap_or_default(),
            ),
        ])
    }
}

/// Where the compose Envoy image holds the API's descriptor set.
pub const COMPOSE_DESCRIPTOR_FILE: &str = "/etc/envoy/clinic.pb";

/// Where the compose (and Kubernetes) Envoy reads its certificate's SDS
/// resource.
pub const COMPOSE_TLS_SDS_FILE: &str = "/etc/envoy/tls-sds.yaml";

/// The committed SDS resource of compose and Kubernetes,
/// `envoy/tls-sds.yaml`: the certificate and key their volumes mount.
pub const TLS_SDS_FILE: &str = "envoy/tls-sds.yaml";

/// The Kubernetes base's copy of [`TLS_SDS_FILE`], in its ConfigMap.
pub const KUBERNETES_TLS_SDS_FILE: &str = "deploy/k8s/base/envoy/tls-sds.yaml";

/// The folder compose and Kubernetes mount Envoy's certificate in.
pub const COMPOSE_TLS_DIR: &str = "/etc/clinic/tls";

/// The SDS resource (a file Envoy watches) naming the TLS listener's
/// certificate `cert` and key `key`: Envoy reloads them when a file is
/// moved into their folder (a renewal written to a temporary file and
/// renamed, or a Kubernetes Secret's atomic swap).
pub fn tls_sds(cert: &str, key: &str) -> String {
    let dir =
        std::path::Path::new(cert).parent().map(|d| d.display().to_string()).unwrap_or_else(|| ".".into());
    format!(
        "# The certificate Envoy's TLS listener serves (SDS from a file, watched).\n\
         resources:\n\
         \x20 - \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret\n\
         \x20   name: server_cert\n\
         \x20   tls_certificate:\n\
         \x20     certificate_chain: {{ filename: {cert} }}\n\
         \x20     private_key: {{ filename: {key} }}\n\
         \x20     watched_directory: {{ path: {dir} }}\n"
    )
}

/// Envoy's OpenTelemetry tracer, when a collector is configured: every
/// request gets a span (joining the client's `traceparent`, or starting a
/// trace and passing it on to the services).
const TRACING: &str = "                tracing:
                  provider:
                    name: envoy.tracers.opentelemetry
                    typed_config:
                      \"@type\": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
                      grpc_service: { envoy_grpc: { cluster_name: otel_collector }, timeout: 2s }
                      service_name: envoy";

/// Envoy flushes spans every 5 s by default; once a second is closer to
/// the services' batches.
const OTEL_RUNTIME: &str = "layered_runtime:
  layers:
    - name: tracing
      static_layer: { tracing.opentelemetry.flush_interval_ms: 1000 }";

/// The collector's cluster (HTTP/2, as OTLP/gRPC needs).
fn otel_cluster(host: &str, port: u16) -> String {
    format!(
        "    - name: otel_collector
      type: STRICT_DNS
      connect_timeout: 1s
      typed_extension_protocol_options: *h2
      load_assignment:
        cluster_name: otel_collector
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}"
    )
}

/// The collector's host and port from an OTLP endpoint URL
/// (`http://127.0.0.1:4317`).
pub fn collector_of(endpoint: &str) -> Option<(String, u16)> {
    let rest = endpoint.trim().split_once("://").map_or(endpoint.trim(), |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.trim_matches(['[', ']']).to_owned(), port.parse().ok()?))
}

/// A cluster's endpoints, one per line (the first line's indentation is
/// the template's).
fn endpoints(hosts: &[(String, u16)]) -> String {
    let lines: Vec<String> = hosts
        .iter()
        .map(|(host, port)| {
            format!(
                "- endpoint: {{ address: {{ socket_address: {{ address: {host}, port_value: {port} }} }} }}"
            )
        })
        .collect();
    lines.join("\n              ")
}

/// `origins` as Envoy string matchers, in flow style.
fn cors_matchers(origins: &[String]) -> String {
    let exact: Vec<String> = origins.iter().map(|o| format!("{{ exact: \"{o}\" }}")).collect();
    format!("[{}]", exact.join(", "))
}

/// The descriptor set Envoy's JSON transcoder reads: the API's, with its
/// `google.api.http` options, and the `google.rpc` error details it prints
/// in error bodies. Both are protobuf `FileDescriptorSet`s, whose only field
/// is the repeated file (field 1), so the files are joined at the wire
/// level, each once by name; decoding into `prost_types` and encoding again
/// would drop the options.
pub fn transcoder_descriptor_set() -> Vec<u8> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for set in [clinic_proto::FILE_DESCRIPTOR_SET, tonic_types::pb::FILE_DESCRIPTOR_SET] {
        for file in descriptor_files(set) {
            let name = <prost_types::FileDescriptorProto as prost::Message>::decode(file)
                .map(|f| f.name().to_owned())
                .unwrap_or_default();
            if seen.insert(name) {
                out.push(0x0a);
                prost::encoding::encode_varint(file.len() as u64, &mut out);
                out.extend_from_slice(file);
            }
        }
    }
    out
}

/// The encoded files of a `FileDescriptorSet` (field 1, length-delimited).
fn descriptor_files(mut set: &[u8]) -> Vec<&[u8]> {
    let mut files = Vec::new();
    while let Some((&0x0a, rest)) = set.split_first() {
        let mut cursor = rest;
        let Ok(len) = prost::encoding::decode_varint(&mut cursor) else { break };
        let (file, rest) = cursor.split_at(len as usize);
        files.push(file);
        set = rest;
    }
    files
}

/// The RBAC policies equivalent to the services' permission table: one
/// policy per set of roles, allowing its methods to callers whose token's
/// `roles` claim holds one of them; health and reflection to anyone.
/// Indented by `indent` spaces, to sit under `policies:`.
pub fn rbac_policies(indent: usize) -> String {
    let mut groups: BTreeMap<Vec<&'static str>, Vec<&'static str>> = BTreeMap::new();
    for permission in auth::PERMISSIONS.iter() {
        let callers: Vec<&'static str> = Role::ALL
            .iter()
            .filter(|held| permission.roles.iter().any(|needed| held.grants(*needed)))
            .map(|r| r.name())
            .collect();
        groups.entry(callers).or_default().push(permission.method);
    }
    let pad = " ".repeat(indent);
    let mut out = String::new();
    let mut policy = |name: &str, paths: Vec<String>, principals: Vec<String>| {
        out.push_str(&format!(
            "{pad}{name}:\n{pad}  permissions:\n{pad}    - or_rules:\n{pad}        rules:\n"
        ));
        for path in paths {
            out.push_str(&format!("{pad}          - url_path: {{ path: {{ {path} }} }}\n"));
        }
        out.push_str(&format!("{pad}  principals:\n"));
        for principal in principals {
            out.push_str(&format!("{pad}    - {principal}\n"));
        }
    };
    let mut open: Vec<String> = auth::OPEN_PREFIXES.iter().map(|p| format!("prefix: {p}")).collect();
    open.extend([
        "exact: /".into(),
        "exact: /index.html".into(),
        format!("prefix: {}", gateway::site::PAGE_PREFIX),
        "exact: /fhir/metadata".into(),
    ]);
    policy("open", open, vec!["any: true".to_owned()]);
    // FHIR: any caller with a role gets through; the services check the
    // role each interaction needs (the FHIR routes map onto their rpcs).
    let role = |role: &str| {
        format!(
            "sourced_metadata: {{ metadata_matcher: {{ filter: envoy.filters.http.jwt_authn, \
             path: [{{ key: jwt_payload }}, {{ key: roles }}], \
             value: {{ list_match: {{ one_of: {{ string_match: {{ exact: {role} }} }} }} }} }} }}"
        )
    };
    policy("fhir", vec!["prefix: /fhir/".into()], Role::ALL.iter().map(|r| role(r.name())).collect());
    for (callers, methods) in groups {
        policy(
            &format!("callers-{}", callers.join("-")),
            methods.iter().map(|m| format!("exact: {m}")).collect(),
            callers
                .iter()
                .map(|role| {
                    format!(
                        "sourced_metadata: {{ metadata_matcher: {{ filter: envoy.filters.http.jwt_authn, \
                         path: [{{ key: jwt_payload }}, {{ key: roles }}], \
                         value: {{ list_match: {{ one_of: {{ string_match: {{ exact: {role} }} }} }} }} }} }}"
                    )
                })
                .collect(),
        );
    }
    out.trim_end().to_owned()
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

/// The compose variant with Keycloak as the identity provider
/// (`deploy/keycloak/`): Keycloak's issuer, its keys synced into the same
/// JWKS file.
pub const KEYCLOAK_FILE: &str = "envoy/envoy.keycloak.yaml";

/// The issuer of tokens of the example Keycloak realm, as containers see it.
pub const KEYCLOAK_ISSUER: &str = "http://keycloak:8080/realms/clinic";

/// Envoy's config in the Kubernetes base (`deploy/k8s/`), the source of its
/// ConfigMap: the compose variant, since a headless Service's name resolves
/// to every ready pod as a compose service's name does to its containers,
/// and the Secrets are mounted where the compose volume puts those files.
pub const KUBERNETES_FILE: &str = "deploy/k8s/base/envoy/envoy.yaml";

/// The committed variants (compose, compose with Keycloak, Kubernetes),
/// each with a header saying where it comes from: (file, contents).
pub fn render_compose() -> Result<Vec<(&'static str, String)>, MissingValue> {
    let header =
        "# GENERATED from envoy/envoy.yaml.tmpl by `clinic-dev envoy-config --compose`; do not edit.\n";
    let keycloak = Addresses {
        issuer_audience: (KEYCLOAK_ISSUER.into(), auth::DEFAULT_AUDIENCE.into()),
        ..Addresses::compose()
    };
    let sds = tls_sds(&format!("{COMPOSE_TLS_DIR}/server.pem"), &format!("{COMPOSE_TLS_DIR}/server-key.pem"));
    Ok(vec![
        (COMPOSE_FILE, format!("{header}{}", render(&Addresses::compose())?)),
        (KEYCLOAK_FILE, format!("{header}{}", render(&keycloak)?)),
        (KUBERNETES_FILE, format!("{header}{}", render(&Addresses::compose())?)),
        (TLS_SDS_FILE, format!("{header}{sds}")),
        (KUBERNETES_TLS_SDS_FILE, format!("{header}{sds}")),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collector_is_read_from_the_otlp_endpoint() {
        assert_eq!(collector_of("http://127.0.0.1:4317"), Some(("127.0.0.1".into(), 4317)));
        assert_eq!(collector_of("otel-collector:4317/"), Some(("otel-collector".into(), 4317)));
        assert_eq!(collector_of("http://collector"), None);
    }

    #[test]
    fn rendering_fills_every_placeholder() {
        let yaml = render(&Addresses::compose()).unwrap();
        assert!(!yaml.contains("${"));
        assert!(yaml.contains("port_value: 50052"));
        let ports = Ports { replicas: 2, ..Ports::default() };
        let sds = std::path::Path::new("/tmp/sds.yaml");
        let two = render(&Addresses::local(&ports, sds, std::path::Path::new("/dev/null"))).unwrap();
        assert!(two.contains("port_value: 50051") && two.contains("port_value: 50151"), "both replicas");
    }

    #[test]
    fn every_rpc_has_an_rbac_policy_for_exactly_the_roles_the_services_allow() {
        let policies = rbac_policies(0);
        for permission in auth::PERMISSIONS.iter() {
            let policy = policies
                .split("\ncallers-")
                .find(|p| p.contains(&format!("exact: {} ", permission.method)))
                .unwrap_or_else(|| panic!("no policy for {}", permission.method));
            for role in Role::ALL {
                let allowed = permission.roles.iter().any(|needed| role.grants(*needed));
                assert_eq!(
                    policy.contains(&format!("exact: {} }}", role.name())),
                    allowed,
                    "{role:?} on {}",
                    permission.method
                );
            }
        }
    }

    /// The committed compose files are exactly what the template renders to.
    #[test]
    fn the_committed_compose_configs_are_up_to_date() {
        for (file, rendered) in render_compose().unwrap() {
            let committed = std::fs::read_to_string(format!("{}/../{file}", env!("CARGO_MANIFEST_DIR")))
                .unwrap_or_else(|_| panic!("{file} exists; run `clinic-dev envoy-config --compose`"));
            assert_eq!(committed, rendered, "run `clinic-dev envoy-config --compose` to regenerate {file}");
        }
    }
}
