#!/usr/bin/env bash
# Writes the local overlay's secrets/ (git-ignored): the development signing
# key and its JWKS, a localhost certificate (`clinic-dev credentials`), a
# service token for studies-service valid 30 days (run again to renew), and
# random passwords for the two database roles with the URLs that use them.
#   CLINIC_DEV=target/debug/clinic-dev deploy/k8s/overlays/local/make-secrets.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
clinic_dev=${CLINIC_DEV:-clinic-dev}
out="$here/secrets"
mkdir -p "$out"
chmod 700 "$out"
"$clinic_dev" credentials --home "$out/home"
"$clinic_dev" token --home "$out/home" --role service --subject studies-service --ttl 30d \
  | tr -d '\n' > "$out/service-token"
password() { head -c 24 /dev/urandom | base64 | tr -d '/+='; }
# Keep passwords already made: the database has them.
for service in patients studies; do
  role="clinic_$service"
  if [ ! -s "$out/$service-role.env" ]; then
    printf 'username=%s\npassword=%s\n' "$role" "$(password)" > "$out/$service-role.env"
  fi
  pass=$(sed -n 's/^password=//p' "$out/$service-role.env")
  printf 'DATABASE_URL=postgres://%s:%s@clinic-db-rw:5432/clinic\n' "$role" "$pass" > "$out/$service-db.env"
done
echo "secrets written to $out"
