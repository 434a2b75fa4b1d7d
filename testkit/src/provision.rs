//! The roles and schemas each service expects to find.
//!
//! Each service connects as its own login role that owns its own schema and
//! has no rights on the other's, so data ownership is enforced by Postgres,
//! not by convention. Provisioning needs a superuser (or a role with
//! CREATEROLE and CREATE on the database); the services never do.

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

    /// The login role the service connects as.
    pub fn role(self) -> &'static str {
        match self {
            ServiceRole::Patients => "clinic_patients",
            ServiceRole::Studies => "clinic_studies",
        }
    }

    /// The schema the service owns.
    pub fn schema(self) -> &'static str {
        match self {
            ServiceRole::Patients => "patients",
            ServiceRole::Studies => "studies",
        }
    }

    /// The role's password for local runs and tests (the throwaway clusters
    /// trust local connections; real deployments set their own).
    pub fn dev_password(self) -> &'static str {
        self.role()
    }
}

/// Creates the service roles if they do not exist yet (roles are global to a
/// cluster, so this is done once per cluster).
pub async fn create_roles(admin: &mut PgConnection) -> sqlx::Result<()> {
    for service in ServiceRole::ALL {
        let sql = format!(
            "do $$ begin create role {role} login password '{password}'; \
             exception when duplicate_object then null; end $$",
            role = service.role(),
            password = service.dev_password(),
        );
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *admin).await?;
        // An error's DETAIL can quote the row (`Key (lower(email))=(…)`):
        // terse errors keep patient data out of the server log.
        let terse = format!("alter role {} set log_error_verbosity = 'terse'", service.role());
        sqlx::raw_sql(AssertSqlSafe(terse)).execute(&mut *admin).await?;
    }
    Ok(())
}

/// Creates each service's schema, owned by its role, in the database
/// `admin` is connected to.
pub async fn create_schemas(admin: &mut PgConnection) -> sqlx::Result<()> {
    let mut tx = admin.begin().await?;
    for service in ServiceRole::ALL {
        let sql = format!(
            "create schema if not exists {schema} authorization {role}",
            schema = service.schema(),
            role = service.role(),
        );
        sqlx::raw_sql(AssertSqlSafe(sql)).execute(&mut *tx).await?;
    }
    tx.commit().await
}
