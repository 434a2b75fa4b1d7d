//! The throwaway cluster leaves nothing behind, however its owner ends.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use clinic_testkit::PgCluster;
use sqlx::{Connection, PgConnection};

/// Waits up to `within` for `done`, checking every 50 ms.
fn wait_until(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let give_up = Instant::now() + within;
    while Instant::now() < give_up {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    done()
}

#[tokio::test]
async fn a_cluster_serves_sql_and_is_removed_on_drop() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start).await.unwrap().expect("cluster starts");
    let dir = cluster.data_dir().parent().unwrap().to_path_buf();
    let port = cluster.port();
    let mut conn = PgConnection::connect(&cluster.admin_url("postgres")).await.unwrap();
    let one: i32 = sqlx::query_scalar("select 1").fetch_one(&mut conn).await.unwrap();
    assert_eq!(one, 1);
    drop(conn);

    tokio::task::spawn_blocking(move || drop(cluster)).await.unwrap();

    assert!(!dir.exists(), "{} was not removed", dir.display());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "server still listening");
}

/// The child half of the next test: start a cluster, say where, and die
/// without running any destructor.
#[test]
#[ignore = "run only as the child of cluster_is_removed_when_its_owner_aborts"]
fn child_starts_a_cluster_and_aborts() {
    let cluster = PgCluster::start().expect("cluster starts");
    println!("DIR={}", cluster.data_dir().parent().unwrap().display());
    println!("PORT={}", cluster.port());
    std::process::abort();
}

#[test]
fn cluster_is_removed_when_its_owner_aborts() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_starts_a_cluster_and_aborts", "--ignored", "--nocapture"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "the child aborts");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // libtest may print the child's lines after its own "test … " prefix.
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.split_once(name).map(|(_, value)| value.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {name} in {stdout}"))
    };
    let dir = PathBuf::from(field("DIR="));
    let port: u16 = field("PORT=").parse().unwrap();

    assert!(wait_until(Duration::from_secs(30), || !dir.exists()), "{} survived its owner", dir.display());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err(), "server survived its owner");
}
