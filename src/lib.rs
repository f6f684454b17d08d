//! pgvakt: a PostgreSQL wire-protocol proxy that enforces data-protection (GDPR) policy.

pub mod cluster;
pub mod demo;
pub mod policy;
