#!/usr/bin/env bash
# One command: set everything up, then run the reference deployment on a local PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/civicsync demo "$@"
