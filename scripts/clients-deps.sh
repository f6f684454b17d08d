#!/usr/bin/env bash
# Installs the client drivers the compatibility suite (tests/clients.rs) drives, only when
# missing, into project-local directories: a Python virtualenv with psycopg 3, asyncpg and the
# two ORMs of the application suite (Django, SQLAlchemy 2.0),
# node-postgres under tests/clients/node (from its lock file), and Debian's pgjdbc plus a JDK
# (the Java client runs in source-launcher mode, which needs the compiler), and promtool (Debian's
# prometheus package) for the alert rules' unit tests in deploy/. Fast when present.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-clients
node_dir=tests/clients/node

need_venv() { ! "$venv/bin/python" -c 'import psycopg, asyncpg, django, sqlalchemy' >/dev/null 2>&1; }
need_node_modules() {
    [ ! -f "$node_dir/node_modules/pg/package.json" ] \
        || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]
}

apt_need=()
[ -f /usr/share/java/postgresql.jar ] || apt_need+=(libpostgresql-jdbc-java)
command -v javac >/dev/null 2>&1 || apt_need+=(openjdk-17-jdk-headless)
command -v promtool >/dev/null 2>&1 || apt_need+=(prometheus)
if need_venv && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_need+=(python3-venv)
fi
if need_node_modules && ! command -v npm >/dev/null 2>&1; then
    apt_need+=(nodejs npm)
fi
if [ "${#apt_need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "the client suite needs: ${apt_need[*]} (Debian packages): apt-get install -y ${apt_need[*]}" >&2
        exit 1
    fi
    echo "installing ${apt_need[*]} ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${apt_need[@]}" >/dev/null
fi

if need_venv; then
    echo "installing psycopg, asyncpg, Django and SQLAlchemy into $venv ..." >&2
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q 'psycopg[binary]>=3.1,<4' 'asyncpg>=0.29,<1' \
        'Django>=5.2,<5.3' 'SQLAlchemy>=2.0,<2.1'
fi

if need_node_modules; then
    echo "installing node-postgres into $node_dir ..." >&2
    (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
