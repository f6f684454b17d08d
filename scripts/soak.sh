#!/usr/bin/env bash
# The soak and fault suite (tests/soak.rs) for longer than the test command's single round:
# every demo role reads through pgvakt while PostgreSQL restarts, pgvakt is stopped with SIGTERM
# and SIGKILL and restarted, the audit disk fills (a real tmpfs when run as root) and the policy
# reloads; then the audit trail, the reads received, PostgreSQL's backends, pgvakt's log and
# memory are checked.
#
#   bash scripts/soak.sh              # one round, as in the test command (under a minute)
#   bash scripts/soak.sh --minutes 30 # rounds until 30 minutes have passed
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=0
while [ $# -gt 0 ]; do
    case "$1" in
        --minutes) minutes="${2:?--minutes needs a number}"; shift 2 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done
case "$minutes" in
    ''|*[!0-9]*) echo "--minutes takes a whole number" >&2; exit 2 ;;
esac
bash scripts/ensure-deps.sh
PGVAKT_SOAK_SECONDS=$((minutes * 60)) cargo test --locked --test suite soak:: -- --nocapture
