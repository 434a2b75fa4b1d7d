//! One fresh database per test.
//!
//! With `DATABASE_URL` set (a superuser URL), test databases are created on
//! that server; otherwise one private [`PgCluster`] is started for the whole
//! test process and removed when the process ends.

use std::sync::{
    OnceLock,
    atomic::{AtomicU32, Ordering},
};

use clinic_pg::schema::{MigrateSettings, OwnedSchema};
use sqlx::{AssertSqlSafe, ConnectOptions, postgres::PgConnectOptions};
use tokio::sync::Mutex;

use crate::{PgCluster, ServiceRole, provision};

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();
static PROVISIONING: Mutex<()> = Mutex::const_new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The CA of the tests' own cluster's TLS certificate; none on a server of
/// `DATABASE_URL`.
pub fn tls_ca_file() -> Option<std::path::PathBuf> {
    CLUSTER.get().map(PgCluster::tls_ca_file)
}

/// The admin connection options of the server tests use.
fn admin_options() -> PgConnectOptions {
    match std::env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => url.parse().expect("DATABASE_URL is not a valid Postgres URL"),
        _ => {
            let cluster = CLUSTER.get_or_init(|| {
                PgCluster::start().unwrap_or_else(|e| panic!("starting a throwaway PostgreSQL: {e}"))
            });
            cluster.admin_url("postgres").parse().expect("cluster URL")
        }
    }
}

/// A fresh database with the services' roles and schemas provisioned.
#[derive(Debug, Clone)]
pub struct TestDb {
    host: String,
    port: u16,
    name: String,
    admin: PgConnectOptions,
}

impl TestDb {
    /// Creates a new, uniquely named database on the tests' server and provisions it.
    pub async fn create() -> Self {
        let admin = tokio::task::spawn_blocking(admin_options).await.expect("starting PostgreSQL");
        Self::create_on(admin).await
    }

    /// Creates a new, uniquely named database on the server `admin` points
    /// to (a superuser connection) and provisions it.
    pub async fn create_on(admin: PgConnectOptions) -> Self {
        let name = format!(
            "clinic_test_{}_{}_{:06x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>() & 0xff_ffff
        );
        let mut conn = admin.connect().await.expect("connecting to PostgreSQL as admin");
        {
            // Concurrent `create role` statements race on the catalog; one at a time.
            let _guard = PROVISIONING.lock().await;
            provision::create_roles(&mut conn).await.expect("creating service roles");
        }
        sqlx::raw_sql(AssertSqlSafe(format!("create database {name}")))
            .execute(&mut conn)
            .await
            .expect("creating the test database");
        let admin = admin.database(&name);
        let mut conn = admin.connect().await.expect("connecting to the test database");
        provision::create_schemas(&mut conn).await.expect("creating schemas");
        Self { host: admin.get_host().to_owned(), port: admin.get_port(), name, admin }
    }

    /// The URL `service` connects with (its runtime role).
    pub fn url_for(&self, service: ServiceRole) -> String {
        self.url_as(service.role())
    }

    /// The URL of the role that owns `service`'s schema, which migrates it.
    pub fn owner_url_for(&self, service: ServiceRole) -> String {
        self.url_as(service.owner_role())
    }

    fn url_as(&self, role: &str) -> String {
        ServiceRole::dev_url(role, &self.host, self.port, &self.name)
    }

    /// Runs `schema`'s migrations as `service`'s owner role, as the migrate
    /// step of a deployment does before the service starts (again on a
    /// database that has them: nothing to do).
    pub async fn migrate(&self, service: ServiceRole, schema: &OwnedSchema) {
        let settings = MigrateSettings::new(self.owner_url_for(service), service.role());
        clinic_pg::schema::migrate(&settings, schema).await.expect("migrating as the schema's owner");
    }

    /// A superuser URL of this database, for tools such as `pg_dump`.
    pub fn admin_url(&self) -> String {
        match std::env::var("DATABASE_URL") {
            Ok(url) if !url.is_empty() => {
                let (base, query) = url.split_once('?').map_or((url.as_str(), None), |(b, q)| (b, Some(q)));
                let authority = base.find("://").map_or(0, |i| i + 3);
                let server_end = base[authority..].find('/').map_or(base.len(), |i| authority + i);
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                format!("{}/{}{query}", &base[..server_end], self.name)
            }
            _ => CLUSTER.get().expect("the tests' cluster is running").admin_url(&self.name),
        }
    }

    /// Superuser connection options for this database, for assertions that
    /// look behind the API.
    pub fn admin_options(&self) -> PgConnectOptions {
        self.admin.clone()
    }
}
