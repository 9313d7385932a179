#!/usr/bin/env bash
# Set up everything civicsync needs on a Debian machine; safe to re-run.
#   - PostgreSQL server binaries (Debian package `postgresql`), used by the demo, tests and benchmarks
#     to run a private cluster with wal_level=logical; no system service is configured or started.
#   - Prometheus and Alertmanager (alert rules are checked with promtool and fired for real in tests),
#     and headless Chromium (the status page is tested in a real browser); none is started as a service.
#   - the Kafka broker, Kafka Connect and Debezium jars in .kafka (scripts/setup-kafka.sh, from Maven).
#   - a virtualenv in .venv with civicsync and its dev dependencies (re-installed when pyproject changes).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_packages+=(postgresql)
command -v runuser >/dev/null 2>&1 || apt_packages+=(util-linux)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_packages+=(python3-venv)
command -v promtool >/dev/null 2>&1 || apt_packages+=(prometheus)
command -v prometheus-alertmanager >/dev/null 2>&1 || apt_packages+=(prometheus-alertmanager)
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
command -v curl >/dev/null 2>&1 || apt_packages+=(curl)
command -v wrk >/dev/null 2>&1 || apt_packages+=(wrk)  # bench/api.py's load generator
if [ ${#apt_packages[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${apt_packages[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}"
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
stamp=.venv/.civicsync-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || ! .venv/bin/python -c 'import civicsync' 2>/dev/null; then
  echo "setup: installing civicsync and its dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
bash scripts/setup-kafka.sh
echo "setup: ready"
