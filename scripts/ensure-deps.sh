#!/usr/bin/env bash
# Installs what pgvakt's demo and tests need on a fresh Debian machine, only when missing:
# PostgreSQL server binaries (initdb, pg_ctl, postgres), psql and pgbench, and libclang, which
# the pg_query crate (PostgreSQL's own parser, compiled into pgvakt) needs at build time.
set -euo pipefail

have_server() {
    for d in /usr/lib/postgresql/*/bin; do
        [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && [ -x "$d/postgres" ] && return 0
    done
    command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1
}

need=()
have_server || need+=(postgresql)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client)
command -v pgbench >/dev/null 2>&1 || need+=(postgresql-contrib)
# libclang itself, not libclang-cpp (which other packages bring and bindgen cannot use).
have_libclang() {
    for f in /usr/lib/llvm-*/lib/libclang.so* /usr/lib/llvm-*/lib/libclang-[0-9]*.so* \
        /usr/lib/*/libclang.so* /usr/lib/*/libclang-[0-9]*.so*; do
        [ -e "$f" ] && return 0
    done
    return 1
}
have_libclang || need+=(libclang-dev)

if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "pgvakt needs: ${need[*]} (Debian packages). Install them with: apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    echo "installing ${need[*]} ..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
    # The Debian package starts a cluster of its own; pgvakt uses throwaway clusters instead.
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        for c in /etc/postgresql/*/main; do
            [ -d "$c" ] || continue
            v=$(basename "$(dirname "$c")")
            pg_ctlcluster "$v" main stop >/dev/null 2>&1 || true
        done
    fi
fi

if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin postgres
fi
