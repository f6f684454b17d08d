#!/usr/bin/env python3
"""Writes a copy of a policy file in which the given roles declare a mass-read limit:
`limits: {subjects_per_hour: N, action: block}` under each role's key. The benchmark's office
workload runs against it: a day's ordinary work must not trip the alarm, and reading contacts
one by one must.

Line-based, for the block style of policies/crm.yaml (two-space indents, one role per key
under `roles:`), so that no YAML library is needed.

Usage: policy-with-limits.py IN OUT SUBJECTS_PER_HOUR ROLE...
"""

import sys


def with_limits(lines, per_hour, roles):
    out, in_roles, added = [], False, set()
    for line in lines:
        out.append(line)
        bare = line.strip()
        if not bare or bare.startswith("#"):
            continue
        depth = len(line) - len(line.lstrip(" "))
        if depth == 0:
            in_roles = line.startswith("roles:")
        elif in_roles and depth == 2 and bare.rstrip(":") in roles:
            out.append(f"    limits: {{subjects_per_hour: {per_hour}, action: block}}\n")
            added.add(bare.rstrip(":"))
    missing = set(roles) - added
    if missing:
        sys.exit(f"no role {', '.join(sorted(missing))} under roles:")
    return out


if __name__ == "__main__":
    src, dst, per_hour, roles = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    text = open(src).read().splitlines(keepends=True)
    open(dst, "w").write("".join(with_limits(text, per_hour, roles)))
