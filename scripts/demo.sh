#!/usr/bin/env bash
# Runs the demo: a throwaway PostgreSQL with the CRM schema and data, behind pgvakt.
# Options go to `pgvakt demo`: `bash scripts/demo.sh --dir /tmp/demo`, or after `--` as with
# cargo (`bash scripts/demo.sh -- --dir /tmp/demo`); `--help` lists them.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--" ]; then
    shift
fi
bash scripts/ensure-deps.sh
exec cargo run --release --locked -- demo "$@"
