#!/usr/bin/env bash
# One-shot provisioning for docker compose (run by the postgres image on an
# empty volume): per service, an owner role that owns its schema and runs its
# migrations (the compose one-shots `patients-migrate`, `studies-migrate`),
# and a runtime role the service connects as, which owns nothing and gets
# only what its migrations grant it. The same roles and schemas as
# testkit/src/provision.rs creates for tests and `make up`.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v patients_password="$PATIENTS_DB_PASSWORD" -v studies_password="$STUDIES_DB_PASSWORD" \
  -v patients_owner_password="$PATIENTS_DB_OWNER_PASSWORD" -v studies_owner_password="$STUDIES_DB_OWNER_PASSWORD" <<'SQL'
create role clinic_patients_owner login password :'patients_owner_password';
create role clinic_patients login password :'patients_password';
create role clinic_studies_owner login password :'studies_owner_password';
create role clinic_studies login password :'studies_password';
-- An error's DETAIL can quote the row (a duplicate key's email): terse
-- errors keep patient data out of the server log.
alter role clinic_patients_owner set log_error_verbosity = 'terse';
alter role clinic_patients set log_error_verbosity = 'terse';
alter role clinic_studies_owner set log_error_verbosity = 'terse';
alter role clinic_studies set log_error_verbosity = 'terse';
create schema patients authorization clinic_patients_owner;
create schema studies authorization clinic_studies_owner;
SQL
