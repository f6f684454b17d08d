//! Statements sqlparser cannot read, in the form PostgreSQL's own deparser writes them: a
//! top-level `TABLE t`, `FROM t *`, and `(t).*` of a FROM item, which the deparser keeps and
//! which is written here as `t.*`. The plain form is analysed like any text and checked by
//! PostgreSQL's parser before it is forwarded.

use pg_query::protobuf::{self, node::Node as N};

use super::lexer;

/// PostgreSQL's deparsed form of a data statement, when it differs from the text.
pub fn plain_form(sql: &str) -> Option<String> {
    let first = lexer::first_word(sql)?;
    if !matches!(
        first.as_str(),
        "select" | "with" | "table" | "values" | "insert" | "update" | "delete"
    ) {
        return None;
    }
    let mut parsed = pg_query::parse(sql, 0).ok()?;
    for raw in parsed.protobuf.stmts.iter_mut() {
        if let Some(N::SelectStmt(select)) = raw.stmt.as_mut().and_then(|s| s.node.as_mut()) {
            plain_stars(select);
        }
    }
    let plain = parsed.protobuf.deparse(Default::default()).ok()?;
    (plain != sql).then_some(plain)
}

/// `(t).*` in a SELECT's output list, where `t` is a one-part name, becomes `t.*`: for a FROM
/// item both expand to its columns. (Were `t` a composite column, `t.*` would name a FROM item
/// instead; what is forwarded is what was analysed either way.)
fn plain_stars(select: &mut protobuf::SelectStmt) {
    if let Some(l) = select.larg.as_deref_mut() {
        plain_stars(l);
    }
    if let Some(r) = select.rarg.as_deref_mut() {
        plain_stars(r);
    }
    for item in select.target_list.iter_mut() {
        let Some(N::ResTarget(target)) = item.node.as_mut() else {
            continue;
        };
        let Some(val) = target.val.as_deref_mut() else {
            continue;
        };
        let Some(N::AIndirection(ind)) = val.node.as_ref() else {
            continue;
        };
        let star = matches!(ind.indirection.as_slice(), [n] if matches!(n.node, Some(N::AStar(_))));
        let name = match ind.arg.as_deref().and_then(|a| a.node.as_ref()) {
            Some(N::ColumnRef(c)) => match c.fields.as_slice() {
                [f] if matches!(f.node, Some(N::String(_))) => f.clone(),
                _ => continue,
            },
            _ => continue,
        };
        if star {
            val.node = Some(N::ColumnRef(protobuf::ColumnRef {
                fields: vec![
                    name,
                    protobuf::Node {
                        node: Some(N::AStar(protobuf::AStar {})),
                    },
                ],
                location: target.location,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parenthesised_whole_row_star_is_written_plainly() {
        assert_eq!(
            plain_form("SELECT (c).* FROM contacts c").as_deref(),
            Some("SELECT c.* FROM contacts c")
        );
        assert_eq!(
            plain_form("SELECT (c).*, (c).id FROM contacts c UNION SELECT (d).*, 1 FROM t d")
                .as_deref(),
            Some("SELECT c.*, (c).id FROM contacts c UNION SELECT d.*, 1 FROM t d")
        );
        // A star of an expression is left as it is (and refused by the analysis).
        assert_eq!(plain_form("SELECT (f(x)).* FROM t").as_deref(), None);
    }
}
