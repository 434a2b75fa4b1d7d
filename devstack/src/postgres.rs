//! The database of a local run: the one at `DATABASE_URL`, or a private
//! cluster whose data is kept in the project's ignored `.local/` folder.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use clinic_pg::schema::MigrateSettings;
use clinic_pg_cluster::{PgCluster, ServiceRole, cluster::free_port, provision};
use sqlx::{AssertSqlSafe, ConnectOptions, postgres::PgConnectOptions};

/// The database every service of a local run uses.
pub const DATABASE: &str = "clinic";

/// Why the database could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DatabaseError {
    /// The PostgreSQL cluster could not be created or started.
    #[error("starting PostgreSQL: {0}")]
    Cluster(#[from] std::io::Error),
    /// Connecting or provisioning failed.
    #[error("preparing the database: {0}")]
    Sql(#[from] sqlx::Error),
}

/// A provisioned database, with the cluster that serves it when it is ours.
#[derive(Debug)]
pub struct LocalDatabase {
    admin: PgConnectOptions,
    cluster: Option<PgCluster>,
    data_dir: Option<PathBuf>,
}

impl LocalDatabase {
    /// The URL `service` connects with (its runtime role).
    pub fn url_for(&self, service: ServiceRole) -> String {
        self.url_as(service.role())
    }

    /// The URL of the role that owns `service`'s schema and migrates it.
    pub fn owner_url_for(&self, service: ServiceRole) -> String {
        self.url_as(service.owner_role())
    }

    fn url_as(&self, role: &str) -> String {
        let database = self.admin.get_database().unwrap_or(DATABASE);
        ServiceRole::dev_url(role, self.admin.get_host(), self.admin.get_port(), database)
    }

    /// A superuser URL, for `psql`.
    pub fn admin_url(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.admin.get_username(),
            self.admin.get_host(),
            self.admin.get_port(),
            self.admin.get_database().unwrap_or(DATABASE)
        )
    }

    /// Where the private cluster keeps its data, if we run one.
    pub fn data_dir(&self) -> Option<&Path> {
        self.data_dir.as_deref()
    }

    /// Stops our cluster, if we run one (its data stays).
    pub fn stop(mut self) {
        drop(self.cluster.take());
    }
}

/// Whether every folder above `path` lets other users through, which the
/// `postgres` OS user needs when we are root.
fn others_can_reach(path: &Path) -> bool {
    let Ok(path) = path.canonicalize() else { return false };
    path.ancestors().skip(1).all(|p| std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o001 != 0))
}

fn is_root() -> bool {
    std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// The folder for the private cluster's data: `home/postgres`, unless we are
/// root and the `postgres` user cannot reach it (a clone inside a private
/// temporary folder), in which case a folder under /var/tmp named after
/// `home`.
pub fn data_root(home: &Path) -> PathBuf {
    let preferred = home.join("postgres");
    if !is_root() || others_can_reach(home) {
        return preferred;
    }
    let canonical = home.canonicalize().unwrap_or_else(|_| home.to_owned());
    let tag: u64 = canonical
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    PathBuf::from(format!("/var/tmp/clinic-postgres-{tag:016x}"))
}

/// Prepares the database: on `database_url` (a superuser URL) if given,
/// otherwise on a private cluster with its data under `home`; then creates
/// the services' roles and schemas if they are missing.
pub async fn prepare(home: &Path, database_url: Option<&str>) -> Result<LocalDatabase, DatabaseError> {
    let (admin, cluster, data_dir) = match database_url {
        Some(url) => (url.parse::<PgConnectOptions>()?, None, None),
        None => {
            let root = data_root(home);
            let port = free_port()?;
            let start_root = root.clone();
            let cluster = tokio::task::spawn_blocking(move || PgCluster::start_in(&start_root, port, true))
                .await
                .map_err(std::io::Error::other)??;
            let server: PgConnectOptions = cluster.admin_url("postgres").parse()?;
            let mut conn = server.connect().await?;
            let exists: bool =
                sqlx::query_scalar("select exists (select 1 from pg_database where datname = $1)")
                    .bind(DATABASE)
                    .fetch_one(&mut conn)
                    .await?;
            if !exists {
                sqlx::raw_sql(AssertSqlSafe(format!("create database {DATABASE}")))
                    .execute(&mut conn)
                    .await?;
            }
            (server.database(DATABASE), Some(cluster), Some(root))
        }
    };
    let mut conn = admin.connect().await?;
    provision::create_roles(&mut conn).await?;
    provision::create_schemas(&mut conn).await?;
    Ok(LocalDatabase { admin, cluster, data_dir })
}

/// Why the migrations could not run.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// Connecting or migrating failed.
    #[error(transparent)]
    Schema(#[from] clinic_pg::schema::SchemaError),
}

/// Runs both services' migrations on `db`, each as its schema's owner role,
/// as `<service> migrate` does.
pub async fn migrate(db: &LocalDatabase) -> Result<(), MigrateError> {
    let services = [
        (ServiceRole::Patients, patients_service::OWNED_SCHEMA),
        (ServiceRole::Studies, studies_service::OWNED_SCHEMA),
    ];
    for (role, schema) in services {
        let settings = MigrateSettings::new(db.owner_url_for(role), role.role());
        let applied = clinic_pg::schema::migrate(&settings, &schema).await?;
        println!("{}: {applied} migrations applied", schema.name);
    }
    Ok(())
}
