//! One caller cannot starve the others. A hostile caller at full blast -
//! 64 requests whose bodies never finish, and loops of filters that force
//! full scans - while an honest one reads one patient at a time: the honest
//! caller gets every answer, at most 3× as slow (median) as when it was
//! alone. A test binary of its own, so nothing else competes for the two
//! cores while it measures; the service runs with its production defaults.
//! (Before the per-caller share, the stuck bodies took every in-flight slot
//! and the honest caller was refused RESOURCE_EXHAUSTED.)

#[path = "api/helpers.rs"]
#[allow(dead_code, unused_imports)]
mod helpers;

use std::time::{Duration, Instant};

use clinic_proto::patients::v1::{
    GetPatientRequest, ListPatientsRequest, patient_service_client::PatientServiceClient,
};
use clinic_testkit::auth::{authed, shared};
use sqlx::ConnectOptions;

/// Holds `count` GetPatient calls whose request bodies never finish, as
/// `token`'s holder, on one HTTP/2 connection; dropped: they end.
async fn stuck_bodies(
    addr: std::net::SocketAddr,
    token: &str,
    count: usize,
) -> Vec<h2::SendStream<bytes::Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let mut bodies = Vec::new();
    for _ in 0..count {
        let request =
            http::Request::post(format!("http://{addr}/clinic.patients.v1.PatientService/GetPatient"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .header("authorization", format!("Bearer {token}"))
                .body(())
                .unwrap();
        let (_response, body) = client.send_request(request, false).unwrap();
        bodies.push(body);
        client = client.ready().await.unwrap();
    }
    bodies
}

/// The median latency of `n` GetPatient calls, one at a time, each of
/// which must succeed.
async fn median_read(
    client: &PatientServiceClient<clinic_testkit::auth::Authed>,
    ids: &[i64],
    n: usize,
) -> Duration {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let started = Instant::now();
        let answer = client
            .clone()
            .get_patient(GetPatientRequest { id: ids[i % ids.len()], ..Default::default() })
            .await;
        took.push(started.elapsed());
        answer.expect("the honest caller's call succeeds");
    }
    took.sort();
    took[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_caller_at_full_blast_leaves_an_honest_one_its_latency() {
    let db = clinic_testkit::TestDb::create().await;
    let app = helpers::spawn_app_with(db, |config| {
        // Production defaults, not the race tests' generous ones.
        let defaults = <patients_service::Config as clap::Parser>::parse_from([
            "patients-service",
            "--jwt-jwks-file",
            "/dev/null",
        ]);
        config.service.server.max_in_flight = defaults.service.server.max_in_flight;
        config.service.server.max_in_flight_per_caller = defaults.service.server.max_in_flight_per_caller;
        config.service.db.max_connections = defaults.service.db.max_connections;
        config.service.db.filter_scan_timeout = defaults.service.db.filter_scan_timeout;
    })
    .await;
    let mut admin = app.db.admin_options().connect().await.unwrap();
    sqlx::query(
        "insert into patients.patient (first_name, last_name, birth_date, email, first_name_key, last_name_key, email_key) \
         select 'Ana', 'Alvarez', date '1980-01-01', 'p' || i || '@fair.test', 'ana', 'alvarez', 'p' || i || '@fair.test' \
         from generate_series(1, 20000) as i",
    )
    .execute(&mut admin)
    .await
    .unwrap();
    let ids: Vec<i64> = sqlx::query_scalar("select id from patients.patient order by id limit 100")
        .fetch_all(&mut admin)
        .await
        .unwrap();
    let honest =
        PatientServiceClient::new(authed(app.channel.clone(), &shared().token("honest", &["viewer"])));
    median_read(&honest, &ids, 50).await;
    let quiet = median_read(&honest, &ids, 200).await;

    // The hostile caller is a process of its own at the lowest CPU
    // priority: an attacker's own work runs on its machine, not on the
    // service's two cores, and this box has only two.
    let mallory = shared().token("mallory", &["viewer"]);
    let mut hostile = std::process::Command::new("nice")
        .args(["-n", "19"])
        .arg(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "hostile_caller", "--nocapture"])
        .env("HOSTILE_ADDR", app.addr.to_string())
        .env("HOSTILE_TOKEN", &mallory)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(hostile.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("hostile: blasting") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0, "the hostile process ended");
    }
    let attacked = median_read(&honest, &ids, 200).await;
    hostile.kill().unwrap();
    let _ = hostile.wait();
    println!(
        "honest median {:.2} ms alone, {:.2} ms under attack",
        quiet.as_secs_f64() * 1e3,
        attacked.as_secs_f64() * 1e3,
    );
    assert!(
        attacked <= quiet * 3,
        "the honest caller's median went from {quiet:?} alone to {attacked:?} under attack"
    );
}

/// The hostile caller, run by the test above as a process of its own: 64
/// requests whose bodies never finish, and 16 loops of filters that force
/// full scans, as fast as the service answers, until killed.
#[tokio::test(flavor = "current_thread")]
#[ignore = "run by a_hostile_caller_at_full_blast_leaves_an_honest_one_its_latency"]
async fn hostile_caller() {
    let addr: std::net::SocketAddr = std::env::var("HOSTILE_ADDR").unwrap().parse().unwrap();
    let token = std::env::var("HOSTILE_TOKEN").unwrap();
    let _stuck = stuck_bodies(addr, &token, 64).await;
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap();
    let blasts: Vec<_> = (0..16)
        .map(|i| {
            let client = PatientServiceClient::new(authed(channel.clone(), &token));
            tokio::spawn(async move {
                let filter = if i % 2 == 0 { r#"email != "*""# } else { r#"NOT last_name = "a*""# };
                loop {
                    let request =
                        ListPatientsRequest { page_size: 1000, filter: filter.into(), ..Default::default() };
                    let _ = client.clone().list_patients(request).await;
                }
            })
        })
        .collect();
    println!("hostile: blasting");
    // Until killed: the loops never end.
    futures::future::join_all(blasts).await;
}
