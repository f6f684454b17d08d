#!/usr/bin/env bash
# The project's test command: installs what is missing, then runs every test against real
# PostgreSQL servers that the tests start and remove themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-deps.sh
# Client drivers for tests/clients.rs, in project-local directories.
bash scripts/clients-deps.sh
cargo test --all-targets --locked -- --test-threads="${PGVAKT_TEST_THREADS:-4}"
