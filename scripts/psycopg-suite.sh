#!/usr/bin/env bash
# psycopg 3's own test suite, run as the demo's unrestricted `admin` directly against PostgreSQL
# and through pgvakt (TLS, sslmode=require, the demo policy and audit trail), then compared:
# every test that passes directly must pass through pgvakt, or be explained in
# tests/clients/psycopg-suite/RESULTS.md.
#
#   bash scripts/psycopg-suite.sh [--version V] [--source GIT_DIR] [--target both|direct|pgvakt]
#                                 [--out DIR] [-- PYTEST_ARGS...]
#
# --version  psycopg release whose tests run, installed with the same version into
#            .venv-psycopg-suite (default: the version in .venv-clients, else 3.3.4)
# --source   a clone of github.com/psycopg/psycopg holding tag V (default: cloned into --out)
# --target   which runs (default both, one after the other on one demo database)
# --out      reports, logs and the demo's directories (default bench/results/tmp/psycopg-suite)
# PYTEST_ARGS select tests (default: the whole tests/ directory).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VERSION=""
SOURCE=""
TARGET=both
OUT="$ROOT/bench/results/tmp/psycopg-suite"
while [ $# -gt 0 ]; do
    case "$1" in
        --version) VERSION=$2; shift 2 ;;
        --source) SOURCE=$2; shift 2 ;;
        --target) TARGET=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "unknown option: $1" >&2; exit 2 ;;
    esac
done
PYTEST_ARGS=("$@")
[ ${#PYTEST_ARGS[@]} -gt 0 ] || PYTEST_ARGS=(tests)
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

if [ -z "$VERSION" ]; then
    VERSION=$(.venv-clients/bin/python -c 'import psycopg; print(psycopg.__version__)' 2>/dev/null || echo 3.3.4)
fi
SRC="$OUT/psycopg-$VERSION"
if [ ! -d "$SRC/tests" ]; then
    if [ -z "$SOURCE" ]; then
        SOURCE="$OUT/psycopg-git"
        [ -d "$SOURCE" ] || git clone -q https://github.com/psycopg/psycopg "$SOURCE"
    fi
    mkdir -p "$SRC"
    git -C "$SOURCE" archive "$VERSION" tests tools pyproject.toml | tar -x -C "$SRC"
    # The proxy fixture (a TCP tunnel used to simulate network loss) forces sslmode=disable;
    # pgvakt requires TLS, which the tunnel passes through unchanged, so the DSN's mode is kept.
    fix="$SRC/tests/fix_proxy.py"
    grep -q 'cdict\["sslmode"\] = "disable"' "$fix" || { echo "fix_proxy.py changed upstream" >&2; exit 1; }
    sed -i 's/^\( *\)cdict\["sslmode"\] = "disable".*/\1pass  # pgvakt: keep the DSN'"'"'s sslmode/' "$fix"
fi

VENV="$ROOT/.venv-psycopg-suite"
if ! "$VENV/bin/python" -c "import psycopg, psycopg_pool, pproxy, anyio, pytest; assert psycopg.__version__ == '$VERSION'" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "psycopg[binary]==$VERSION" psycopg-pool 'anyio>=4.0' 'pproxy>=2.7' 'pytest>=6.2.5'
fi

[ -x target/debug/pgvakt ] || cargo build --bin pgvakt
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

run_one() { # target
    local target=$1 listen metrics demo_dir log pid upstream dsn
    listen=$(free_port); metrics=$(free_port)
    demo_dir="$OUT/demo-$target"; rm -rf "$demo_dir"
    log="$OUT/demo-$target.log"
    target/debug/pgvakt demo --listen "127.0.0.1:$listen" --metrics-listen "127.0.0.1:$metrics" \
        --contacts 100 --dir "$demo_dir" >"$log" 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do grep -q "^upstream: " "$log" && break; sleep 1; done
    upstream=$(sed -n 's|^upstream: postgresql://admin:admin@\(.*\)/crm$|\1|p' "$log")
    [ -n "$upstream" ] || { echo "demo did not start; see $log" >&2; kill "$pid"; exit 1; }
    if [ "$target" = direct ]; then
        dsn="host=${upstream%:*} port=${upstream##*:} user=admin password=admin dbname=crm"
    else
        dsn="host=127.0.0.1 port=$listen user=admin password=admin dbname=crm sslmode=require"
    fi
    echo "psycopg $VERSION tests, $target: $dsn" >&2
    (cd "$SRC" && PSYCOPG_TEST_DSN="$dsn" "$VENV/bin/python" -m pytest -p no:randomly \
        -o cache_dir="$OUT/cache-$target" -v --junitxml="$OUT/$target.xml" "${PYTEST_ARGS[@]}" \
        >"$OUT/$target.log" 2>&1) || true
    tail -n 3 "$OUT/$target.log" >&2
    # pgvakt must have survived the whole suite.
    kill -0 "$pid" 2>/dev/null || { echo "pgvakt demo died; see $log" >&2; exit 1; }
    kill "$pid"; wait "$pid" || true
}

case "$TARGET" in
    both) run_one direct; run_one pgvakt ;;
    direct|pgvakt) run_one "$TARGET" ;;
    *) echo "--target: both, direct or pgvakt" >&2; exit 2 ;;
esac
if [ -f "$OUT/direct.xml" ] && [ -f "$OUT/pgvakt.xml" ]; then
    python3 tests/clients/psycopg-suite/compare.py "$OUT/direct.xml" "$OUT/pgvakt.xml" | tee "$OUT/compare.txt"
fi
