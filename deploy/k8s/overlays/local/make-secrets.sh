#!/usr/bin/env bash
# Writes the local overlay's secrets/ (git-ignored): the development signing
# key and its JWKS, a localhost certificate (`clinic-dev credentials`), a
# service token for studies-service valid 30 days (run again to renew), and
# random passwords for the four database roles (an owner and a runtime role
# per service) with the URLs that use them.
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
# Keep passwords already made: the database has them. Each service has an
# owner role (its migrate Job) and a runtime role (the service itself); both
# connect over TLS and check PostgreSQL's certificate against the cluster's CA.
tls='sslmode=verify-full&sslrootcert=/etc/clinic/db-ca/ca.crt'
for service in patients studies; do
  for kind in role owner-role; do
    role="clinic_$service"
    [ "$kind" = owner-role ] && role="clinic_${service}_owner"
    if [ ! -s "$out/$service-$kind.env" ]; then
      printf 'username=%s\npassword=%s\n' "$role" "$(password)" > "$out/$service-$kind.env"
    fi
    pass=$(sed -n 's/^password=//p' "$out/$service-$kind.env")
    url="postgres://$role:$pass@clinic-db-rw:5432/clinic?$tls"
    if [ "$kind" = role ]; then
      printf 'DATABASE_URL=%s\n' "$url" > "$out/$service-db.env"
    else
      printf 'DATABASE_URL=%s\n' "$url" > "$out/$service-db-owner.env"
    fi
  done
done
echo "secrets written to $out"
