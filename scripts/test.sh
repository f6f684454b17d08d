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
RUST_TEST_THREADS="${PGVAKT_TEST_THREADS:-4}" cargo test --all-targets --locked
