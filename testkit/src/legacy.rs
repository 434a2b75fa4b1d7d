//! Schemas as deployments of earlier releases left them, to test upgrades.
//!
//! Each service's migrations up to its [`Baseline`](clinic_pg::schema::Baseline)
//! were squashed into that baseline; the replaced files live on here
//! (`fixtures/legacy-migrations/`) as history, so a test can build a
//! schema the old way and check that `<service> migrate` brings it to the
//! same tables a fresh schema gets, keeping its rows.

use clinic_pg::schema::OwnedSchema;

use crate::{ServiceRole, TestDb};

/// patients' migrations 0001-0008, as released before the baseline.
pub const PATIENTS: OwnedSchema = OwnedSchema {
    name: "patients",
    owner_role: "clinic_patients_owner",
    runtime_role: "clinic_patients",
    migrator: || sqlx::migrate!("fixtures/legacy-migrations/patients"),
    baseline: None,
    resource_table: "patient",
    shared: &[],
};

/// studies' migrations 0001-0007, as released before the baseline.
pub const STUDIES: OwnedSchema = OwnedSchema {
    name: "studies",
    owner_role: "clinic_studies_owner",
    runtime_role: "clinic_studies",
    migrator: || sqlx::migrate!("fixtures/legacy-migrations/studies"),
    baseline: None,
    resource_table: "study",
    shared: &[],
};

/// The legacy schema of `service`.
pub fn schema_of(service: ServiceRole) -> OwnedSchema {
    match service {
        ServiceRole::Patients => PATIENTS,
        ServiceRole::Studies => STUDIES,
    }
}

/// `pg_dump --schema-only` of `schema` in `db`, without the lines that
/// differ between any two dumps (the `\restrict` keys of pg_dump 15.14+).
pub async fn schema_dump(db: &TestDb, schema: &str) -> String {
    let pg_dump = clinic_pg_cluster::cluster::find_bin_dir().expect("PostgreSQL binaries").join("pg_dump");
    let output = tokio::process::Command::new(&pg_dump)
        .args(["--schema-only", "--no-comments", "--schema", schema, "--dbname"])
        .arg(db.admin_url())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", pg_dump.display()));
    assert!(output.status.success(), "pg_dump failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout)
        .expect("pg_dump writes UTF-8")
        .lines()
        .filter(|line| !line.starts_with("\\restrict") && !line.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}
