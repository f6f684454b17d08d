"""What the application screens share: where the two databases are, and how one operation's
outcomes are compared.

Every screen operation runs twice: through pgvakt against the real CRM database ("app"), and
directly against the reference ("ref"), a copy of the same data in its own schema that stores
the role's masked values, with the policy's refusals expressed in PostgreSQL's own terms
(column privileges for blocked columns, no write privileges for read-only roles, triggers for
columns whose stored value must stay). The outcomes must be identical: the same rows and
values, or an error with the same SQLSTATE on both sides. A refusal through pgvakt where the
reference succeeds is a false refusal and fails the run; so does any other difference.
"""
import datetime
import decimal
import json
import os
import sys
import uuid

ROLE = os.environ["PGVAKT_ROLE"]
REF_SCHEMA = os.environ["PGVAKT_REF_SCHEMA"]
# Every run creates rows with its own marker, so that runs of the two screen layers on the same
# databases do not see each other's rows.
RUN = os.environ.get("PGVAKT_RUN", "run")


def proxy_params():
    return dict(
        host=os.environ["PGVAKT_PROXY_HOST"],
        port=int(os.environ["PGVAKT_PROXY_PORT"]),
        dbname=os.environ["PGVAKT_DATABASE"],
        user=os.environ["PGVAKT_USER"],
        password=os.environ["PGVAKT_PASSWORD"],
        sslmode="require",
    )


def reference_params():
    return dict(
        host=os.environ["PGVAKT_DIRECT_HOST"],
        port=int(os.environ["PGVAKT_DIRECT_PORT"]),
        dbname=os.environ["PGVAKT_DATABASE"],
        user=os.environ["PGVAKT_USER"],
        password=os.environ["PGVAKT_PASSWORD"],
        sslmode="disable",
        options=f"-c search_path={REF_SCHEMA}",
    )


def admin_params():
    return dict(
        host=os.environ["PGVAKT_DIRECT_HOST"],
        port=int(os.environ["PGVAKT_DIRECT_PORT"]),
        dbname=os.environ["PGVAKT_DATABASE"],
        user=os.environ["PGVAKT_ADMIN_USER"],
        password=os.environ["PGVAKT_ADMIN_PASSWORD"],
        sslmode="disable",
    )


def plain(v):
    """A value in a form that compares the same whichever connection produced it."""
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    if isinstance(v, dict):
        return {k: plain(x) for k, x in sorted(v.items())}
    if isinstance(v, (datetime.date, datetime.datetime, datetime.time)):
        return v.isoformat()
    if isinstance(v, (decimal.Decimal, uuid.UUID)):
        return str(v)
    return v


class Suite:
    """Runs operations on both sides and records every difference."""

    def __init__(self, layer, sqlstate_of):
        self.layer = layer
        self.sqlstate_of = sqlstate_of
        self.failures = []
        self.runs = 0
        self.refused = 0

    def outcome(self, op, side):
        try:
            return ("ok", plain(op(side)))
        except Exception as e:  # noqa: BLE001 - every failure is an outcome to compare
            state = self.sqlstate_of(e)
            if state is None:
                raise
            return ("error", state, str(e).splitlines()[0][:300])

    def same(self, name, op):
        """`op(side)` must give the same outcome through pgvakt as on the reference."""
        self.runs += 1
        app = self.outcome(op, "app")
        ref = self.outcome(op, "ref")
        what = f"{self.layer} {name} as {ROLE}"
        if app[0] == "error" and ref[0] == "ok":
            self.failures.append(f"{what}: false refusal through pgvakt: {app[1]} {app[2]}")
        elif app[0] == "ok" and ref[0] == "error":
            self.failures.append(f"{what}: pgvakt allowed what the reference refuses "
                                 f"({ref[1]} {ref[2]}); got {short(app[1])}")
        elif app[0] == "error" and app[1] != ref[1]:
            self.failures.append(f"{what}: SQLSTATE {app[1]} ({app[2]}) through pgvakt, "
                                 f"{ref[1]} ({ref[2]}) on the reference")
        elif app[0] == "ok" and app[1] != ref[1]:
            self.failures.append(f"{what}: results differ{first_difference(app[1], ref[1])}")
        elif app[0] == "ok" and not app[1] and app[1] != 0:
            self.failures.append(f"{what}: both sides returned nothing: the comparison proves nothing")
        else:
            if app[0] == "error":
                self.refused += 1
                print(f"ok: {what}: refused on both sides ({app[1]})")
            else:
                print(f"ok: {what}: {short(app[1], 100)}")

    def check(self, name, cond, detail=""):
        what = f"{self.layer} {name} as {ROLE}"
        if cond:
            print(f"ok: {what}")
        else:
            self.failures.append(f"{what}: {detail}")

    def finish(self):
        print(f"{self.layer} as {ROLE}: {self.runs} operations, {self.refused} refused on both "
              f"sides, {len(self.failures)} differences")
        for f in self.failures:
            print(f"FAIL: {f}", file=sys.stderr)
        sys.exit(1 if self.failures else 0)


def first_difference(app, ref):
    if isinstance(app, list) and isinstance(ref, list):
        for i, (a, r) in enumerate(zip(app, ref)):
            if a != r:
                return f" at [{i}]\n  pgvakt:    {short(a)}\n  reference: {short(r)}"
        return f" in length: {len(app)} through pgvakt, {len(ref)} on the reference"
    return f"\n  pgvakt:    {short(app)}\n  reference: {short(ref)}"


def short(v, n=400):
    s = json.dumps(v, default=str)
    return s if len(s) <= n else s[:n] + "..."


def stored_secrets(contact_id):
    """The stored values of a contact's protected columns, read directly as the owner."""
    import psycopg
    with psycopg.connect(**admin_params()) as c:
        return c.execute(
            "SELECT bank_account, date_of_birth, phone, notes FROM public.contacts WHERE id = %s",
            (contact_id,)).fetchone()
