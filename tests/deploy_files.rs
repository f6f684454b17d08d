//! The files under deploy/ stay consistent with the product: they parse, the metrics that
//! dashboards and alerts query exist, probes point at the metrics listener, containers do not
//! run as root, and stop timeouts cover the shutdown grace period.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pgvakt::config::Config;
use pgvakt::metrics::Metrics;
use serde_json::Value;

/// After SIGTERM's grace period, sessions get this long to take their FATAL and close
/// (`Server::shutdown`).
const TERMINATE_WAIT_MS: u64 = 5_000;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(rel: &str) -> String {
    let p = deploy().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml(rel: &str) -> Value {
    let mut docs = yaml_docs(rel);
    assert_eq!(docs.len(), 1, "{rel}: one document expected");
    docs.remove(0)
}

#[test]
fn every_yaml_and_json_file_parses() {
    let mut all = Vec::new();
    files(&deploy(), &mut all);
    let mut seen = 0;
    for p in all {
        let text = std::fs::read_to_string(&p).unwrap();
        match p.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => {
                let docs = serde_saphyr::from_multiple::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                assert!(!docs.is_empty(), "{}", p.display());
                seen += 1;
            }
            Some("json") => {
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                seen += 1;
            }
            _ => {}
        }
    }
    assert!(
        seen >= 12,
        "only {seen} YAML/JSON files found under deploy/"
    );
}

/// Metric names the registry exports, with the suffixes Prometheus queries use.
fn exported() -> BTreeSet<String> {
    let metrics = Metrics::default();
    // Series that exist once a policy is loaded.
    metrics.set_policy_version("0123456789ab");
    // ... and a grant with an end.
    metrics.access.set_grants(&[pgvakt::policy::Grant {
        grantee: pgvakt::policy::Grantee::User("u".into()),
        role: "sales".into(),
        valid_from: None,
        valid_until: Some(2_000_000_000),
        origin: "grants[0] (p.yaml:1:3)".into(),
        reason: None,
        pos: pgvakt::policy::diag::Pos {
            file: "p.yaml".into(),
            line: 1,
            column: 3,
        },
    }]);
    // ... and its roles, one of which read a category.
    metrics.set_roles(["sales"].into_iter());
    metrics.personal_reads(
        "sales",
        &[pgvakt::analysis::ColumnUse {
            schema: "public".into(),
            table: "contacts".into(),
            column: "bank_account".into(),
            category: "financial".into(),
            action: pgvakt::analysis::UseAction::Masked,
            rule: "roles.sales".into(),
        }],
    );
    let text = metrics.render(true);
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("pgvakt_") {
        let preceded_by_word = rest[..i]
            .chars()
            .last()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_word {
            out.push(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    out
}

fn check_metrics(origin: &str, exprs: &[String]) {
    let exported = exported();
    let mut names = 0;
    for expr in exprs {
        for name in metric_names(expr) {
            names += 1;
            assert!(
                exported.contains(&name),
                "{origin}: {name} is not exported by pgvakt (in `{expr}`); exported: {exported:?}"
            );
        }
    }
    assert!(names > 0, "{origin}: no pgvakt metric referenced");
}

#[test]
fn dashboard_queries_only_exported_metrics() {
    let dash: Value = serde_json::from_str(&read("grafana/pgvakt-dashboard.json")).unwrap();
    let panels = dash["panels"].as_array().expect("panels");
    let exprs: Vec<String> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    check_metrics("dashboard", &exprs);
    let all = exprs.join("\n");
    for needed in [
        "pgvakt_statements_total",
        "pgvakt_enforcement_anomalies_total",
        "pgvakt_audit_records_written_total",
        "pgvakt_audit_queue_records",
        "pgvakt_audit_write_failures_total",
        "pgvakt_audit_records_dropped_total",
        "pgvakt_tls_handshakes_total",
        "pgvakt_client_connections",
        "pgvakt_statement_duration_seconds_bucket",
        "pgvakt_policy_reloads_total",
        "pgvakt_policy_loaded_timestamp_seconds",
        "pgvakt_relayed_bytes_total",
        "pgvakt_analysis_cache_hits_total",
        "pgvakt_build_info",
        "pgvakt_policy_info",
        "pgvakt_statement_refusals_total",
        "pgvakt_personal_data_reads_total",
        "pgvakt_tls_certificate_expiry_timestamp_seconds",
        "pgvakt_catalog_loaded_timestamp_seconds",
        "pgvakt_catalog_refresh_failures_total",
    ] {
        assert!(
            all.contains(needed),
            "the dashboard has no panel on {needed}"
        );
    }
    // Every query reads from the data source the viewer picks (a variable, not a fixed uid, so
    // the dashboard imports into any Grafana), and the variable offers Prometheus sources.
    let vars = dash["templating"]["list"].as_array().expect("variables");
    let ds_var = vars
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(ds_var["query"], "prometheus");
    let picked = format!("${{{}}}", ds_var["name"].as_str().unwrap());
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], picked.as_str(), "{}", p["title"]);
        for t in p["targets"].as_array().into_iter().flatten() {
            assert_eq!(t["datasource"]["uid"], picked.as_str(), "{}", p["title"]);
        }
    }
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"]["uid"], picked.as_str(), "{}", v["name"]);
    }
    let text = read("grafana/pgvakt-dashboard.json");
    assert!(
        !text.contains("pgvakt-prometheus"),
        "a fixed data source uid is left"
    );
    // Label values in queries are the snake_case words pgvakt exports.
    for camel in ["\"Refused\"", "\"Failed\"", "\"TlsRequired\"", "\"Ok\""] {
        assert!(!text.contains(camel), "dashboard queries {camel}");
    }
}

#[test]
fn alert_rules_query_only_exported_metrics() {
    let rules = yaml("prometheus/alerts.yml");
    let mut exprs = Vec::new();
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            let name = rule["alert"].as_str().expect("alerting rules only");
            assert!(rule["labels"]["severity"].is_string(), "{name}: severity");
            assert!(
                rule["annotations"]["summary"].is_string(),
                "{name}: summary"
            );
            exprs.push(rule["expr"].as_str().unwrap().to_owned());
            alerts.insert(name.to_owned());
        }
    }
    check_metrics("alerts", &exprs);
    for a in [
        "PgvaktDown",
        "PgvaktNotReady",
        "PgvaktAuditFailures",
        "PgvaktAuditDropped",
        "PgvaktRefusedStatementsSpike",
        "PgvaktEnforcementAnomaly",
        "PgvaktPolicyReloadFailed",
        "PgvaktTlsHandshakeFailures",
        "PgvaktCertificateExpiresSoon",
        "PgvaktCatalogStale",
    ] {
        assert!(alerts.contains(a), "missing alert {a}");
    }
    let prom = yaml("prometheus/prometheus.yml");
    assert_eq!(prom["rule_files"][0], "alerts.yml");
    let target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    let image_config = Config::parse(&read("docker/pgvakt.yaml"), "docker/pgvakt.yaml").unwrap();
    assert!(
        target.ends_with(&format!(":{}", image_config.metrics.listen.port())),
        "Prometheus scrapes {target}"
    );
}

fn find_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

#[test]
fn kubernetes_probes_ports_and_shutdown_match_the_configuration() {
    let cm = yaml("k8s/configmap.yaml");
    let config = Config::parse(
        cm["data"]["pgvakt.yaml"].as_str().unwrap(),
        "k8s/configmap.yaml",
    )
    .expect("the ConfigMap holds a valid pgvakt configuration");
    let deployment = yaml("k8s/deployment.yaml");
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    let pod = &deployment["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let port = |name: &str| {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no {name} port"))
    };
    assert_eq!(port("metrics"), u64::from(config.metrics.listen.port()));
    assert_eq!(port("postgres"), u64::from(config.listen.port()));
    assert!(
        config.metrics.listen.ip().is_unspecified(),
        "kubelet must reach the probes"
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "metrics", "{probe}");
    }
    assert_eq!(
        c["args"][2]
            .as_str()
            .map(|p| p.starts_with("/etc/pgvakt/config/")),
        Some(true),
        "the container reads the mounted ConfigMap"
    );

    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_ne!(pod["securityContext"]["runAsUser"], 0);

    // preStop, then the grace period, then the terminate wait, all before SIGKILL.
    let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"][1]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .expect("preStop sleep seconds");
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination * 1000 > pre_stop * 1000 + config.limits.shutdown_grace_ms + TERMINATE_WAIT_MS,
        "terminationGracePeriodSeconds {termination} is too short"
    );

    // Every mounted path the configuration names is mounted.
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    let audit = config.audit.as_ref().expect("the audit trail is on");
    let mut paths = vec![
        config.tls.cert_file.clone(),
        config.tls.key_file.clone(),
        audit.dir.clone().expect("audit directory"),
    ];
    paths.extend(config.policy.paths.iter().cloned());
    paths.extend(config.upstream.ca_file.clone());
    paths.extend(config.upstream.service_password_file.clone());
    paths.extend(audit.chain_key_file.clone());
    paths.extend(audit.subject_key_file.clone());
    for p in paths {
        assert!(
            mounts.iter().any(|m| p.starts_with(m)),
            "{} is on no mounted volume",
            p.display()
        );
    }

    let services = yaml_docs("k8s/service.yaml");
    assert_eq!(
        find_kind(&services, "Service")["spec"]["ports"][0]["targetPort"],
        "postgres"
    );
    let pdb = yaml("k8s/pdb.yaml");
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    assert!(
        pdb["spec"]["minAvailable"].as_u64().unwrap()
            < deployment["spec"]["replicas"].as_u64().unwrap()
    );
    let secrets = yaml_docs("k8s/secret.yaml");
    assert_eq!(find_kind(&secrets, "Secret")["type"], "kubernetes.io/tls");
    let kustomize = yaml("k8s/kustomization.yaml");
    for r in kustomize["resources"].as_array().unwrap() {
        assert!(
            deploy().join("k8s").join(r.as_str().unwrap()).is_file(),
            "{r}"
        );
    }
}

#[test]
fn container_image_runs_as_a_non_root_user() {
    let dockerfile = read("Dockerfile");
    let runtime = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .expect("a multi-stage build");
    let user = runtime
        .lines()
        .filter_map(|l| l.trim().strip_prefix("USER "))
        .next_back()
        .expect("the runtime stage sets USER");
    let uid = user.split(':').next().unwrap().trim();
    assert!(!matches!(uid, "0" | "root"), "runtime user {uid}");
    assert!(dockerfile.contains("cargo build --release --locked"));
    assert!(runtime.contains("EXPOSE 6432 9187"));
    let image_config = Config::parse(&read("docker/pgvakt.yaml"), "docker/pgvakt.yaml").unwrap();
    assert_eq!(image_config.listen.port(), 6432);
    assert_eq!(image_config.metrics.listen.port(), 9187);

    let compose = yaml("docker-compose.yml");
    let pgvakt = &compose["services"]["pgvakt"];
    assert_eq!(pgvakt["read_only"], true);
    assert_eq!(
        compose["services"]["postgres"]["image"]
            .as_str()
            .map(|i| i.starts_with("postgres:15")),
        Some(true)
    );
    for service in ["prometheus", "grafana"] {
        assert!(compose["services"][service].is_object(), "{service}");
    }
    let stop = pgvakt["stop_grace_period"].as_str().unwrap();
    let stop_ms = stop.trim_end_matches('s').parse::<u64>().unwrap() * 1000;
    assert!(stop_ms > image_config.limits.shutdown_grace_ms + TERMINATE_WAIT_MS);
}

#[test]
fn systemd_unit_is_hardened_and_outlasts_the_shutdown_grace() {
    let unit = read("systemd/pgvakt.service");
    let value = |key: &str| {
        unit.lines()
            .filter_map(|l| l.strip_prefix(&format!("{key}=")))
            .next_back()
            .unwrap_or_else(|| panic!("{key} not set"))
            .to_owned()
    };
    assert_eq!(value("ProtectSystem"), "strict");
    assert_eq!(value("NoNewPrivileges"), "yes");
    assert_eq!(value("CapabilityBoundingSet"), "");
    assert_eq!(value("ReadWritePaths"), "/var/log/pgvakt");
    assert_eq!(value("KillSignal"), "SIGTERM");
    assert!(value("ExecReload").contains("-HUP $MAINPID"));
    assert!(unit.contains("SystemCallFilter=@system-service"));
    assert!(value("RestrictAddressFamilies").contains("AF_INET"));
    assert_ne!(value("User"), "root");
    let example = Config::parse(&read("pgvakt.example.yaml"), "pgvakt.example.yaml").unwrap();
    let stop_ms = value("TimeoutStopSec").parse::<u64>().unwrap() * 1000;
    assert!(stop_ms > example.limits.shutdown_grace_ms + TERMINATE_WAIT_MS);
}

/// The Vector configuration tails exactly the files pgvakt writes, keeps an archive copy byte
/// for byte (the MAC covers the exact bytes), and can neither drop nor reorder records.
#[test]
fn vector_ships_every_audit_line_unchanged_and_parsed() {
    let v = yaml("vector/vector.yaml");
    let sources = v["sources"].as_object().expect("sources");
    let (name, src) = sources.iter().next().expect("a source");
    assert_eq!(src["type"], "file");
    assert_eq!(
        src["read_from"], "beginning",
        "records written before Vector started"
    );
    assert_eq!(src["oldest_first"], true, "rotated files in chain order");
    assert_eq!(src["fingerprint"]["strategy"], "device_and_inode");
    // The glob names pgvakt's files in the example configuration's audit.dir.
    let example = yaml("pgvakt.example.yaml");
    let dir = example["audit"]["dir"]
        .as_str()
        .expect("audit.dir in the example");
    let include = src["include"][0].as_str().expect("include");
    let (glob_dir, pattern) = include.rsplit_once('/').expect("a path");
    assert_eq!(glob_dir, dir);
    let (prefix, suffix) = pattern.split_once('*').expect("a glob");
    let name_now = "audit-00000000000000000001-20261130T120000Z.jsonl";
    assert!(pgvakt::audit::files::is_audit_file_name(name_now));
    assert!(name_now.starts_with(prefix) && name_now.ends_with(suffix));
    assert!(src["max_line_bytes"].as_u64().unwrap_or(0) >= 1 << 20);
    assert_eq!(v["acknowledgements"]["enabled"], true);

    let transforms = v["transforms"].as_object().expect("transforms");
    let sinks = v["sinks"].as_object().expect("sinks");
    let known: BTreeSet<&str> = sources
        .keys()
        .chain(transforms.keys())
        .map(String::as_str)
        .collect();
    for (sink, cfg) in sinks.iter().chain(transforms.iter()) {
        for input in cfg["inputs"].as_array().expect("inputs") {
            let input = input.as_str().expect("input name");
            assert!(known.contains(input), "{sink}: unknown input {input}");
        }
    }
    // The archive gets the raw source, as text: re-encoding would break every MAC.
    let archive = sinks
        .values()
        .find(|s| s["type"] == "file")
        .expect("an archive sink");
    assert_eq!(archive["inputs"][0].as_str(), Some(name.as_str()));
    assert_eq!(archive["encoding"]["codec"], "text");
    let archived = archive["path"].as_str().expect("path");
    let file = archived.rsplit('/').next().unwrap_or_default();
    assert!(
        file.starts_with("audit-") && file.ends_with(".jsonl"),
        "`pgvakt audit verify DIR` reads audit-*.jsonl: {file}"
    );
    for (sink, cfg) in sinks {
        assert_eq!(cfg["buffer"]["when_full"], "block", "{sink} must not drop");
        assert_eq!(cfg["buffer"]["type"], "disk", "{sink} survives a restart");
    }
    // The SIEM gets parsed records; the remap keeps lines it cannot parse.
    let siem = sinks
        .values()
        .find(|s| s["type"] != "file")
        .expect("a SIEM sink");
    let parsed = siem["inputs"][0].as_str().expect("input");
    let remap = &transforms[parsed];
    assert_eq!(remap["type"], "remap");
    let program = remap["source"].as_str().expect("VRL");
    assert!(
        program.contains("parse_json(raw)") && !program.contains("abort"),
        "{program}"
    );
    assert!(program.contains(".pgvakt_unparsed = true"), "{program}");
}

/// The alert rules and their unit tests in `prometheus/tests/` pass promtool, when it is
/// installed (Debian's `prometheus` package brings it; `PGVAKT_PROMTOOL` may name the binary,
/// and then it must run).
#[test]
fn alert_rules_pass_promtool_and_their_unit_tests() {
    let named = std::env::var_os("PGVAKT_PROMTOOL");
    let promtool = named.clone().unwrap_or_else(|| "promtool".into());
    let runs = [
        vec!["check", "rules", "prometheus/alerts.yml"],
        vec!["check", "rules", "prometheus/retention-alerts.yml"],
        vec!["test", "rules", "prometheus/tests/alerts_test.yml"],
    ];
    for args in runs {
        let out = match std::process::Command::new(&promtool)
            .args(&args)
            .current_dir(deploy())
            .output()
        {
            Ok(out) => out,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && named.is_none() => {
                eprintln!("promtool is not installed: the alert rules' unit tests did not run");
                return;
            }
            Err(e) => panic!("{promtool:?}: {e}"),
        };
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
