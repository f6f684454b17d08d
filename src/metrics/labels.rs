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
        /// A user `admin.users` does not name asked for the admin console (database `pgvakt`).
        ConsoleNotAllowed => "console_not_allowed",
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

label_values! {
    /// Why a statement was refused, by the SQLSTATE the client gets: PostgreSQL's classes, in
    /// words an operator reads on a dashboard.
    pub enum RefusalReason {
        /// 42501: the policy does not allow it (blocked column, statement kind, read limit,
        /// audit trail not writable).
        Policy => "policy",
        /// 08P01: the message or text breaks the protocol.
        Protocol => "protocol",
        /// 54xxx: longer or deeper than the analysis takes.
        TooComplex => "too_complex",
        /// 55000: something the policy needs is not installed upstream (pseudonym function).
        NotInstalled => "not_installed",
        /// 22021: text not valid in the session's encoding.
        Encoding => "encoding",
        /// 42703, 42P01, 42883: a column, relation or function pgvakt's catalog does not know.
        UnknownName => "unknown_name",
        Other => "other",
    }
}

impl RefusalReason {
    pub fn of_sqlstate(code: &str) -> RefusalReason {
        match code {
            "42501" => RefusalReason::Policy,
            "08P01" => RefusalReason::Protocol,
            "55000" => RefusalReason::NotInstalled,
            "22021" => RefusalReason::Encoding,
            "42703" | "42P01" | "42883" => RefusalReason::UnknownName,
            c if c.starts_with("54") => RefusalReason::TooComplex,
            _ => RefusalReason::Other,
        }
    }
}

/// A policy role's statements refused, by reason. Roles come from the policy (a small set),
/// never from user names.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub role: String,
    pub reason: RefusalReason,
}

/// Personal data read by a policy role: the inventory category (from the policy) and what the
/// role sees of it (`allowed`, `masked`, or `blocked`: refused for naming a blocked column).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReadLabels {
    pub role: String,
    pub category: String,
    pub action: &'static str,
}

/// A policy name (role, category) as a label value: snake_case, whatever the policy spells.
pub fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out
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
        all.extend(RefusalReason::ALL.iter().map(|v| v.as_str()));
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
    fn refusal_reasons_by_sqlstate_and_policy_names_in_snake_case() {
        for (code, reason) in [
            ("42501", "policy"),
            ("08P01", "protocol"),
            ("54001", "too_complex"),
            ("54000", "too_complex"),
            ("55000", "not_installed"),
            ("22021", "encoding"),
            ("42P01", "unknown_name"),
            ("XX000", "other"),
        ] {
            assert_eq!(RefusalReason::of_sqlstate(code).as_str(), reason, "{code}");
        }
        assert_eq!(snake("Sales-EU Team"), "sales_eu_team");
        assert_eq!(snake("special"), "special");
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
