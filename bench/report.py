#!/usr/bin/env python3
"""Turns bench/run's raw output into bench/results/<date>-<mode>.md and .json.

Every figure is a median over the runs of one path, shown with its ratio to direct PostgreSQL and
to PgBouncer measured in the same run. Latencies come from pgbench's per-transaction logs
(`-l`), so percentiles are exact over every transaction rather than averaged per interval.

Usage: report.py RAW_DIR RESULTS_DIR
"""

import datetime
import glob
import json
import os
import re
import statistics
import sys

RAW, OUT = sys.argv[1], sys.argv[2]
meta = json.load(open(os.path.join(RAW, "meta.json")))

NAMES = {
    "direct": "direct PostgreSQL",
    "pgbouncer": "PgBouncer (session)",
    "pgvakt": "pgvakt, no policy",
    "pgvakt_policy": "pgvakt, policy + audit",
    "pgvakt_policy_noaudit": "pgvakt, policy, audit off",
    "pgvakt_policy_aftercompletion": "pgvakt, policy + audit after_completion",
    "pgvakt_policy_norows": "pgvakt, policy without row rules + audit",
}
# What the instances with one safety feature off leave out, against pgvakt_policy.
FEATURES_OFF = {
    "pgvakt_policy_noaudit": "audit trail (off)",
    "pgvakt_policy_aftercompletion": "audit durability `before_release` (here `after_completion`)",
    "pgvakt_policy_norows": "row rules (none; as marketing, the statements carry the rules by hand)",
}
# pgbench numbers scripts in the order of its -f options (bench/run).
SCRIPTS = ["select_only", "contact_by_id", "contacts_by_name", "company_listing",
           "contact_activities", "activity_insert", "contact_by_email"]
CRM_SCRIPTS = ["contact_by_id", "contacts_by_name", "company_listing", "contact_activities",
               "activity_insert", "contact_by_email"]
MARKETING_SCRIPTS = ["contact_by_id", "contacts_by_name", "company_listing", "contact_by_email"]
# Marketing's statements as run on each path: pgvakt applies the row rules to the plain ones;
# the others run them with the rules written out by hand (bench/workloads/marketing/*.filtered.sql).
RULED_PATHS = ("pgvakt_policy", "pgvakt_policy_noaudit", "pgvakt_policy_aftercompletion")


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def runs(workload, variant, path):
    return sorted(glob.glob(os.path.join(RAW, workload, variant, path, "*")))


def txn_log(run_dir):
    """(script_no, latency_us) per transaction; with -R the schedule lag is taken out, so the
    figure is the statement's own service time."""
    out = []
    for f in glob.glob(os.path.join(run_dir, "txn*")):
        for line in open(f):
            cols = line.split()
            if len(cols) < 6:
                continue
            latency = int(cols[2])
            if len(cols) >= 7:
                latency -= int(cols[6])
            out.append((int(cols[3]), latency))
    return out


def tps(run_dir):
    text = open(os.path.join(run_dir, "stdout.txt")).read()
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", text)
    return float(m.group(1)) if m else None


def cpu_per_txn(run_dir):
    """CPU microseconds per transaction of PostgreSQL (every backend), the path's proxy and
    pgbench during one run (bench/run's cpu.json), or None for runs without it."""
    path = os.path.join(run_dir, "cpu.json")
    text = open(os.path.join(run_dir, "stdout.txt")).read()
    m = re.search(r"number of transactions actually processed: (\d+)", text)
    if not os.path.exists(path) or not m or int(m.group(1)) == 0:
        return None
    cpu, n = json.load(open(path)), int(m.group(1))
    tick_us = 1e6 / cpu["clk_tck"]
    return {"postgres": cpu["postgres_ticks"] * tick_us / n,
            "proxy": cpu["proxy_ticks"] * tick_us / n,
            "pgbench": cpu["pgbench_s"] * 1e6 / n}


def ratio(a, b):
    return round(a / b, 3) if a is not None and b not in (None, 0) else None


def fmt(v, digits=0):
    if v is None:
        return "–"
    return f"{v:,.{digits}f}"


def fmt_ratio(v):
    return "–" if v is None else f"{v:.2f}×"


results = {"meta": meta, "throughput": {}, "fixed_rate": {}, "saturation": {}, "bulk": {},
           "idle": {}, "feature_cost": {}, "anomalies": {},
           "analysis": {}, "targets": []}


def anomalies():
    path = os.path.join(RAW, "anomalies.json")
    return json.load(open(path)) if os.path.exists(path) else None


def target(name, value, limit, met, unit=""):
    results["targets"].append({"target": name, "measured": value, "limit": limit,
                               "met": met, "unit": unit})


# ---- throughput workloads ------------------------------------------------------------------
for workload in ("select_only", "crm", "crm_marketing"):
    base = os.path.join(RAW, workload)
    if not os.path.isdir(base):
        continue
    for variant in sorted(os.listdir(base)):
        rows = {}
        for path in sorted(os.listdir(os.path.join(base, variant))):
            per_run = []
            for r in runs(workload, variant, path):
                lat = [l for _, l in txn_log(r)]
                per_run.append((tps(r), percentile(lat, 50), percentile(lat, 99)))
            cpu = [c for c in (cpu_per_txn(r) for r in runs(workload, variant, path)) if c]
            rows[path] = {
                "cpu_us_per_txn": {k: median([c[k] for c in cpu]) for k in
                                   ("postgres", "proxy", "pgbench")} if cpu else None,
                "tps": median([t for t, _, _ in per_run]),
                "p50_us": median([p for _, p, _ in per_run]),
                "p99_us": median([p for _, _, p in per_run]),
                "runs": len(per_run),
                "tps_runs": [t for t, _, _ in per_run],
            }
        for path, row in rows.items():
            row["tps_vs_direct"] = ratio(row["tps"], rows.get("direct", {}).get("tps"))
            row["tps_vs_pgbouncer"] = ratio(row["tps"], rows.get("pgbouncer", {}).get("tps"))
        results["throughput"][f"{workload}/{variant}"] = rows

# ---- PostgreSQL alone: each CRM statement as written and as pgvakt rewrites it ---------------
results["rewrite"] = {}
for name in CRM_SCRIPTS:
    row = {}
    for form in ("original", "rewritten"):
        r = runs("rewrite", name, form)
        if r:
            cpu = cpu_per_txn(r[0])
            row[form] = {"tps": tps(r[0]), "postgres_us_per_txn": cpu and cpu["postgres"]}
    if row:
        row["ratio"] = ratio(row.get("rewritten", {}).get("tps"), row.get("original", {}).get("tps"))
        results["rewrite"][name] = row

# ---- saturation: service time per statement of the CRM mixes -------------------------------
for workload, names in (("crm", CRM_SCRIPTS), ("crm_marketing", MARKETING_SCRIPTS)):
    for variant in ("extended", "simple"):
        base = os.path.join(RAW, workload, variant)
        if not os.path.isdir(base):
            continue
        per_path = {}
        for path in sorted(os.listdir(base)):
            by_script = {}
            for r in runs(workload, variant, path):
                for script, lat in txn_log(r):
                    by_script.setdefault(script, []).append(lat)
            per_path[path] = {names[n] if n < len(names) else str(n):
                              {"p50_us": percentile(v, 50), "p99_us": percentile(v, 99),
                               "n": len(v)}
                              for n, v in sorted(by_script.items())}
        direct = per_path.get("direct", {})
        for scripts in per_path.values():
            for name, row in scripts.items():
                d = direct.get(name)
                if d:
                    row["added_p50_us"] = row["p50_us"] - d["p50_us"]
        results["saturation"][f"{workload}/{variant}"] = per_path

for variant in ("simple", "prepared"):
    rows = results["throughput"].get(f"select_only/{variant}", {})
    v = rows.get("pgvakt_policy", {})
    if v:
        target(f"select-only {variant}: pgvakt (policy + audit) TPS vs PgBouncer",
               v["tps_vs_pgbouncer"], 1.1, (v["tps_vs_pgbouncer"] or 0) >= 1.1, "×")
        target(f"select-only {variant}: pgvakt (policy + audit) TPS vs direct",
               v["tps_vs_direct"], 0.8, (v["tps_vs_direct"] or 0) >= 0.8, "×")
for variant in ("extended", "simple"):
    rows = results["throughput"].get(f"crm/{variant}", {})
    v = rows.get("pgvakt_policy", {})
    if v:
        target(f"CRM workload ({variant} protocol) as secretary: pgvakt TPS vs direct",
               v["tps_vs_direct"], 0.75, (v["tps_vs_direct"] or 0) >= 0.75, "×")
    off = rows.get("pgvakt_policy_noaudit", {})
    if v and off:
        r = ratio(v["tps"], off["tps"])
        target(f"audit cost, CRM ({variant}): TPS audit on vs off", r, 0.95, (r or 0) >= 0.95, "×")
for variant in ("extended", "simple"):
    v = results["throughput"].get(f"crm_marketing/{variant}", {}).get("pgvakt_policy", {})
    if v:
        target(f"CRM workload ({variant} protocol) as marketing: pgvakt (row rules) TPS vs direct "
               "running the same filtered statements",
               v["tps_vs_direct"], 0.8, (v["tps_vs_direct"] or 0) >= 0.8, "×")

# ---- cost of each safety feature: the full configuration against it with one feature off -----
for key, rows in results["throughput"].items():
    full = rows.get("pgvakt_policy", {}).get("tps")
    costs = {path: ratio(full, rows[path]["tps"]) for path in FEATURES_OFF if path in rows}
    if full is not None and costs:
        results["feature_cost"][key] = costs

# ---- anomaly records: an ordinary workload must not trip a mass-read alarm ---------------------
found = anomalies()
if found:
    results["anomalies"] = found
    mass_reads = sum(i["anomalies_during_crm"].get("mass_read", 0)
                     for i in found["instances"].values())
    declared = {r: l for r, l in found["limits"].items() if l}
    limits_text = ("limits " + "; ".join(f"{r}: {l}" for r, l in declared.items())
                   if declared else "no limits declared for " + ", ".join(found["limits"]))
    target(f"no false mass-read alarm: `anomaly` records of read limits during the CRM workloads "
           f"({limits_text})", mass_reads, 0, mass_reads == 0, "records")

# ---- mass-read limits: the office day and the copy of the contacts --------------------------
limits_path = os.path.join(RAW, "read_limits.json")
if os.path.exists(limits_path):
    rl = json.load(open(limits_path))
    results["read_limits"] = rl
    office, copy = rl["office"], rl["copy"]
    target(f"no false mass-read alarm: office day as secretary ({office['statements']:,} statements "
           f"over a portfolio of 300 people; limit {rl['subjects_per_hour']:,} subjects/hour, block)",
           office["alarms"], 0, office["alarms"] == 0 and office["statements"] > 0, "records")
    target(f"mass-read alarm: copying contacts one by one as sales is stopped "
           f"(read {copy['read']:,} of {copy['attempted']:,})",
           copy["alarms"], 1, copy["alarms"] >= 1 and copy["read"] < copy["attempted"], "records")

# ---- fixed rate: added latency per statement ------------------------------------------------
fr_base = os.path.join(RAW, "fixed_rate", "extended")
if os.path.isdir(fr_base):
    per_path = {}
    for path in sorted(os.listdir(fr_base)):
        by_script = {}
        for r in runs("fixed_rate", "extended", path):
            for script, lat in txn_log(r):
                by_script.setdefault(script, []).append(lat)
        per_path[path] = {SCRIPTS[s] if s < len(SCRIPTS) else str(s):
                          {"p50_us": percentile(v, 50), "p99_us": percentile(v, 99), "n": len(v)}
                          for s, v in sorted(by_script.items())}
    direct = per_path.get("direct", {})
    for path, scripts in per_path.items():
        for name, row in scripts.items():
            d = direct.get(name)
            if d:
                row["added_p50_us"] = row["p50_us"] - d["p50_us"]
                row["added_p99_us"] = row["p99_us"] - d["p99_us"]
    results["fixed_rate"] = per_path
    proxy = per_path.get("pgvakt_policy", {})
    if proxy:
        worst50 = max(r.get("added_p50_us", 0) for r in proxy.values())
        worst99 = max(r.get("added_p99_us", 0) for r in proxy.values())
        target("fixed rate: added p50 latency, worst statement", worst50, 60, worst50 <= 60, "µs")
        target("fixed rate: added p99 latency, worst statement", worst99, 250, worst99 <= 250, "µs")

# ---- bulk read -------------------------------------------------------------------------------
bulk_base = os.path.join(RAW, "bulk")
if os.path.isdir(bulk_base):
    for method in sorted(os.listdir(bulk_base)):
        rows = {}
        for path in sorted(os.listdir(os.path.join(bulk_base, method))):
            res = [json.load(open(os.path.join(r, "result.json"))) for r in runs("bulk", method, path)]
            peaks = [x["peak_rss_kib"] for x in res if x["peak_rss_kib"] is not None]
            rows[path] = {
                "seconds": median([x["end"] - x["start"] for x in res]),
                "rows": res[0]["rows"] if res else None,
                "peak_rss_mib": round(max(peaks) / 1024, 1) if peaks else None,
                "runs": len(res),
            }
        for path, row in rows.items():
            row["time_vs_direct"] = ratio(row["seconds"], rows.get("direct", {}).get("seconds"))
            row["time_vs_pgbouncer"] = ratio(row["seconds"], rows.get("pgbouncer", {}).get("seconds"))
        results["bulk"][method] = rows
        v = rows.get("pgvakt_policy")
        if v:
            target(f"bulk masked read via {method.upper()}: wall time vs direct",
                   v["time_vs_direct"], 1.15, (v["time_vs_direct"] or 99) <= 1.15, "×")
            target(f"bulk masked read via {method.upper()}: proxy peak RSS ({v['rows']:,} rows)",
                   v["peak_rss_mib"], 64, (v["peak_rss_mib"] or 999) <= 64, "MiB")

# ---- idle sessions -----------------------------------------------------------------------------
idle_base = os.path.join(RAW, "idle", "sessions")
if os.path.isdir(idle_base):
    rows = {}
    for path in sorted(os.listdir(idle_base)):
        res = [json.load(open(os.path.join(r, "result.json"))) for r in runs("idle", "sessions", path)]
        if res:
            rows[path] = res[0]
    for path, row in rows.items():
        row["rate_vs_direct"] = ratio(row["connect_rate_per_s"], rows.get("direct", {}).get("connect_rate_per_s"))
        row["rate_vs_pgbouncer"] = ratio(row["connect_rate_per_s"], rows.get("pgbouncer", {}).get("connect_rate_per_s"))
        row["rss_vs_pgbouncer"] = ratio(row.get("rss_per_session_kib"), rows.get("pgbouncer", {}).get("rss_per_session_kib"))
    results["idle"] = rows
    v = rows.get("pgvakt_policy")
    if v and v.get("rss_per_session_kib") is not None:
        target(f"idle sessions: proxy RSS per session ({v['sessions']} sessions)",
               round(v["rss_per_session_kib"], 1), 50, v["rss_per_session_kib"] <= 50, "KiB")

# ---- analysis (criterion) ----------------------------------------------------------------------
for f in sorted(glob.glob(os.path.join(RAW, "criterion", "*.json"))):
    group, name = os.path.basename(f)[:-5].split("--", 1)
    ns = json.load(open(f))["mean"]["point_estimate"]
    results["analysis"].setdefault(group, {})[name] = round(ns / 1000, 3)
if results["analysis"]:
    cached = results["analysis"].get("analysis_cached", {})
    uncached = {k: v for k, v in results["analysis"].get("analysis_uncached", {}).items()
                if k != "pgbench_select"}
    if cached:
        worst = max(cached.values())
        target("analysis cached, worst CRM statement", worst, 1, worst <= 1, "µs")
    if uncached:
        worst = max(uncached.values())
        target("analysis uncached, worst typical CRM statement", worst, 20, worst <= 20, "µs")

# ---- write -------------------------------------------------------------------------------------
os.makedirs(OUT, exist_ok=True)
stamp = datetime.date.today().isoformat()
base = os.path.join(OUT, f"{stamp}-{meta['mode']}")
json.dump(results, open(base + ".json", "w"), indent=2)

md = []
w = md.append
quick = meta["mode"] == "quick"
w(f"# pgvakt benchmark, {stamp} ({meta['mode']} mode)\n")
if quick:
    w("> **Quick mode: small sizes, short runs, one repetition. These figures show that the harness "
      "works; they are noisy and are not the product's performance.**\n")
w(f"Machine: {meta['cpu']}, {meta['cores']} cores, {meta['ram_gib']} GiB RAM, Linux {meta['kernel']}; "
  f"load average at start {' '.join(meta['loadavg_at_start'])}, at end {' '.join(meta['loadavg_at_end'])}. "
  f"{meta['postgres']}; {meta['pgbouncer']}; {meta['pgbench']}. Commit {meta['git']}.\n")
s = meta["sizes"]
w(f"Sizes: {s['contacts']:,} contacts, pgbench scale {s['pgbench_scale']}, {s['clients']} clients "
  f"({s['threads']} pgbench threads), {s['duration_s']} s per run, {s['reps']} run(s) per path "
  f"(median shown), paths interleaved. Every client uses TLS (`sslmode=require`); PgBouncer and "
  f"pgvakt reach PostgreSQL over plain TCP on loopback. PostgreSQL runs with fsync off (throwaway data). "
  f"pgbench, PostgreSQL and the proxy share the machine's cores, so a proxy's CPU time is taken from "
  f"the database's.\n")
w("Paths: " + "; ".join(f"`{k}` = {v}" for k, v in NAMES.items()) + ". "
  "Runs are as the demo user `secretary`, whose policy role masks `bank_account` and "
  "`date_of_birth` (and hides people whose processing is restricted), except `crm_marketing`, "
  "which runs as `marketing`; with the policy, every statement is analysed and the rewritten "
  "text forwarded.\n")
if "marketing_visible_contacts" in meta:
    w(f"Marketing's row rules (an active consent for newsletter or marketing, within the 10-year "
      f"retention, not restricted) leave it {meta['marketing_visible_contacts']:,} of "
      f"{s['contacts']:,} contacts; the run checks that pgvakt's rules and the hand-written ones "
      f"select the same people. The restrictions table is emptied before the runs (the secretary "
      f"mix logs activities for random contacts), so every rule's check still runs but finds none.\n")

w("## Targets\n")
w("| target | measured | limit | |")
w("|---|---|---|---|")
for t in results["targets"]:
    m = t["measured"]
    shown = "–" if m is None else (f"{m:.2f}" if isinstance(m, float) else str(m))
    w(f"| {t['target']} | {shown} {t['unit']} | {t['limit']} {t['unit']} | "
      f"{'met' if t['met'] else '**not met**'} |")
w("")

w("## Throughput (pgbench, 8 clients)\n")
w("`select_only` is `pgbench -S`; `crm` mixes contact lookups by id (35 %), by name (15 %) and "
  "by e-mail (10 %), company listings with a join (10 %), a contact's activities (20 %) and "
  "activity inserts (10 %), each well under a millisecond in PostgreSQL (names and e-mail are "
  "indexed as a CRM indexes them); "
  "`extended` sends each statement with Parse/Bind (cached analysis), `simple` inlines values "
  "(each text is new: uncached analysis). `crm_marketing` is the read-only mix of the role "
  "`marketing` (bench/workloads/marketing): a contact card by id (45 %), a name-search page "
  "(20 %), a company listing (15 %) and a lookup by e-mail (20 %), reading only the columns "
  "marketing may read. Through pgvakt with its policy the statements are the plain ones and the "
  "row rules filter them; on every other path (direct, PgBouncer, pgvakt without policy, pgvakt "
  "without row rules) the same statements carry the rules' filter written out by hand, as "
  "pgvakt generates it (`pgvakt policy explain --role marketing`).\n")
w("| workload | path | TPS | vs direct | vs PgBouncer | p50 µs | p99 µs |")
w("|---|---|---|---|---|---|---|")
for key, rows in results["throughput"].items():
    for path in NAMES:
        r = rows.get(path)
        if r:
            w(f"| {key} | {NAMES[path]} | {fmt(r['tps'])} | {fmt_ratio(r['tps_vs_direct'])} | "
              f"{fmt_ratio(r['tps_vs_pgbouncer'])} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} |")
w("")

w("## CPU per transaction (throughput runs above)\n")
w("CPU time each process used during a run divided by the transactions it completed (medians "
  "over the runs), from /proc: PostgreSQL counts every backend and its auxiliary processes; "
  "*proxy* is PgBouncer's or pgvakt's process, all threads (pgvakt's audit writer included); "
  "pgbench is the client, TLS included. Where the sum stays well below two cores' worth at the "
  "measured TPS, the path waits rather than computes (e.g. on the audit trail's fsync).\n")
w("| workload | path | PostgreSQL µs | proxy µs | pgbench µs | total µs | cores busy |")
w("|---|---|---|---|---|---|---|")
for key, rows in results["throughput"].items():
    for path in NAMES:
        r = rows.get(path)
        c = r and r.get("cpu_us_per_txn")
        if c and r["tps"]:
            total = c["postgres"] + c["proxy"] + c["pgbench"]
            proxy = "–" if path == "direct" else fmt(c["proxy"])
            w(f"| {key} | {NAMES[path]} | {fmt(c['postgres'])} | {proxy} | "
              f"{fmt(c['pgbench'])} | {fmt(total)} | {total * r['tps'] / 1e6:.2f} |")
w("")

if results["rewrite"]:
    w("## PostgreSQL alone: the CRM statements as written and as pgvakt forwards them\n")
    w("Each CRM statement run straight against PostgreSQL (8 clients, extended protocol, one "
      "statement per run), once as the client writes it and once as pgvakt forwards it for "
      "`secretary` (`pgvakt policy explain`: stand-ins with masks, the restriction rule's "
      "`NOT EXISTS`, conditions repeated inside the stand-ins). The ratio is what the rewrite "
      "alone costs PostgreSQL, before anything the proxy itself does; PostgreSQL plans each "
      "unnamed statement anew, so planning the larger text counts in full.\n")
    w("| statement | original TPS | rewritten TPS | rewritten vs original | PostgreSQL µs/txn original | rewritten |")
    w("|---|---|---|---|---|---|")
    for name, row in results["rewrite"].items():
        o, r = row.get("original", {}), row.get("rewritten", {})
        w(f"| {name} | {fmt(o.get('tps'))} | {fmt(r.get('tps'))} | {fmt_ratio(row['ratio'])} | "
          f"{fmt(o.get('postgres_us_per_txn'))} | {fmt(r.get('postgres_us_per_txn'))} |")
    w("")

if results["fixed_rate"]:
    w(f"## Latency at a fixed rate ({s['rate']} transactions/s, 2 clients, extended protocol)\n")
    w("Service time per statement (schedule lag removed); *added* is the difference to direct.\n")
    w("| statement | path | p50 µs | p99 µs | added p50 µs | added p99 µs |")
    w("|---|---|---|---|---|---|")
    for name in SCRIPTS:
        for path in NAMES:
            r = results["fixed_rate"].get(path, {}).get(name)
            if r:
                w(f"| {name} | {NAMES[path]} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])} | "
                  f"{fmt(r.get('added_p50_us'))} | {fmt(r.get('added_p99_us'))} |")
    w("")

if results["feature_cost"]:
    w("## Cost of each safety feature\n")
    w("TPS of pgvakt with policy and audit (`before_release`, row rules) divided by the TPS of the "
      "same pgvakt with one feature off, in the same run: below 1.00× the feature costs "
      "throughput. Off in turn: " + "; ".join(f"{NAMES[k]}: {v}" for k, v in FEATURES_OFF.items())
      + ". As `secretary` the only row rule is the restriction rule; as `marketing` without row "
      "rules the statements carry the same filter by hand, so that ratio is what pgvakt's rules "
      "cost over writing them into the statements.\n")
    w("| workload | " + " | ".join(NAMES[k] for k in FEATURES_OFF) + " |")
    w("|---|" + "---|" * len(FEATURES_OFF))
    for key, costs in results["feature_cost"].items():
        w(f"| {key} | " + " | ".join(fmt_ratio(costs.get(k)) for k in FEATURES_OFF) + " |")
    w("")

if results["saturation"]:
    w("## Service time per statement at saturation (CRM mixes, 8 clients)\n")
    w("Each statement's latency inside the throughput runs above; *added p50* is the difference "
      "to direct PostgreSQL in the same run.\n")
    w("| workload | statement | path | p50 µs | p99 µs | added p50 µs |")
    w("|---|---|---|---|---|---|")
    for key, per_path in results["saturation"].items():
        names = MARKETING_SCRIPTS if key.startswith("crm_marketing/") else CRM_SCRIPTS
        for name in names:
            for path in NAMES:
                r = per_path.get(path, {}).get(name)
                if r:
                    w(f"| {key} | {name} | {NAMES[path]} | {fmt(r['p50_us'])} | "
                      f"{fmt(r['p99_us'])} | {fmt(r.get('added_p50_us'))} |")
    w("")

if results["bulk"]:
    w("## Bulk read (`psql`, every contact)\n")
    w("Wall time of the whole `psql` command; peak RSS is the proxy's VmHWM, reset before each run.\n")
    w("| method | path | rows | seconds | vs direct | vs PgBouncer | proxy peak RSS MiB |")
    w("|---|---|---|---|---|---|---|")
    for method, rows in results["bulk"].items():
        for path in NAMES:
            r = rows.get(path)
            if r:
                w(f"| {method} | {NAMES[path]} | {fmt(r['rows'])} | {fmt(r['seconds'], 2)} | "
                  f"{fmt_ratio(r['time_vs_direct'])} | {fmt_ratio(r['time_vs_pgbouncer'])} | "
                  f"{fmt(r['peak_rss_mib'], 1)} |")
    w("")

if results["idle"]:
    w(f"## Idle TLS sessions ({s['idle_sessions']:,})\n")
    w("RSS per session is the server process's VmRSS growth divided by the sessions (direct "
      "PostgreSQL has a process per session, so it has no single figure).\n")
    w("| path | connects/s | vs direct | vs PgBouncer | RSS per session KiB | vs PgBouncer |")
    w("|---|---|---|---|---|---|")
    for path in NAMES:
        r = results["idle"].get(path)
        if r:
            w(f"| {NAMES[path]} | {fmt(r['connect_rate_per_s'])} | {fmt_ratio(r['rate_vs_direct'])} | "
              f"{fmt_ratio(r['rate_vs_pgbouncer'])} | {fmt(r.get('rss_per_session_kib'), 1)} | "
              f"{fmt_ratio(r['rss_vs_pgbouncer'])} |")
    w("")

if results["analysis"]:
    w("## Statement analysis (criterion, `--quick`, role secretary)\n")
    w("| statement | uncached µs | cached µs |")
    w("|---|---|---|")
    names = sorted(set().union(*[set(v) for v in results["analysis"].values()]))
    for n in names:
        w(f"| {n} | {fmt(results['analysis'].get('analysis_uncached', {}).get(n), 2)} | "
          f"{fmt(results['analysis'].get('analysis_cached', {}).get(n), 3)} |")
    w("")

w("## Audit\n")
w(f"Audit records written by the policy + audit pgvakt during the run: {meta['audit_records_written']:,}. "
  "When this is 0 the build has no audit writer yet, and the audit-on/off comparison measures "
  "only run-to-run variation.\n")
if results["anomalies"]:
    found = results["anomalies"]
    w("`anomaly` records by cause, of each pgvakt with audit: during the CRM workloads (secretary "
      "and marketing) / in the whole run. A mass-read alarm (`read limit`) during these ordinary "
      "workloads would be a false alarm. Mass-read limits declared (`roles.<r>.limits`): "
      + "; ".join(f"{r}: {l or 'none'}" for r, l in found["limits"].items()) + ".\n")
    causes = ["mass_read", "parser_disagreement", "unmasked_columns", "lockout", "other"]
    w("| instance | records | " + " | ".join(causes) + " |")
    w("|---|---|" + "---|" * len(causes))
    for name, i in found["instances"].items():
        w(f"| {NAMES.get(name, name)} | {i['records']:,} | " + " | ".join(
            f"{i['anomalies_during_crm'].get(c, 0)} / {i['anomalies'].get(c, 0)}" for c in causes)
          + " |")
    w("")
if results.get("read_limits"):
    rl = results["read_limits"]
    w(f"Mass-read limits, on a pgvakt whose demo policy gives secretary and sales "
      f"`limits: {{subjects_per_hour: {rl['subjects_per_hour']}, action: block}}`: the office day "
      f"(bench/workloads/office: cards, activities and calls of a portfolio of 300 people, the "
      f"first page of ten common names, the clerk's ten companies; 8 clients at full speed) ran "
      f"{rl['office']['statements']:,} statements as secretary and wrote "
      f"{rl['office']['alarms']} `read limit` records; copying contacts one by one as sales "
      f"read {rl['copy']['read']:,} of {rl['copy']['attempted']:,} cards before the limit "
      f"stopped it ({rl['copy']['alarms']} record).\n")
open(base + ".md", "w").write("\n".join(md))
print(base + ".md")
