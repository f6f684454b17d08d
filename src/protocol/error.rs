//! Errors the proxy itself reports to clients, as real PostgreSQL ErrorResponse messages.

use bytes::BytesMut;
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::Message;

/// An error as a client sees it: severity, SQLSTATE and texts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: &'static str,
    pub code: &'static str,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// For pgvakt's refusal of a statement naming a blocked column: the column's inventory
    /// category, for the metrics (never sent to the client).
    pub blocked_category: Option<Box<str>>,
}

impl PgError {
    fn new(severity: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        PgError {
            severity,
            code,
            message: message.into(),
            detail: None,
            hint: None,
            blocked_category: None,
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// A plaintext startup where TLS is required.
    pub fn tls_required() -> Self {
        Self::new(
            "FATAL",
            "28000",
            "pgvakt requires TLS: connect with sslmode=require or stronger",
        )
        .with_hint("Set sslmode=require (libpq) or enable TLS in your driver.")
    }

    /// Malformed or unexpected bytes from a peer; the session ends.
    pub fn protocol_violation(message: impl Into<String>) -> Self {
        Self::new("FATAL", "08P01", message)
    }

    /// A statement or construct refused by policy; the session continues.
    pub fn insufficient_privilege(message: impl Into<String>) -> Self {
        Self::new("ERROR", "42501", message)
    }

    /// Authentication that the proxy cannot relay.
    pub fn auth_failed(message: impl Into<String>) -> Self {
        Self::new("FATAL", "28000", message)
    }

    /// The upstream server could not be reached or failed during startup.
    pub fn upstream_unavailable(message: impl Into<String>) -> Self {
        Self::new("FATAL", "08006", message)
    }

    /// The proxy is shutting down (same code PostgreSQL uses for an admin shutdown).
    pub fn admin_shutdown() -> Self {
        Self::new("FATAL", "57P01", "pgvakt is shutting down")
    }

    /// Too many client connections.
    pub fn too_many_connections() -> Self {
        Self::new("FATAL", "53300", "pgvakt: too many client connections")
    }

    /// A refusal with an arbitrary SQLSTATE (analysis decides the code).
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::new("ERROR", code, message)
    }

    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new("FATAL", code, message)
    }

    /// Encode as an ErrorResponse message.
    pub fn encode(&self, out: &mut BytesMut) {
        let mut fields = vec![
            (b'S', self.severity.to_owned()),
            (b'V', self.severity.to_owned()),
            (b'C', self.code.to_owned()),
            (b'M', self.message.clone()),
        ];
        if let Some(d) = &self.detail {
            fields.push((b'D', d.clone()));
        }
        if let Some(h) = &self.hint {
            fields.push((b'H', h.clone()));
        }
        // Encoding an in-memory message only fails on oversize; messages here are short, and a
        // failure would at worst send nothing before the session closes.
        let _ = ErrorResponse::new(fields).encode(out);
    }

    pub fn to_bytes(&self) -> BytesMut {
        let mut out = BytesMut::new();
        self.encode(&mut out);
        out
    }
}

impl std::fmt::Display for PgError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.severity, self.code, self.message)
    }
}
