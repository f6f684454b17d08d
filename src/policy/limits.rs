//! `roles.<r>.limits`: how much personal data a user of the role may read per hour before it
//! is an alarm (`alert`) or further personal-data reads are refused (`block`). The reads are
//! counted by the proxy (`access::reads`); here is only what the policy says.

use serde::Deserialize;

use super::diag::{Diagnostics, Pos};
use super::source::RoleSpec;

/// What crossing a limit does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LimitAction {
    /// An `anomaly` audit record and a metric; reads go on. The default.
    #[default]
    Alert,
    /// As `alert`, and the user's further personal-data reads are refused (42501) until the
    /// hour has passed or an operator runs `pgvakt admin reset-limits`.
    Block,
}

impl LimitAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitAction::Alert => "alert",
            LimitAction::Block => "block",
        }
    }
}

/// `roles.<r>.limits` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Distinct data subjects a user may read within any hour.
    #[serde(default)]
    pub subjects_per_hour: Option<u64>,
    /// Rows of personal data a user may read within any hour.
    #[serde(default)]
    pub rows_per_hour: Option<u64>,
    /// `alert` (default) or `block`.
    #[serde(default)]
    pub action: LimitAction,
}

/// A role's limits, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadLimit {
    pub subjects_per_hour: Option<u64>,
    pub rows_per_hour: Option<u64>,
    pub action: LimitAction,
    /// e.g. `roles.secretary.limits (crm.yaml:140:5)`, for records and messages.
    pub origin: String,
}

/// The limits of role `r` at `path`, or None (absent, or reported as an error).
pub(crate) fn validate(
    r: &RoleSpec,
    file: &str,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<ReadLimit> {
    let spec = r.limits.as_ref()?;
    let pos = Pos::new(file, &spec.referenced);
    let path = format!("{path}.limits");
    let l = &spec.value;
    if l.subjects_per_hour.is_none() && l.rows_per_hour.is_none() {
        diags.error(&pos, &path, "give subjects_per_hour, rows_per_hour or both");
        return None;
    }
    for (field, v) in [
        ("subjects_per_hour", l.subjects_per_hour),
        ("rows_per_hour", l.rows_per_hour),
    ] {
        if v == Some(0) {
            diags.error(&pos, format!("{path}.{field}"), "must be at least 1");
            return None;
        }
    }
    Some(ReadLimit {
        subjects_per_hour: l.subjects_per_hour,
        rows_per_hour: l.rows_per_hour,
        action: l.action,
        origin: super::validate::origin(&path, &pos),
    })
}
