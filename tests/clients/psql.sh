#!/usr/bin/env bash
# psql through pgvakt as $PGVAKT_ROLE: \d, \copy both ways, multi-statement strings, errors.
# Every expected value comes from the same query run directly against PostgreSQL.
set -euo pipefail

proxy="host=$PGVAKT_PROXY_HOST port=$PGVAKT_PROXY_PORT dbname=$PGVAKT_DATABASE user=$PGVAKT_USER password=$PGVAKT_PASSWORD sslmode=$PGVAKT_SSLMODE sslrootcert=$PGVAKT_CA_FILE"
direct="host=$PGVAKT_DIRECT_HOST port=$PGVAKT_DIRECT_PORT dbname=$PGVAKT_DATABASE user=$PGVAKT_ADMIN_USER password=$PGVAKT_ADMIN_PASSWORD sslmode=disable"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

via_proxy() { psql -X -q -v ON_ERROR_STOP=1 -At "$proxy" "$@"; }
via_direct() { psql -X -q -v ON_ERROR_STOP=1 -At "$direct" "$@"; }

fail() { echo "FAIL: $*" >&2; exit 1; }

# Compares two files, showing the first differences.
same() {
    local what=$1 want=$2 got=$3
    if ! diff -u "$want" "$got" >"$tmp/diff"; then
        head -40 "$tmp/diff" >&2
        fail "$what differs from PostgreSQL's answer"
    fi
    [ -s "$want" ] || fail "$what: PostgreSQL returned nothing, the comparison proves nothing"
    echo "ok: $what"
}

# What this role must see of a contacts row: everything for admin; for the secretary the
# policy's masks (bank account redacted, birth date year only) over the real values.
if [ "$PGVAKT_ROLE" = admin ]; then
    expected_contacts="SELECT id, first_name, email, bank_account, date_of_birth FROM contacts"
else
    expected_contacts="SELECT id, first_name, email,
        CASE WHEN bank_account IS NULL THEN NULL ELSE '***' END,
        make_date(extract(year FROM date_of_birth)::int, 1, 1) FROM contacts"
fi
query_contacts="SELECT id, first_name, email, bank_account, date_of_birth FROM contacts"

# \d: psql's catalog queries (regclass casts, pg_catalog functions) work and describe the same.
via_direct -c '\d contacts' >"$tmp/d.want"
via_proxy -c '\d contacts' >"$tmp/d.got"
same '\d contacts' "$tmp/d.want" "$tmp/d.got"
via_direct -c '\dt' >"$tmp/dt.want"
via_proxy -c '\dt' >"$tmp/dt.got"
same '\dt' "$tmp/dt.want" "$tmp/dt.got"

# \copy out (COPY ... TO STDOUT), table and query forms.
via_direct -c "\\copy ($expected_contacts ORDER BY id) TO '$tmp/out.want' WITH (FORMAT csv)"
via_proxy -c "\\copy ($query_contacts ORDER BY id) TO '$tmp/out.got' WITH (FORMAT csv)"
same '\copy (query) to file' "$tmp/out.want" "$tmp/out.got"
via_direct -c "\\copy companies TO '$tmp/companies.want'"
via_proxy -c "\\copy companies TO '$tmp/companies.got'"
same '\copy table to file' "$tmp/companies.want" "$tmp/companies.got"

# \copy in (COPY ... FROM STDIN) into the scratch table, then read back directly.
label="psql-$PGVAKT_ROLE"
printf '%s\t12.50\t2024-02-29\n%s\t\\N\t1999-12-31\n%s\t-3.00\t\\N\n' "$label" "$label" "$label" >"$tmp/in.tsv"
via_proxy -c "\\copy scratch (label, amount, day) FROM '$tmp/in.tsv'"
via_direct -c "\\copy (SELECT label, amount, day FROM scratch WHERE label = '$label' ORDER BY id) TO '$tmp/in.back'"
same '\copy from file' "$tmp/in.tsv" "$tmp/in.back"

# A multi-statement string: every result in order, as PostgreSQL gives them.
multi="SELECT count(*) FROM contacts; SELECT id, email FROM contacts ORDER BY id LIMIT 3; UPDATE scratch SET amount = amount WHERE label = '$label'"
via_direct -c "$multi" >"$tmp/multi.want" 2>&1
via_proxy -c "$multi" >"$tmp/multi.got" 2>&1
same 'multi-statement string' "$tmp/multi.want" "$tmp/multi.got"
tx="BEGIN; SELECT 1; UPDATE scratch SET amount = amount WHERE false; COMMIT; SELECT 2"
psql -X -At "$direct" -c "$tx" >"$tmp/tx.want" 2>&1
psql -X -At "$proxy" -c "$tx" >"$tmp/tx.got" 2>&1
same 'BEGIN/COMMIT in one string, with command tags' "$tmp/tx.want" "$tmp/tx.got"

# Errors arrive as PostgreSQL errors with their SQLSTATE, and the session carries on.
err_script() {
    printf '\\set VERBOSITY verbose\n%s\nSELECT 4242;\n' "$1"
}
err_script 'SELECT 1/0;' | psql -X -At "$proxy" >"$tmp/e.out" 2>&1 || true
grep -q 'ERROR:  22012: division by zero' "$tmp/e.out" || { cat "$tmp/e.out" >&2; fail 'division by zero error'; }
grep -qx 4242 "$tmp/e.out" || { cat "$tmp/e.out" >&2; fail 'session after an error'; }
echo "ok: error with SQLSTATE, session usable after it"

err_script 'SELECT nosuchcolumn FROM contacts;' | psql -X -At "$proxy" >"$tmp/e2.out" 2>&1 || true
grep -q '42703' "$tmp/e2.out" || { cat "$tmp/e2.out" >&2; fail 'undefined column error'; }
grep -qx 4242 "$tmp/e2.out" || { cat "$tmp/e2.out" >&2; fail 'session after an undefined column'; }
echo "ok: undefined column reported as 42703"

if [ "$PGVAKT_ROLE" != admin ]; then
    # Refusals: reading server files, writing a masked column; the session survives both.
    for sql in "SELECT pg_read_file('x');" "UPDATE contacts SET bank_account = 'x' WHERE id = 1;"; do
        err_script "$sql" | psql -X -At "$proxy" >"$tmp/r.out" 2>&1 || true
        grep -q 'ERROR:  42501' "$tmp/r.out" || { cat "$tmp/r.out" >&2; fail "no 42501 for: $sql"; }
        grep -qx 4242 "$tmp/r.out" || { cat "$tmp/r.out" >&2; fail "session after refusing: $sql"; }
        echo "ok: refused with 42501: $sql"
    done
    # Refused inside a transaction: the transaction is aborted as PostgreSQL would abort it.
    printf 'BEGIN;\nSELECT pg_read_file($$x$$);\nSELECT 1;\nROLLBACK;\nSELECT 4242;\n' \
        | psql -X -At "$proxy" >"$tmp/t.out" 2>&1 || true
    grep -q 'current transaction is aborted' "$tmp/t.out" || { cat "$tmp/t.out" >&2; fail 'refusal inside a transaction'; }
    grep -qx 4242 "$tmp/t.out" || { cat "$tmp/t.out" >&2; fail 'session after ROLLBACK'; }
    echo "ok: refusal inside a transaction aborts it"
fi
echo "psql: all checks passed as $PGVAKT_ROLE"
