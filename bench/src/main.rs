//! `clinic-bench`: starts a fresh throwaway Clinic stack, preloads it, drives
//! each scenario at a fixed concurrency, measures pgbench on the same tables in
//! the same run, and writes `target/bench/report.json` plus a table.
//!
//! # Layout
//! - this file: the scenarios, the report and its table.
//! - `scenarios`: each scenario of the main run, one function each.
//! - `clinic-loadgen` (`loadgen/`): the instruments — the load generator,
//!   the CPU each process used, pgbench as the physical baseline.
//! - `auth`: what identity and the audit trail cost.
//! - `failover`: a replica killed under load behind Envoy.
//! - `feed`: watchers of the change feed while writers run at full speed.
//! - `target`: measuring a stack that is already running.
//! - `focus`: GetPatient and its ceilings alone, in rounds (`BENCH_ONLY`).
//! - `health`, `tracing_sink`: health flaps seen, and the span sink of the
//!   traced run.

mod auth;
mod ceiling;
mod failover;
mod feed;
mod fhir;
mod focus;
mod health;
mod levers;
mod scenarios;
mod target;
mod tracing_sink;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use clap::Parser;
use clinic_devstack::{
    ports::Ports,
    stack::{self, UpOptions},
};
use clinic_loadgen::{cpu, load, pgbench};
use clinic_pg_cluster::cluster::{find_bin_dir, free_port};

use clinic_telemetry::{LOG_FILTER_ARG, LogSettings};
use load::{Load, Outcome};
use scenarios::{Scenarios, deep_token, listing_first_page};
use serde_json::json;
use sqlx::ConnectOptions;

/// Load-tests a fresh Clinic stack against a pgbench baseline.
#[derive(Debug, Parser)]
#[command(name = "clinic-bench")]
#[command(mut_arg(LOG_FILTER_ARG, |a| a.default_value("warn")))]
struct Args {
    #[command(flatten)]
    log: LogSettings,
    /// Measured seconds per scenario.
    #[arg(long, env = "BENCH_SECONDS", default_value_t = 10)]
    seconds: u64,
    /// Patients to preload (each with two studies); 1000000 for the big variant.
    #[arg(long, env = "BENCH_PATIENTS", default_value_t = 10_000)]
    patients: u64,
    /// Requests in flight.
    #[arg(long, env = "BENCH_CONCURRENCY", default_value_t = 32)]
    concurrency: usize,
    /// Measured seconds of the overload scenario (4× the concurrency).
    #[arg(long, env = "BENCH_OVERLOAD_SECONDS", default_value_t = 30)]
    overload_seconds: u64,
    /// HTTP/2 connections per target.
    #[arg(long, env = "BENCH_CONNECTIONS", default_value_t = 4)]
    connections: usize,
    /// Where to write the JSON report.
    #[arg(long, env = "BENCH_REPORT", default_value = "target/bench/report.json")]
    out: PathBuf,
    /// The Envoy binary.
    #[arg(long, env = "ENVOY_BIN", default_value = ".local/venv/bin/envoy")]
    envoy_bin: PathBuf,
    /// Measure this running system (Envoy's host:port, e.g. `make up`'s
    /// localhost:8080) instead of starting a fresh stack: read scenarios
    /// only, nothing is written.
    #[arg(long, env = "BENCH_TARGET")]
    target: Option<String>,
    /// With --target: a service's metrics address, where the build profile
    /// of what runs is read (`clinic_build_info`).
    #[arg(long, env = "BENCH_TARGET_METRICS", default_value = "127.0.0.1:9464")]
    target_metrics: String,
    /// With --target: a PostgreSQL URL of the target's database (as `make up`
    /// prints it), for pgbench's baseline on the same table.
    #[arg(long, env = "BENCH_DATABASE_URL")]
    target_database_url: Option<String>,
    /// With --target and no TOKEN: the folder of `make up`'s development key,
    /// to sign an admin token with.
    #[arg(long, env = "CLINIC_HOME", default_value = ".local")]
    clinic_home: PathBuf,
    /// Run only the failover scenario (report: failover.json next to --out).
    #[arg(long, env = "BENCH_ONLY_FAILOVER")]
    only_failover: bool,
    /// Run only `get_patient`: GetPatient direct and through Envoy, its
    /// three ceilings and Envoy's levers, in interleaved rounds (report:
    /// get_patient.json next to --out).
    #[arg(long, env = "BENCH_ONLY", value_parser = ["get_patient"])]
    only: Option<String>,
    /// Rounds of `--only get_patient`; each scenario's median is reported.
    #[arg(long, env = "BENCH_ROUNDS", default_value_t = 3)]
    rounds: usize,
    /// Share of traces sampled in the traced run.
    #[arg(long, env = "BENCH_TRACE_RATIO", default_value_t = 0.1)]
    trace_ratio: f64,
}

fn rss_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix(field)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

async fn preload(admin: &str, patients: u64) -> Result<(), sqlx::Error> {
    let mut conn = admin.parse::<sqlx::postgres::PgConnectOptions>()?.connect().await?;
    // 50 surnames and 20 first names (ASCII, so lower() is their exact
    // search key), birth dates over 55 years; two studies per patient of
    // varying urgency, so about two patients in three have a HIGH one.
    sqlx::query(
        "insert into patients.patient (first_name, last_name, birth_date, email, \
           first_name_key, last_name_key, email_key, search_version) \
         select f, l, date '1950-01-01' + (g % 20000)::int, 'bench' || g || '@ejemplo.com', lower(f), lower(l), \
           'bench' || g || '@ejemplo.com', 1 \
         from generate_series(1, $1) g, \
         lateral (select (array['Ana','Luis','Eva','Jose','Marta','Pablo','Lucia','Diego','Sara','Hugo', \
                                'Elena','Ivan','Nora','Raul','Irene','Oscar','Julia','Mario','Alba','Tomas'])[1 + g % 20] as f, \
                         (array['Garcia','Rodriguez','Gonzalez','Fernandez','Lopez','Martinez','Sanchez','Perez', \
                                'Gomez','Martin','Jimenez','Ruiz','Hernandez','Diaz','Moreno','Munoz','Alvarez','Romero', \
                                'Alonso','Gutierrez','Navarro','Torres','Dominguez','Vazquez','Ramos','Gil','Ramirez', \
                                'Serrano','Blanco','Molina','Morales','Suarez','Ortega','Delgado','Castro','Ortiz', \
                                'Rubio','Marin','Sanz','Nunez','Iglesias','Medina','Garrido','Cortes','Castillo', \
                                'Santos','Lozano','Guerrero','Cano','Trevino'])[1 + (g * 7) % 50] as l) names",
    )
    .bind(patients as i64)
    .execute(&mut conn)
    .await?;
    sqlx::query(
        "insert into studies.study (patient_id, urgency_level, body_part, description, study_type) \
         select p.id, (array['LOW','MID','HIGH'])[1 + (p.id + n) % 3], 'CHEST', 'NO FINDINGS', 'XRAY' \
         from patients.patient p, generate_series(1, 2) n",
    )
    .execute(&mut conn)
    .await?;
    for table in ["vacuum analyze patients.patient", "vacuum analyze studies.study"] {
        sqlx::raw_sql(table).execute(&mut conn).await?;
    }
    Ok(())
}

/// One scenario's line of the report: what it measured, what it is
/// compared with (name and rps), and the target.
struct Row {
    outcome: Outcome,
    baseline: Option<(&'static str, f64)>,
    target: &'static str,
}

/// The rates every GetPatient scenario is measured against, from the same
/// run: pgbench's primary-key SELECT and the three ceiling servers.
struct Ceilings {
    pgbench_select: f64,
    bare: f64,
    bare_router_only_envoy: f64,
    bare_without_database: f64,
}

impl Ceilings {
    /// Each of `scenarios` (with its target) over every ceiling.
    fn print(&self, scenarios: &[(&Outcome, &str)]) {
        println!(
            "\nGetPatient over its ceilings: {:<20} {:>10} {:>12} {:>14} {:>14}  target",
            "", "/pgbench", "/bare", "/bare+router", "/bare no db"
        );
        for (o, target) in scenarios {
            println!(
                "  {:<48} {:>10.2} {:>12.2} {:>14.2} {:>14.2}  {target}",
                o.name,
                o.rps / self.pgbench_select.max(f64::EPSILON),
                o.rps / self.bare.max(f64::EPSILON),
                o.rps / self.bare_router_only_envoy.max(f64::EPSILON),
                o.rps / self.bare_without_database.max(f64::EPSILON),
            );
        }
    }

    fn report(&self, scenarios: &[&Outcome]) -> serde_json::Value {
        let ratios: serde_json::Map<String, serde_json::Value> = scenarios
            .iter()
            .map(|o| {
                (
                    o.name.clone(),
                    json!({
                        "over_pgbench_select": o.rps / self.pgbench_select.max(f64::EPSILON),
                        "over_bare_tonic_sqlx": o.rps / self.bare.max(f64::EPSILON),
                        "over_bare_behind_router_only_envoy": o.rps / self.bare_router_only_envoy.max(f64::EPSILON),
                        "over_bare_without_database": o.rps / self.bare_without_database.max(f64::EPSILON),
                    }),
                )
            })
            .collect();
        json!({
            "bare_tonic_sqlx_rps": self.bare,
            "bare_behind_router_only_envoy_rps": self.bare_router_only_envoy,
            "bare_without_database_rps": self.bare_without_database,
            "ratios": ratios,
        })
    }
}

fn print_table(rows: &[Row], pg: &[(&str, f64)]) {
    println!();
    println!(
        "{:<28} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7}  {:<16} {:>6}  target",
        "scenario", "rps", "p50 ms", "p90 ms", "p99 ms", "max ms", "errors", "baseline", "ratio"
    );
    for (name, tps) in pg {
        println!("{name:<28} {tps:>10.0}");
    }
    for Row { outcome: o, baseline, target } in rows {
        let (base, ratio) = baseline
            .map_or((String::new(), String::new()), |(b, rps)| (b.to_owned(), format!("{:.2}", o.rps / rps)));
        println!(
            "{:<28} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>7}  {:<16} {:>6}  {}",
            o.name,
            o.rps,
            o.p50_ms,
            o.p90_ms,
            o.p99_ms,
            o.max_ms,
            o.error_count(),
            base,
            ratio,
            target
        );
    }
}

/// A fresh stack's options: its own home folder (named after `label`) and
/// free ports, `replicas` of each service, the release binaries in `bin_dir`.
fn stack_options(
    args: &Args,
    label: &str,
    bin_dir: PathBuf,
    replicas: u16,
    extra_env: Vec<(&'static str, String)>,
) -> std::io::Result<UpOptions> {
    let home = std::env::temp_dir().join(format!(
        "clinic-bench-{label}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&home)?;
    // Replica k listens on the first replica's ports + 100·(k−1): keep
    // clear of the 16-bit limit.
    let port = || loop {
        let port = free_port()?;
        if port < 60_000 {
            return Ok::<u16, std::io::Error>(port);
        }
    };
    let ports = Ports {
        envoy: port()?,
        envoy_tls: port()?,
        envoy_admin: port()?,
        patients: port()?,
        studies: port()?,
        gateway: port()?,
        fhir: port()?,
        metrics: [port()?, port()?, port()?, port()?],
        replicas,
    };
    Ok(UpOptions {
        home,
        ports,
        database_url: None,
        bin_dir,
        envoy_bin: args.envoy_bin.clone(),
        sample_data: PathBuf::from("data"),
        restart_delay: Duration::from_secs(1),
        ready_timeout: Duration::from_secs(120),
        web_root: None,
        cors_origins: Vec::new(),
        prometheus: None,
        extra_env,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let _telemetry = clinic_telemetry::init(&args.log, "clinic-bench");
    if let Some(target) = &args.target {
        return target::run(&args, target).await;
    }
    if args.only_failover {
        let bin_dir = std::env::current_exe()?.parent().map(PathBuf::from).unwrap_or_default();
        let report = failover::run(&args, bin_dir).await?;
        std::fs::write(args.out.with_file_name("failover.json"), serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    let bin_dir = std::env::current_exe()?.parent().map(PathBuf::from).unwrap_or_default();
    let options = stack_options(&args, "main", bin_dir.clone(), 1, Vec::new())?;
    let (home, ports) = (options.home.clone(), options.ports);
    println!("starting a fresh stack ({})...", options.bin_dir.display());
    let running = stack::start(options).await?;
    if args.only.is_some() {
        let rounds = get_patient_rounds(&args, &running, ports, &home).await;
        running.stop().await?;
        let _ = std::fs::remove_dir_all(&home);
        let out = args.out.with_file_name("get_patient.json");
        std::fs::create_dir_all(out.parent().unwrap_or(&home))?;
        std::fs::write(&out, serde_json::to_string_pretty(&rounds?)?)?;
        println!("\nreport: {}", out.display());
        return Ok(());
    }
    let measured = measure(&args, &running, ports, &home).await;
    running.stop().await?;
    let _ = std::fs::remove_dir_all(&home);
    let mut measured = measured?;
    let traced = traced(&args, bin_dir.clone(), args.trace_ratio, &measured).await?;
    measured.report["tracing"] = traced;
    measured.report["failover"] = failover::run(&args, bin_dir).await?;
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&measured.report)?)?;
    println!("\nreport: {}", args.out.display());
    Ok(())
}

/// The load every scenario runs at.
fn load_of(args: &Args) -> Load {
    Load {
        concurrency: args.concurrency,
        duration: Duration::from_secs(args.seconds),
        warmup: Duration::from_secs(1).min(Duration::from_secs(args.seconds)),
    }
}

/// `--only get_patient`: the preloaded stack's GetPatient and its ceilings
/// in rounds ([`focus`]).
async fn get_patient_rounds(
    args: &Args,
    running: &stack::Running,
    ports: Ports,
    home: &std::path::Path,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let admin = running.database().admin_url();
    preload(&admin, args.patients).await?;
    let channels = load::connect(&format!("http://127.0.0.1:{}", ports.envoy), args.connections).await?;
    let config = home.join("envoy.yaml");
    let envoy = focus::ShippedEnvoy {
        channels: &channels,
        config: &config,
        ports: [ports.envoy, ports.envoy_tls, ports.envoy_admin],
    };
    let mut scenarios = Scenarios {
        load: load_of(args),
        direct: load::connect(&format!("http://127.0.0.1:{}", ports.patients), args.connections).await?,
        bearers: auth::Bearers::mint(running.credentials(), args.concurrency * 4)?,
        patients: args.patients.max(1),
        processes: ["patients-service", "envoy"].iter().map(|s| (*s, running.pid(s))).collect(),
        cpu: Vec::new(),
    };
    focus::run(&mut scenarios, envoy, &admin, &args.envoy_bin, home, args.rounds.max(1), args.connections)
        .await
}

async fn measure(
    args: &Args,
    running: &stack::Running,
    ports: Ports,
    home: &std::path::Path,
) -> Result<Measured, Box<dyn std::error::Error>> {
    let admin = running.database().admin_url();
    let started = Instant::now();
    preload(&admin, args.patients).await?;
    println!(
        "preloaded {} patients with 2 studies each in {:.1}s",
        args.patients,
        started.elapsed().as_secs_f64()
    );
    let services = ["patients-service", "studies-service", "gateway", "fhir"];
    let idle: Vec<u64> =
        services.iter().map(|s| running.pid(s).and_then(|p| rss_kib(p, "VmRSS:")).unwrap_or(0)).collect();

    let load = load_of(args);
    let direct = load::connect(&format!("http://127.0.0.1:{}", ports.patients), args.connections).await?;
    let envoy = load::connect(&format!("http://127.0.0.1:{}", ports.envoy), args.connections).await?;
    let n = args.patients.max(1);
    // One identity per worker, as many users call a clinic: a caller's share
    // of a service is MAX_IN_FLIGHT_PER_CALLER calls at once.
    let bearers = auth::Bearers::mint(running.credentials(), args.concurrency * 4)?;
    let token = deep_token(direct[0].clone(), &bearers.of(0), n).await?;
    let verification = auth::verification_cost(running.credentials())?;
    println!(
        "token verification: {:.1} µs with a signature check, {:.2} µs from the cache",
        verification.uncached_us, verification.cached_us
    );
    let mut scenarios = Scenarios {
        load,
        direct: direct.clone(),
        bearers,
        patients: n,
        processes: ["patients-service", "studies-service", "gateway", "fhir", "envoy"]
            .iter()
            .map(|s| (*s, running.pid(s)))
            .collect(),
        cpu: Vec::new(),
    };
    println!(
        "running scenarios, {} s each, {} in flight over {} connections...",
        args.seconds, args.concurrency, args.connections
    );
    let audit_before = auth::audit_writes(&admin).await?;
    let get_direct = scenarios.get_patient("get_patient_direct", &direct, load).await;
    let audit_after = auth::audit_writes(&admin).await?;
    let audited = audit_after.since(&audit_before);
    println!(
        "audited reads: {} events in {} insert transactions ({:.1} events per transaction)",
        audited.events,
        audited.transactions,
        audited.events as f64 / audited.transactions.max(1) as f64
    );
    // More distinct tokens than the verifier caches (10,000), so each call
    // pays a signature check; fewer for seconds-long smoke runs.
    let fresh_tokens =
        auth::token_pool(running.credentials(), (2_000 * args.seconds as usize).clamp(2_000, 15_000))?;
    let get_fresh = scenarios.get_patient_new_tokens(fresh_tokens).await;
    let get_envoy = scenarios.get_patient("get_patient_envoy", &envoy, load).await;
    // The ceilings, right after the scenarios they bound, on the same table.
    let bare = ceiling::start(Some(&admin)).await?;
    scenarios.processes.push(("ceiling server", bare.pid()));
    let bare_direct_channels =
        load::connect(&format!("http://127.0.0.1:{}", bare.port), args.connections).await?;
    let bare_direct = scenarios.get_patient("bare_tonic_sqlx", &bare_direct_channels, load).await;
    let router_only =
        ceiling::router_only_envoy(&args.envoy_bin, home, free_port()?, free_port()?, bare.port).await?;
    scenarios.processes.push(("router-only envoy", router_only.pid()));
    let bare_envoy_channels =
        load::connect(&format!("http://127.0.0.1:{}", router_only.port), args.connections).await?;
    let bare_envoy = scenarios.get_patient("bare_behind_router_only_envoy", &bare_envoy_channels, load).await;
    drop((router_only, bare));
    let no_db = ceiling::start(None).await?;
    scenarios.processes.push(("ceiling server", no_db.pid()));
    let no_db_channels = load::connect(&format!("http://127.0.0.1:{}", no_db.port), args.connections).await?;
    let bare_no_db = scenarios.get_patient("bare_without_database", &no_db_channels, load).await;
    drop(no_db);
    let envoy_levers = levers::run(
        &mut scenarios,
        &args.envoy_bin,
        home,
        &home.join("envoy.yaml"),
        [ports.envoy, ports.envoy_tls, ports.envoy_admin],
        args.connections,
    )
    .await?;
    let fhir_read = fhir::read(&mut scenarios, &envoy, ports.envoy).await;
    let watchers = health::watch(&[ports.patients, ports.studies, ports.gateway]);
    let overload_load = Load {
        concurrency: args.concurrency * 4,
        duration: Duration::from_secs(args.overload_seconds.min(args.seconds.max(1) * 3).max(1)),
        ..load
    };
    let overload = scenarios.get_patient("overload", &envoy, overload_load).await;
    let not_serving = watchers.stop().await;
    let list_first = scenarios.list_patients("list_patients", "", "", String::new()).await;
    let deep = scenarios.list_patients("list_patients_deep_page", "", "", token).await;
    let listing = scenarios.listing("list_patients_with_studies", &envoy, "").await;
    let name_prefix =
        scenarios.list_patients("search_name_prefix", r#"last_name = "gar*""#, "", String::new()).await;
    let birth_range = scenarios
        .list_patients(
            "search_birth_range_by_last_name",
            r#"birth_date >= "1980-01-01" AND birth_date < "1990-01-01""#,
            "last_name",
            String::new(),
        )
        .await;
    let listing_high = scenarios.listing("listing_study_filter_high", &envoy, "urgency_level = HIGH").await;
    let name_prefix_envoy = scenarios
        .list_patients_on("search_name_prefix_envoy", &envoy, r#"last_name = "gar*""#, "", String::new())
        .await;
    let fhir_search = fhir::search(&mut scenarios, &envoy, ports.envoy).await;
    let gateway_direct =
        load::connect(&format!("http://127.0.0.1:{}", ports.gateway), args.connections).await?;
    let listing_direct = scenarios.listing("list_patients_with_studies_direct", &gateway_direct, "").await;
    let studies_direct =
        load::connect(&format!("http://127.0.0.1:{}", ports.studies), args.connections).await?;
    let studies_batch = scenarios.list_studies_50_patients(&studies_direct).await;
    let create = scenarios.create_patient("create_patient", rand::random::<u32>()).await;
    let change_feed = feed::run(&mut scenarios, &envoy, running.credentials()).await?;
    let cpu = scenarios.cpu;

    println!("running pgbench on the same tables...");
    let bin = find_bin_dir()?;
    let duration = Duration::from_secs(args.seconds);
    let pg_select = pgbench::run(&bin, &admin, pgbench::Script::Select, n, args.concurrency, duration, home)?;
    let pg_insert = pgbench::run(&bin, &admin, pgbench::Script::Insert, n, args.concurrency, duration, home)?;
    let peak: Vec<u64> =
        services.iter().map(|s| running.pid(s).and_then(|p| rss_kib(p, "VmHWM:")).unwrap_or(0)).collect();

    let row = |outcome, baseline, target| Row { outcome, baseline, target };
    let get_direct_rps = get_direct.rps;
    let outcomes = vec![
        row(get_direct.clone(), Some(("pgbench_select", pg_select)), "≥ 0.40"),
        row(get_envoy.clone(), Some(("pgbench_select", pg_select)), "≥ 0.25"),
        row(
            bare_direct.clone(),
            Some(("pgbench_select", pg_select)),
            "(ceiling: tonic + sqlx, nothing else)",
        ),
        row(
            bare_envoy.clone(),
            Some(("bare_tonic_sqlx", bare_direct.rps)),
            "(ceiling: Envoy with the router only)",
        ),
        row(
            bare_no_db.clone(),
            Some(("bare_tonic_sqlx", bare_direct.rps)),
            "(ceiling: the gRPC stack alone)",
        ),
        row(
            get_fresh,
            Some(("get_patient_direct", get_direct_rps)),
            "(diagnostic: a signature check per call)",
        ),
        row(
            overload.clone(),
            Some(("get_patient_envoy", get_envoy.rps)),
            "errors only RESOURCE_EXHAUSTED; health SERVING",
        ),
        row(fhir_read, Some(("get_patient_envoy", get_envoy.rps)), "≥ 0.50"),
        row(create, Some(("pgbench_insert", pg_insert)), "≥ 0.50"),
        row(list_first.clone(), None, ""),
        row(listing.clone(), Some(("list_patients", list_first.rps)), "≥ 0.33"),
        row(name_prefix.clone(), Some(("list_patients", list_first.rps)), "p50 ≤ 2× list_patients"),
        row(birth_range.clone(), Some(("list_patients", list_first.rps)), "p50 ≤ 2× list_patients"),
        row(listing_high.clone(), Some(("list_patients_with_studies", listing.rps)), "p50 ≤ 2× the listing"),
        row(deep, Some(("list_patients", list_first.rps)), "p50 ≤ 1.5× list_patients"),
        row(name_prefix_envoy.clone(), None, "(the gRPC search FHIR's is compared with)"),
        row(
            fhir_search,
            Some(("search_name_prefix_envoy", name_prefix_envoy.rps)),
            "(FHIR search over its gRPC form)",
        ),
        row(listing_direct, Some(("list_patients", list_first.rps)), "(diagnostic: no Envoy)"),
        row(studies_batch, None, "(diagnostic: the listing's ListStudies)"),
    ];
    print_table(&outcomes, &[("pgbench_select", pg_select), ("pgbench_insert", pg_insert)]);
    let ceilings = Ceilings {
        pgbench_select: pg_select,
        bare: bare_direct.rps,
        bare_router_only_envoy: bare_envoy.rps,
        bare_without_database: bare_no_db.rps,
    };
    ceilings.print(&[
        (&get_direct, "≥ 1.5× bare_tonic_sqlx"),
        (&get_envoy, "≥ 0.90× bare_behind_router_only_envoy"),
    ]);
    let shipped = envoy_levers.first().map_or(get_envoy.rps, |l| l.outcome.rps);
    println!("\nEnvoy's levers, GetPatient through each variant of its config (same services, same run):");
    for lever in &envoy_levers {
        println!(
            "  {:<30} {:>8.0} rps  {:>5.2} of as shipped  {:>5.2} of bare_behind_router_only_envoy  p99 {:>6.2} ms  ({})",
            lever.outcome.name,
            lever.outcome.rps,
            lever.outcome.rps / shipped.max(f64::EPSILON),
            lever.outcome.rps / bare_envoy.rps.max(f64::EPSILON),
            lever.outcome.p99_ms,
            lever.what
        );
    }
    let deep =
        outcomes.iter().find(|r| r.outcome.name == "list_patients_deep_page").expect("the deep page row");
    let deep_latency = deep.outcome.p50_ms / list_first.p50_ms.max(f64::EPSILON);
    let shed_only = overload.errors.keys().all(|code| code == "ResourceExhausted");
    println!(
        "\noverload ({}× concurrency): {:.0} rps = {:.2} of get_patient_envoy; errors {:?} ({}); health left SERVING {} times",
        4,
        overload.rps,
        overload.rps / get_envoy.rps.max(f64::EPSILON),
        overload.errors,
        if shed_only { "only RESOURCE_EXHAUSTED" } else { "NOT only RESOURCE_EXHAUSTED" },
        not_serving
    );
    println!(
        "\nchange feed: {} watchers through Envoy while writers create {:.0} patients/s: write to watcher p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {} changes expected per watcher, {} delivered in all, {} lost, {} duplicated, {} streams failed",
        feed::WATCHERS,
        change_feed.writes.rps,
        change_feed.p50_ms,
        change_feed.p99_ms,
        change_feed.max_ms,
        change_feed.expected,
        change_feed.delivered,
        change_feed.lost,
        change_feed.duplicated,
        change_feed.stream_errors
    );
    println!("\ndeep page p50 / first page p50 = {deep_latency:.2}");
    let p50_ratio = |o: &load::Outcome, base: &load::Outcome| o.p50_ms / base.p50_ms.max(f64::EPSILON);
    let search_ratios = [
        ("search_name_prefix", p50_ratio(&name_prefix, &list_first)),
        ("search_birth_range_by_last_name", p50_ratio(&birth_range, &list_first)),
        ("listing_study_filter_high", p50_ratio(&listing_high, &listing)),
    ];
    for (name, ratio) in search_ratios {
        println!("{name}: first page p50 = {ratio:.2}× the unfiltered first page's");
    }
    println!("\ncores used during each scenario (this machine has 2):");
    for (name, groups) in &cpu {
        let groups: Vec<String> =
            groups.iter().filter(|(_, c)| **c >= 0.01).map(|(g, c)| format!("{g} {c:.2}")).collect();
        println!("  {name:<36} {}", groups.join(", "));
    }
    let mib = |kib: u64| (kib as f64 / 1024.0 * 10.0).round() / 10.0;
    for (i, s) in services.iter().enumerate() {
        println!("{s:<18} RSS idle {:>6.1} MiB   peak {:>6.1} MiB", mib(idle[i]), mib(peak[i]));
    }
    for (s, t) in running.startup_times() {
        println!("{s:<18} start-up {:>6} ms", t.as_millis());
    }

    let mut scenarios: Vec<serde_json::Value> = [("pgbench_select", pg_select), ("pgbench_insert", pg_insert)]
        .iter()
        .map(|(name, tps)| json!({"name": name, "rps": tps, "p50_ms": null, "p99_ms": null, "errors": 0, "baseline": null, "ratio": null}))
        .collect();
    scenarios.extend(outcomes.iter().map(|Row { outcome: o, baseline, .. }| {
        json!({
            "name": o.name,
            "rps": o.rps,
            "p50_ms": o.p50_ms,
            "p90_ms": o.p90_ms,
            "p99_ms": o.p99_ms,
            "max_ms": o.max_ms,
            "errors": o.error_count(),
            "errors_by_code": o.errors,
            "baseline": baseline.map(|(b, _)| b),
            "ratio": baseline.map(|(_, rps)| o.rps / rps),
        })
    }));
    let report = json!({
        "scenarios": scenarios,
        "ceilings": ceilings.report(&[&get_direct, &get_envoy]),
        "envoy_levers": envoy_levers.iter().map(|l| json!({
            "name": l.outcome.name,
            "what": l.what,
            "rps": l.outcome.rps,
            "p50_ms": l.outcome.p50_ms,
            "p99_ms": l.outcome.p99_ms,
            "errors": l.outcome.error_count(),
            "over_as_shipped": l.outcome.rps / shipped.max(f64::EPSILON),
            "over_bare_behind_router_only_envoy": l.outcome.rps / bare_envoy.rps.max(f64::EPSILON),
        })).collect::<Vec<_>>(),
        "change_feed": change_feed.report(),
        "deep_page_p50_over_first_page_p50": deep_latency,
        "search_p50_over_unfiltered_p50": search_ratios.iter().map(|(n, r)| (n.to_string(), json!(r))).collect::<serde_json::Map<_, _>>(),
        "token_verification_us": {"signature_checked": verification.uncached_us, "cached": verification.cached_us},
        "audited_reads": {"events": audited.events, "insert_transactions": audited.transactions},
        "overload": {
            "concurrency": args.concurrency * 4,
            "seconds": overload_load.duration.as_secs(),
            "rps_over_get_patient_envoy": overload.rps / get_envoy.rps.max(f64::EPSILON),
            "errors_only_resource_exhausted": shed_only,
            "health_not_serving_updates": not_serving,
        },
        "cores_used": cpu.iter().map(|(name, groups)| (name.clone(), json!(groups))).collect::<serde_json::Map<_, _>>(),
        "rss_mib": services.iter().enumerate().map(|(i, s)| (s.to_string(), json!({"idle": mib(idle[i]), "peak": mib(peak[i])}))).collect::<serde_json::Map<_, _>>(),
        "startup_ms": running.startup_times().iter().map(|(s, t)| (s.to_string(), json!(t.as_millis() as u64))).collect::<serde_json::Map<_, _>>(),
        "settings": {"seconds": args.seconds, "patients": args.patients, "concurrency": args.concurrency, "connections": args.connections},
        "build": target::build_info(&format!("127.0.0.1:{}", ports.metrics[0])).await,
    });
    Ok(Measured { report, get_direct_rps, listing_rps: listing.rps })
}

/// What the main run measured, for the traced run to compare with.
struct Measured {
    report: serde_json::Value,
    get_direct_rps: f64,
    listing_rps: f64,
}

/// The same stack with tracing on, exporting to an in-process OTLP sink,
/// sampling `ratio` of the traces: GetPatient (direct) and the listing
/// (through Envoy, whose tracer exports too), against the untraced run.
async fn traced(
    args: &Args,
    bin_dir: PathBuf,
    ratio: f64,
    untraced: &Measured,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let (sink_port, spans) = tracing_sink::start().await?;
    let extra_env = vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://127.0.0.1:{sink_port}")),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".into()),
        ("OTEL_TRACES_SAMPLER_ARG", ratio.to_string()),
    ];
    let options = stack_options(args, "traced", bin_dir, 1, extra_env)?;
    let (home, ports) = (options.home.clone(), options.ports);
    println!(
        "\nstarting a traced stack ({:.0}% of traces sampled, exported to an OTLP sink)...",
        ratio * 100.0
    );
    let running = stack::start(options).await?;
    let result = async {
        preload(&running.database().admin_url(), args.patients).await?;
        let load = Load {
            concurrency: args.concurrency,
            duration: Duration::from_secs(args.seconds),
            warmup: Duration::from_secs(1).min(Duration::from_secs(args.seconds)),
        };
        let bearers = auth::Bearers::mint(running.credentials(), args.concurrency)?;
        let direct = load::connect(&format!("http://127.0.0.1:{}", ports.patients), args.connections).await?;
        let envoy = load::connect(&format!("http://127.0.0.1:{}", ports.envoy), args.connections).await?;
        let n = args.patients.max(1);
        let get = {
            let bearers = bearers.clone();
            move |channel, worker, seq| load::get_patient(channel, bearers.of(worker), 1 + load::spread(worker, seq, n) as i64)
        };
        let get_traced = load::run("get_patient_direct_traced", &direct, load, get).await;
        let listing_bearers = bearers.clone();
        let listing_traced = load::run("list_patients_with_studies_traced", &envoy, load, move |channel, worker, _| {
            listing_first_page(channel, listing_bearers.of(worker), "")
        })
        .await;
        let received = spans.load(std::sync::atomic::Ordering::Relaxed);
        let get_ratio = get_traced.rps / untraced.get_direct_rps.max(f64::EPSILON);
        let listing_ratio = listing_traced.rps / untraced.listing_rps.max(f64::EPSILON);
        println!(
            "tracing on ({:.0}% sampled): get_patient_direct {:.0} rps = {:.2} of untraced ({} errors); \
             list_patients_with_studies {:.0} rps = {:.2} of untraced ({} errors); {received} spans received",
            ratio * 100.0,
            get_traced.rps,
            get_ratio,
            get_traced.error_count(),
            listing_traced.rps,
            listing_ratio,
            listing_traced.error_count(),
        );
        Ok::<_, Box<dyn std::error::Error>>(json!({
            "sampled_ratio": ratio,
            "get_patient_direct": {"rps": get_traced.rps, "p50_ms": get_traced.p50_ms, "p99_ms": get_traced.p99_ms, "over_untraced": get_ratio},
            "list_patients_with_studies": {"rps": listing_traced.rps, "p50_ms": listing_traced.p50_ms, "p99_ms": listing_traced.p99_ms, "over_untraced": listing_ratio},
            "spans_received": received,
        }))
    }
    .await;
    running.stop().await?;
    let _ = std::fs::remove_dir_all(&home);
    result
}
