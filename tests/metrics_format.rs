//! The metrics endpoint by the conventions scrapers and dashboards rely on: the classic text
//! format unless OpenMetrics is asked for (checked by a strict reader of the format, and by
//! `promtool check metrics` when it is installed), snake_case label values, the version of
//! pgvakt and of the policy in force, process metrics, and `/readyz` saying why.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{metric, Env, EnvOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Status line, headers and body of one GET, with the given extra header lines.
async fn get(addr: SocketAddr, path: &str, headers: &str) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    (head.to_owned(), body.to_owned())
}

fn valid_name(n: &str) -> bool {
    let mut c = n.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
}

/// `name{a="b",...} value` → (name, labels, value), or an error saying what is wrong.
fn sample(line: &str) -> Result<(String, BTreeMap<String, String>, f64), String> {
    let (series, value) = line.rsplit_once(' ').ok_or("no value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().map_err(|_| format!("value {v:?}"))?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, ""),
        Some((n, rest)) => (n, rest.strip_suffix('}').ok_or("unclosed labels")?),
    };
    let mut map = BTreeMap::new();
    for pair in labels.split(',').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or("label without =")?;
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or("unquoted label value")?;
        if !valid_name(k) || k.starts_with("__") {
            return Err(format!("label name {k:?}"));
        }
        if map.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(format!("label {k} twice"));
        }
    }
    if !valid_name(name) {
        return Err(format!("metric name {name:?}"));
    }
    Ok((name.to_owned(), map, value))
}

/// The rules of the classic text format and of `promtool check metrics`' lint: every family
/// has HELP and TYPE before its samples and appears once; counters end in `_total`; histogram
/// samples are `_bucket` (with `le`, ending at `+Inf`), `_sum` and `_count`; no OpenMetrics-only
/// lines. Returns the problems found.
fn check_classic(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helped: BTreeSet<String> = BTreeSet::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("").to_owned();
            if !helped.insert(name.clone()) {
                problems.push(format!("HELP {name} twice"));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                problems.push(format!(
                    "{name}: type {kind:?} is not in the classic format"
                ));
            }
            if kind == "counter" && !name.ends_with("_total") {
                problems.push(format!("counter {name} does not end in _total"));
            }
            if !helped.contains(name) {
                problems.push(format!("{name} has no HELP before its TYPE"));
            }
            if types.insert(name.to_owned(), kind.to_owned()).is_some() {
                problems.push(format!("TYPE {name} twice"));
            }
            if let Some(prev) = current.replace(name.to_owned()) {
                done.insert(prev);
            }
            continue;
        }
        if line.starts_with('#') {
            problems.push(format!("line {line:?} is not in the classic format"));
            continue;
        }
        if line.is_empty() {
            problems.push("empty line".into());
            continue;
        }
        let (name, labels, _) = match sample(line) {
            Ok(s) => s,
            Err(e) => {
                problems.push(format!("{line:?}: {e}"));
                continue;
            }
        };
        let family = types
            .iter()
            .filter(|(f, kind)| {
                *f == &name
                    || (kind.as_str() == "histogram"
                        && ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|s| name == format!("{f}{s}")))
            })
            .map(|(f, _)| f.clone())
            .next();
        match family {
            None => problems.push(format!("{name}: sample without a TYPE")),
            Some(f) if done.contains(&f) => problems.push(format!("{f}: samples split up")),
            Some(f) if Some(&f) != current.as_ref() => {
                problems.push(format!("{name}: sample outside its family"))
            }
            Some(_) if name.ends_with("_bucket") && !labels.contains_key("le") => {
                problems.push(format!("{line}: bucket without le"))
            }
            Some(_) => {}
        }
        if name.starts_with("pgvakt_") {
            for (k, v) in &labels {
                let words = v.chars().all(|c| c.is_ascii_lowercase() || c == '_');
                if !matches!(k.as_str(), "version" | "le") && !words {
                    problems.push(format!("{line}: label value {v:?} is not snake_case"));
                }
            }
        }
    }
    for (f, kind) in &types {
        if kind == "histogram" && !text.contains(&format!("{f}_bucket{{le=\"+Inf\"}}")) {
            problems.push(format!("{f}: no +Inf bucket"));
        }
    }
    problems
}

#[tokio::test]
async fn metrics_follow_the_exposition_conventions() {
    let env = Env::start_demo(5).await;
    let addr = env.server().metrics_addr;
    let c = env.connect("secretary", "secretary", "crm").await.unwrap();
    c.simple_query("SELECT bank_account FROM contacts")
        .await
        .unwrap();

    // A scraper that does not ask for OpenMetrics gets the classic format.
    let (head, classic) = get(addr, "/metrics", "").await;
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let problems = check_classic(&classic);
    assert!(problems.is_empty(), "{problems:#?}\n{classic}");
    assert!(
        classic.contains("# TYPE pgvakt_statements_total counter"),
        "{classic}"
    );
    assert_eq!(
        metric(
            &classic,
            "pgvakt_statements_total{decision=\"rewritten\",class=\"read\"}"
        ),
        1.0,
        "{classic}"
    );
    for reason in [
        "tls_required",
        "too_many_connections",
        "upstream_unavailable",
    ] {
        let series = format!("pgvakt_client_connections_refused_total{{reason=\"{reason}\"}}");
        assert!(classic.contains(&series), "no {series}");
    }

    // Which pgvakt and which policy: replicas are compared by these.
    let build = format!(
        "pgvakt_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(metric(&classic, &build), 1.0, "{classic}");
    let policy = pgvakt::policy::load(&[
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies/crm.yaml")
    ])
    .unwrap();
    let info = format!("pgvakt_policy_info{{version=\"{}\"}}", policy.version);
    assert_eq!(metric(&classic, &info), 1.0, "{classic}");
    assert_eq!(classic.matches("pgvakt_policy_info{").count(), 1);

    // Process metrics under their standard names.
    assert!(
        metric(&classic, "process_resident_memory_bytes") > 1e6,
        "{classic}"
    );
    assert!(metric(&classic, "process_open_fds") >= 3.0, "{classic}");
    assert!(metric(&classic, "process_max_fds") >= 3.0, "{classic}");
    assert!(classic.contains("# TYPE process_cpu_seconds_total counter"));
    assert!(metric(&classic, "process_start_time_seconds") > 1.6e9);

    if let Ok(out) = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(classic.as_bytes())?;
            child.wait_with_output()
        })
    {
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Prometheus asks for OpenMetrics and gets it, with the same series.
    let (head, om) = get(
        addr,
        "/metrics",
        "Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n",
    )
    .await;
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE pgvakt_statements counter"), "{om}");
    assert_eq!(metric(&om, &build), 1.0);
}

#[tokio::test]
async fn policy_info_follows_a_reload() {
    let policy = common::policy_files::demo_policy_copy();
    let env = Env::start_with(EnvOptions {
        demo_contacts: Some(5),
        policy_file: Some(policy.file.clone()),
        ..Default::default()
    })
    .await;
    let before = pgvakt::policy::load(std::slice::from_ref(&policy.file))
        .unwrap()
        .version;
    std::fs::write(
        &policy.file,
        format!("{}\n# a comment changes the version\n", policy.original),
    )
    .unwrap();
    let after = pgvakt::policy::load(std::slice::from_ref(&policy.file))
        .unwrap()
        .version;
    assert_ne!(before, after);
    env.server()
        .proxy
        .enforcer
        .reload_policy()
        .unwrap()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let m = loop {
        let m = env.metrics().await;
        if m.contains(&after) || Instant::now() > deadline {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let series: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("pgvakt_policy_info{"))
        .collect();
    assert_eq!(
        series,
        [format!("pgvakt_policy_info{{version=\"{after}\"}} 1").as_str()],
        "one series, the policy in force"
    );
    assert_eq!(
        metric(&m, "pgvakt_policy_reloads_total{outcome=\"ok\"}"),
        1.0,
        "{m}"
    );
}

#[test]
fn the_checker_finds_what_promtool_rejects() {
    for (bad, why) in [
        (
            "# HELP a_total x\n# TYPE a_total counter\na_total 1\n# EOF\n",
            "# EOF",
        ),
        ("# HELP a x\n# TYPE a counter\na_total 1\n", "_total"),
        ("a 1\n", "without a TYPE"),
        (
            "# HELP pgvakt_a x\n# TYPE pgvakt_a gauge\npgvakt_a{r=\"TlsRequired\"} 1\n",
            "snake_case",
        ),
        (
            "# HELP a x\n# TYPE a gauge\n# HELP b x\n# TYPE b gauge\na 1\n",
            "split up",
        ),
    ] {
        let problems = check_classic(bad);
        assert!(
            problems.iter().any(|p| p.contains(why)),
            "{bad:?}: {problems:?}"
        );
    }
}
