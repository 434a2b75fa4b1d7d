#!/usr/bin/env bash
# Makes sure a Chromium is on this machine for the listing page's browser
# test (driven by playwright-core, which downloads no browser). As root on
# Debian/Ubuntu it installs Debian's `chromium`; otherwise it says what to run.
set -euo pipefail

find_chromium() {
  local c
  for c in "${CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
    if [[ -n $c && -x $c ]]; then echo "$c"; return 0; fi
  done
  return 1
}

if ! find_chromium >/dev/null && [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
  echo "Chromium not found: installing Debian's chromium package" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq chromium >/dev/null
fi

if ! bin=$(find_chromium); then
  cat >&2 <<'MSG'
Chromium was not found; the browser test of the listing page needs it. Install it:
    sudo apt-get install -y chromium        # Debian, Ubuntu
or set CHROMIUM to a Chromium or Chrome binary.
MSG
  exit 1
fi
echo "Chromium: $bin" >&2
