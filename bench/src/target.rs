//! Measuring a system that is already running (`make bench
//! TARGET=localhost:8080` against `make up`): what a user gets, with the
//! binaries and settings they run. Read-only: it creates nothing in the
//! user's database. With the database's URL it also runs pgbench's
//! primary-key SELECT on the same table, for the same ratio as the full run.

use std::{path::PathBuf, sync::Arc, time::Duration};

use clinic_dev_keys::bearer::authed;
use clinic_devstack::credentials::DevCredentials;
use clinic_pg_cluster::cluster::find_bin_dir;
use clinic_proto::patients::v1::{ListPatientsRequest, patient_service_client::PatientServiceClient};
use serde_json::json;

use crate::{
    Args, Row,
    load::{self, Load},
    pgbench, print_table,
    scenarios::listing_first_page,
};

/// Ids of up to `limit` existing patients, to spread GetPatient over.
async fn patient_ids(
    channel: tonic::transport::Channel,
    token: &str,
    limit: usize,
) -> Result<Vec<i64>, tonic::Status> {
    let mut client = PatientServiceClient::new(authed(channel, token));
    let (mut ids, mut page_token) = (Vec::new(), String::new());
    loop {
        let page = client
            .list_patients(ListPatientsRequest { page_size: 1000, page_token, ..Default::default() })
            .await?
            .into_inner();
        ids.extend(page.patients.iter().map(|p| p.id));
        if page.next_page_token.is_empty() || ids.len() >= limit {
            return Ok(ids);
        }
        page_token = page.next_page_token;
    }
}

/// The response (head and body) to a plain HTTP/1.1 GET of `path` at
/// `addr` (host:port), if it answers.
pub async fn http_get(addr: &str, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, port) = addr.rsplit_once(':')?;
    let mut stream = tokio::net::TcpStream::connect((host, port.parse::<u16>().ok()?)).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await.ok()?;
    Some(body)
}

/// The `clinic_build_info` labels a service reports on its metrics
/// endpoint (`version`, `profile`), if it answers.
pub async fn build_info(metrics: &str) -> Option<serde_json::Value> {
    let body = http_get(metrics, "/metrics").await?;
    let line = body.lines().find(|l| l.starts_with("clinic_build_info{"))?;
    let labels = line.split_once('{')?.1.split_once('}')?.0;
    let map: serde_json::Map<String, serde_json::Value> = labels
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), json!(v.trim_matches('"'))))
        .collect();
    Some(serde_json::Value::Object(map))
}

/// Runs the read scenarios against `target` and reports them.
pub async fn run(args: &Args, target: &str) -> Result<(), Box<dyn std::error::Error>> {
    // One identity per worker (a caller's share of a replica is
    // MAX_IN_FLIGHT_PER_CALLER calls), minted with `make up`'s key; a TOKEN
    // given is one identity, so keep the concurrency within its share.
    let tokens: Vec<Arc<str>> = match std::env::var("TOKEN").ok().filter(|t| !t.is_empty()) {
        Some(token) => vec![token.into()],
        None => {
            let credentials =
                DevCredentials::ensure(&args.clinic_home, clinic_devstack::credentials::Owners::default())?;
            crate::auth::token_pool(&credentials, args.concurrency.max(1))?
        }
    };
    let tokens: Arc<[Arc<str>]> = tokens.into();
    let token_of = move |worker: usize| tokens[worker % tokens.len()].clone();
    let token = token_of(0);
    let uri = if target.contains("://") { target.to_owned() } else { format!("http://{target}") };
    let channels = load::connect(&uri, args.connections).await?;
    let ids: Arc<[i64]> = patient_ids(channels[0].clone(), &token, 10_000).await?.into();
    if ids.is_empty() {
        return Err("the target holds no patients to read".into());
    }
    let build = build_info(&args.target_metrics).await;
    println!(
        "measuring {target} ({} patients sampled; build {}), {} s per scenario, {} in flight over {} connections...",
        ids.len(),
        build.as_ref().map_or_else(|| "unknown: no metrics answered".to_owned(), |b| b.to_string()),
        args.seconds,
        args.concurrency,
        args.connections
    );
    let load = Load {
        concurrency: args.concurrency,
        duration: Duration::from_secs(args.seconds),
        warmup: Duration::from_secs(1).min(Duration::from_secs(args.seconds)),
    };
    let (get_token, get_ids) = (token_of.clone(), ids.clone());
    let get = load::run("get_patient", &channels, load, move |channel, worker, seq| {
        let id = get_ids[load::spread(worker, seq, get_ids.len() as u64) as usize];
        load::get_patient(channel, get_token(worker), id)
    })
    .await;
    let list_token = token_of.clone();
    let list = load::run("list_patients", &channels, load, move |channel, worker, _| {
        let token = list_token(worker);
        async move {
            PatientServiceClient::new(authed(channel, &token))
                .list_patients(ListPatientsRequest { page_size: 50, ..Default::default() })
                .await
                .map(|_| ())
        }
    })
    .await;
    let listing_token = token_of.clone();
    let listing = load::run("list_patients_with_studies", &channels, load, move |channel, worker, _| {
        listing_first_page(channel, listing_token(worker), "")
    })
    .await;
    let max_id = ids.iter().copied().max().unwrap_or(1) as u64;
    let select = match &args.target_database_url {
        Some(url) => {
            let work = std::env::temp_dir();
            Some(pgbench::run(
                &find_bin_dir()?,
                url,
                pgbench::Script::Select,
                max_id,
                args.concurrency,
                load.duration,
                &work,
            )?)
        }
        None => None,
    };
    let rows = vec![
        Row { outcome: get.clone(), baseline: select.map(|s| ("pgbench_select", s)), target: "" },
        Row { outcome: list.clone(), baseline: None, target: "" },
        Row { outcome: listing.clone(), baseline: Some(("list_patients", list.rps)), target: "" },
    ];
    let pg: Vec<(&str, f64)> = select.iter().map(|s| ("pgbench_select", *s)).collect();
    print_table(&rows, &pg);
    let report = json!({
        "target": target,
        "build": build,
        "pgbench_select": select,
        "scenarios": rows.iter().map(|r| json!({
            "name": r.outcome.name, "rps": r.outcome.rps, "p50_ms": r.outcome.p50_ms, "p90_ms": r.outcome.p90_ms,
            "p99_ms": r.outcome.p99_ms, "max_ms": r.outcome.max_ms, "errors_by_code": r.outcome.errors,
            "baseline": r.baseline.map(|(b, _)| b), "ratio": r.baseline.map(|(_, rps)| r.outcome.rps / rps),
        })).collect::<Vec<_>>(),
        "settings": {"seconds": args.seconds, "concurrency": args.concurrency, "connections": args.connections},
    });
    let out: PathBuf = args.out.with_file_name("target.json");
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)?;
    println!("\nreport: {}", out.display());
    Ok(())
}
