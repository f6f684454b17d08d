#!/usr/bin/env bash
# pgbench through pgvakt as $PGVAKT_ROLE in simple, extended and prepared query modes: reads of
# contacts (masked for the secretary) and counted writes whose total is checked directly.
set -euo pipefail

proxy="host=$PGVAKT_PROXY_HOST port=$PGVAKT_PROXY_PORT dbname=$PGVAKT_DATABASE user=$PGVAKT_USER password=$PGVAKT_PASSWORD sslmode=$PGVAKT_SSLMODE sslrootcert=$PGVAKT_CA_FILE"
direct="host=$PGVAKT_DIRECT_HOST port=$PGVAKT_DIRECT_PORT dbname=$PGVAKT_DATABASE user=$PGVAKT_ADMIN_USER password=$PGVAKT_ADMIN_PASSWORD sslmode=disable"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
via_direct() { psql -X -q -v ON_ERROR_STOP=1 -At "$direct" "$@"; }

clients=2
per_client=40
label="pgbench-$PGVAKT_ROLE"
max_id=$(via_direct -c 'SELECT max(id) FROM contacts')

cat >"$tmp/read.sql" <<SQL
\set id random(1, $max_id)
SELECT id, first_name, email, bank_account, date_of_birth FROM contacts WHERE id = :id;
SELECT count(*) FROM contacts WHERE date_of_birth < make_date(1980, 1, 1);
SQL
cat >"$tmp/write.sql" <<SQL
\set step random(1, 3)
BEGIN;
UPDATE scratch SET amount = amount + :step, doc = jsonb_build_object('last', :step::int) WHERE label = '$label';
INSERT INTO scratch (label, amount) VALUES ('$label-log', :step);
END;
SQL

# Runs pgbench and checks that every transaction was processed and none failed.
bench() {
    local what=$1
    shift
    if ! pgbench "$@" >"$tmp/out" 2>&1; then
        cat "$tmp/out" >&2
        fail "pgbench $what exited non-zero"
    fi
    local want="number of transactions actually processed: $((clients * per_client))/$((clients * per_client))"
    grep -qF "$want" "$tmp/out" || { cat "$tmp/out" >&2; fail "pgbench $what: not all transactions processed"; }
    if grep -q 'number of failed transactions: [1-9]' "$tmp/out"; then
        cat "$tmp/out" >&2
        fail "pgbench $what: failed transactions"
    fi
    echo "ok: pgbench $what ($(grep -o 'tps = [0-9.]*' "$tmp/out" | head -1))"
}

via_direct -c "INSERT INTO scratch (label, amount) VALUES ('$label', 0)"
for mode in simple extended prepared; do
    bench "reads, -M $mode" -n -M "$mode" -c "$clients" -t "$per_client" -f "$tmp/read.sql" "$proxy"
    bench "writes, -M $mode" -n -M "$mode" -c "$clients" -t "$per_client" -f "$tmp/write.sql" "$proxy"
done

# The counter holds the sum of the steps the write transactions logged: nothing was lost or
# applied twice on the way through the proxy.
got=$(via_direct -c "SELECT amount FROM scratch WHERE label = '$label'")
want=$(via_direct -c "SELECT coalesce(sum(amount), 0) FROM scratch WHERE label = '$label-log'")
n=$(via_direct -c "SELECT count(*) FROM scratch WHERE label = '$label-log'")
[ "$n" = $((3 * clients * per_client)) ] || fail "expected $((3 * clients * per_client)) logged writes, found $n"
[ "$got" = "$want" ] || fail "counter is $got, the logged steps add up to $want"
echo "ok: $n writes add up ($got)"

if [ "$PGVAKT_ROLE" = admin ]; then
    # The built-in TPC-B-like scripts on pgbench's own tables, created through the proxy.
    pgbench -i -q -s 1 "$proxy" >"$tmp/init" 2>&1 || { cat "$tmp/init" >&2; fail 'pgbench -i'; }
    echo "ok: pgbench -i"
    for mode in simple extended prepared; do
        bench "-S, -M $mode" -n -S -M "$mode" -c "$clients" -t "$per_client" "$proxy"
        bench "tpcb-like, -M $mode" -n -M "$mode" -c "$clients" -t "$per_client" "$proxy"
    done
    # TPC-B keeps the balances consistent: branches, tellers, accounts and the history (kept
    # across runs by -n) move together.
    sums=$(via_direct -c "SELECT (SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(tbalance) FROM pgbench_tellers), (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(delta) FROM pgbench_history)")
    IFS='|' read -r b t a h <<<"$sums"
    [ "$b" = "$t" ] && [ "$t" = "$a" ] && [ "$a" = "$h" ] || fail "TPC-B balances disagree: $sums"
    echo "ok: TPC-B balances agree ($b)"
    via_direct -c 'DROP TABLE pgbench_accounts, pgbench_branches, pgbench_tellers, pgbench_history'
fi
echo "pgbench: all checks passed as $PGVAKT_ROLE"
