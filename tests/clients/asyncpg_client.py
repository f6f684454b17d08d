"""asyncpg through pgvakt: prepared statements and the statement cache, binary types, COPY of
records, cursors, a pool, refusals. asyncpg always asks for binary results."""
import asyncio
import datetime
import decimal
import json
import ssl
import uuid

import asyncpg

from clientlib import (CONTACT_COLUMNS, CONTACTS_SQL, ROLE, UNRESTRICTED, Checks,
                       direct_params, mask_rows, proxy_params)

checks = Checks("asyncpg")
LABEL = f"asyncpg-{ROLE}"
SCRATCH_COLS = ["label", "amount", "day", "at", "doc", "tags", "ref"]


def tls():
    p = proxy_params()
    ctx = ssl.create_default_context(cafile=p["sslrootcert"])
    ctx.check_hostname = p["sslmode"] == "verify-full"
    if p["sslmode"] == "require":
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def conn_args(params):
    return dict(host=params["host"], port=params["port"], user=params["user"],
                password=params["password"], database=params["dbname"])


async def connect(**kw):
    return await asyncpg.connect(**conn_args(proxy_params()), ssl=tls(), **kw)


def tuples(records):
    return [tuple(r) for r in records]


class Direct:
    def __init__(self, conn):
        self.conn = conn

    async def contacts(self, where="", *args):
        rows = await self.conn.fetch(f"{CONTACTS_SQL} {where} ORDER BY id", *args)
        return mask_rows(CONTACT_COLUMNS, tuples(rows))

    async def scratch(self, label):
        return tuples(await self.conn.fetch(
            f"SELECT {', '.join(SCRATCH_COLS)} FROM scratch WHERE label = $1 ORDER BY id", label))


SCRATCH_ROWS = [
    (decimal.Decimal("12.50"), datetime.date(2024, 2, 29),
     datetime.datetime(2024, 5, 17, 8, 30, 15, 250000, tzinfo=datetime.timezone.utc),
     json.dumps({"a": [1, 2], "b": "æøå"}, ensure_ascii=False), ["x", "y z"], uuid.UUID("0b4a2f1c-9f6e-4d1e-8a57-1c2d3e4f5a6b")),
    (None, None, None, None, None, None),
    (decimal.Decimal("-0.01"), datetime.date(1900, 1, 1),
     datetime.datetime(1999, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc),
     json.dumps([1, "two"]), [], uuid.UUID(int=0)),
]


async def prepared(d):
    conn = await connect()
    stmt = await conn.prepare(f"{CONTACTS_SQL} WHERE id = $1")
    got = []
    for i in range(1, 12):
        got += tuples(await stmt.fetch(i))
    checks.equal("prepared statement reused 11 times", got, await d.contacts("WHERE id BETWEEN 1 AND 11"))
    want_types = [(a.name, a.type.name) for a in (await d.conn.prepare(f"{CONTACTS_SQL} LIMIT 1")).get_attributes()]
    checks.equal("column names and types", [(a.name, a.type.name) for a in stmt.get_attributes()], want_types)
    # The implicit statement cache: the same text again and again, and a parameter type
    # asyncpg has to learn from the server.
    got = [tuple(await conn.fetchrow(f"{CONTACTS_SQL} WHERE id = $1", i)) for i in (3, 3, 4)]
    want = await d.contacts("WHERE id IN (3, 4)")
    checks.equal("statement cache", got, [want[0], want[0], want[1]])
    got = tuples(await conn.fetch(f"{CONTACTS_SQL} WHERE last_name = $1 AND date_of_birth < $2 ORDER BY id",
                                  "Hansen", datetime.date(2100, 1, 1)))
    checks.equal("text and date parameters", got,
                 await d.contacts("WHERE last_name = $1 AND date_of_birth < $2", "Hansen", datetime.date(2100, 1, 1)))
    await conn.close()


async def binary_types(d):
    conn = await connect()
    label = LABEL + "-bin"
    await conn.executemany(
        f"INSERT INTO scratch ({', '.join(SCRATCH_COLS)}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(label,) + r for r in SCRATCH_ROWS])
    want = await d.scratch(label)
    checks.equal("executemany wrote what was sent", want, [(label,) + r for r in SCRATCH_ROWS])
    got = tuples(await conn.fetch(
        f"SELECT {', '.join(SCRATCH_COLS)} FROM scratch WHERE label = $1 ORDER BY id", label))
    checks.equal("binary numeric/date/timestamptz/jsonb/array/uuid", got, want)
    got = tuples(await conn.fetch(f"{CONTACTS_SQL} ORDER BY id"))
    checks.equal("binary contacts", got, await d.contacts())
    got = await conn.fetchval("SELECT array_agg(date_of_birth ORDER BY id) FROM contacts WHERE id <= 5")
    want = [r[5] for r in await d.contacts("WHERE id <= 5")]
    checks.equal("array of dates", got, want)
    await conn.close()


async def copy(d):
    conn = await connect()
    label = LABEL + "-copy"
    n = await conn.copy_records_to_table("scratch", columns=SCRATCH_COLS,
                                         records=[(label,) + r for r in SCRATCH_ROWS])
    checks.true("copy_records_to_table status", n == "COPY 3", repr(n))
    checks.equal("copy_records_to_table rows", await d.scratch(label), [(label,) + r for r in SCRATCH_ROWS])
    await conn.close()


async def cursors(d):
    conn = await connect()
    async with conn.transaction():
        got = [tuple(r) async for r in conn.cursor(f"{CONTACTS_SQL} WHERE id > $1 ORDER BY id", 150, prefetch=7)]
        checks.equal("iterating cursor", got, await d.contacts("WHERE id > $1", 150))
        cur = await conn.cursor(f"{CONTACTS_SQL} ORDER BY id")
        first = tuples(await cur.fetch(3))
        await cur.forward(10)
        after = tuple(await cur.fetchrow())
        want = await d.contacts()
        checks.equal("cursor fetch/forward/fetchrow", first + [after], want[:3] + [want[13]])
    await conn.close()


async def pool(d):
    async with asyncpg.create_pool(**conn_args(proxy_params()), ssl=tls(), min_size=2, max_size=4) as p:
        async def one(i):
            async with p.acquire() as c:
                return tuple(await c.fetchrow(f"{CONTACTS_SQL} WHERE id = $1", i))
        got = await asyncio.gather(*(one(i) for i in range(1, 21)))
        checks.equal("pool of 4 serving 20 concurrent queries", list(got),
                     await d.contacts("WHERE id BETWEEN 1 AND 20"))
        checks.equal("pool fetchval", await p.fetchval("SELECT count(*) FROM contacts"),
                     await d.conn.fetchval("SELECT count(*) FROM contacts"))


async def refusals(d):
    conn = await connect()
    for sql, args in [("SELECT pg_read_file($1)", ("x",)),
                      ("UPDATE contacts SET bank_account = $1 WHERE id = $2", ("x", 1)),
                      ("SELECT query_to_xml('select 1', true, true, '')", ())]:
        try:
            await conn.fetch(sql, *args)
            checks.fail(f"refusal of {sql!r}", "it ran")
        except asyncpg.exceptions.InsufficientPrivilegeError as e:
            checks.true(f"refused {sql!r} with 42501", e.sqlstate == "42501")
        checks.equal(f"session after refusing {sql!r}",
                     tuples(await conn.fetch(f"{CONTACTS_SQL} WHERE id = $1", 9)),
                     await d.contacts("WHERE id = 9"))
    async with conn.transaction():
        sp = conn.transaction()
        await sp.start()
        try:
            await conn.fetchval("SELECT pg_read_file('x')")
            checks.fail("refusal in a savepoint", "it ran")
        except asyncpg.exceptions.InsufficientPrivilegeError:
            await sp.rollback()
        checks.equal("transaction after a refused statement in a savepoint",
                     await conn.fetchval("SELECT count(*) FROM contacts"),
                     await d.conn.fetchval("SELECT count(*) FROM contacts"))
    await conn.close()


async def errors(d):
    conn = await connect()
    for sql in ["SELECT pg_read_file('x')", "SELECT nosuch FROM contacts", "SELECT 1/0"]:
        states = []
        for c in (conn, d.conn):
            try:
                await c.fetch(sql)
                states.append(None)
            except asyncpg.PostgresError as e:
                states.append(e.sqlstate)
        checks.equal(f"SQLSTATE of {sql!r}", states[:1], states[1:])
    checks.equal("session after errors", await conn.fetchval("SELECT 41 + 1"), 42)
    await conn.close()


async def main():
    d = Direct(await asyncpg.connect(**conn_args(direct_params()), ssl=False))
    steps = [prepared, binary_types, copy, cursors, pool, errors if UNRESTRICTED else refusals]
    for step in steps:
        try:
            await step(d)
        except Exception as e:  # noqa: BLE001 - reported, then the run fails
            checks.fail(step.__name__, f"{type(e).__name__}: {e}")
    await d.conn.close()
    checks.finish()


asyncio.run(main())
