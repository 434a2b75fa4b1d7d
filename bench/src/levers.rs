//! Envoy's costs one lever at a time: the stack's own rendered Envoy config
//! run again on ports of its own — as shipped, and with one thing changed
//! each — in front of the same services, GetPatient through each, in the
//! same run.

use std::{path::Path, process::Stdio, time::Duration};

use tonic::transport::Channel;

use crate::{
    load::{self, Outcome},
    scenarios::Scenarios,
};

/// One variant: its name, what it changes, and the change.
struct Variant {
    name: &'static str,
    what: &'static str,
    edit: fn(&str) -> String,
}

/// `text` without the lines from the first holding `start` up to (not
/// including) the next holding `end`.
fn without_block(text: &str, start: &str, end: &str) -> String {
    let mut out = Vec::new();
    let mut skipping = false;
    for line in text.lines() {
        if !skipping && line.contains(start) {
            skipping = true;
            continue;
        }
        if skipping && line.contains(end) {
            skipping = false;
        }
        if !skipping {
            out.push(line);
        }
    }
    out.join("\n")
}

const VARIANTS: &[Variant] = &[
    Variant { name: "envoy_as_shipped", what: "the config `make up` runs", edit: |t| t.to_owned() },
    Variant {
        name: "envoy_without_grpc_routes",
        what: "every filter on plain gRPC too (before the gRPC-only routes)",
        edit: |t| {
            let t = without_block(t, "typed_per_filter_config: &grpc_only", "- match:");
            t.lines()
                .filter(|l| !l.contains("typed_per_filter_config: *grpc_only"))
                .collect::<Vec<_>>()
                .join("\n")
        },
    },
    Variant {
        name: "envoy_without_access_log",
        what: "no access log line per request",
        edit: |t| without_block(t, "access_log:", "route_config:"),
    },
    Variant {
        name: "envoy_without_request_id",
        what: "no x-request-id made per request",
        edit: |t| t.replace("generate_request_id: true", "generate_request_id: false"),
    },
    Variant {
        name: "envoy_without_rbac",
        what: "no RBAC (not shippable: shows its cost)",
        edit: |t| without_block(t, "- name: envoy.filters.http.rbac", "- name: envoy.filters.http.router"),
    },
    Variant {
        name: "envoy_without_jwt_and_rbac",
        what: "no token check at the edge (not shippable: shows its cost)",
        edit: |t| {
            without_block(t, "- name: envoy.filters.http.jwt_authn", "- name: envoy.filters.http.router")
        },
    },
];

/// Every variant's scenario name, in the order they run.
pub fn names() -> impl Iterator<Item = &'static str> {
    VARIANTS.iter().map(|v| v.name)
}

/// The shipped config with its listeners and admin on new ports.
fn on_ports(config: &str, from: [u16; 3], to: [u16; 3]) -> String {
    let mut out = config.to_owned();
    for (old, new) in from.iter().zip(to) {
        out = out.replace(&format!("port_value: {old} "), &format!("port_value: {new} "));
        out = out.replace(&format!("port_value: {old}}}"), &format!("port_value: {new}}}"));
    }
    out
}

/// A lever's measurement.
pub struct Lever {
    /// Its scenario's name.
    pub name: &'static str,
    /// What it changes.
    pub what: &'static str,
    /// GetPatient through it.
    pub outcome: Outcome,
}

/// Runs GetPatient through each variant of the stack's Envoy config
/// (`config`, whose listeners and admin are on `ports`), started with `bin`.
pub async fn run(
    scenarios: &mut Scenarios,
    bin: &Path,
    dir: &Path,
    config: &Path,
    ports: [u16; 3],
    connections: usize,
) -> Result<Vec<Lever>, Box<dyn std::error::Error>> {
    let shipped = std::fs::read_to_string(config)?;
    let mut levers = Vec::new();
    for variant in VARIANTS {
        let new_ports = [
            clinic_pg_cluster::cluster::free_port()?,
            clinic_pg_cluster::cluster::free_port()?,
            clinic_pg_cluster::cluster::free_port()?,
        ];
        let text = on_ports(&(variant.edit)(&shipped), ports, new_ports);
        let file = dir.join(format!("{}.yaml", variant.name));
        std::fs::write(&file, text)?;
        let log = std::fs::File::create(dir.join(format!("{}.log", variant.name)))?;
        let mut child = tokio::process::Command::new(bin)
            .args(["-c", &file.display().to_string(), "--disable-hot-restart", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let mut listening = false;
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", new_ports[0])).await.is_ok() {
                listening = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !listening {
            let _ = child.start_kill();
            return Err(format!("{} did not listen; see {}", variant.name, dir.display()).into());
        }
        scenarios.processes.push(("envoy variant", child.id()));
        let channels: Vec<Channel> =
            load::connect(&format!("http://127.0.0.1:{}", new_ports[0]), connections).await?;
        let load = scenarios.load;
        let outcome = scenarios.get_patient(variant.name, &channels, load).await;
        let _ = child.start_kill();
        let _ = child.wait().await;
        levers.push(Lever { name: variant.name, what: variant.what, outcome });
    }
    Ok(levers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_goes_up_to_the_next_marker() {
        let text = "a\n  access_log:\n    - x\n  route_config:\n    b";
        assert_eq!(without_block(text, "access_log:", "route_config:"), "a\n  route_config:\n    b");
    }
}
