//! Table inheritance. A read, UPDATE or DELETE of a table without ONLY reaches the rows of its
//! inheritance children (partitions included) as rows of the parent, so they get the parent's
//! rules: that is sound only where every descendant's rule for each of the parent's columns is
//! no more open than the parent's. A child the inventory does not list is personal by default,
//! so until the policy covers it like its parent, the parent is readable only as `ONLY t`.
//!
//! sqlparser has no ONLY: it reads `FROM ONLY t` as a table named "only". PostgreSQL's own
//! parser says where a relation is read without its children (a RangeVar with `inh` off, at
//! the name's location); there the keyword is written as a qualifier sqlparser keeps on the
//! name (a per-process nonce, so client text cannot name it), and the analysis writes ONLY
//! back into what it forwards. A form this cannot mark (`ONLY (t)`) stays as sqlparser reads
//! it, and is refused. Refusals name the relation as the client wrote it (`ONLY t`): the marker
//! has its own nonce, and no message shows it.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::LazyLock;

use pg_query::NodeRef;
use rand::Rng;
use sqlparser::ast::ObjectName;

use super::Ctx;
use crate::analysis::Refusal;
use crate::catalog::Relation;
use crate::policy::model::{ColumnAction, WriteAction};

/// Not the stand-ins' nonce: knowing this one must not let client text name a stand-in.
static MARKER: LazyLock<String> =
    LazyLock::new(|| format!("pgvakt_only_{:032x}", rand::thread_rng().gen::<u128>()));

/// Descendants followed, at most (a refusal beyond).
const MAX_DESCENDANTS: usize = 10_000;

/// `sql` with every `ONLY name` PostgreSQL reads as a relation without its children written
/// as `"marker".name`.
pub fn mark_only(sql: &str) -> Cow<'_, str> {
    if !sql.to_ascii_lowercase().contains("only") {
        return Cow::Borrowed(sql);
    }
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        return Cow::Borrowed(sql);
    };
    let mut starts: Vec<(usize, usize)> = Vec::new();
    for (node, ..) in parsed.protobuf.nodes() {
        let NodeRef::RangeVar(rv) = node else {
            continue;
        };
        let Ok(at) = usize::try_from(rv.location) else {
            continue;
        };
        if rv.inh {
            continue;
        }
        let b = sql.as_bytes();
        let mut i = at;
        while i > 0 && b[i - 1].is_ascii_whitespace() {
            i -= 1;
        }
        let keyword = i >= 4
            && b[i - 4..i].eq_ignore_ascii_case(b"only")
            && (i == 4 || !(b[i - 5].is_ascii_alphanumeric() || b[i - 5] == b'_'));
        if keyword && i < at {
            starts.push((i - 4, at));
        }
    }
    if starts.is_empty() {
        return Cow::Borrowed(sql);
    }
    starts.sort_unstable();
    starts.dedup();
    let mut out = String::with_capacity(sql.len() + starts.len() * 64);
    let mut done = 0;
    for (from, to) in starts {
        out.push_str(&sql[done..from]);
        out.push('"');
        out.push_str(&MARKER);
        out.push_str("\".");
        done = to;
    }
    out.push_str(&sql[done..]);
    Cow::Owned(out)
}

/// `name` written as PostgreSQL reads `ONLY name`: for a statement pgvakt itself builds around
/// a relation that must be read without its children.
pub fn only(name: &ObjectName) -> String {
    format!("\"{}\".{name}", *MARKER)
}

/// Whether a name carries the ONLY marker (as its first part).
pub fn is_only(name: &ObjectName) -> bool {
    name.0
        .first()
        .and_then(|p| p.as_ident())
        .is_some_and(|i| i.quote_style == Some('"') && i.value == *MARKER)
}

/// Name parts without the marker.
pub fn without_marker(parts: &[String]) -> &[String] {
    match parts.split_first() {
        Some((first, rest)) if *first == *MARKER => rest,
        _ => parts,
    }
}

/// Whether forwarded text still holds the marker (it must not: it names no schema).
pub fn leaks_marker(sql: &str) -> bool {
    sql.contains(MARKER.as_str())
}

/// A refusal as the client may see it: the relations it names are written `ONLY t`, as the
/// client wrote them, instead of with the marker (messages quote names and parser errors quote
/// tokens of the marked text).
pub fn unmarked(mut e: Refusal) -> Refusal {
    let marked = format!("\"{}\".", *MARKER);
    let fix = |t: &mut String| {
        if t.contains(MARKER.as_str()) {
            *t = t.replace(&marked, "ONLY ").replace(MARKER.as_str(), "ONLY");
        }
    };
    e.texts_mut().into_iter().for_each(fix);
    e
}

impl Ctx<'_> {
    /// A statement reads or writes `rel` with its descendants: refused unless each one's rules
    /// for `rel`'s columns are covered by `rel`'s own.
    pub fn check_descendants(&self, rel: &Relation) -> Result<(), Refusal> {
        let mut seen = HashSet::new();
        let mut stack = rel.children.clone();
        while let Some(oid) = stack.pop() {
            if !seen.insert(oid) {
                continue;
            }
            let child = match self.catalog.by_oid(oid) {
                Some(c) if seen.len() <= MAX_DESCENDANTS => c,
                _ => {
                    return Err(self.unsupported(&format!(
                        "the inheritance children of {}.{}",
                        rel.schema, rel.name
                    )))
                }
            };
            for c in &rel.columns {
                let ours = self.column(rel, &c.name);
                let theirs = self.column(child, &c.name);
                let write_ours = self.rules.write(&rel.schema, &rel.name, &c.name);
                let write_theirs = self.rules.write(&child.schema, &child.name, &c.name);
                let (rule, what) = if !read_covers(&ours.action, &theirs.action) {
                    (theirs.rule, action_name(&theirs.action))
                } else if !write_covers(write_ours.action, write_theirs.action) {
                    (write_theirs.rule, "written more narrowly")
                } else {
                    continue;
                };
                return Err(self.refuse(format!(
                    "table {p}.{t} has the inheritance child {cs}.{cn}, whose column {col} is {what} for role {role} by rule {rule}; without ONLY, {t} returns and changes the child's rows under {t}'s own rules. List {cn} in the inventory as {t} is listed, or write ONLY {t}",
                    p = rel.schema,
                    t = rel.name,
                    cs = child.schema,
                    cn = child.name,
                    col = c.name,
                    role = self.role(),
                )));
            }
            stack.extend(child.children.iter().copied());
        }
        Ok(())
    }
}

/// The parent's read rule applied to the child's rows shows no more than the child's own.
fn read_covers(parent: &ColumnAction, child: &ColumnAction) -> bool {
    matches!(
        (parent, child),
        (_, ColumnAction::Allow) | (ColumnAction::Block, _)
    ) || parent == child
}

fn write_covers(parent: WriteAction, child: WriteAction) -> bool {
    child == WriteAction::Allow || parent == WriteAction::Refuse || parent == child
}

fn action_name(a: &ColumnAction) -> &'static str {
    match a {
        ColumnAction::Allow => "allowed",
        ColumnAction::Mask(_) => "masked",
        ColumnAction::Block => "blocked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_is_marked_where_postgresql_reads_it() {
        let m = format!("\"{}\".", *MARKER);
        assert_eq!(
            mark_only("SELECT * FROM ONLY contacts c"),
            format!("SELECT * FROM {m}contacts c")
        );
        assert_eq!(
            mark_only("UPDATE only public.contacts SET x = 1"),
            format!("UPDATE {m}public.contacts SET x = 1")
        );
        assert_eq!(
            mark_only("DELETE FROM ONLY\n t; SELECT 1 FROM a JOIN ONLY b ON true"),
            format!("DELETE FROM {m}t; SELECT 1 FROM a JOIN {m}b ON true")
        );
        // Not a relation without its children.
        for sql in [
            "SELECT 'only' FROM t",
            "SELECT * FROM t FETCH FIRST 1 ROWS ONLY",
            "SELECT only_x FROM only_t",
            "SELECT * FROM ONLY (t)",
            "SELECT * FROM ONLY /* c */ t",
        ] {
            assert_eq!(mark_only(sql), sql);
        }
    }

    #[test]
    fn the_marker_is_recognised_only_as_the_first_quoted_part() {
        let parts = vec![MARKER.clone(), "public".into(), "t".into()];
        assert_eq!(without_marker(&parts), &parts[1..]);
        assert_eq!(without_marker(&parts[1..]), &parts[1..]);
        assert!(leaks_marker(&format!("x {} y", *MARKER)));
    }

    #[test]
    fn refusals_show_only_where_the_marker_was() {
        let e = Refusal {
            role: "r".into(),
            policy_version: "1".into(),
            reason: Box::new(crate::analysis::Reason::Unparsable {
                do_block: false,
                parser: format!("found: {}", *MARKER),
            }),
        };
        assert_eq!(
            unmarked(e).to_pg_error().detail.as_deref(),
            Some("policy 1; parser: found: ONLY")
        );
        let e = Refusal {
            role: "r".into(),
            policy_version: "1".into(),
            reason: Box::new(crate::analysis::Reason::NotAllowed {
                what: format!("TRUNCATE \"{}\".a, \"{}\".b", *MARKER, *MARKER),
                why: crate::analysis::Why::Plain,
            }),
        };
        assert_eq!(
            unmarked(e).to_pg_error().message,
            "pgvakt: TRUNCATE ONLY a, ONLY b is not allowed for role r"
        );
        let secret = MARKER.trim_start_matches("pgvakt_only_");
        assert!(!super::super::stand_in::placeholder().contains(secret));
    }
}
