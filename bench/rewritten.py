#!/usr/bin/env python3
"""Writes a pgbench script whose statement is the one pgvakt forwards for ROLE.

Usage: rewritten.py SRC DEST PGVAKT POLICY UPSTREAM ROLE

SRC is one of bench/workloads/*.sql. Its pgbench variables (`:id`) are swapped for numbers no
statement uses, `pgvakt policy explain` rewrites the text as pgvakt does for ROLE against the
live catalog at UPSTREAM, and the numbers are swapped back, so pgbench binds the same values to
both scripts. Running SRC and DEST straight against PostgreSQL shows what the rewrite costs
PostgreSQL itself (planning the stand-in, masks, row rules), apart from the proxy.
"""

import re
import subprocess
import sys

src, dest, pgvakt, policy, upstream, role = sys.argv[1:7]
lines = open(src).read().splitlines()
head = [l for l in lines if l.startswith("\\") or l.startswith("--")]
sql = " ".join(l for l in lines if l.strip() and l not in head)
# `:name` but not a `::type` cast.
VARIABLE = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
names = sorted(set(VARIABLE.findall(sql)))
sentinel = {n: str(987650001 + i) for i, n in enumerate(names)}
text = VARIABLE.sub(lambda m: sentinel[m.group(1)], sql)
out = subprocess.run([pgvakt, "policy", "explain", "--policy", policy, "--role", role,
                      "--upstream", upstream, text], capture_output=True, text=True)
if out.returncode != 0:
    sys.exit(f"policy explain failed for {src}: {out.stderr.strip() or out.stdout.strip()}")
after = out.stdout.split("forwarded SQL:", 1)
if len(after) != 2 or not after[1].strip():
    sys.exit(f"policy explain printed no forwarded SQL for {src}:\n{out.stdout}")
forwarded = " ".join(after[1].split())
for name, number in sentinel.items():
    if number not in forwarded:
        sys.exit(f"{src}: the value of :{name} is not in the forwarded SQL: {forwarded}")
    forwarded = re.sub(rf"(?<!\d){number}(?!\d)", f":{name}", forwarded)
with open(dest, "w") as f:
    f.write("\n".join(head + [forwarded.rstrip(";") + ";"]) + "\n")
