#!/usr/bin/env python3
"""Counts the `anomaly` audit records of the benchmark's pgvakt instances, by cause, in the
whole run and within the CRM workloads' time window, and reads the mass-read limits
(`roles.<r>.limits`) the policy declares for the roles the workloads run as. An ordinary
workload must write none: a mass-read alarm there is a false alarm.

Usage: audit-anomalies.py POLICY START END NAME=AUDIT_DIR... > anomalies.json
(START and END in seconds since the epoch.)
"""

import datetime
import glob
import json
import os
import sys

ROLES = ("secretary", "marketing")
# The message each kind of anomaly record starts with (src/session/trail, src/session/lockout).
CAUSES = (
    ("read limit:", "mass_read"),
    ("parser disagreement:", "parser_disagreement"),
    ("protected columns arrived unmasked", "unmasked_columns"),
    ("lockout:", "lockout"),
)


def cause(message):
    for prefix, name in CAUSES:
        if (message or "").startswith(prefix):
            return name
    return "other"


def epoch(ts):
    return datetime.datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def count(audit_dir, start, end):
    records, during, total = 0, {}, {}
    for f in sorted(glob.glob(os.path.join(audit_dir, "*.jsonl"))):
        for line in open(f, encoding="utf-8", errors="replace"):
            try:
                r = json.loads(line)
            except ValueError:
                continue  # a torn last line of a file still being written
            records += 1
            if r.get("event") != "anomaly":
                continue
            c = cause(r.get("message"))
            total[c] = total.get(c, 0) + 1
            if start <= epoch(r["ts"]) <= end:
                during[c] = during.get(c, 0) + 1
    return {"records": records, "anomalies": total, "anomalies_during_crm": during}


def limits(policy):
    """The text of `roles.<r>.limits` for ROLES (None where absent): line-based, for the block
    style of policies/crm.yaml, so that no YAML library is needed."""
    found, in_roles, role, block = {}, False, None, None
    for line in open(policy, encoding="utf-8"):
        bare = line.strip()
        if not bare or bare.startswith("#"):
            continue
        depth = len(line) - len(line.lstrip(" "))
        if block is not None and depth > 4:
            block.append(bare)
            continue
        block = None
        if depth == 0:
            in_roles, role = line.startswith("roles:"), None
        elif in_roles and depth == 2:
            role = bare.rstrip(":")
        elif role in ROLES and depth == 4 and bare.startswith("limits:"):
            block = [bare[len("limits:"):].strip()] if bare != "limits:" else []
            found[role] = block
    return {r: (", ".join(x for x in found[r] if x) if r in found else None) for r in ROLES}


if __name__ == "__main__":
    policy, start, end = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    instances = {}
    for arg in sys.argv[4:]:
        name, audit_dir = arg.split("=", 1)
        instances[name] = count(audit_dir, start, end)
    json.dump({"limits": limits(policy), "instances": instances}, sys.stdout, indent=2)
