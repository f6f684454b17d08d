//! pgvakt: a PostgreSQL wire-protocol proxy that enforces data-protection (GDPR) policy.
//!
//! Clients connect with TLS; each session relays authentication to the upstream PostgreSQL, then
//! asks the enforcer for a verdict on every statement (forward, rewrite with masks, or refuse)
//! before relaying it. The README describes the configuration, the policy format and the status.
//!
//! # Layout
//!
//! - [`listener`]: `Server`, the accept loop and the life cycle (start, TLS reload, drain, stop).
//! - [`session`]: one client session: TLS handshake, startup, auth relay, statement relay.
//! - [`protocol`]: PostgreSQL v3 messages and framing without IO, and pgvakt's own errors.
//! - [`enforce`]: the per-session policy view and statement verdicts, with the analysis cache.
//! - [`analysis`]: parse, check and rewrite a restricted role's statements (masked derived tables).
//! - [`access`]: lockout after failed logins, shared by replicas through schema `pgvakt`.
//! - [`audit`]: the tamper-evident audit trail (writer, subject pseudonyms, `audit verify`/`search`).
//! - [`catalog`]: relations, columns, view dependencies and user functions loaded from upstream.
//! - [`policy`]: policy files loaded, validated and compiled; masks, grants, `policy check`.
//! - [`preflight`]: `pgvakt check-config`: everything `run` reads, read without starting.
//! - [`admin`]: `pgvakt admin`: unlock users and addresses, list locks, on every replica.
//! - [`mask_check`]: every mask on every column it covers, rendered and checked (`policy check`).
//! - [`install`]: `pgvakt install`: the pseudonym key and function upstream, and their check.
//! - [`readiness`]: what `/readyz` answers, composed of upstream, service, audit and drain.
//! - [`registry`]: the sessions open now, which the admin console lists and ends.
//! - [`console`]: the admin console (database `pgvakt`): SHOW SESSIONS, KILL, RELOAD, ...
//! - [`proxy`]: state shared by every session (config, TLS, upstream, cancel keys, metrics).
//! - [`upstream`]: connections to the upstream PostgreSQL server.
//! - [`dsn`]: connection strings of the command-line tools: sslmode, root certificates, errors.
//! - [`tls`]: rustls configuration for clients and, optionally, towards the upstream.
//! - [`stream`]: one byte-stream type for plaintext and TLS connections.
//! - [`cancel`]: proxy-issued cancel keys mapped to the upstream's.
//! - [`config`]: the strict YAML configuration file with its defaults and validation.
//! - [`metrics`]: Prometheus metrics and the `/metrics`, `/healthz`, `/readyz` listener.
//! - [`certs`]: self-signed certificates for the demo and tests (feature `demo`, on by default,
//!   as the next two).
//! - [`cluster`]: throwaway PostgreSQL clusters for tests, benchmarks and the demo.
//! - [`demo`]: the demo CRM database and `pgvakt demo` ([`demo::run`]).
//! - [`subject`]: data-subject rights from the inventory: `subject export` and `subject erase`.

pub mod access;
pub mod admin;
pub mod analysis;
pub mod audit;
pub(crate) mod cancel;
pub mod catalog;
pub(crate) mod cause;
#[cfg(feature = "demo")]
pub mod certs;
#[cfg(feature = "demo")]
pub mod cluster;
pub mod config;
pub(crate) mod console;
#[cfg(feature = "demo")]
pub mod demo;
pub(crate) mod dsn;
pub mod enforce;
pub mod explain;
pub mod install;
#[cfg(test)]
mod layering;
pub mod listener;
pub(crate) mod mask_check;
pub mod metrics;
pub mod policy;
pub mod policy_cli;
pub mod preflight;
pub mod protocol;
pub(crate) mod proxy;
pub(crate) mod readiness;
pub(crate) mod registry;
pub(crate) mod session;
pub(crate) mod stream;
pub mod subject;
pub(crate) mod tls;
pub(crate) mod upstream;
