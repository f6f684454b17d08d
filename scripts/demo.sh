#!/usr/bin/env bash
# Runs the demo: a throwaway PostgreSQL with the CRM schema and data, behind pgvakt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
exec cargo run --release --locked -- demo "$@"
