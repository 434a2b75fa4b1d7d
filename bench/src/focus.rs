//! `BENCH_ONLY=get_patient`: GetPatient alone — Clinic direct and through
//! its Envoy, the three ceilings, and Envoy's levers (`levers`) — run in
//! interleaved rounds, each scenario's median reported with the cores each
//! process spent per call.
//! One 10 s run on two shared cores moves by ±15%; the median of several
//! interleaved rounds is what a change is judged by.

use std::collections::BTreeMap;

use serde_json::json;
use tonic::transport::Channel;

use crate::{
    ceiling, levers,
    load::{self, Outcome},
    scenarios::Scenarios,
};

/// The scenarios of a round, in the order they run.
const NAMES: [&str; 5] = [
    "get_patient_direct",
    "get_patient_envoy",
    "bare_tonic_sqlx",
    "bare_behind_router_only_envoy",
    "bare_without_database",
];

/// One scenario's run: its outcome and the cores each process used.
type Run = (Outcome, BTreeMap<String, f64>);

/// Where the stack's own Envoy is: its channels, its rendered config and
/// the ports of its listeners and admin (see [`levers::run`]).
pub struct ShippedEnvoy<'a> {
    /// Connections through it.
    pub channels: &'a [Channel],
    /// Its config file.
    pub config: &'a std::path::Path,
    /// Its plaintext, TLS and admin ports.
    pub ports: [u16; 3],
}

/// Runs `rounds` rounds of the five scenarios and the levers; Clinic is
/// reached directly through `scenarios` and through `envoy`; `admin` is the
/// database the bare server reads, `home` the folder for the extra Envoys'
/// files.
pub async fn run(
    scenarios: &mut Scenarios,
    envoy: ShippedEnvoy<'_>,
    admin: &str,
    envoy_bin: &std::path::Path,
    home: &std::path::Path,
    rounds: usize,
    connections: usize,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let bare = ceiling::start(Some(admin)).await?;
    let free = clinic_pg_cluster::cluster::free_port;
    let router_only = ceiling::router_only_envoy(envoy_bin, home, free()?, free()?, bare.port).await?;
    let no_db = ceiling::start(None).await?;
    scenarios.processes.extend([
        ("ceiling server", bare.pid()),
        ("router-only envoy", router_only.pid()),
        ("ceiling server (no database)", no_db.pid()),
    ]);
    let url = |port: u16| format!("http://127.0.0.1:{port}");
    let channels: [Vec<Channel>; 5] = [
        scenarios.direct.clone(),
        envoy.channels.to_vec(),
        load::connect(&url(bare.port), connections).await?,
        load::connect(&url(router_only.port), connections).await?,
        load::connect(&url(no_db.port), connections).await?,
    ];
    let mut runs: BTreeMap<&str, Vec<Run>> = BTreeMap::new();
    for round in 1..=rounds {
        println!("round {round} of {rounds}");
        for (name, channels) in NAMES.iter().zip(&channels) {
            let outcome = scenarios.get_patient(name, channels, scenarios.load).await;
            let cores = scenarios.cpu.last().map(|(_, c)| c.clone()).unwrap_or_default();
            println!(
                "  {name:<32} {:>8.0} rps  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}",
                outcome.rps,
                outcome.p50_ms,
                outcome.p99_ms,
                outcome.error_count()
            );
            runs.entry(name).or_default().push((outcome, cores));
        }
        for lever in levers::run(scenarios, envoy_bin, home, envoy.config, envoy.ports, connections).await? {
            let cores = scenarios.cpu.last().map(|(_, c)| c.clone()).unwrap_or_default();
            println!("  {:<32} {:>8.0} rps  ({})", lever.outcome.name, lever.outcome.rps, lever.what);
            runs.entry(lever.name).or_default().push((lever.outcome, cores));
        }
    }
    let median = |name: &str| -> (f64, &BTreeMap<String, f64>, &Outcome) {
        let mut all: Vec<&Run> = runs[name].iter().collect();
        all.sort_by(|a, b| a.0.rps.total_cmp(&b.0.rps));
        let middle = all[all.len() / 2];
        (middle.0.rps, &middle.1, &middle.0)
    };
    let bare_rps = median("bare_tonic_sqlx").0;
    let router_rps = median("bare_behind_router_only_envoy").0;
    println!("\nmedians of {rounds} rounds; µs of CPU per call by process (cores ÷ rps):");
    let mut report = serde_json::Map::new();
    let shipped = median("envoy_as_shipped").0;
    for name in NAMES.into_iter().chain(levers::names()) {
        let (rps, cores, outcome) = median(name);
        let per_call: BTreeMap<&String, f64> = cores
            .iter()
            .filter(|(_, c)| **c >= 0.01)
            .map(|(group, c)| (group, (c / rps.max(f64::EPSILON) * 1e6).round()))
            .collect();
        println!(
            "  {name:<32} {rps:>8.0} rps  /bare {:>5.2}  /bare+router {:>5.2}  p99/p50 {:>4.1}  µs/call {per_call:?}",
            rps / bare_rps.max(f64::EPSILON),
            rps / router_rps.max(f64::EPSILON),
            outcome.p99_ms / outcome.p50_ms.max(f64::EPSILON),
        );
        report.insert(
            name.to_owned(),
            json!({
                "over_envoy_as_shipped": rps / shipped.max(f64::EPSILON),
                "median_rps": rps,
                "all_rps": runs[name].iter().map(|(o, _)| o.rps).collect::<Vec<_>>(),
                "p50_ms": outcome.p50_ms,
                "p99_ms": outcome.p99_ms,
                "over_bare_tonic_sqlx": rps / bare_rps.max(f64::EPSILON),
                "over_bare_behind_router_only_envoy": rps / router_rps.max(f64::EPSILON),
                "cpu_us_per_call": per_call,
            }),
        );
    }
    Ok(json!({ "rounds": rounds, "scenarios": report }))
}
