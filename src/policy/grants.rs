//! Users and PostgreSQL groups mapped to policy roles, with validity periods.
//!
//! Times are Unix seconds; RFC 3339 is parsed here (a few dozen lines) rather than pulling a
//! date-time crate into a security proxy for one format.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::model::RolePolicy;

/// Who a grant is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grantee {
    User(String),
    /// A PostgreSQL role the login user is a member of (looked up by the session at login).
    Group(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub grantee: Grantee,
    pub role: String,
    /// Inclusive start, Unix seconds.
    pub valid_from: Option<i64>,
    /// Exclusive end, Unix seconds.
    pub valid_until: Option<i64>,
    /// e.g. `grants[3] (policies/crm.yaml:120:5)`.
    pub origin: String,
    /// Why the grant exists (ticket, approval), as the policy says.
    pub reason: Option<String>,
    /// Where the grant is written, for warnings about it.
    pub pos: super::diag::Pos,
}

impl Grant {
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.valid_from.is_none_or(|f| now >= f) && self.valid_until.is_none_or(|u| now < u)
    }

    /// Whether two grants' periods share at least one instant.
    pub fn overlaps(&self, other: &Grant) -> bool {
        let start = self
            .valid_from
            .unwrap_or(i64::MIN)
            .max(other.valid_from.unwrap_or(i64::MIN));
        let end = self
            .valid_until
            .unwrap_or(i64::MAX)
            .min(other.valid_until.unwrap_or(i64::MAX));
        start < end
    }
}

/// The policy role for a session, and the grant (or fallback) that chose it.
#[derive(Debug, Clone)]
pub struct Resolution {
    pub role: Arc<RolePolicy>,
    pub via: String,
}

/// Unix seconds of `t` (negative before 1970).
pub fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Parses a grant bound: an RFC 3339 timestamp, or a date `YYYY-MM-DD` meaning the start of that
/// day (UTC) for `valid_from` and the end of that day for `valid_until` (`end_of_day`), which
/// is what a person writing "valid until 2025-12-31" means.
pub fn parse_bound(s: &str, end_of_day: bool) -> Result<i64, String> {
    let s = s.trim();
    if s.len() == 10 {
        let days = parse_date(s)?;
        return Ok((days + i64::from(end_of_day)) * 86_400);
    }
    parse_rfc3339(s)
}

/// `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`; `t` or a space may replace `T`. Fractions are dropped.
/// A leap second (`:60`) rolls into the next minute.
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let bad = || format!("'{s}' is not an RFC 3339 timestamp or YYYY-MM-DD date");
    // The `time` crate reads RFC 3339 with `T`; the space form is ISO 8601's and PostgreSQL's.
    let normal = match s.as_bytes().get(10) {
        Some(b' ') => std::borrow::Cow::Owned(format!("{}T{}", &s[..10], &s[11..])),
        _ => std::borrow::Cow::Borrowed(s),
    };
    let at = time::OffsetDateTime::parse(&normal, &time::format_description::well_known::Rfc3339)
        .map_err(|_| bad())?;
    Ok(at.unix_timestamp())
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn parse_date(s: &str) -> Result<i64, String> {
    const DATE: &[time::format_description::BorrowedFormatItem<'_>] =
        time::macros::format_description!("[year]-[month]-[day]");
    let date = time::Date::parse(s, DATE).map_err(|_| format!("'{s}' is not a YYYY-MM-DD date"))?;
    Ok(i64::from(date.to_julian_day() - UNIX_EPOCH_JULIAN_DAY))
}

const UNIX_EPOCH_JULIAN_DAY: i32 = 2_440_588;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_and_dates() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2024-02-29T12:30:15Z"), Ok(1_709_209_815));
        assert_eq!(
            parse_rfc3339("2024-02-29T14:30:15.123+02:00"),
            Ok(1_709_209_815)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29 07:30:15-05:00"),
            Ok(1_709_209_815)
        );
        assert_eq!(parse_bound("2025-12-31", false), Ok(1_767_139_200));
        assert_eq!(parse_bound("2025-12-31", true), Ok(1_767_225_600));
        assert_eq!(parse_bound("1969-12-31", false), Ok(-86_400));
        for bad in [
            "2023-02-29",
            "2024-13-01",
            "2024-01-01T24:00:00Z",
            "2024-01-01T10:00:00",
            "2024-01-01T10:00:00+0200",
            "2024-01-01T10:00:00.Z",
            "yesterday",
            "2024-01-01T10:00:00Zjunk",
            "２０２４-01-01",
        ] {
            assert!(parse_bound(bad, false).is_err(), "{bad}");
        }
    }

    #[test]
    fn validity_and_overlap() {
        let g = |from, until| Grant {
            grantee: Grantee::User("u".into()),
            role: "r".into(),
            valid_from: from,
            valid_until: until,
            origin: String::new(),
            reason: None,
            pos: crate::policy::diag::Pos {
                file: String::new(),
                line: 0,
                column: 0,
            },
        };
        assert!(g(Some(10), Some(20)).is_valid_at(10));
        assert!(!g(Some(10), Some(20)).is_valid_at(20));
        assert!(g(None, None).is_valid_at(i64::MIN));
        assert!(!g(Some(0), Some(10)).overlaps(&g(Some(10), None)));
        assert!(g(Some(0), Some(11)).overlaps(&g(Some(10), None)));
    }
}
