//! The roles and schemas each service expects to find.
//!
//! Each service has two login roles: an owner (`clinic_<service>_owner`)
//! that owns its schema and runs its migrations, and the runtime role the
//! service connects as (`clinic_<service>`), which owns nothing and has only
//! the rights its migrations grant it - none on the other service's schema.
//! So data ownership and the audit trail's append-only rule are enforced by
//! Postgres, not by convention. Provisioning needs a superuser (or a role
//! with CREATEROLE and CREATE on the database); the services never do.

use sqlx::{AssertSqlSafe, Connection, PgConnection};

/// A service that owns a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceRole {
    /// patients-service: schema `patients`, role `clinic_patients`.
    Patients,
    /// studies-service: schema `studies`, role `clinic_studies`.
    Studies,
}

impl ServiceRole {
    /// Every service role.
    pub const ALL: [ServiceRole; 2] = [ServiceRole::Patients, ServiceRole::Studies];

    /// The login role the service connects as: it owns nothing.
    pub fn role(self) -> &'static str {
        match self {
            ServiceRole::Patients => "clinic_patients",
            ServiceRole::Studies => "clinic_studies",
        }
    }

    /// The login role that owns the service's schema and runs its migrations.
    pub fn owner_role(self) -> &'static str {
        match self {
            ServiceRole::Patients => "clinic_patients_owner",
            ServiceRole::Studies => "clinic_studies_owner",
        }
    }

    /// The schema the service owns.
    pub fn schema(self) -> &'static str {
        match self {
            ServiceRole::Patients => "patients",
            ServiceRole::Studies => "studies",
        }
    }

    /// The roles' password for local runs and tests: each role's name (the
    /// throwaway clusters trust local connections; real deployments set their own).
    pub fn dev_password(role: &str) -> &str {
        role
    }

    /// The URL `role` connects to `database` at `host:port` with, using its
    /// development password.
    pub fn dev_url(role: &str, host: &str, port: u16, database: &str) -> String {
        format!("postgres://{role}:{password}@{host}:{port}/{database}", password = Self::dev_password(role))
    }
}

/// Creates the services' owner and runtime roles if they do not exist yet
/// (roles are global to a cluster, so this is done once per cluster).
pub async fn create_roles(admin: &mut PgConnection) -> sqlx::Result<()> {
    for service in ServiceRole::ALL {
        for role in [service.owner_role(), service.role()] {
            let sql = format!(
                "do $$ begin create role {role} login password '{password}'; \
                 exception when duplicate_object then null; end $$",
                password = ServiceRole::dev_password(role),
            );
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *admin).await?;
            // An error's DETAIL can quote the row (`Key (lower(email))=(…)`):
            // terse errors keep patient data out of the server log.
            let terse = format!("alter role {role} set log_error_verbosity = 'terse'");
            sqlx::raw_sql(AssertSqlSafe(terse)).execute(&mut *admin).await?;
        }
    }
    Ok(())
}

/// Creates each service's schema, owned by its owner role, in the database
/// `admin` is connected to. A schema from before the owner role existed
/// (owned by the runtime role) is handed over to the owner with everything
/// in it, so its next migration can grant the runtime role its rights back.
pub async fn create_schemas(admin: &mut PgConnection) -> sqlx::Result<()> {
    let mut tx = admin.begin().await?;
    for service in ServiceRole::ALL {
        let (schema, owner, runtime) = (service.schema(), service.owner_role(), service.role());
        let sql = format!("create schema if not exists {schema} authorization {owner}");
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await?;
        let owned_by_runtime: bool =
            sqlx::query_scalar("select nspowner::regrole::text = $2 from pg_namespace where nspname = $1")
                .bind(schema)
                .bind(runtime)
                .fetch_one(&mut *tx)
                .await?;
        if owned_by_runtime {
            let sql = format!("reassign owned by {runtime} to {owner}");
            sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await?;
        }
    }
    tx.commit().await
}
