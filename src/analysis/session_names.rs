//! The statement and cursor names a text defines, uses and drops, as PostgreSQL's own parser
//! reads it: `PREPARE`/`EXECUTE`/`DEALLOCATE`, `DECLARE`/`FETCH`/`MOVE`/`CLOSE`, `DISCARD ALL`.
//! The audit trail follows these names so a read is recorded when it is executed (an
//! `EXECUTE`, a `FETCH`), under what the name was defined to read.

/// What one statement of a text does to the session's names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameOp {
    /// `PREPARE name AS ...`: a prepared statement, if the name is free.
    Prepare(String),
    /// `EXECUTE name` (also inside `CREATE TABLE ... AS EXECUTE`).
    Execute(String),
    /// `EXPLAIN ANALYZE EXECUTE name`: runs the prepared statement (its writes happen) and
    /// returns the plan instead of its rows.
    Explain(String),
    /// `DEALLOCATE name`; `None` for `DEALLOCATE ALL`.
    Deallocate(Option<String>),
    /// `DECLARE name CURSOR [WITH HOLD] FOR ...`.
    Declare { name: String, hold: bool },
    /// `FETCH` (rows returned) or `MOVE` (none) on a cursor or portal.
    Fetch { name: String, moves: bool },
    /// `CLOSE name`; `None` for `CLOSE ALL`.
    Close(Option<String>),
    /// `DISCARD ALL`: every prepared statement and cursor goes.
    DiscardAll,
    /// Any other statement.
    Other,
}

/// `CURSOR_OPT_HOLD` of PostgreSQL's `parsenodes.h`.
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// Longest text read for names: beyond it a definition goes unseen, and a later use of the
/// name is recorded as a use of an unknown name (a possible personal-data read).
const MAX_TEXT: usize = 1 << 20;

/// Words one of which a text must hold to do anything to names.
const WORDS: [&str; 8] = [
    "prepare",
    "execute",
    "deallocate",
    "declare",
    "fetch",
    "move",
    "close",
    "discard",
];

/// One op per statement of `sql`, in order; empty when the text touches no names (or cannot
/// be read, in which case PostgreSQL will not run it either).
pub fn name_ops(sql: &str) -> Vec<NameOp> {
    if sql.len() > MAX_TEXT || !mentions_a_name_word(sql) {
        return Vec::new();
    }
    if super::authority::too_complex(sql).is_some() {
        return Vec::new();
    }
    let parsed = super::on_a_fitting_stack(sql.len(), || pg_query::parse(sql, 0));
    let Ok(parsed) = parsed else {
        return Vec::new();
    };
    let ops: Vec<NameOp> = parsed
        .protobuf
        .stmts
        .iter()
        .map(|s| op(s.stmt.as_deref().and_then(|n| n.node.as_ref())))
        .collect();
    if ops.iter().all(|o| *o == NameOp::Other) {
        return Vec::new();
    }
    ops
}

fn op(node: Option<&pg_query::NodeEnum>) -> NameOp {
    use pg_query::NodeEnum as N;
    let named = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    match node {
        Some(N::PrepareStmt(p)) => NameOp::Prepare(p.name.clone()),
        Some(N::ExecuteStmt(e)) => NameOp::Execute(e.name.clone()),
        Some(N::CreateTableAsStmt(c)) => match c.query.as_deref().and_then(|q| q.node.as_ref()) {
            Some(N::ExecuteStmt(e)) => NameOp::Execute(e.name.clone()),
            _ => NameOp::Other,
        },
        Some(N::ExplainStmt(x)) => match x.query.as_deref().and_then(|q| q.node.as_ref()) {
            Some(N::ExecuteStmt(e)) if analyzes(&x.options) => NameOp::Explain(e.name.clone()),
            _ => NameOp::Other,
        },
        Some(N::DeallocateStmt(d)) if d.isall => NameOp::Deallocate(None),
        Some(N::DeallocateStmt(d)) => NameOp::Deallocate(named(&d.name)),
        Some(N::DeclareCursorStmt(d)) => NameOp::Declare {
            name: d.portalname.clone(),
            hold: d.options & CURSOR_OPT_HOLD != 0,
        },
        Some(N::FetchStmt(f)) => NameOp::Fetch {
            name: f.portalname.clone(),
            moves: f.ismove,
        },
        Some(N::ClosePortalStmt(c)) => NameOp::Close(named(&c.portalname)),
        Some(N::DiscardStmt(d))
            if d.target == pg_query::protobuf::DiscardMode::DiscardAll as i32 =>
        {
            NameOp::DiscardAll
        }
        _ => NameOp::Other,
    }
}

/// Whether EXPLAIN's options run the statement: `ANALYZE` not set to false, off, no or 0.
fn analyzes(options: &[pg_query::protobuf::Node]) -> bool {
    use pg_query::NodeEnum as N;
    options.iter().any(|o| match o.node.as_ref() {
        Some(N::DefElem(d)) if d.defname.eq_ignore_ascii_case("analyze") => {
            match d.arg.as_deref().and_then(|a| a.node.as_ref()) {
                Some(N::String(v)) => !matches!(
                    v.sval.to_ascii_lowercase().as_str(),
                    "false" | "off" | "no" | "0"
                ),
                Some(N::Boolean(b)) => b.boolval,
                Some(N::Integer(i)) => i.ival != 0,
                _ => true,
            }
        }
        _ => false,
    })
}

fn mentions_a_name_word(sql: &str) -> bool {
    let b = sql.as_bytes();
    WORDS.iter().any(|w| {
        b.windows(w.len()).enumerate().any(|(i, win)| {
            win.eq_ignore_ascii_case(w.as_bytes())
                && (i == 0 || !is_word_byte(b[i - 1]))
                && b.get(i + w.len()).is_none_or(|c| !is_word_byte(*c))
        })
    })
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_postgresqls_reading() {
        assert_eq!(name_ops("SELECT 1"), vec![]);
        assert_eq!(name_ops("SELECT closed FROM t"), vec![]);
        assert_eq!(
            name_ops("PREPARE p AS SELECT 1; EXECUTE p; DEALLOCATE p; DEALLOCATE ALL"),
            vec![
                NameOp::Prepare("p".into()),
                NameOp::Execute("p".into()),
                NameOp::Deallocate(Some("p".into())),
                NameOp::Deallocate(None),
            ]
        );
        assert_eq!(
            name_ops("BEGIN; DECLARE \"C\" CURSOR WITH HOLD FOR SELECT 1; declare d cursor for select 2; MOVE 1 IN \"C\"; FETCH d; CLOSE ALL; close d; DISCARD ALL; DISCARD PLANS"),
            vec![
                NameOp::Other,
                NameOp::Declare { name: "C".into(), hold: true },
                NameOp::Declare { name: "d".into(), hold: false },
                NameOp::Fetch { name: "C".into(), moves: true },
                NameOp::Fetch { name: "d".into(), moves: false },
                NameOp::Close(None),
                NameOp::Close(Some("d".into())),
                NameOp::DiscardAll,
                NameOp::Other,
            ]
        );
        assert_eq!(
            name_ops("EXPLAIN ANALYZE EXECUTE p; EXPLAIN (ANALYZE off) EXECUTE p; EXPLAIN (ANALYZE, COSTS OFF) EXECUTE q"),
            vec![
                NameOp::Explain("p".into()),
                NameOp::Other,
                NameOp::Explain("q".into()),
            ]
        );
        assert_eq!(
            name_ops("CREATE TABLE x AS EXECUTE p(1)"),
            vec![NameOp::Execute("p".into())]
        );
        // What PostgreSQL cannot parse runs nothing.
        assert_eq!(name_ops("EXECUTE"), vec![]);
    }
}
