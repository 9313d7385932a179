#!/usr/bin/env bash
# Set up an isolated virtualenv .venv-airflow with Apache Airflow and civicsync, to run and test
# the DAGs in deploy/airflow/dags; safe to re-run (re-installs only when this script or
# pyproject.toml changed, or the venv is broken).
#
# Airflow lives in its own venv because its pins (FastAPI, SQLAlchemy, ...) are not civicsync's:
# a department's Airflow workers install civicsync into *their* environment the same way
# (`pip install <civicsync>` without dev extras, next to their Airflow), see docs/airflow.md.
#
# Exit status: 0 ready; 3 Airflow cannot be obtained here (no venv support, or the package index
# does not offer apache-airflow==$AIRFLOW_VERSION) - callers may skip on 3 only; other: a real error.
set -euo pipefail
cd "$(dirname "$0")/.."

AIRFLOW_VERSION=3.3.2
venv=.venv-airflow
stamp=$venv/.civicsync-airflow-installed
want=$(cat "$0" pyproject.toml | sha256sum | cut -d' ' -f1)

# One setup at a time per checkout (test runs in parallel sessions call this script too).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/civicsync-setup-airflow-$(pwd | sha256sum | cut -c1-12).lock"
  flock 9
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "setup-airflow: creating $venv"
  if ! python3 -m venv "$venv"; then
    echo "setup-airflow: cannot create a virtualenv (python3-venv missing?)" >&2
    rm -rf "$venv"
    exit 3
  fi
fi

# A migrated metadata database for the tests to copy: `airflow db migrate` takes ~15 s, once per
# install instead of once per test run. Only airflow.db is kept (airflow.cfg holds absolute paths).
template=$venv/airflow-home-template
migrate_template() {
  if [ -f "$template/airflow.db" ] && [ "$(cat "$template/.migrated" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "setup-airflow: migrating a template metadata database in $template"
  rm -rf "$template"
  local home
  home=$(mktemp -d)
  if ! env -i PATH="$PWD/$venv/bin:/usr/bin:/bin" HOME="$home" AIRFLOW_HOME="$home" \
      AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__UNIT_TEST_MODE=False \
      "$venv/bin/airflow" db migrate >"$home/migrate.log" 2>&1; then
    echo "setup-airflow: airflow db migrate failed:" >&2
    tail -20 "$home/migrate.log" >&2
    rm -rf "$home"
    exit 1
  fi
  mkdir -p "$template"
  cp "$home/airflow.db" "$template/airflow.db"
  echo "$want" > "$template/.migrated"
  rm -rf "$home"
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
    && "$venv/bin/python" -c 'import airflow.sdk, civicsync' 2>/dev/null; then
  echo "setup-airflow: $venv is up to date (apache-airflow $AIRFLOW_VERSION + civicsync)"
  migrate_template
  exit 0
fi

echo "setup-airflow: installing apache-airflow==$AIRFLOW_VERSION and civicsync (editable, no dev extras) into $venv"
rm -f "$stamp"
"$venv/bin/python" -m pip install -q --upgrade pip
if ! "$venv/bin/python" -m pip install -q "apache-airflow==$AIRFLOW_VERSION" -e .; then
  # Tell "Airflow is not obtainable here" (exit 3) from a real failure such as a dependency clash.
  probe=$(mktemp -d)
  if ! "$venv/bin/python" -m pip download -q --no-deps -d "$probe" "apache-airflow==$AIRFLOW_VERSION" >/dev/null 2>&1; then
    rm -rf "$probe"
    echo "setup-airflow: apache-airflow==$AIRFLOW_VERSION is not available from the configured package index" >&2
    exit 3
  fi
  rm -rf "$probe"
  echo "setup-airflow: installing failed (see pip's output above)" >&2
  exit 1
fi
"$venv/bin/python" -c 'import airflow.sdk, civicsync' 
echo "$want" > "$stamp"
migrate_template
echo "setup-airflow: ready: $("$venv/bin/airflow" version 2>/dev/null | tail -1) in $venv"
