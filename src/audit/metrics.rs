//! The audit writer's metrics, registered into the process registry with the others.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Cloning shares the underlying values (the writer thread and every handle update the same
/// series).
#[derive(Clone, Debug)]
pub struct AuditMetrics {
    pub records_written: Counter,
    pub queue_depth: Gauge,
    pub write_seconds: Histogram,
    pub write_failures: Counter,
    pub records_dropped: Counter,
    pub statements_refused: Counter,
}

impl Default for AuditMetrics {
    fn default() -> Self {
        AuditMetrics {
            records_written: Counter::default(),
            queue_depth: Gauge::default(),
            // 100 µs .. ~3 s: a batch write plus fsync, from page cache to a slow disk.
            write_seconds: Histogram::new(exponential_buckets(0.000_1, 2.0, 16)),
            write_failures: Counter::default(),
            records_dropped: Counter::default(),
            statements_refused: Counter::default(),
        }
    }
}

impl AuditMetrics {
    /// Register under the registry's prefix (`pgvakt_audit_...`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "audit_records_written",
            "Audit records written and synced to the sink",
            self.records_written.clone(),
        );
        registry.register(
            "audit_queue_records",
            "Audit records waiting in the queue to the writer",
            self.queue_depth.clone(),
        );
        registry.register(
            "audit_write_duration_seconds",
            "Time to write and sync one batch of audit records",
            self.write_seconds.clone(),
        );
        registry.register(
            "audit_write_failures",
            "Failed batch writes to the audit sink (each is retried)",
            self.write_failures.clone(),
        );
        registry.register(
            "audit_records_dropped",
            "Audit records not written: the queue was full (on_full: drop, or block past block_timeout_ms), the sink was failing, or it still failed at shutdown",
            self.records_dropped.clone(),
        );
        registry.register(
            "audit_statements_refused",
            "Statements that may touch personal data refused because their audit record could not be made durable first",
            self.statements_refused.clone(),
        );
    }
}
