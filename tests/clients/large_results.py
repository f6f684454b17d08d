"""Large results through pgvakt with psycopg's pure-Python implementation, whose non-blocking
libpq loop waits on the socket: a TLS record larger than libpq's free buffer leaves plaintext
inside OpenSSL that no socket event announces, and the result never ends.

Usage: large_results.py DSN TRIES. Exits 1 with a message if any try does not finish in time.
"""
import os
import sys

os.environ["PSYCOPG_IMPL"] = "python"

import psycopg  # noqa: E402

dsn, tries = sys.argv[1], int(sys.argv[2])
assert psycopg.pq.__impl__ == "python", psycopg.pq.__impl__
for i in range(tries):
    with psycopg.connect(dsn) as conn:
        cur = conn.execute(
            "SELECT g, repeat(md5(g::text), 300) FROM generate_series(1, %s) g",
            (200 + 37 * i,),
        )
        rows = cur.fetchall()
        assert len(rows) == 200 + 37 * i, len(rows)
        with cur.copy("COPY (SELECT g, repeat('x', 9000 + g) FROM generate_series(1, 300) g) TO STDOUT") as copy:
            n = sum(1 for _ in copy.rows())
        assert n == 300, n
print("ok", tries)
