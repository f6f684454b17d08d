"""Compare two runs of psycopg's test suite: directly against PostgreSQL and through pgvakt.
Each is a JUnit report (.xml) or pytest's -v output (.log, also of a run stopped early; then
only tests that ran in both are compared). Prints the totals of each and every test that passed
directly but not through pgvakt (the ones RESULTS.md must explain), then the reverse.

    python3 compare.py direct.xml pgvakt.xml
"""

import re
import sys
import xml.etree.ElementTree as ET

VERBOSE = re.compile(r"^(tests/\S+::\S+) (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)")


def outcomes(path):
    if path.endswith(".log"):
        out = {}
        with open(path, errors="replace") as f:
            for line in f:
                m = VERBOSE.match(line)
                if m:
                    kind = m.group(2).lower()
                    # A test's teardown error follows its own result: the worse one counts.
                    if out.get(m.group(1)) in (None, "passed"):
                        out[m.group(1)] = "passed" if kind in ("passed", "xpass") else kind
        return out
    out = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kinds = {child.tag for child in case}
        if "failure" in kinds:
            out[name] = "failed"
        elif "error" in kinds:
            out[name] = "error"
        elif "skipped" in kinds:
            out[name] = "skipped"
        else:
            out[name] = "passed"
    return out


def totals(res):
    t = {}
    for v in res.values():
        t[v] = t.get(v, 0) + 1
    return dict(sorted(t.items()))


def main():
    direct, proxied = outcomes(sys.argv[1]), outcomes(sys.argv[2])
    both = direct.keys() & proxied.keys()
    if len(both) < max(len(direct), len(proxied)):
        print(f"comparing the {len(both)} tests that ran in both")
        direct = {n: v for n, v in direct.items() if n in both}
        proxied = {n: v for n, v in proxied.items() if n in both}
    print(f"direct: {len(direct)} tests {totals(direct)}")
    print(f"pgvakt: {len(proxied)} tests {totals(proxied)}")
    worse = sorted(n for n, v in direct.items() if v == "passed" and proxied.get(n) != "passed")
    better = sorted(n for n, v in proxied.items() if v == "passed" and direct.get(n) != "passed")
    print(f"\npassed directly, not through pgvakt: {len(worse)}")
    for n in worse:
        print(f"  {proxied.get(n, 'not run')}: {n}")
    print(f"\npassed through pgvakt, not directly: {len(better)}")
    for n in better:
        print(f"  {direct.get(n, 'not run')}: {n}")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
