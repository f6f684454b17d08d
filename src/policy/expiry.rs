//! Grants that end: which have expired or will soon, for `policy check`, `policy grants` and
//! the expiry gauge. Pure functions of the grants and a time.

use std::fmt::Write as _;

use super::diag::Diagnostics;
use super::grants::{Grant, Grantee};

/// `policy check` warns about grants ending within this many seconds (14 days).
pub const SOON: i64 = 14 * 86_400;

/// Warnings for grants that have ended (they grant nothing: remove them) or end within `soon`.
pub fn warnings(grants: &[Grant], now: i64, soon: i64, diags: &mut Diagnostics) {
    for g in grants {
        let Some(until) = g.valid_until else { continue };
        let path = g.origin.split_whitespace().next().unwrap_or("grants");
        if until <= now {
            diags.warning(
                &g.pos,
                path,
                format!(
                    "grant of role '{}' to {} expired at {}: it grants nothing any more; remove it",
                    g.role,
                    grantee(&g.grantee),
                    rfc3339(until)
                ),
            );
        } else if until - now <= soon {
            diags.warning(
                &g.pos,
                path,
                format!(
                    "grant of role '{}' to {} expires at {} (in {}): renew it or let it end",
                    g.role,
                    grantee(&g.grantee),
                    rfc3339(until),
                    span(until - now)
                ),
            );
        }
    }
}

/// `user:alice` or `group:crm_sales`.
pub fn grantee(g: &Grantee) -> String {
    match g {
        Grantee::User(u) => format!("user:{u}"),
        Grantee::Group(r) => format!("group:{r}"),
    }
}

/// The state of a grant at `now`: `active`, `expired`, `not yet valid`, or `expires in 3d 4h`.
pub fn state(g: &Grant, now: i64, soon: i64) -> String {
    if g.valid_from.is_some_and(|f| now < f) {
        return "not yet valid".into();
    }
    match g.valid_until {
        Some(u) if u <= now => "expired".into(),
        Some(u) if u - now <= soon => format!("expires in {}", span(u - now)),
        _ => "active".into(),
    }
}

/// Every grant as a table (grantee, role, valid_from, valid_until, state, reason); with
/// `expiring`, only those that end within that many seconds (or have ended).
pub fn table(grants: &[Grant], now: i64, expiring: Option<i64>) -> String {
    let soon = expiring.unwrap_or(SOON);
    let rows: Vec<[String; 6]> = grants
        .iter()
        .filter(|g| expiring.is_none_or(|e| g.valid_until.is_some_and(|u| u - now <= e)))
        .map(|g| {
            [
                grantee(&g.grantee),
                g.role.clone(),
                g.valid_from.map_or_else(|| "-".into(), rfc3339),
                g.valid_until.map_or_else(|| "-".into(), rfc3339),
                state(g, now, soon),
                g.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "grantee",
        "role",
        "valid_from",
        "valid_until",
        "state",
        "reason",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for r in std::iter::once(&header).chain(&rows) {
        let mut l = String::new();
        for (i, (c, w)) in r.iter().zip(widths).enumerate() {
            if i > 0 {
                l.push_str("  ");
            }
            let _ = write!(l, "{c:w$}");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    }
    let _ = writeln!(out, "({} grants)", rows.len());
    out
}

/// `3d 4h`, `5h 2m`, `42s`: a span for people.
fn span(secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs}s"),
        (0, 0, m) => format!("{m}m {}s", secs % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (Howard Hinnant's civil-from-days).
pub fn rfc3339(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3_600,
        secs % 3_600 / 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::diag::Pos;
    use crate::policy::grants::parse_rfc3339;

    fn grant(user: &str, until: Option<i64>) -> Grant {
        Grant {
            grantee: Grantee::User(user.into()),
            role: "sales".into(),
            valid_from: None,
            valid_until: until,
            origin: "grants[0] (crm.yaml:1:3)".into(),
            reason: Some("TICKET-1".into()),
            pos: Pos {
                file: "crm.yaml".into(),
                line: 1,
                column: 3,
            },
        }
    }

    #[test]
    fn times_print_as_they_parse() {
        for t in [
            "1970-01-01T00:00:00Z",
            "2024-02-29T12:30:15Z",
            "2025-12-31T23:59:59Z",
        ] {
            assert_eq!(rfc3339(parse_rfc3339(t).expect("parses")), t);
        }
    }

    #[test]
    fn expired_and_soon_expiring_grants_are_warned_about() {
        let now = 1_000_000_000;
        let grants = [
            grant("old", Some(now - 1)),
            grant("soon", Some(now + 3 * 86_400)),
            grant("later", Some(now + 30 * 86_400)),
            grant("always", None),
        ];
        let mut d = Diagnostics::default();
        warnings(&grants, now, SOON, &mut d);
        let text: Vec<&str> = d.items.iter().map(|i| i.message.as_str()).collect();
        assert_eq!(text.len(), 2, "{text:?}");
        assert!(text[0].contains("user:old expired"), "{text:?}");
        assert!(
            text[1].contains("user:soon expires") && text[1].contains("in 3d 0h"),
            "{text:?}"
        );
        let t = table(&grants, now, Some(7 * 86_400));
        assert!(t.contains("user:old") && t.contains("user:soon"), "{t}");
        assert!(
            !t.contains("user:later") && !t.contains("user:always"),
            "{t}"
        );
        assert!(t.contains("TICKET-1") && t.contains("expired"), "{t}");
        let all = table(&grants, now, None);
        assert!(
            all.contains("(4 grants)") && all.contains("active"),
            "{all}"
        );
    }
}
