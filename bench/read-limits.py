#!/usr/bin/env python3
"""The mass-read limit check of the benchmark: an office day of ordinary work as `secretary`
must write no `read limit` anomaly record, and copying contacts one by one as `sales` must
write one and be stopped (the limit blocks), on the pgvakt instance whose policy declares the
limits (bench/policy-with-limits.py).

Usage: read-limits.py AUDIT_DIR LIMIT OFFICE_START OFFICE_END OFFICE_STDOUT
                      COPY_START COPY_END COPY_STDOUT COPY_TRANSACTIONS > read_limits.json
(times in seconds since the epoch; *_STDOUT: pgbench's output of each run.)
"""

import datetime
import glob
import json
import os
import re
import sys


def epoch(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def alarms(audit_dir, user, start, end):
    n = 0
    for f in sorted(glob.glob(os.path.join(audit_dir, "*.jsonl"))):
        for line in open(f, encoding="utf-8", errors="replace"):
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a torn last line of a file still being written
            if (r.get("event") == "anomaly" and r.get("user") == user
                    and (r.get("message") or "").startswith("read limit:")
                    and start <= epoch(r["ts"]) <= end):
                n += 1
    return n


def processed(stdout):
    """Transactions pgbench completed (a client stops at its first error)."""
    text = open(stdout, encoding="utf-8", errors="replace").read() if os.path.exists(stdout) else ""
    m = re.search(r"number of transactions actually processed: (\d+)", text)
    return int(m.group(1)) if m else 0


if __name__ == "__main__":
    (audit_dir, limit, o_start, o_end, o_out, c_start, c_end, c_out, c_total) = sys.argv[1:10]
    json.dump({
        "subjects_per_hour": int(limit),
        "office": {"user": "secretary", "statements": processed(o_out),
                   "alarms": alarms(audit_dir, "secretary", float(o_start), float(o_end))},
        "copy": {"user": "sales", "attempted": int(c_total), "read": processed(c_out),
                 "alarms": alarms(audit_dir, "sales", float(c_start), float(c_end))},
    }, sys.stdout, indent=2)
