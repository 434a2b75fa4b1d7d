//! The `failover` scenario: two replicas of each service behind Envoy under
//! reads and writes, and one patients-service replica killed (SIGKILL) a
//! third of the way through. Reads must not fail (Envoy retries them on the
//! other replica); a write may fail only with a status the client may retry,
//! and retrying it with its `request_id` must leave exactly one patient.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use clinic_dev_keys::bearer::authed;
use clinic_devstack::stack;
use clinic_proto::patients::v1::{
    CreatePatientRequest, Patient, patient_service_client::PatientServiceClient,
};
use serde_json::json;
use sqlx::ConnectOptions;
use tonic::Code;

use crate::{
    Args,
    load::{self, Load},
    preload, stack_options,
};

/// Statuses after which a client may safely send the same create again
/// (with the same `request_id`).
const RETRYABLE: [Code; 4] =
    [Code::Unavailable, Code::ResourceExhausted, Code::Aborted, Code::DeadlineExceeded];

/// Envoy's counters of the patients cluster the report keeps.
const ENVOY_STATS: [&str; 9] = [
    "upstream_rq_retry",
    "upstream_rq_retry_success",
    "upstream_rq_retry_overflow",
    "upstream_rq_retry_limit_exceeded",
    "upstream_cx_none_healthy",
    "outlier_detection.ejections_enforced_total",
    "health_check.failure",
    "upstream_rq_503",
    "upstream_cx_connect_fail",
];

/// A create that failed: its request, to send again, and how it failed.
struct Failed {
    request: CreatePatientRequest,
    code: Code,
}

/// Runs the scenario on a fresh two-replica stack; returns its report.
pub async fn run(
    args: &Args,
    bin_dir: std::path::PathBuf,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let options = stack_options(args, "failover", bin_dir, 2, Vec::new())?;
    let (home, ports) = (options.home.clone(), options.ports);
    println!("\nstarting a stack with two replicas of each service (failover)...");
    let running = stack::start(options).await?;
    let result = measure(args, &running, ports.envoy, ports.envoy_admin).await;
    running.stop().await?;
    let _ = std::fs::remove_dir_all(&home);
    result
}

async fn measure(
    args: &Args,
    running: &stack::Running,
    envoy_port: u16,
    envoy_admin: u16,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let admin = running.database().admin_url();
    let n = args.patients.clamp(1, 10_000);
    preload(&admin, n).await?;
    let bearers = crate::auth::Bearers::mint(running.credentials(), args.concurrency)?;
    let envoy = load::connect(&format!("http://127.0.0.1:{envoy_port}"), args.connections).await?;
    let load = Load {
        concurrency: (args.concurrency / 2).max(1),
        duration: Duration::from_secs(args.seconds.max(3)),
        warmup: Duration::from_secs(1),
    };
    let victim = running.pid("patients-service-2").ok_or("no second patients-service replica")?;
    let kill_after = load.warmup + load.duration / 3;
    let started = Instant::now();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(kill_after).await;
        let _ = std::process::Command::new("kill").args(["-KILL", &victim.to_string()]).status();
        started.elapsed()
    });

    let read_bearers = bearers.clone();
    let reads = load::run("failover_reads", &envoy, load, move |channel, worker, seq| {
        load::get_patient(channel, read_bearers.of(worker), 1 + load::spread(worker, seq, n) as i64)
    });
    let failed = Arc::new(Mutex::new(Vec::<Failed>::new()));
    let run_id = rand::random::<u32>();
    let (write_bearers, write_failed) = (bearers.clone(), failed.clone());
    let writes = load::run("failover_writes", &envoy, load, move |channel, worker: usize, seq: u64| {
        let (bearer, failed) = (write_bearers.of(worker), write_failed.clone());
        async move {
            let request = CreatePatientRequest {
                patient: Some(Patient {
                    first_name: "Fail".into(),
                    last_name: "Over".into(),
                    birth_date: "1980-02-29".into(),
                    email: format!("failover-{run_id:x}-{worker}-{seq}@ejemplo.com"),
                    ..Default::default()
                }),
                request_id: format!("failover-{run_id:x}-{worker}-{seq}"),
                ..Default::default()
            };
            let result =
                PatientServiceClient::new(authed(channel, &bearer)).create_patient(request.clone()).await;
            result.map(|_| ()).inspect_err(|status| {
                failed.lock().expect("not poisoned").push(Failed { request, code: status.code() });
            })
        }
    });
    let (reads, writes) = tokio::join!(reads, writes);
    let killed_at = killer.await?;
    // What Envoy did about it: retries, ejections, health-check failures,
    // requests that found no healthy host.
    let envoy_stats: serde_json::Map<String, serde_json::Value> =
        crate::target::http_get(&format!("127.0.0.1:{envoy_admin}"), "/stats")
            .await
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split_once(": "))
            .filter_map(|(name, value)| Some((name.strip_prefix("cluster.patients.")?, value)))
            .filter(|(name, _)| ENVOY_STATS.contains(name))
            .map(|(name, value)| {
                (name.trim_start_matches("cluster.patients.").to_owned(), json!(value.trim()))
            })
            .collect();

    let failed = std::mem::take(&mut *failed.lock().expect("not poisoned"));
    let not_retryable = failed.iter().filter(|f| !RETRYABLE.contains(&f.code)).count();
    let mut client = PatientServiceClient::new(authed(envoy[0].clone(), &bearers.of(0)));
    let mut retried_ok = 0;
    for f in &failed {
        if client.create_patient(f.request.clone()).await.is_ok() {
            retried_ok += 1;
        }
    }
    let mut conn = admin.parse::<sqlx::postgres::PgConnectOptions>()?.connect().await?;
    let (stored, distinct): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct email) from patients.patient where email like 'failover-' || $1 || '-%'",
    )
    .bind(format!("{run_id:x}"))
    .fetch_one(&mut conn)
    .await?;
    let emails: Vec<String> =
        failed.iter().filter_map(|f| f.request.patient.as_ref().map(|p| p.email.clone())).collect();
    let failed_stored: i64 =
        sqlx::query_scalar("select count(*) from patients.patient where email = any($1)")
            .bind(&emails)
            .fetch_one(&mut conn)
            .await?;

    println!("envoy, cluster patients: {envoy_stats:?}");
    println!(
        "failover (patients-service-2 killed at {:.1} s of {:.1} s): reads {:.0} rps, p99 {:.2} ms, max {:.1} ms, errors {:?}; \
         writes {:.0} rps, errors {:?} ({} not retryable); retried {} of {} failed writes: {} succeeded; \
         {} stored, {} duplicates; failed writes stored after the retry: {}",
        killed_at.as_secs_f64(),
        (load.warmup + load.duration).as_secs_f64(),
        reads.rps,
        reads.p99_ms,
        reads.max_ms,
        reads.errors,
        writes.rps,
        writes.errors,
        not_retryable,
        failed.len(),
        failed.len(),
        retried_ok,
        stored,
        stored - distinct,
        failed_stored,
    );
    Ok(json!({
        "replicas": 2,
        "killed": "patients-service-2",
        "killed_at_s": killed_at.as_secs_f64(),
        "seconds": load.duration.as_secs(),
        "concurrency": {"reads": load.concurrency, "writes": load.concurrency},
        "reads": {"rps": reads.rps, "p50_ms": reads.p50_ms, "p99_ms": reads.p99_ms, "max_ms": reads.max_ms, "errors_by_code": reads.errors},
        "writes": {"rps": writes.rps, "p50_ms": writes.p50_ms, "p99_ms": writes.p99_ms, "max_ms": writes.max_ms, "errors_by_code": writes.errors},
        "failed_writes": failed.len(),
        "failed_writes_not_retryable": not_retryable,
        "failed_writes_retried_ok": retried_ok,
        "failed_writes_stored_after_retry": failed_stored,
        "duplicates": stored - distinct,
        "envoy_patients_cluster": envoy_stats,
    }))
}
