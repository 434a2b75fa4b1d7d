//! `make up`: the whole system on this machine, supervised, until Ctrl-C.
//!
//! Starts (or reuses) PostgreSQL, the three services and Envoy as child
//! processes, each logging to `<home>/logs/<name>.log` and recording its pid
//! in `<home>/run/<name>.pid`; waits until the system is SERVING through
//! Envoy; loads the sample data when the database is empty; prints where to
//! connect. A child that exits is restarted after a short delay. On SIGINT or
//! SIGTERM every child gets SIGTERM (SIGKILL after a grace period) and
//! PostgreSQL is stopped.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use clinic_core::defaults;
use clinic_pg_cluster::ServiceRole;
use clinic_proto::patients::v1::{ListPatientsRequest, patient_service_client::PatientServiceClient};
use tokio::{process::Command, sync::mpsc};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    credentials::{self, DevCredentials, Owners},
    envoy, import,
    ports::Ports,
    postgres,
};

/// Where `make up METRICS=1` serves Prometheus.
pub const PROMETHEUS_PORT: u16 = 9090;

/// The subject `make up` imports the sample data as.
const IMPORT_SUBJECT: &str = "clinic-dev-import";

/// How long children get to stop after SIGTERM.
const GRACE: Duration = Duration::from_secs(10);

/// What `up` needs to know.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Folder for data, logs, pid files and Envoy's rendered config.
    pub home: PathBuf,
    /// Ports to listen on.
    pub ports: Ports,
    /// A superuser URL of an existing PostgreSQL, instead of a private cluster.
    pub database_url: Option<String>,
    /// Folder holding the service binaries.
    pub bin_dir: PathBuf,
    /// The Envoy binary.
    pub envoy_bin: PathBuf,
    /// Folder holding `patients.csv` and `studies.csv`.
    pub sample_data: PathBuf,
    /// Pause before restarting a child that exited.
    pub restart_delay: Duration,
    /// How long to wait for the system to become SERVING.
    pub ready_timeout: Duration,
    /// The listing page's built files, served by the gateway; none: no page.
    pub web_root: Option<PathBuf>,
    /// Origins whose pages may call the API from a browser (CORS).
    pub cors_origins: Vec<String>,
    /// A Prometheus server binary to run, scraping every service and Envoy.
    pub prometheus: Option<PathBuf>,
    /// More environment for every service (and, for `OTEL_*` endpoints,
    /// Envoy's tracer), on top of this process's own.
    pub extra_env: Vec<(&'static str, String)>,
}

/// Why `up` failed.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// Files or processes.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The database.
    #[error(transparent)]
    Database(#[from] postgres::DatabaseError),
    /// Envoy's configuration.
    #[error(transparent)]
    Envoy(#[from] envoy::MissingValue),
    /// The sample data.
    #[error("loading the sample data: {0}")]
    Import(#[from] import::ImportError),
    /// The system did not become ready.
    #[error("{0}")]
    NotReady(String),
    /// The development keys and certificates.
    #[error("credentials: {0}")]
    Credentials(#[from] credentials::CredentialsError),
    /// A service's migrate step failed.
    #[error("{0}")]
    Migrate(String),
}

struct Proc {
    /// The process's name: its program's, with `-k` for replica k ≥ 2.
    name: String,
    /// The gRPC port whose health says it has started, for a service.
    grpc_port: Option<u16>,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    pid: Option<u32>,
}

impl Proc {
    fn log_path(&self, home: &Path) -> PathBuf {
        home.join("logs").join(format!("{}.log", self.name))
    }

    /// Starts the process; its exit is reported on `exits` with its index.
    fn spawn(
        &mut self,
        index: usize,
        home: &Path,
        exits: &mpsc::UnboundedSender<(usize, String)>,
    ) -> std::io::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path(home))?;
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Own process group: the terminal's Ctrl-C reaches only the
            // launcher, which stops the children in order.
            .process_group(0)
            .spawn()
            .map_err(|e| {
                std::io::Error::new(e.kind(), format!("starting {}: {e}", self.program.display()))
            })?;
        self.pid = child.id();
        if let Some(pid) = self.pid {
            // Written aside and renamed into place: a reader (the tests, an
            // operator's script) never sees a half-written file.
            let run = home.join("run");
            let partial = run.join(format!(".{}.pid.partial", self.name));
            std::fs::write(&partial, pid.to_string())?;
            std::fs::rename(&partial, run.join(format!("{}.pid", self.name)))?;
        }
        let exits = exits.clone();
        tokio::spawn(async move {
            let status = child.wait().await.map_or_else(|e| e.to_string(), |s| s.to_string());
            let _ = exits.send((index, status));
        });
        Ok(())
    }

    fn signal(&self, signal: &str) {
        if let Some(pid) = self.pid {
            // A child that already exited is no error here.
            let _ = std::process::Command::new("kill")
                .args([signal, &pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

fn processes(
    options: &UpOptions,
    db: &postgres::LocalDatabase,
    credentials: &DevCredentials,
    envoy_config: &Path,
) -> Vec<Proc> {
    let p = options.ports;
    let listen = defaults::listen_addr;
    let all = |port: u16| p.replicas_of(port).map(defaults::uri).collect::<Vec<_>>().join(",");
    // Envoy is stopped first, so with one replica there is nothing to drain
    // traffic away from; with several, a replica that stops (a rolling
    // restart) keeps serving until Envoy's health checks (every second, two
    // failures) have moved traffic away.
    let pre_stop = if p.replicas > 1 { "2500" } else { "0" };
    let mut procs = Vec::new();
    for replica in 0..p.replicas.max(1) {
        let offset = 100 * replica;
        let service = |name: &'static str, port: u16, mut env: Vec<(&'static str, String)>| {
            env.push(("LISTEN_ADDR", listen(port + offset)));
            env.push(("SHUTDOWN_PRE_STOP_DELAY_MS", pre_stop.to_owned()));
            env.extend(options.extra_env.iter().cloned());
            env.push(("JWT_JWKS_FILE", credentials.jwks_file().display().to_string()));
            env.push(("OTEL_SERVICE_NAME", name.to_owned()));
            let proc_name = if replica == 0 { name.to_owned() } else { format!("{name}-{}", replica + 1) };
            Proc {
                name: proc_name,
                grpc_port: Some(port + offset),
                program: options.bin_dir.join(name),
                args: Vec::new(),
                env,
                pid: None,
            }
        };
        procs.push(service(
            "patients-service",
            p.patients,
            vec![
                ("METRICS_ADDR", listen(p.metrics[0] + offset)),
                ("DATABASE_URL", db.url_for(ServiceRole::Patients)),
                ("STUDIES_ADDR", all(p.studies)),
            ],
        ));
        procs.push(service(
            "studies-service",
            p.studies,
            vec![
                ("METRICS_ADDR", listen(p.metrics[1] + offset)),
                ("DATABASE_URL", db.url_for(ServiceRole::Studies)),
                ("PATIENTS_ADDR", all(p.patients)),
                ("SERVICE_TOKEN_FILE", credentials.service_token_file().display().to_string()),
            ],
        ));
        procs.push(service("gateway", p.gateway, {
            let mut env = vec![
                ("METRICS_ADDR", listen(p.metrics[2] + offset)),
                ("PATIENTS_ADDR", all(p.patients)),
                ("STUDIES_ADDR", all(p.studies)),
            ];
            if let Some(root) = &options.web_root {
                env.push(("WEB_ROOT", root.display().to_string()));
            }
            env
        }));
        procs.push(service(
            "fhir",
            p.fhir,
            vec![
                ("METRICS_ADDR", listen(p.metrics[3] + offset)),
                ("PATIENTS_ADDR", all(p.patients)),
                ("STUDIES_ADDR", all(p.studies)),
            ],
        ));
    }
    procs.push(Proc {
        name: "envoy".to_owned(),
        grpc_port: None,
        program: options.envoy_bin.clone(),
        args: vec![
            "-c".into(),
            envoy_config.display().to_string(),
            "--disable-hot-restart".into(),
            "--log-level".into(),
            "warn".into(),
        ],
        env: Vec::new(),
        pid: None,
    });
    procs
}

/// Prometheus scraping the three services and Envoy every 5 s, with its
/// data under `<home>/prometheus`.
fn prometheus(options: &UpOptions, bin: &Path) -> Result<Proc, UpError> {
    let p = options.ports;
    let target = |port: u16| format!("'127.0.0.1:{port}'");
    let config = format!(
        "# Written by clinic-dev up: scrapes the services and Envoy.\n\
         global: {{ scrape_interval: 5s }}\n\
         scrape_configs:\n\
         \x20 - job_name: clinic\n\
         \x20   static_configs: [{{ targets: [{}, {}, {}, {}] }}]\n\
         \x20 - job_name: envoy\n\
         \x20   metrics_path: /stats/prometheus\n\
         \x20   static_configs: [{{ targets: [{}] }}]\n",
        target(p.metrics[0]),
        target(p.metrics[1]),
        target(p.metrics[2]),
        target(p.metrics[3]),
        target(p.envoy_admin)
    );
    let dir = options.home.join("prometheus");
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config)?;
    Ok(Proc {
        name: "prometheus".to_owned(),
        grpc_port: None,
        program: bin.to_owned(),
        args: vec![
            format!("--config.file={}", file.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"),
        ],
        env: Vec::new(),
        pid: None,
    })
}

/// Waits until the system answers SERVING through Envoy, failing early if a
/// child exits.
async fn wait_ready(
    options: &UpOptions,
    procs: &[Proc],
    exits: &mut mpsc::UnboundedReceiver<(usize, String)>,
) -> Result<(), UpError> {
    let channel = clinic_client::channel(&defaults::uri(options.ports.envoy)).expect("valid URI");
    let give_up = Instant::now() + options.ready_timeout;
    loop {
        if let Ok((index, status)) = exits.try_recv() {
            let log = procs[index].log_path(&options.home);
            return Err(UpError::NotReady(format!(
                "{} exited during start-up ({status}); see {}",
                procs[index].name,
                log.display()
            )));
        }
        let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
        request.set_timeout(Duration::from_secs(1));
        if let Ok(response) = HealthClient::new(channel.clone()).check(request).await
            && response.into_inner().status() == ServingStatus::Serving
        {
            return Ok(());
        }
        if Instant::now() > give_up {
            return Err(UpError::NotReady(format!(
                "the system was not SERVING within {:?}; see the logs in {}",
                options.ready_timeout,
                options.home.join("logs").display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Loads the sample data through Envoy if there are no patients yet; returns
/// the id of the first patient, for the examples.
async fn load_sample_data(options: &UpOptions, credentials: &DevCredentials) -> Result<Option<i64>, UpError> {
    let token = credentials.token(IMPORT_SUBJECT, &["admin"], Duration::from_secs(600))?;
    let channel = clinic_dev_keys::bearer::authed(
        clinic_client::channel(&defaults::uri(options.ports.envoy)).expect("valid URI"),
        &token,
    );
    let first = |channel| async move {
        PatientServiceClient::new(channel)
            .list_patients(ListPatientsRequest {
                page_size: 1,
                page_token: String::new(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().patients.first().map(|p| p.id))
            .map_err(|s| UpError::NotReady(format!("listing patients: {}", s.message())))
    };
    if let Some(id) = first(channel.clone()).await? {
        println!("The database already holds patients; the sample data is not loaded again.");
        return Ok(Some(id));
    }
    let patients = options.sample_data.join("patients.csv");
    let studies = options.sample_data.join("studies.csv");
    let summary = import::import(channel.clone(), Some(&patients), Some(&studies)).await?;
    println!("Loaded the sample data: {} patients, {} studies.", summary.patients, summary.studies);
    first(channel).await
}

fn banner(
    options: &UpOptions,
    db: &postgres::LocalDatabase,
    credentials: &DevCredentials,
    first_patient: Option<i64>,
) {
    let p = options.ports;
    let front = format!("localhost:{}", p.envoy);
    let tls = format!("localhost:{}", p.envoy_tls);
    println!();
    println!("Clinic is up.");
    println!("  gRPC over TLS, through Envoy  {tls} (CA: {})", credentials.ca_file().display());
    println!("  gRPC (h2c), local tools only  {front}");
    println!("  Envoy admin                   http://127.0.0.1:{}", p.envoy_admin);
    println!("  patients-service              127.0.0.1:{}", p.patients);
    println!("  studies-service               127.0.0.1:{}", p.studies);
    println!("  gateway                       127.0.0.1:{}", p.gateway);
    println!("  fhir                          127.0.0.1:{} (FHIR R4: http://{front}/fhir)", p.fhir);
    println!("  PostgreSQL                    {}", db.admin_url());
    if let Some(dir) = db.data_dir() {
        println!("  data                          {}", dir.display());
    }
    println!("  trusted keys (JWKS)           {}", credentials.jwks_file().display());
    println!("  REST/JSON                     http://{front}/v1/patients (with the token)");
    println!("  logs                          {}", options.home.join("logs").display());
    println!(
        "  metrics                       http://127.0.0.1:{}/metrics (patients), :{} (studies), :{} (gateway), \
         :{} (fhir), Envoy http://127.0.0.1:{}/stats/prometheus",
        p.metrics[0], p.metrics[1], p.metrics[2], p.metrics[3], p.envoy_admin
    );
    if options.prometheus.is_some() {
        println!(
            "  Prometheus                    http://127.0.0.1:{PROMETHEUS_PORT} (scraping all of the above)"
        );
    }
    println!();
    println!(
        "Every call but health and reflection needs a token; make one (roles: viewer, clinician, admin):"
    );
    println!("  export TOKEN=$(make -s token ROLE=admin SUBJECT=$(whoami))");
    println!("Then try (grpcurl is in .local/venv/bin):");
    println!("  grpcurl -plaintext {front} list");
    println!("  grpcurl -plaintext {front} describe clinic.patients.v1.PatientService");
    let auth = "-H \"authorization: Bearer $TOKEN\"";
    println!(
        "  grpcurl -plaintext {auth} -d '{{\"page_size\": 2}}' {front} clinic.gateway.v1.GatewayService/ListPatientsWithStudies"
    );
    if let Some(id) = first_patient {
        println!(
            "  grpcurl -plaintext {auth} -d '{{\"id\": {id}}}' {front} clinic.patients.v1.PatientService/GetPatient"
        );
        println!(
            "  grpcurl -plaintext {auth} -d '{{\"patient_ids\": [{id}]}}' {front} clinic.studies.v1.StudyService/ListStudies"
        );
        println!(
            "  grpcurl -cacert {} {auth} -d '{{\"patient_id\": {id}}}' {tls} clinic.audit.v1.AuditService/ListAuditEvents",
            credentials.ca_file().display()
        );
    }
    println!(
        "  grpcurl -plaintext {auth} -d '{{\"after_sequence\": 0}}' {front} clinic.patients.v1.PatientService/WatchPatientChanges | head -n 40"
    );
    println!(
        "  grpcurl -plaintext -d '{{\"service\": \"clinic.studies.v1.StudyService\"}}' {front} grpc.health.v1.Health/Check"
    );
    println!("FHIR R4 (curl; the same token):");
    let bearer = "-H \"authorization: Bearer $TOKEN\"";
    println!("  curl -s http://{front}/fhir/metadata");
    if let Some(id) = first_patient {
        println!("  curl -s {bearer} http://{front}/fhir/Patient/{id}");
    }
    println!("  curl -s {bearer} 'http://{front}/fhir/Patient?family=vill&_revinclude=ImagingStudy:subject'");
    println!(
        "  curl -s {bearer} -H 'content-type: application/fhir+json' -H 'If-None-Exist: identifier=https://clinic.example/mrn|MRN-1' \
         -d '{{\"resourceType\":\"Patient\",\"identifier\":[{{\"system\":\"https://clinic.example/mrn\",\"value\":\"MRN-1\"}}],\
         \"name\":[{{\"family\":\"Ruiz\",\"given\":[\"Ana\"]}}],\"birthDate\":\"1980-05-06\",\
         \"telecom\":[{{\"system\":\"email\",\"value\":\"ana.ruiz@ejemplo.com\"}}]}}' http://{front}/fhir/Patient"
    );
    if options.web_root.is_some()
        && let Ok(token) = credentials.token("page-viewer", &["viewer"], Duration::from_secs(12 * 3600))
    {
        println!();
        println!("The listing page (a viewer's token for 12 hours is in the link; it stays in the browser):");
        println!("  http://{front}/#token={token}");
    }
    println!();
    println!("Ctrl-C stops everything.");
    println!("clinic-dev: ready on {front}");
}

/// A started system: every child running and the whole system SERVING.
pub struct Running {
    options: UpOptions,
    db: postgres::LocalDatabase,
    credentials: DevCredentials,
    procs: Vec<Proc>,
    exits_tx: mpsc::UnboundedSender<(usize, String)>,
    exits: mpsc::UnboundedReceiver<(usize, String)>,
    startup: Vec<(String, Duration)>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("options", &self.options).finish_non_exhaustive()
    }
}

/// Waits until the service on `port` answers SERVING for itself; returns how
/// long after `since` that was.
async fn serving_since(port: u16, since: Instant, give_up: Instant) -> Option<Duration> {
    let channel = clinic_client::channel(&defaults::uri(port)).expect("valid URI");
    loop {
        let mut request = tonic::Request::new(HealthCheckRequest { service: String::new() });
        request.set_timeout(Duration::from_millis(500));
        if let Ok(response) = HealthClient::new(channel.clone()).check(request).await
            && response.into_inner().status() == ServingStatus::Serving
        {
            return Some(since.elapsed());
        }
        if Instant::now() > give_up {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The migrate step, as a deployment runs it: `<service> migrate` of each
/// service's binary, as its schema's owner, before any replica starts.
async fn migrate(options: &UpOptions, db: &postgres::LocalDatabase) -> Result<(), UpError> {
    for (name, role) in
        [("patients-service", ServiceRole::Patients), ("studies-service", ServiceRole::Studies)]
    {
        let log_path = options.home.join("logs").join(format!("{name}-migrate.log"));
        let log = std::fs::File::create(&log_path)?;
        let status = Command::new(options.bin_dir.join(name))
            .arg("migrate")
            .env("DATABASE_URL", db.owner_url_for(role))
            .env("DATABASE_RUNTIME_ROLE", role.role())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .status()
            .await?;
        if !status.success() {
            return Err(UpError::Migrate(format!(
                "{name} migrate failed ({status}); see {}",
                log_path.display()
            )));
        }
    }
    Ok(())
}

/// Starts the database, the services and Envoy, and waits until the system
/// is SERVING through Envoy. Records how long each service took from spawn
/// to SERVING.
pub async fn start(options: UpOptions) -> Result<Running, UpError> {
    for folder in ["logs", "run"] {
        std::fs::create_dir_all(options.home.join(folder))?;
    }
    let credentials = DevCredentials::ensure(&options.home, Owners::default())?;
    credentials.refresh_service_token()?;
    let db = postgres::prepare(&options.home, options.database_url.as_deref()).await?;
    migrate(&options, &db).await?;
    let p = options.ports;
    let descriptor_file = options.home.join("clinic.pb");
    std::fs::write(&descriptor_file, envoy::transcoder_descriptor_set())?;
    let envoy_config = options.home.join("envoy.yaml");
    let tls_sds_file = options.home.join("envoy-tls-sds.yaml");
    let sds = envoy::tls_sds(
        &credentials.cert_file().display().to_string(),
        &credentials.cert_key_file().display().to_string(),
    );
    std::fs::write(&tls_sds_file, sds)?;
    let otel_collector = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]
        .iter()
        .find_map(|v| {
            let extra = options.extra_env.iter().find(|(k, _)| k == v).map(|(_, e)| e.clone());
            extra.or_else(|| std::env::var(v).ok()).filter(|e| !e.trim().is_empty())
        })
        .and_then(|e| envoy::collector_of(&e));
    let addresses = envoy::Addresses {
        cors_origins: options.cors_origins.clone(),
        otel_collector,
        ..envoy::Addresses::local(&p, &tls_sds_file, &descriptor_file)
    };
    std::fs::write(&envoy_config, envoy::render(&addresses)?)?;
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let mut procs = processes(&options, &db, &credentials, &envoy_config);
    if let Some(bin) = &options.prometheus {
        procs.push(prometheus(&options, bin)?);
    }
    let mut running = Running { options, db, credentials, procs, exits_tx, exits, startup: Vec::new() };
    match running.spawn_all().await {
        Ok(()) => Ok(running),
        Err(e) => {
            running.stop().await?;
            Err(e)
        }
    }
}

impl Running {
    async fn spawn_all(&mut self) -> Result<(), UpError> {
        let give_up = Instant::now() + self.options.ready_timeout;
        for (index, proc) in self.procs.iter_mut().enumerate() {
            let spawned = Instant::now();
            proc.spawn(index, &self.options.home, &self.exits_tx)?;
            if let Some(port) = proc.grpc_port {
                let took = serving_since(port, spawned, give_up).await.ok_or_else(|| {
                    UpError::NotReady(format!(
                        "{} was not SERVING within {:?}; see {}",
                        proc.name,
                        self.options.ready_timeout,
                        proc.log_path(&self.options.home).display()
                    ))
                })?;
                self.startup.push((proc.name.clone(), took));
            }
        }
        wait_ready(&self.options, &self.procs, &mut self.exits).await
    }

    /// How long each service took from spawn to SERVING.
    pub fn startup_times(&self) -> &[(String, Duration)] {
        &self.startup
    }

    /// The pid of a child (`patients-service`, `studies-service`, `gateway`, `envoy`).
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.procs.iter().find(|p| p.name == name).and_then(|p| p.pid)
    }

    /// The database the services use.
    pub fn database(&self) -> &postgres::LocalDatabase {
        &self.db
    }

    /// The development keys the system trusts.
    pub fn credentials(&self) -> &DevCredentials {
        &self.credentials
    }

    /// Stops every child (SIGTERM, then SIGKILL after a grace period) and
    /// our PostgreSQL, if we run one.
    pub async fn stop(mut self) -> Result<(), UpError> {
        stop_all(&self.procs, &mut self.exits).await;
        for proc in &self.procs {
            let _ = std::fs::remove_file(self.options.home.join("run").join(format!("{}.pid", proc.name)));
        }
        let db = self.db;
        tokio::task::spawn_blocking(move || db.stop()).await.map_err(std::io::Error::other)?;
        Ok(())
    }
}

/// Runs the system until SIGINT or SIGTERM: starts it, loads the sample data
/// into an empty database, prints where to connect, restarts children that
/// exit, and stops everything at the end.
pub async fn up(options: UpOptions) -> Result<(), UpError> {
    let shutdown = clinic_host::server::shutdown_signal();
    tokio::pin!(shutdown);
    let mut running = tokio::select! {
        result = start(options.clone()) => result?,
        () = &mut shutdown => return Ok(()),
    };
    let result = async {
        let first_patient = tokio::select! {
            result = load_sample_data(&options, &running.credentials) => result?,
            () = &mut shutdown => return Ok(()),
        };
        banner(&options, &running.db, &running.credentials, first_patient);
        supervise(
            &options,
            &running.credentials,
            &mut running.procs,
            &running.exits_tx,
            &mut running.exits,
            &mut shutdown,
        )
        .await
    }
    .await;
    println!("Stopping...");
    running.stop().await?;
    println!("Stopped.");
    result
}

/// Restarts children that exit and renews studies-service's token (an
/// hour long) every half hour, until shutdown.
async fn supervise(
    options: &UpOptions,
    credentials: &DevCredentials,
    procs: &mut [Proc],
    exits_tx: &mpsc::UnboundedSender<(usize, String)>,
    exits: &mut mpsc::UnboundedReceiver<(usize, String)>,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Result<(), UpError> {
    let mut renew = tokio::time::interval_at(
        tokio::time::Instant::now() + credentials::DEFAULT_TTL / 2,
        credentials::DEFAULT_TTL / 2,
    );
    loop {
        tokio::select! {
            () = shutdown.as_mut() => return Ok(()),
            _ = renew.tick() => credentials.refresh_service_token()?,
            Some((index, status)) = exits.recv() => {
                procs[index].pid = None;
                println!(
                    "{} exited ({status}); restarting in {} ms (log: {})",
                    procs[index].name,
                    options.restart_delay.as_millis(),
                    procs[index].log_path(&options.home).display()
                );
                tokio::select! {
                    () = shutdown.as_mut() => return Ok(()),
                    () = tokio::time::sleep(options.restart_delay) => {}
                }
                procs[index].spawn(index, &options.home, exits_tx)?;
            }
        }
    }
}

/// SIGTERM to every running child, then SIGKILL to those still running
/// after the grace period; waits for all of them.
async fn stop_all(procs: &[Proc], exits: &mut mpsc::UnboundedReceiver<(usize, String)>) {
    let mut running: Vec<usize> = (0..procs.len()).filter(|i| procs[*i].pid.is_some()).collect();
    // Envoy first, so no new traffic reaches services that are stopping.
    for index in running.iter().rev() {
        procs[*index].signal("-TERM");
    }
    let deadline = tokio::time::Instant::now() + GRACE;
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, exits.recv()).await {
            Ok(Some((index, _))) => running.retain(|i| *i != index),
            Ok(None) => break,
            Err(_) => {
                for index in &running {
                    procs[*index].signal("-KILL");
                }
                while !running.is_empty() {
                    match exits.recv().await {
                        Some((index, _)) => running.retain(|i| *i != index),
                        None => break,
                    }
                }
            }
        }
    }
}
