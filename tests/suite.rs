//! pgvakt's integration suite, one test binary: each module below drives real PostgreSQL servers
//! (started and removed by `common`) through pgvakt with real clients. `layout` checks that every
//! file in `tests/` is a module here, so none is silently left out.

mod common;

mod anonymised_copy;
mod applications;
mod audit_cli;
mod audit_durability;
mod audit_executions;
mod audit_identity;
mod audit_request_matching;
mod audit_schema;
mod audit_subjects;
mod audit_table;
mod audit_table_outage;
mod audit_trail;
mod check_config;
mod clients;
mod cluster;
mod connect_burst;
mod demo;
mod demo_data;
mod demo_script;
mod deploy_files;
mod differential;
mod differential_fuzz;
mod empty_statements;
mod enforcement;
mod grouping;
mod inheritance;
mod layout;
mod leak_classes;
mod lockout;
mod masks_pg;
mod metrics_format;
mod notify;
mod ops;
mod policy_tools;
mod pseudonym_key;
mod relay;
mod result_origins;
mod robustness;
mod run_lifecycle;
mod search_path;
mod service_restart;
mod shapes;
mod soak;
mod startup_identity;
mod statistics_views;
mod tls;
mod tls_records;
mod tool_connections;
mod transparent_relay;
mod unlisted_relations;
mod views;
mod write_rules;
