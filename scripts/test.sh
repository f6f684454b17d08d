#!/usr/bin/env bash
# The project's test command: installs what is missing, then runs every test against real
# PostgreSQL servers that the tests start and remove themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
# Client drivers for tests/clients.rs, in project-local directories.
bash scripts/clients-deps.sh
# The thread count goes through the environment: criterion benches (also built and run once
# here, in their test mode) take no libtest arguments.
# A failure's own message is printed again at the end, without backtraces: a CI log that keeps
# only its tail then still says why each test failed.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
RUST_TEST_THREADS="${PGVAKT_TEST_THREADS:-4}" cargo test --all-targets --locked 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
    echo
    echo "=== why each failing test failed (backtraces left out) ==="
    awk '/^---- .* stdout ----$/ { keep = 1; shown = 0 }
         /^(stack backtrace:|note: run with|failures:$)/ { keep = 0 }
         keep && shown < 40 { print; shown++ }' "$log"
fi
exit "$status"
