#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries are on this machine: the tests and
# `make up` start private throwaway clusters from them (nothing needs to run).
# As root on Debian/Ubuntu it installs them; otherwise it says what to run.
set -euo pipefail

find_bin() {
  if [[ -n "${PG_BIN:-}" && -x "$PG_BIN/initdb" ]]; then echo "$PG_BIN"; return 0; fi
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x $d/initdb ]]; then echo "$d"; return 0; fi
  done
  if command -v pg_config >/dev/null && d=$(pg_config --bindir) && [[ -x $d/initdb ]]; then
    echo "$d"; return 0
  fi
  if command -v initdb >/dev/null; then dirname "$(command -v initdb)"; return 0; fi
  return 1
}

is_root() { [[ $(id -u) == 0 ]]; }

if ! find_bin >/dev/null; then
  if is_root && command -v apt-get >/dev/null; then
    echo "PostgreSQL server binaries not found: installing Debian's postgresql package" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
  fi
fi

if ! bin=$(find_bin); then
  cat >&2 <<'MSG'
PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found. Install them:
    sudo apt-get install -y postgresql      # Debian, Ubuntu
    brew install postgresql@15              # macOS
or set PG_BIN to the folder that holds initdb.
MSG
  exit 1
fi

# initdb and postgres refuse to run as root: as root we run them as the
# `postgres` OS user, which Debian's package creates; make sure it exists.
if is_root && ! id postgres >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin postgres
fi
echo "PostgreSQL binaries: $bin" >&2
