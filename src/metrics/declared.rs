//! Each metric's name (after the `pgvakt_` prefix) and help text, in the order `/metrics`
//! lists them; `Metrics::new` registers them.

/// (name, help text).
pub(super) type Declared = (&'static str, &'static str);

pub(super) const BUILD_INFO: Declared = (
    "build_info",
    "Always 1; the label names the running pgvakt version",
);

pub(super) const POLICY_INFO: Declared = (
    "policy_info",
    "1 for the policy in force (label: its version hash, as in audit records); compare replicas with count by (version)",
);

pub(super) const CLIENT_CONNECTIONS: Declared =
    ("client_connections", "Client sessions currently open");

pub(super) const CLIENT_CONNECTIONS_ACCEPTED: Declared = (
    "client_connections_accepted",
    "Client TCP connections accepted",
);

pub(super) const CLIENT_CONNECTIONS_REFUSED: Declared = (
    "client_connections_refused",
    "Client connections refused, by reason",
);

pub(super) const TLS_HANDSHAKES: Declared = ("tls_handshakes", "Client TLS handshakes by outcome");

pub(super) const STATEMENTS: Declared =
    ("statements", "Statements by enforcement decision and class");

pub(super) const STATEMENTS_BY_PURPOSE: Declared = (
    "statements_by_purpose",
    "Statements of sessions whose role processes for this declared purpose (roles.*.purposes); a role with several purposes counts each statement for each",
);

pub(super) const STATEMENT_DURATION_SECONDS: Declared = (
    "statement_duration_seconds",
    "Time from a request reaching the proxy to ReadyForQuery leaving it",
);

pub(super) const UPSTREAM_CONNECT_ERRORS: Declared = (
    "upstream_connect_errors",
    "Failed connection attempts to the upstream PostgreSQL",
);

pub(super) const RELAYED_BYTES: Declared = ("relayed_bytes", "Bytes relayed, by direction");

pub(super) const POLICY_RELOADS: Declared = (
    "policy_reloads",
    "Policy reloads by outcome; a failed reload keeps the previous policy",
);

pub(super) const POLICY_LOADED_TIMESTAMP_SECONDS: Declared = (
    "policy_loaded_timestamp_seconds",
    "Unix time the policy in force was loaded (age = time() - this); 0 without a policy",
);

pub(super) const ENFORCEMENT_ANOMALIES: Declared = (
    "enforcement_anomalies",
    "Protected columns seen unmasked in a result for a restricted role (values replaced)",
);

pub(super) const PARSER_DISAGREEMENTS: Declared = (
    "parser_disagreements",
    "Statements refused because PostgreSQL's parser read them differently from the analysis",
);

pub(super) const STATEMENT_REFUSALS: Declared = (
    "statement_refusals",
    "Statements refused, by policy role and reason (policy: 42501, protocol: 08P01, too_complex: 54xxx, not_installed: 55000, encoding: 22021, unknown_name: 42703/42P01/42883, other)",
);

pub(super) const PERSONAL_DATA_READS: Declared = (
    "personal_data_reads",
    "Statements of restricted roles that read personal data, by policy role, inventory category and what the role sees (allowed: stored values, masked; blocked: the statement named a blocked column and was refused, also in statement_refusals); counted when decided (a Query, or the Parse of a prepared statement), once per category and action",
);

pub(super) const TLS_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS: Declared = (
    "tls_certificate_expiry_timestamp_seconds",
    "Unix time at which the certificate served to clients expires (notAfter; renewed on SIGHUP); 0 when it cannot be read",
);

pub(super) const CATALOG_LOADED_TIMESTAMP_SECONDS: Declared = (
    "catalog_loaded_timestamp_seconds",
    "Unix time of the last successful load of pgvakt's catalog from the upstream (every 30 s, after DDL through pgvakt, after a reconnect); 0 before the first",
);

pub(super) const CATALOG_REFRESH_FAILURES: Declared = (
    "catalog_refresh_failures",
    "Catalog loads that failed; the previous catalog stays in force",
);

pub(super) const ROLE_LOOKUP_FAILURES: Declared = (
    "role_lookup_failures",
    "Logins refused because the user's PostgreSQL groups, which decide its policy role, could not be looked up",
);

pub(super) const ANALYSIS_CACHE_HITS: Declared = (
    "analysis_cache_hits",
    "Statement analyses answered from the cache",
);

pub(super) const ANALYSIS_CACHE_MISSES: Declared =
    ("analysis_cache_misses", "Statement analyses computed");

pub(super) const ANALYSIS_CACHE_ENTRIES: Declared =
    ("analysis_cache_entries", "Entries in the analysis cache");

pub(super) const READY: Declared = (
    "ready",
    "1 when /readyz answers 200 (upstream reachable, service connection open, audit sink writable, not draining)",
);
