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
pub fn parse_rfc3339(s: &str) -> Result<i64, String> {
    let bad = || format!("'{s}' is not an RFC 3339 timestamp or YYYY-MM-DD date");
    if s.len() < 20 || !s.is_char_boundary(10) || !s.is_char_boundary(19) {
        return Err(bad());
    }
    let days = parse_date(&s[..10]).map_err(|_| bad())?;
    if !matches!(s.as_bytes()[10], b'T' | b't' | b' ') {
        return Err(bad());
    }
    let time = &s[11..19];
    let tb = time.as_bytes();
    if tb[2] != b':' || tb[5] != b':' {
        return Err(bad());
    }
    let h = num(&time[0..2]).ok_or_else(bad)?;
    let m = num(&time[3..5]).ok_or_else(bad)?;
    let sec = num(&time[6..8]).ok_or_else(bad)?;
    // 60 allows a leap second; it simply rolls into the next minute.
    if h > 23 || m > 59 || sec > 60 {
        return Err(bad());
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6 && rest.as_bytes()[3] == b':' => {
            let sign = match rest.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return Err(bad()),
            };
            let oh = num(&rest[1..3]).ok_or_else(bad)?;
            let om = num(&rest[4..6]).ok_or_else(bad)?;
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            sign * (oh * 3600 + om * 60)
        }
        _ => return Err(bad()),
    };
    Ok(days * 86_400 + h * 3600 + m * 60 + sec - offset)
}

fn num(s: &str) -> Option<i64> {
    if s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
fn parse_date(s: &str) -> Result<i64, String> {
    let bad = || format!("'{s}' is not a YYYY-MM-DD date");
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return Err(bad());
    }
    let y = num(&s[0..4]).ok_or_else(bad)?;
    let m = num(&s[5..7]).ok_or_else(bad)?;
    let d = num(&s[8..10]).ok_or_else(bad)?;
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let max = usize::try_from(m - 1)
        .ok()
        .and_then(|i| month_days.get(i))
        .ok_or_else(bad)?;
    if d < 1 || d > *max {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d))
}

/// Howard Hinnant's days-from-civil algorithm.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

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
