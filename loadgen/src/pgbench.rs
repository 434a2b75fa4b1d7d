//! The physical baseline: pgbench against the same database and tables, with
//! the statements the services run, prepared, at the same concurrency.

use std::{path::Path, process::Command, time::Duration};

/// A pgbench script the services' equivalent is compared with.
#[derive(Debug, Clone, Copy)]
pub enum Script {
    /// Primary-key lookup of a patient (GetPatient's query).
    Select,
    /// Insert of a patient returning it (CreatePatient's insert).
    Insert,
}

impl Script {
    /// The scenario name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Script::Select => "pgbench_select",
            Script::Insert => "pgbench_insert",
        }
    }

    fn text(self, patients: u64) -> String {
        match self {
            Script::Select => format!(
                "\\set id random(1, {patients})\n\
                 select id, first_name, last_name, birth_date, email, version, create_time, update_time \
                 from patients.patient where id = :id;\n"
            ),
            Script::Insert => "insert into patients.patient (first_name, last_name, birth_date, email) \
                 values ('Pg', 'Bench', date '1990-01-01', 'pgbench-' || gen_random_uuid() || '@ejemplo.com') \
                 returning id, first_name, last_name, birth_date, email, version, create_time, update_time;\n"
                .to_owned(),
        }
    }
}

/// Why pgbench could not give a figure.
#[derive(Debug, thiserror::Error)]
#[error("pgbench: {0}")]
pub struct PgbenchError(String);

/// Transactions per second of `script`, run by `pgbench` from `bin` against
/// `url` with `clients` connections for `duration`.
pub fn run(
    bin: &Path,
    url: &str,
    script: Script,
    patients: u64,
    clients: usize,
    duration: Duration,
    work_dir: &Path,
) -> Result<f64, PgbenchError> {
    let file = work_dir.join(format!("{}.sql", script.name()));
    std::fs::write(&file, script.text(patients)).map_err(|e| PgbenchError(e.to_string()))?;
    let output = Command::new(bin.join("pgbench"))
        .args(["--no-vacuum", "--protocol=prepared", "--jobs=2"])
        .arg(format!("--client={clients}"))
        .arg(format!("--time={}", duration.as_secs().max(1)))
        .arg(format!("--file={}", file.display()))
        .arg(url)
        .output()
        .map_err(|e| PgbenchError(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(PgbenchError(format!("{}{}", stdout, String::from_utf8_lossy(&output.stderr))));
    }
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("tps = ")?.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| PgbenchError(format!("no tps in output: {stdout}")))
}
