//! clinic-ceiling: the ceiling `make bench` measures Clinic's GetPatient
//! against — a minimal tonic + sqlx server that does the same SELECT on the
//! same table and nothing else (no authentication, audit, metrics or logs),
//! or, without `--database-url`, answers from memory (the gRPC stack's own
//! limit). The benchmark starts it as a process of its own, so its cores are
//! counted apart from the load generator's.
//!
//! # Layout
//! One file: the server (`Bare`, PatientService with GetPatient only) and
//! `main`.

use std::pin::Pin;

use chrono::{DateTime, NaiveDate, Utc};
use clap::Parser;
use clinic_proto::patients::v1::{
    self as pb,
    patient_service_server::{PatientService, PatientServiceServer},
};
use sqlx::PgPool;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

/// clinic-ceiling: a bare GetPatient server for `make bench`.
#[derive(Debug, Parser)]
#[command(name = "clinic-ceiling", version, about)]
struct Args {
    /// Port to listen on (127.0.0.1).
    #[arg(long)]
    port: u16,
    /// The database whose `patients.patient` it reads; none: it answers
    /// from memory.
    #[arg(long)]
    database_url: Option<String>,
    /// Pool size: the services' default.
    #[arg(long, default_value_t = 8)]
    connections: u32,
}

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

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    serve(args.port, args.database_url.as_deref(), args.connections).await
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
