"""What the Python clients share: where to connect, and what the policy lets each role see.

Expected values are always computed from what a direct connection to PostgreSQL returns, with
the demo policy's masks applied for the secretary (bank account redacted, birth date year only).
"""
import datetime
import os
import sys

ROLE = os.environ["PGVAKT_ROLE"]
UNRESTRICTED = ROLE == "admin"

# Columns of contacts the clients read; the masked ones are named below.
CONTACT_COLUMNS = ["id", "first_name", "last_name", "email", "phone", "date_of_birth",
                   "bank_account", "created_at"]
CONTACTS_SQL = "SELECT " + ", ".join(CONTACT_COLUMNS) + " FROM contacts"


def proxy_params():
    return dict(
        host=os.environ["PGVAKT_PROXY_HOST"],
        port=int(os.environ["PGVAKT_PROXY_PORT"]),
        dbname=os.environ["PGVAKT_DATABASE"],
        user=os.environ["PGVAKT_USER"],
        password=os.environ["PGVAKT_PASSWORD"],
        sslmode=os.environ["PGVAKT_SSLMODE"],
        sslrootcert=os.environ["PGVAKT_CA_FILE"],
    )


def direct_params():
    return dict(
        host=os.environ["PGVAKT_DIRECT_HOST"],
        port=int(os.environ["PGVAKT_DIRECT_PORT"]),
        dbname=os.environ["PGVAKT_DATABASE"],
        user=os.environ["PGVAKT_ADMIN_USER"],
        password=os.environ["PGVAKT_ADMIN_PASSWORD"],
        sslmode="disable",
    )


def mask_value(column, value):
    """The value this role sees in place of `value` stored in contacts.`column`."""
    if UNRESTRICTED or value is None:
        return value
    if column == "bank_account":
        return "***"
    if column == "date_of_birth":
        return datetime.date(value.year, 1, 1)
    return value


def mask_row(columns, row):
    return tuple(mask_value(c, v) for c, v in zip(columns, row))


def mask_rows(columns, rows):
    return [mask_row(columns, r) for r in rows]


class Checks:
    """Collects failures so one run reports every broken check, then exits non-zero."""

    def __init__(self, client):
        self.client = client
        self.failures = []

    def equal(self, what, got, want):
        if not want:
            self.fail(what, "PostgreSQL returned nothing; the comparison would prove nothing")
        elif got != want:
            self.fail(what, f"got {short(got)}\n  want {short(want)}")
        else:
            print(f"ok: {what}")

    def true(self, what, cond, detail=""):
        if cond:
            print(f"ok: {what}")
        else:
            self.fail(what, detail)

    def fail(self, what, detail):
        self.failures.append(what)
        print(f"FAIL: {what}: {detail}", file=sys.stderr)

    def step(self, what, fn, *args):
        """Runs one group of checks; an unexpected exception fails that group only."""
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001 - reported, then the run fails
            self.fail(what, f"{type(e).__name__}: {e}")
            return None

    def finish(self):
        if self.failures:
            print(f"{self.client} as {ROLE}: {len(self.failures)} failed: {self.failures}",
                  file=sys.stderr)
            sys.exit(1)
        print(f"{self.client}: all checks passed as {ROLE}")


def short(value, limit=600):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
