//! The ceilings Clinic's GetPatient is measured against, in the same run on
//! the same table: a minimal tonic + sqlx server that does the same SELECT
//! and nothing else (no authentication, audit, metrics or logs: the
//! framework's ceiling), that server behind an Envoy with only the router
//! filter (the proxy's ceiling), and that server answering without a
//! database (the gRPC stack's limit).

use std::{path::Path, pin::Pin, process::Stdio, time::Duration};

use chrono::{DateTime, NaiveDate, Utc};
use clinic_proto::patients::v1::{
    self as pb,
    patient_service_server::{PatientService, PatientServiceServer},
};
use sqlx::PgPool;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// The bare GetPatient server: `pool` none answers one fixed patient.
#[derive(Debug, Clone)]
struct Bare {
    pool: Option<PgPool>,
}

type Row = (i64, String, String, NaiveDate, String, i64, DateTime<Utc>, DateTime<Utc>);

fn timestamp(t: DateTime<Utc>) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds: t.timestamp(), nanos: t.timestamp_subsec_nanos() as i32 })
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("the ceiling server answers GetPatient only"))
}

#[tonic::async_trait]
impl PatientService for Bare {
    async fn get_patient(
        &self,
        request: Request<pb::GetPatientRequest>,
    ) -> Result<Response<pb::Patient>, Status> {
        let id = request.into_inner().id;
        let Some(pool) = &self.pool else {
            return Ok(Response::new(pb::Patient {
                id,
                first_name: "Jose".into(),
                last_name: "Villalobos".into(),
                birth_date: "1955-04-10".into(),
                email: "pepe@ejemplo.com".into(),
                etag: "1".into(),
                ..Default::default()
            }));
        };
        let row: Option<Row> = sqlx::query_as(
            "select id, first_name, last_name, birth_date, email, version, create_time, update_time \
             from patients.patient where id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
        let (id, first_name, last_name, birth_date, email, version, create_time, update_time) =
            row.ok_or_else(|| Status::not_found("no such patient"))?;
        Ok(Response::new(pb::Patient {
            id,
            first_name,
            last_name,
            birth_date: birth_date.to_string(),
            email,
            etag: version.to_string(),
            create_time: timestamp(create_time),
            update_time: timestamp(update_time),
            ..Default::default()
        }))
    }

    async fn create_patient(
        &self,
        _: Request<pb::CreatePatientRequest>,
    ) -> Result<Response<pb::Patient>, Status> {
        unimplemented()
    }
    async fn list_patients(
        &self,
        _: Request<pb::ListPatientsRequest>,
    ) -> Result<Response<pb::ListPatientsResponse>, Status> {
        unimplemented()
    }
    async fn update_patient(
        &self,
        _: Request<pb::UpdatePatientRequest>,
    ) -> Result<Response<pb::Patient>, Status> {
        unimplemented()
    }
    async fn delete_patient(&self, _: Request<pb::DeletePatientRequest>) -> Result<Response<()>, Status> {
        unimplemented()
    }
    async fn undelete_patient(
        &self,
        _: Request<pb::UndeletePatientRequest>,
    ) -> Result<Response<pb::Patient>, Status> {
        unimplemented()
    }
    async fn purge_patient(&self, _: Request<pb::PurgePatientRequest>) -> Result<Response<()>, Status> {
        unimplemented()
    }
    async fn list_patient_revisions(
        &self,
        _: Request<pb::ListPatientRevisionsRequest>,
    ) -> Result<Response<pb::ListPatientRevisionsResponse>, Status> {
        unimplemented()
    }
    async fn list_patient_changes(
        &self,
        _: Request<pb::ListPatientChangesRequest>,
    ) -> Result<Response<pb::ListPatientChangesResponse>, Status> {
        unimplemented()
    }
    type WatchPatientChangesStream =
        Pin<Box<dyn Stream<Item = Result<pb::WatchPatientChangesResponse, Status>> + Send>>;
    async fn watch_patient_changes(
        &self,
        _: Request<pb::WatchPatientChangesRequest>,
    ) -> Result<Response<Self::WatchPatientChangesStream>, Status> {
        unimplemented()
    }
}

/// A ceiling server, a process of its own, killed when dropped.
pub struct Ceiling {
    /// Where it listens.
    pub port: u16,
    child: tokio::process::Child,
}

impl Ceiling {
    /// Its process, for the cores it uses.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Drop for Ceiling {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts this binary as a ceiling server on a free port: with
/// `database_url`, reading the patients table; without, answering from
/// memory.
pub async fn start(database_url: Option<&str>) -> Result<Ceiling, Box<dyn std::error::Error>> {
    let port = clinic_pg_cluster::cluster::free_port()?;
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.args(["--serve-ceiling", &port.to_string()]).stdin(Stdio::null()).kill_on_drop(true);
    if let Some(url) = database_url {
        command.args(["--ceiling-database-url", url]);
    }
    let child = command.spawn()?;
    let ceiling = Ceiling { port, child };
    wait_listening(port).await?;
    Ok(ceiling)
}

async fn wait_listening(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!("nothing listened on port {port} within 10 s").into())
}

/// The ceiling server itself (`clinic-bench --serve-ceiling`): tonic's own
/// `Server`, as its documentation writes one, and a sqlx pool of
/// `connections`, until killed.
pub async fn serve(
    port: u16,
    database_url: Option<&str>,
    connections: u32,
) -> Result<(), Box<dyn std::error::Error>> {
    let pool = match database_url {
        Some(url) => {
            Some(sqlx::postgres::PgPoolOptions::new().max_connections(connections).connect(url).await?)
        }
        None => None,
    };
    tonic::transport::Server::builder()
        .add_service(PatientServiceServer::new(Bare { pool }))
        .serve(([127, 0, 0, 1], port).into())
        .await?;
    Ok(())
}

/// An Envoy with only the router filter in front of `upstream`, as a child
/// process killed when dropped.
pub struct RouterOnlyEnvoy {
    /// Its listener.
    pub port: u16,
    child: tokio::process::Child,
}

impl RouterOnlyEnvoy {
    /// Its process, for the cores it uses.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }
}

impl Drop for RouterOnlyEnvoy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts Envoy (`bin`) with a listener on `port` routing everything to
/// `upstream` over HTTP/2, with the router filter alone; its config and log
/// go to `dir`.
pub async fn router_only_envoy(
    bin: &Path,
    dir: &Path,
    port: u16,
    admin_port: u16,
    upstream: u16,
) -> Result<RouterOnlyEnvoy, Box<dyn std::error::Error>> {
    let config = format!(
        r#"admin:
  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin_port} }} }}
static_resources:
  listeners:
    - name: bare
      address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: bare
                codec_type: AUTO
                route_config:
                  virtual_hosts:
                    - name: bare
                      domains: ["*"]
                      routes:
                        - match: {{ prefix: "/" }}
                          route: {{ cluster: bare, timeout: 15s }}
                http_filters:
                  - name: envoy.filters.http.router
                    typed_config:
                      "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
    - name: bare
      type: STATIC
      connect_timeout: 1s
      typed_extension_protocol_options:
        envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
          "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
          explicit_http_config: {{ http2_protocol_options: {{}} }}
      load_assignment:
        cluster_name: bare
        endpoints:
          - lb_endpoints:
              - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {upstream} }} }} }}
"#
    );
    std::fs::create_dir_all(dir)?;
    let file = dir.join("router-only-envoy.yaml");
    std::fs::write(&file, config)?;
    let log = std::fs::File::create(dir.join("router-only-envoy.log"))?;
    let child = tokio::process::Command::new(bin)
        .args(["-c", &file.display().to_string(), "--disable-hot-restart", "--log-level", "warn"])
        .args(["--base-id", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()?;
    let envoy = RouterOnlyEnvoy { port, child };
    wait_listening(port).await?;
    Ok(envoy)
}
