#!/usr/bin/env bash
# One-shot provisioning for docker compose (run by the postgres image on an
# empty volume): each service gets its own login role owning its own schema,
# and no rights on the other's. The same roles and schemas as
# testkit/src/provision.rs creates for tests and `make up`.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v patients_password="$PATIENTS_DB_PASSWORD" -v studies_password="$STUDIES_DB_PASSWORD" <<'SQL'
create role clinic_patients login password :'patients_password';
create role clinic_studies login password :'studies_password';
-- An error's DETAIL can quote the row (a duplicate key's email): terse
-- errors keep patient data out of the server log.
alter role clinic_patients set log_error_verbosity = 'terse';
alter role clinic_studies set log_error_verbosity = 'terse';
create schema patients authorization clinic_patients;
create schema studies authorization clinic_studies;
SQL
