#!/usr/bin/env python3
"""Writes a copy of a policy file whose roles have no row rules: each role's `rows:` block is
dropped and every role that neither sees restricted people nor is unrestricted gets
`see_restricted: true` (the restriction rule applies to every role otherwise). The benchmark
runs it to measure what the row rules cost against the same configuration without them.

Line-based, for the block style of policies/crm.yaml (two-space indents, one role per key
under `roles:`), so that no YAML library is needed.

Usage: policy-without-rows.py IN OUT
"""

import sys


def indent(line):
    return len(line) - len(line.lstrip(" "))


def without_rows(lines):
    out, heads, in_roles, head, skip_below = [], set(), False, None, None
    for line in lines:
        bare = line.strip()
        if bare and not bare.startswith("#"):
            depth = indent(line)
            if skip_below is not None and depth > skip_below:
                continue
            skip_below = None
            if depth == 0:
                in_roles, head = line.startswith("roles:"), None
            elif in_roles and depth == 2:
                head = len(out)
                heads.add(head)
            elif head is not None and depth == 4:
                key = bare.split(":", 1)[0]
                if key == "rows":
                    skip_below = depth
                    continue
                if key in ("see_restricted", "unrestricted"):
                    heads.discard(head)
        out.append(line)
    for i in sorted(heads, reverse=True):
        out.insert(i + 1, "    see_restricted: true\n")
    return out


if __name__ == "__main__":
    src, dst = sys.argv[1], sys.argv[2]
    text = open(src).read().splitlines(keepends=True)
    open(dst, "w").write("".join(without_rows(text)))
