//! pgvakt: a PostgreSQL wire-protocol proxy that enforces data-protection (GDPR) policy.

pub mod analysis;
pub mod cancel;
pub mod catalog;
pub mod certs;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod enforce;
pub mod listener;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod proxy;
pub mod session;
pub mod stream;
pub mod tls;
pub mod upstream;
