"""psycopg 3 through pgvakt: parameters, prepare=True, executemany, binary cursors, COPY,
server-side cursors, LISTEN/NOTIFY, transactions and savepoints, cancel, refusals."""
import datetime
import decimal
import json
import threading
import time
import uuid

import psycopg
from psycopg import errors

from clientlib import (CONTACT_COLUMNS, CONTACTS_SQL, ROLE, UNRESTRICTED, Checks,
                       direct_params, mask_rows, proxy_params)

checks = Checks("psycopg")
LABEL = f"psycopg-{ROLE}"


def connect(**kw):
    return psycopg.connect(**proxy_params(), **kw)


direct = psycopg.connect(**direct_params(), autocommit=True)


def want_contacts(where="", params=()):
    rows = direct.execute(f"{CONTACTS_SQL} {where} ORDER BY id", params).fetchall()
    return mask_rows(CONTACT_COLUMNS, rows)


def parameters():
    with connect() as conn:
        got = conn.execute(f"{CONTACTS_SQL} WHERE id = %s OR last_name = %s ORDER BY id",
                           (7, "Hansen")).fetchall()
        checks.equal("parameters (text)", got,
                     want_contacts("WHERE id = %s OR last_name = %s", (7, "Hansen")))
        got = conn.execute(f"{CONTACTS_SQL} WHERE id = ANY(%s) ORDER BY id", ([3, 5, 8],)).fetchall()
        checks.equal("array parameter", got, want_contacts("WHERE id = ANY(%s)", ([3, 5, 8],)))


def prepared():
    with connect() as conn:
        got = []
        for i in range(1, 12):
            got += conn.execute(f"{CONTACTS_SQL} WHERE id = %s ORDER BY id", (i,),
                                prepare=True).fetchall()
        checks.equal("prepare=True, reused 11 times", got, want_contacts("WHERE id BETWEEN 1 AND 11"))
        # psycopg prepares automatically after a few runs (prepare_threshold); both ways agree.
        conn.prepare_threshold = 0
        got = [conn.execute(f"{CONTACTS_SQL} WHERE id = %s", (i,)).fetchone() for i in (1, 2)]
        checks.equal("prepare_threshold=0", got, want_contacts("WHERE id IN (1, 2)"))


SCRATCH_ROWS = [
    (LABEL, decimal.Decimal("12.50"), datetime.date(2024, 2, 29),
     datetime.datetime(2024, 5, 17, 8, 30, 15, 250000, tzinfo=datetime.timezone.utc),
     {"a": [1, 2], "b": "æøå"}, ["x", "y z"], uuid.UUID("0b4a2f1c-9f6e-4d1e-8a57-1c2d3e4f5a6b")),
    (LABEL, None, None, None, None, None, None),
    (LABEL, decimal.Decimal("-0.01"), datetime.date(1900, 1, 1),
     datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc),
     [1, "two"], [], uuid.UUID(int=0)),
]
SCRATCH_COLS = "label, amount, day, at, doc, tags, ref"


def scratch_back(label):
    return direct.execute(f"SELECT {SCRATCH_COLS} FROM scratch WHERE label = %s ORDER BY id",
                          (label,)).fetchall()


def jsonify(rows):
    return [tuple(psycopg.types.json.Jsonb(v) if isinstance(v, (dict, list)) and i == 4 else v
                  for i, v in enumerate(r)) for r in rows]


def executemany():
    with connect() as conn:
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO scratch ({SCRATCH_COLS}) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                            jsonify(SCRATCH_ROWS))
            cur.executemany("INSERT INTO scratch (label) VALUES (%s) RETURNING id",
                            [(LABEL + "-ret",)] * 3, returning=True)
            ids = []
            while True:
                ids.append(cur.fetchone()[0])
                if not cur.nextset():
                    break
    checks.equal("executemany inserts", scratch_back(LABEL), SCRATCH_ROWS)
    want = [r[0] for r in direct.execute("SELECT id FROM scratch WHERE label = %s ORDER BY id",
                                         (LABEL + "-ret",))]
    checks.equal("executemany RETURNING", ids, want)


def binary():
    with connect() as conn:
        cur = conn.cursor(binary=True)
        got = cur.execute(f"{CONTACTS_SQL} ORDER BY id").fetchall()
        checks.equal("binary cursor over contacts", got, want_contacts())
        got = cur.execute(f"SELECT {SCRATCH_COLS} FROM scratch WHERE label = %s ORDER BY id",
                          (LABEL,)).fetchall()
        checks.equal("binary cursor over numeric/date/timestamptz/jsonb/array/uuid", got,
                     scratch_back(LABEL))
        types = [d.type_code for d in cur.execute(f"{CONTACTS_SQL} LIMIT 1").description]
        want = [d.type_code for d in direct.cursor(binary=True).execute(f"{CONTACTS_SQL} LIMIT 1").description]
        checks.equal("column types", types, want)


def copy():
    label = LABEL + "-copy"
    rows = [(label, r[1], r[2], r[3], json.dumps(r[4]) if r[4] is not None else None, r[5], r[6])
            for r in SCRATCH_ROWS]
    with connect() as conn:
        with conn.cursor().copy(f"COPY scratch ({SCRATCH_COLS}) FROM STDIN") as cp:
            for r in rows:
                cp.write_row(r)
        conn.commit()
        back = [(label,) + r[1:] for r in SCRATCH_ROWS]
        checks.equal("cursor.copy FROM STDIN (text)", scratch_back(label), back)
        with conn.cursor().copy(f"COPY ({CONTACTS_SQL} ORDER BY id) TO STDOUT") as cp:
            cp.set_types(["int8", "text", "text", "text", "text", "date", "text", "timestamptz"])
            got = list(cp.rows())
        checks.equal("cursor.copy TO STDOUT (text)", got, want_contacts())
        with conn.cursor().copy(f"COPY ({CONTACTS_SQL} ORDER BY id) TO STDOUT (FORMAT BINARY)") as cp:
            cp.set_types(["int8", "text", "text", "text", "text", "date", "text", "timestamptz"])
            got = list(cp.rows())
        checks.equal("cursor.copy TO STDOUT (binary)", got, want_contacts())
        blabel = LABEL + "-bcopy"
        with conn.cursor().copy(f"COPY scratch ({SCRATCH_COLS}) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["text", "numeric", "date", "timestamptz", "jsonb", "text[]", "uuid"])
            for r in SCRATCH_ROWS:
                cp.write_row((blabel,) + tuple(r[1:4]) + (psycopg.types.json.Jsonb(r[4])
                             if r[4] is not None else None,) + tuple(r[5:]))
        conn.commit()
        checks.equal("cursor.copy FROM STDIN (binary)", scratch_back(blabel),
                     [(blabel,) + r[1:] for r in SCRATCH_ROWS])


def server_side_cursor():
    with connect() as conn:
        with conn.cursor(name="contacts_cur") as cur:
            cur.itersize = 7
            cur.execute(f"{CONTACTS_SQL} WHERE id > %s ORDER BY id", (10,))
            first = cur.fetchmany(5)
            rest = cur.fetchall()
        checks.equal("server-side cursor with parameter", first + rest,
                     want_contacts("WHERE id > %s", (10,)))
        with conn.cursor(name="bin_cur", binary=True, scrollable=True) as cur:
            cur.execute(f"{CONTACTS_SQL} ORDER BY id")
            cur.scroll(20)
            got = cur.fetchmany(3)
        checks.equal("scrollable binary server-side cursor", got, want_contacts()[20:23])


def listen_notify():
    if not UNRESTRICTED:
        # The demo policy gives the secretary no `notify` capability: LISTEN and NOTIFY are
        # refused as driver errors; UNLISTEN, which pools send on release, is not.
        with connect(autocommit=True) as conn:
            for sql in ["LISTEN pgvakt_events", "NOTIFY pgvakt_events, 'hello'"]:
                checks.equal(f"SQLSTATE of {sql!r}", [sqlstate_of(conn, sql)], ["42501"])
            conn.execute("UNLISTEN *")
            checks.equal("session after LISTEN refused", conn.execute("SELECT 41 + 1").fetchone(),
                         (42,))
        return
    with connect(autocommit=True) as listener, connect(autocommit=True) as sender:
        listener.execute("LISTEN pgvakt_events")
        sender.execute("NOTIFY pgvakt_events, 'hello'")
        sender.execute("SELECT pg_notify('pgvakt_events', %s)", ("from " + ROLE,))
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=5, stop_after=2)]
        checks.equal("LISTEN/NOTIFY", got,
                     [("pgvakt_events", "hello"), ("pgvakt_events", "from " + ROLE)])
        listener.execute("UNLISTEN *")


def transactions():
    label = LABEL + "-tx"
    with connect() as conn:
        with conn.transaction():
            conn.execute("INSERT INTO scratch (label, amount) VALUES (%s, 1)", (label,))
            try:
                with conn.transaction():  # a savepoint
                    conn.execute("INSERT INTO scratch (label, amount) VALUES (%s, 2)", (label,))
                    conn.execute("SELECT 1/0")
            except errors.DivisionByZero:
                pass
            conn.execute("INSERT INTO scratch (label, amount) VALUES (%s, 3)", (label,))
        conn.execute("INSERT INTO scratch (label, amount) VALUES (%s, 4)", (label,))
        conn.rollback()
        conn.execute("SAVEPOINT a")
        conn.execute("INSERT INTO scratch (label, amount) VALUES (%s, 5)", (label,))
        conn.execute("RELEASE SAVEPOINT a")
        conn.commit()
    got = [r[0] for r in direct.execute("SELECT amount FROM scratch WHERE label = %s ORDER BY id", (label,))]
    checks.equal("transactions and savepoints", got,
                 [decimal.Decimal(x) for x in ("1.00", "3.00", "5.00")])


def cancel():
    with connect(autocommit=True) as conn:
        cancel_errors = []

        def send_cancel():
            try:
                conn.cancel_safe()
            except Exception as e:  # noqa: BLE001 - the cancel call itself must succeed
                cancel_errors.append(e)

        timer = threading.Timer(0.5, send_cancel)
        timer.start()
        started = time.monotonic()
        try:
            conn.execute("SELECT pg_sleep(20)")
            checks.fail("cancel", "pg_sleep(20) was not cancelled")
        except errors.QueryCanceled as e:
            checks.true("cancel arrives as 57014", e.sqlstate == "57014" and time.monotonic() - started < 10)
        finally:
            timer.cancel()
            timer.join()
        checks.true("cancel call succeeded", not cancel_errors, repr(cancel_errors))
        checks.equal("session after cancel", conn.execute("SELECT 41 + 1").fetchone(), (42,))


def refusals():
    with connect() as conn:
        for sql, params in [("SELECT pg_read_file(%s)", ("x",)),
                            ("UPDATE contacts SET bank_account = %s WHERE id = %s", ("x", 1)),
                            ("SELECT query_to_xml('select bank_account from contacts', true, true, '')", None)]:
            for prepare in (False, True):
                try:
                    conn.execute(sql, params, prepare=prepare)
                    checks.fail(f"refusal of {sql!r}", "it ran")
                except errors.InsufficientPrivilege as e:
                    checks.true(f"refused {sql!r} (prepare={prepare}) with 42501", e.sqlstate == "42501")
                conn.rollback()
                checks.equal(f"session after refusing {sql!r}",
                             conn.execute(f"{CONTACTS_SQL} WHERE id = %s", (4,), prepare=prepare).fetchall(),
                             want_contacts("WHERE id = 4"))


def sqlstate_of(conn, sql):
    try:
        conn.execute(sql)
        return None
    except psycopg.Error as e:
        return e.sqlstate
    finally:
        conn.rollback()


def errors_as_direct():
    with connect() as conn, psycopg.connect(**direct_params()) as dconn:
        for sql in ["SELECT pg_read_file('x')", "SELECT nosuch FROM contacts", "SELECT 1/0"]:
            checks.equal(f"SQLSTATE of {sql!r}", [sqlstate_of(conn, sql)], [sqlstate_of(dconn, sql)])
        checks.equal("session after errors", conn.execute("SELECT 41 + 1").fetchone(), (42,))


for name, fn in [("parameters", parameters), ("prepared", prepared), ("executemany", executemany),
                 ("binary", binary), ("copy", copy), ("server-side cursor", server_side_cursor),
                 ("listen/notify", listen_notify), ("transactions", transactions),
                 ("cancel", cancel),
                 ("refusals" if not UNRESTRICTED else "errors", refusals if not UNRESTRICTED else errors_as_direct)]:
    checks.step(name, fn)
checks.finish()
