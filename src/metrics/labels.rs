//! Label sets and their values. Values are snake_case words from the fixed sets below (the
//! Prometheus convention, and the words the audit records use), never SQL, user or table
//! names; each enum lists `ALL` so that every series exists from the start at 0.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// An enum of label values with their exported words and the list of all of them.
macro_rules! label_values {
    ($(#[$meta:meta])* pub enum $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
        pub enum $name { $($(#[$vmeta])* $variant,)+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The value as exported.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text,)+ }
            }
        }

        impl EncodeLabelValue for $name {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                std::fmt::Write::write_str(encoder, self.as_str())
            }
        }
    };
}

label_values! {
    /// Why a client connection was refused before its session started.
    pub enum RefuseReason {
        TlsRequired => "tls_required",
        TlsHandshake => "tls_handshake",
        TooManyConnections => "too_many_connections",
        Protocol => "protocol",
        StartupTimeout => "startup_timeout",
        Upstream => "upstream_unavailable",
        ShuttingDown => "shutting_down",
        /// The login user's PostgreSQL groups decide its role and could not be looked up.
        RoleLookup => "role_lookup",
        /// The user or the client address is locked after repeated failed logins.
        LockedOut => "locked_out",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: RefuseReason,
}

label_values! {
    pub enum Decision {
        /// An unrestricted role's statement, forwarded byte for byte without analysis.
        Passthrough => "passthrough",
        /// A restricted role's statement that reads nothing masked, forwarded as analysed.
        Allowed => "allowed",
        /// A restricted role's statement that reads masked columns.
        Rewritten => "rewritten",
        Refused => "refused",
    }
}

label_values! {
    /// Statement class by leading keyword: cheap enough for every statement, including those of
    /// unrestricted roles that are never parsed. A data-modifying `WITH` counts as `Read`.
    pub enum Class {
        Read => "read",
        Write => "write",
        Ddl => "ddl",
        Copy => "copy",
        Utility => "utility",
        Unknown => "unknown",
    }
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

label_values! {
    pub enum Direction {
        ClientToUpstream => "client_to_upstream",
        UpstreamToClient => "upstream_to_client",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabel {
    pub direction: Direction,
}

label_values! {
    pub enum Outcome {
        Ok => "ok",
        Failed => "failed",
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_snake_case_and_unique() {
        let mut all: Vec<&str> = Vec::new();
        all.extend(RefuseReason::ALL.iter().map(|v| v.as_str()));
        all.extend(Decision::ALL.iter().map(|v| v.as_str()));
        all.extend(Class::ALL.iter().map(|v| v.as_str()));
        all.extend(Direction::ALL.iter().map(|v| v.as_str()));
        all.extend(Outcome::ALL.iter().map(|v| v.as_str()));
        for v in &all {
            assert!(
                !v.is_empty() && v.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{v} is not snake_case"
            );
        }
        let n = RefuseReason::ALL.len();
        let mut reasons: Vec<&str> = all[..n].to_vec();
        reasons.dedup();
        assert_eq!(reasons.len(), n);
    }

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
