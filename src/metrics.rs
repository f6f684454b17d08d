//! Prometheus metrics, declared once, and the HTTP listener serving `/metrics`, `/healthz` and
//! `/readyz`.
//!
//! prometheus-client is the Prometheus project's own crate: explicit registry, OpenMetrics text.
//! Label values come only from the fixed sets below, never from SQL, user or table names.

use std::net::SocketAddr;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RefuseReason {
    TlsRequired,
    TlsHandshake,
    TooManyConnections,
    Protocol,
    StartupTimeout,
    Upstream,
    ShuttingDown,
    /// The login user's PostgreSQL groups decide its role and could not be looked up.
    RoleLookup,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: RefuseReason,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Decision {
    /// An unrestricted role's statement, forwarded byte for byte without analysis.
    Passthrough,
    /// A restricted role's statement that reads nothing masked, forwarded as analysed.
    Allowed,
    /// A restricted role's statement that reads masked columns.
    Rewritten,
    Refused,
}

/// Statement class by leading keyword: cheap enough for every statement, including those of
/// unrestricted roles that are never parsed. A data-modifying `WITH` counts as `Read`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Class {
    Read,
    Write,
    Ddl,
    Copy,
    Utility,
    Unknown,
}

impl Class {
    pub fn of_sql(sql: &[u8]) -> Class {
        let word = leading_keyword(sql);
        let is = |k: &str| word.eq_ignore_ascii_case(k.as_bytes());
        if [
            "select", "with", "values", "table", "show", "explain", "fetch",
        ]
        .iter()
        .any(|k| is(k))
        {
            Class::Read
        } else if ["insert", "update", "delete", "merge"]
            .iter()
            .any(|k| is(k))
        {
            Class::Write
        } else if [
            "create", "alter", "drop", "comment", "grant", "revoke", "truncate", "reindex",
            "cluster", "security",
        ]
        .iter()
        .any(|k| is(k))
        {
            Class::Ddl
        } else if is("copy") {
            Class::Copy
        } else if word.is_empty() {
            Class::Unknown
        } else {
            Class::Utility
        }
    }
}

/// The first word of a statement, after white space, comments and opening parentheses.
fn leading_keyword(sql: &[u8]) -> &[u8] {
    let mut rest = sql;
    loop {
        let before = rest.len();
        rest = rest.trim_ascii_start();
        while let Some(r) = rest.strip_prefix(b"(") {
            rest = r;
        }
        if let Some(r) = rest.strip_prefix(b"--") {
            rest = r.iter().position(|&b| b == b'\n').map_or(&[], |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix(b"/*") {
            // Nested comments end early here; the label is then Utility or Unknown, never wrong
            // in a way that matters for enforcement.
            rest = r
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(&[], |i| &r[i + 2..]);
        }
        if rest.len() == before {
            break;
        }
    }
    let end = rest
        .iter()
        .position(|b| !b.is_ascii_alphabetic())
        .unwrap_or(rest.len());
    &rest[..end]
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatementLabels {
    pub decision: Decision,
    pub class: Class,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    ClientToUpstream,
    UpstreamToClient,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: Direction,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Outcome {
    Ok,
    Failed,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: Outcome,
}

/// Every metric pgvakt exports.
pub struct Metrics {
    registry: Registry,
    pub connections_current: Gauge,
    pub connections_total: Counter,
    pub connections_refused: Family<ReasonLabel, Counter>,
    pub tls_handshakes: Family<OutcomeLabel, Counter>,
    pub statements: Family<StatementLabels, Counter>,
    pub statement_seconds: Histogram,
    pub upstream_connect_errors: Counter,
    pub bytes: Family<DirectionLabel, Counter>,
    pub policy_reloads: Family<OutcomeLabel, Counter>,
    pub policy_loaded_at: Gauge,
    pub enforcement_anomalies: Counter,
    pub analysis_cache_hits: Counter,
    pub analysis_cache_misses: Counter,
    pub analysis_cache_entries: Gauge,
    /// Logins refused because the user's PostgreSQL groups could not be looked up.
    role_lookup_failures: Counter,
    pub audit: crate::audit::AuditMetrics,
    ready: Gauge,
}

/// The counters the enforcer keeps itself (it exists before the server and its registry do);
/// the registry holds clones of the same counters.
#[derive(Debug, Clone, Default)]
pub struct AnalysisCounters {
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub cache_entries: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(&AnalysisCounters::default())
    }
}

impl Metrics {
    pub fn new(analysis: &AnalysisCounters) -> Self {
        let mut registry = Registry::with_prefix("pgvakt");
        let connections_current = Gauge::default();
        registry.register(
            "client_connections",
            "Client sessions currently open",
            connections_current.clone(),
        );
        let connections_total = Counter::default();
        registry.register(
            "client_connections_accepted",
            "Client TCP connections accepted",
            connections_total.clone(),
        );
        let connections_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "client_connections_refused",
            "Client connections refused, by reason",
            connections_refused.clone(),
        );
        let tls_handshakes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "tls_handshakes",
            "Client TLS handshakes by outcome",
            tls_handshakes.clone(),
        );
        let statements = Family::<StatementLabels, Counter>::default();
        registry.register(
            "statements",
            "Statements by enforcement decision and class",
            statements.clone(),
        );
        let statement_seconds = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        registry.register(
            "statement_duration_seconds",
            "Time from a request reaching the proxy to ReadyForQuery leaving it",
            statement_seconds.clone(),
        );
        let upstream_connect_errors = Counter::default();
        registry.register(
            "upstream_connect_errors",
            "Failed connection attempts to the upstream PostgreSQL",
            upstream_connect_errors.clone(),
        );
        let bytes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "relayed_bytes",
            "Bytes relayed, by direction",
            bytes.clone(),
        );
        let policy_reloads = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "policy_reloads",
            "Policy reloads by outcome; a failed reload keeps the previous policy",
            policy_reloads.clone(),
        );
        let policy_loaded_at = Gauge::default();
        registry.register(
            "policy_loaded_timestamp_seconds",
            "Unix time the policy in force was loaded (age = time() - this); 0 without a policy",
            policy_loaded_at.clone(),
        );
        let enforcement_anomalies = Counter::default();
        registry.register(
            "enforcement_anomalies",
            "Protected columns seen unmasked in a result for a restricted role (values replaced)",
            enforcement_anomalies.clone(),
        );
        registry.register(
            "parser_disagreements",
            "Statements refused because PostgreSQL's parser read them differently from the analysis",
            crate::analysis::authority::DISAGREEMENTS.clone(),
        );
        let role_lookup_failures = Counter::default();
        registry.register(
            "role_lookup_failures",
            "Logins refused because the user's PostgreSQL groups, which decide its policy role, could not be looked up",
            role_lookup_failures.clone(),
        );
        let analysis_cache_hits = analysis.cache_hits.clone();
        registry.register(
            "analysis_cache_hits",
            "Statement analyses answered from the cache",
            analysis_cache_hits.clone(),
        );
        let analysis_cache_misses = analysis.cache_misses.clone();
        registry.register(
            "analysis_cache_misses",
            "Statement analyses computed",
            analysis_cache_misses.clone(),
        );
        let analysis_cache_entries = analysis.cache_entries.clone();
        registry.register(
            "analysis_cache_entries",
            "Entries in the analysis cache",
            analysis_cache_entries.clone(),
        );
        let audit = crate::audit::AuditMetrics::default();
        audit.register(&mut registry);
        // Every series of a fixed label set starts at 0, so increase() and rate() see the first
        // event (a failed reload, a plaintext attempt) instead of a series appearing at 1.
        for reason in [
            RefuseReason::TlsRequired,
            RefuseReason::TlsHandshake,
            RefuseReason::TooManyConnections,
            RefuseReason::Protocol,
            RefuseReason::StartupTimeout,
            RefuseReason::Upstream,
            RefuseReason::ShuttingDown,
            RefuseReason::RoleLookup,
        ] {
            let _ = connections_refused.get_or_create(&ReasonLabel { reason });
        }
        for outcome in [Outcome::Ok, Outcome::Failed] {
            let _ = tls_handshakes.get_or_create(&OutcomeLabel {
                outcome: outcome.clone(),
            });
            let _ = policy_reloads.get_or_create(&OutcomeLabel { outcome });
        }
        for direction in [Direction::ClientToUpstream, Direction::UpstreamToClient] {
            let _ = bytes.get_or_create(&DirectionLabel { direction });
        }
        for decision in [
            Decision::Passthrough,
            Decision::Allowed,
            Decision::Rewritten,
            Decision::Refused,
        ] {
            for class in [
                Class::Read,
                Class::Write,
                Class::Ddl,
                Class::Copy,
                Class::Utility,
                Class::Unknown,
            ] {
                let _ = statements.get_or_create(&StatementLabels {
                    decision: decision.clone(),
                    class,
                });
            }
        }
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when /readyz answers 200 (upstream reachable, service connection open, audit sink writable, not draining)",
            ready.clone(),
        );
        Metrics {
            registry,
            connections_current,
            connections_total,
            connections_refused,
            tls_handshakes,
            statements,
            statement_seconds,
            upstream_connect_errors,
            bytes,
            policy_reloads,
            policy_loaded_at,
            enforcement_anomalies,
            analysis_cache_hits,
            analysis_cache_misses,
            analysis_cache_entries,
            role_lookup_failures,
            audit,
            ready,
        }
    }

    pub fn refused(&self, reason: RefuseReason) {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn statement(&self, decision: Decision, class: Class) {
        self.statements
            .get_or_create(&StatementLabels { decision, class })
            .inc();
    }

    /// The service's count of failed group lookups, exported as a counter.
    pub fn set_role_lookup_failures(&self, total: u64) {
        let seen = self.role_lookup_failures.get();
        if total > seen {
            self.role_lookup_failures.inc_by(total - seen);
        }
    }

    /// Count a policy reload attempt; a successful one also resets the policy's age.
    pub fn policy_reloaded(&self, ok: bool) {
        let outcome = if ok { Outcome::Ok } else { Outcome::Failed };
        self.policy_reloads
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
        if ok {
            self.set_policy_loaded_at(std::time::SystemTime::now());
        }
    }

    pub fn set_policy_loaded_at(&self, at: std::time::SystemTime) {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.policy_loaded_at
            .set(i64::try_from(secs).unwrap_or(i64::MAX));
    }

    /// The text exposition of every metric, with readiness as `/readyz` answers it now.
    pub fn render(&self, ready: bool) -> String {
        self.ready.set(i64::from(ready));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Whether `/readyz` answers 200; the server composes it from its parts.
pub type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

/// Serve `/metrics`, `/healthz` and `/readyz` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, ready: ReadyCheck) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 2048];
            let mut n = 0;
            // A request line and headers fit in 2 KiB; anything else is not for us.
            while n < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf[n..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(m)) => n += m,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let (status, ctype, body) = match path {
                "/metrics" => (
                    "200 OK",
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    metrics.render(ready()),
                ),
                "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
                "/readyz" if ready() => ("200 OK", "text/plain", "ready\n".to_owned()),
                "/readyz" => (
                    "503 Service Unavailable",
                    "text/plain",
                    "not ready\n".to_owned(),
                ),
                _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// Bind the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_by_leading_keyword() {
        for (sql, class) in [
            ("SELECT 1", Class::Read),
            ("  -- note\n(select 1) union select 2", Class::Read),
            (
                "/* hint */ WITH x AS (SELECT 1) SELECT * FROM x",
                Class::Read,
            ),
            ("insert into t values (1)", Class::Write),
            ("DELETE FROM t", Class::Write),
            ("create table t (a int)", Class::Ddl),
            ("TRUNCATE t", Class::Ddl),
            ("COPY t TO STDOUT", Class::Copy),
            ("BEGIN", Class::Utility),
            ("set search_path = public", Class::Utility),
            ("", Class::Unknown),
            ("-- only a comment", Class::Unknown),
            ("/* unterminated", Class::Unknown),
        ] {
            assert_eq!(Class::of_sql(sql.as_bytes()), class, "{sql:?}");
        }
    }
}
