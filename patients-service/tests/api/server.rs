use std::time::Duration;

use prost::Message;
use sqlx::ConnectOptions;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_reflection::pb::{v1, v1alpha};

use clinic_testkit::TestDb;

use crate::helpers::{patient, reason, spawn_app, spawn_app_with};

const SERVICE: &str = "clinic.patients.v1.PatientService";

#[tokio::test]
async fn health_is_serving_for_the_service_and_the_empty_name() {
    let app = spawn_app().await;
    app.wait_health(SERVICE, ServingStatus::Serving, Duration::from_secs(5)).await;
    assert_eq!(app.health(SERVICE).await.unwrap(), ServingStatus::Serving);
    assert_eq!(app.health("").await.unwrap(), ServingStatus::Serving);
    assert_eq!(app.health("no.such.Service").await.unwrap_err().code(), Code::NotFound);
}

/// Kubernetes starts every replica of a new version at once, while the
/// migrate Job runs (perhaps twice, after a retry): replicas wait for the
/// schema instead of failing, the migrations are applied once, and every
/// replica serves.
#[tokio::test]
async fn replicas_starting_while_the_schema_is_migrated_wait_for_it_and_all_serve() {
    let db = TestDb::create().await;
    let builds = (0..3).map(|_| {
        let config = crate::helpers::test_config(db.url_for(clinic_testkit::ServiceRole::Patients));
        patients_service::Application::build_with(
            config,
            std::sync::Arc::new(patients_service::studies::NoStudies),
        )
    });
    let migrations =
        (0..2).map(|_| db.migrate(clinic_testkit::ServiceRole::Patients, &patients_service::OWNED_SCHEMA));
    let (apps, _) = tokio::join!(futures::future::join_all(builds), futures::future::join_all(migrations));
    for app in &apps {
        assert!(app.is_ok(), "a replica failed to start: {:?}", app.as_ref().err());
    }
    let mut admin = db.admin_options().connect().await.unwrap();
    let (applied, distinct): (i64, i64) = sqlx::query_as(
        "select count(*), count(distinct version) from patients._sqlx_migrations where success",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert_eq!(applied, distinct);
    assert_eq!(applied as usize, patients_service::migrator().iter().count());
}

async fn list_v1(app: &crate::helpers::TestApp) -> Vec<String> {
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(String::new())),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    match stream.next().await.unwrap().unwrap().message_response.unwrap() {
        v1::server_reflection_response::MessageResponse::ListServicesResponse(list) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn reflection_v1_lists_the_patient_and_health_services() {
    let app = spawn_app().await;
    let services = list_v1(&app).await;
    assert!(services.contains(&SERVICE.to_owned()), "{services:?}");
    assert!(services.contains(&"grpc.health.v1.Health".to_owned()), "{services:?}");
    assert!(
        !services.iter().any(|s| s.contains("studies") || s.contains("gateway")),
        "only its own services: {services:?}"
    );
}

/// grpcurl 1.8 speaks only v1alpha; `describe` needs the file with comments.
#[tokio::test]
async fn reflection_v1alpha_describes_the_service_with_its_comments() {
    let app = spawn_app().await;
    let mut client = v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            SERVICE.into(),
        )),
    };
    let mut stream = client.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let response = stream.next().await.unwrap().unwrap().message_response.unwrap();
    let v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files) = response else {
        panic!("unexpected {response:?}");
    };
    let files: Vec<_> = files
        .file_descriptor_proto
        .iter()
        .map(|b| prost_types::FileDescriptorProto::decode(b.as_slice()).unwrap())
        .collect();
    let file =
        files.iter().find(|f| f.name() == "clinic/patients/v1/patients.proto").expect("patients.proto");
    assert_eq!(file.service[0].name(), "PatientService");
    let comments: Vec<_> =
        file.source_code_info.as_ref().unwrap().location.iter().map(|l| l.leading_comments()).collect();
    assert!(comments.iter().any(|c| c.contains("Creates a patient")), "rpc comments are served");
}

/// The server abandons a call whose deadline passes and answers
/// DEADLINE_EXCEEDED (tonic's own timeout would say CANCELLED). A table lock
/// held by the test keeps the create waiting; the server's ceiling stands in
/// for a short client deadline, because a tonic client enforces its own
/// deadline and would report first.
#[tokio::test]
async fn a_call_past_its_deadline_fails_with_deadline_exceeded_and_writes_nothing() {
    let app = spawn_app_with(TestDb::create().await, |c| {
        c.service.server.request_timeout = Duration::from_millis(300)
    })
    .await;
    let mut blocker = app.db.admin_options().connect().await.unwrap();
    sqlx::raw_sql("begin; lock table patients.patient in access exclusive mode")
        .execute(&mut blocker)
        .await
        .unwrap();

    let status = app.create(patient("Slow", "Writer", "1990-01-01", "slow@ejemplo.com")).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(reason(&status), "DEADLINE_EXCEEDED");

    sqlx::raw_sql("rollback").execute(&mut blocker).await.unwrap();
    assert!(app.list_all(50).await.is_empty(), "the abandoned create left nothing behind");
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_stops_accepting_calls() {
    // A drain timeout far above the test's patience: an open Watch stream
    // must not keep the server draining.
    let app =
        spawn_app_with(TestDb::create().await, |c| c.service.server.drain_timeout = Duration::from_secs(60))
            .await;
    app.wait_health("", ServingStatus::Serving, Duration::from_secs(5)).await;
    let mut watch = tonic_health::pb::health_client::HealthClient::new(app.channel.clone())
        .watch(tonic_health::pb::HealthCheckRequest { service: SERVICE.into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
    let addr = app.addr;

    tokio::time::timeout(Duration::from_secs(5), app.shutdown()).await.expect("shutdown completes in time");

    // The watcher is told NOT_SERVING before its stream ends.
    let last = watch.message().await.expect("the stream ends cleanly").expect("an update before the end");
    assert_eq!(last.status(), ServingStatus::NotServing);
    assert!(watch.message().await.expect("clean end").is_none(), "then the stream ends");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the port no longer accepts connections");
}

/// SIGTERM must not cut off callers a load balancer is still sending:
/// health turns NOT_SERVING at once, but calls (also on new connections)
/// are served for the whole pre-stop delay; only then the port closes.
#[tokio::test]
async fn shutdown_keeps_serving_through_the_pre_stop_delay_after_not_serving() {
    let app = spawn_app_with(TestDb::create().await, |c| {
        c.service.server.pre_stop_delay = Duration::from_millis(1500)
    })
    .await;
    let existing = app.create_nth(1).await;
    app.wait_health("", ServingStatus::Serving, Duration::from_secs(5)).await;
    let (addr, channel) = (app.addr, app.channel.clone());
    let mut watch = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .watch(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
    let stopping = tokio::spawn(app.shutdown());

    let update = watch.message().await.unwrap().expect("an update");
    assert_eq!(update.status(), ServingStatus::NotServing, "NOT_SERVING comes first");
    let started = std::time::Instant::now();
    let fresh = tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await;
    let fresh = fresh.expect("new connections are still accepted during the pre-stop delay");
    let read = clinic_proto::patients::v1::patient_service_client::PatientServiceClient::new(
        clinic_testkit::auth::admin(fresh),
    )
    .get_patient(clinic_proto::patients::v1::GetPatientRequest { id: existing.id, ..Default::default() })
    .await;
    assert!(read.is_ok(), "served {:?} after NOT_SERVING: {read:?}", started.elapsed());

    tokio::time::timeout(Duration::from_secs(10), stopping).await.expect("stops after the delay").unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "then the port closes");
}

/// A request's headers are bounded like Envoy bounds them, explicitly: 100
/// KiB of headers never reach a handler, while whatever Envoy lets through
/// (up to its 32 KiB; here 24 KiB) does. (hyper's default of 16 KiB refused
/// requests Envoy had accepted.)
#[tokio::test]
async fn a_request_whose_headers_exceed_the_bound_never_reaches_a_handler() {
    use clinic_proto::patients::v1::GetPatientRequest;
    let app = spawn_app().await;
    let created = app.create_nth(1).await;
    let mut request = tonic::Request::new(GetPatientRequest { id: created.id, ..Default::default() });
    for i in 0..100 {
        request.metadata_mut().insert(
            tonic::metadata::MetadataKey::from_bytes(format!("x-padding-{i}").as_bytes()).unwrap(),
            "p".repeat(1024).parse().unwrap(),
        );
    }
    let refused = app.client.clone().get_patient(request).await.expect_err("100 KiB of headers is refused");
    assert!(
        !matches!(refused.code(), Code::Ok | Code::NotFound | Code::Unauthenticated | Code::PermissionDenied),
        "the handler answered: {refused:?}"
    );
    let mut normal = tonic::Request::new(GetPatientRequest { id: created.id, ..Default::default() });
    for i in 0..6 {
        normal.metadata_mut().insert(
            tonic::metadata::MetadataKey::from_bytes(format!("x-padding-{i}").as_bytes()).unwrap(),
            "p".repeat(4096).parse().unwrap(),
        );
    }
    assert_eq!(app.client.clone().get_patient(normal).await.unwrap().into_inner().id, created.id);
}

/// The service reaches PostgreSQL over TLS and checks its certificate
/// against the CA it is given (`sslmode=verify-full`, as the Kubernetes
/// manifests connect); a server whose certificate that CA did not sign is
/// refused.
#[tokio::test]
async fn the_service_connects_to_postgres_over_tls_verifying_the_servers_certificate() {
    use clinic_testkit::ServiceRole;
    let db = TestDb::create().await;
    let ca = clinic_testkit::testdb::tls_ca_file()
        .expect("the tests' own cluster serves TLS (a DATABASE_URL server is not checked here)");
    let verified =
        format!("{}?sslmode=verify-full&sslrootcert={}", db.url_for(ServiceRole::Patients), ca.display());
    let app = spawn_app_with(db.clone(), |config| config.service.db.url = verified).await;
    let created = app.create_nth(1).await;
    assert_eq!(app.get(created.id).await.unwrap().id, created.id);
    let mut admin = db.admin_options().connect().await.unwrap();
    let (connections, encrypted): (i64, i64) = sqlx::query_as(
        "select count(*), count(*) filter (where s.ssl) from pg_stat_activity a join pg_stat_ssl s using (pid) \
         where a.usename = 'clinic_patients' and a.datname = current_database()",
    )
    .fetch_one(&mut admin)
    .await
    .unwrap();
    assert!(connections > 0 && encrypted == connections, "{encrypted} of {connections} connections use TLS");

    let other_ca = std::env::temp_dir().join(format!("clinic-other-ca-{}.pem", std::process::id()));
    std::fs::write(&other_ca, clinic_testkit::keys::certificates(&[]).unwrap().ca_pem).unwrap();
    let mut config = crate::helpers::test_config(format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        db.url_for(ServiceRole::Patients),
        other_ca.display()
    ));
    config.service.db.startup_timeout = Duration::from_millis(500);
    let refused = patients_service::Application::build_with(
        config,
        std::sync::Arc::new(patients_service::studies::NoStudies),
    )
    .await;
    assert!(refused.is_err(), "a certificate of another CA is refused");
    let _ = std::fs::remove_file(other_ca);
}
