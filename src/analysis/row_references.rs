//! Foreign keys between a table whose rows a role's row rules filter and another table.
//! PostgreSQL checks and acts on the rows at the other end of a key whatever the role sees:
//! a value written into a referencing column is looked up among all referenced rows, and
//! deleting a row or changing a referenced value looks for the rows that reference it (an
//! error under NO ACTION or RESTRICT, changed rows under CASCADE, SET NULL or SET DEFAULT).
//! Either would tell that a hidden row exists, or change it; such writes are refused, except
//! where the rules make both ends agree: the column naming the written row's subject (its
//! values are guarded by `row_writes`), and rows that follow their subject with no rule of
//! their own (visible exactly when the subject is).

use super::row_rules::ROW_ALIAS;
use super::Ctx;
use crate::analysis::Refusal;
use crate::catalog::{ForeignKey, Relation};

/// Columns a write gives values to (an INSERT's, an UPDATE's SET) that a foreign key checks
/// against a table the role's row rules filter.
pub fn check_referencing(ctx: &Ctx, rel: &Relation, columns: &[String]) -> Result<(), Refusal> {
    for fk in &rel.foreign_keys {
        if !fk.columns.iter().any(|c| columns.contains(c)) {
            continue;
        }
        let other = other_end(ctx, rel, fk)?;
        if ctx.row_filter(&other, ROW_ALIAS).is_none()
            || names_guarded_subject(ctx, rel, &other, fk)
        {
            continue;
        }
        return Err(ctx.may_not(
            format!("write {}.{}", rel.name, fk.columns.join(", ")),
            format!(
                "a foreign key looks the value up among all rows of {}.{}, whose rows the role's row rules filter, so its outcome would tell whether a hidden row exists",
                other.schema,
                other.name,
            ),
        ));
    }
    Ok(())
}

/// A DELETE from `rel` (`columns` None) or an UPDATE of its `columns`: foreign keys of tables
/// the role's row rules filter that reference a changed value.
pub fn check_referenced(
    ctx: &Ctx,
    rel: &Relation,
    columns: Option<&[String]>,
) -> Result<(), Refusal> {
    for fk in &rel.referenced_by {
        if columns.is_some_and(|cs| !fk.columns.iter().any(|c| cs.contains(c))) {
            continue;
        }
        let other = other_end(ctx, rel, fk)?;
        if ctx.row_filter(&other, ROW_ALIAS).is_none() || follows_subject(ctx, rel, &other, fk) {
            continue;
        }
        let what = match columns {
            None => format!("delete from {}.{}", rel.schema, rel.name),
            Some(_) => format!("update {}.{}", rel.name, fk.columns.join(", ")),
        };
        return Err(ctx.may_not(
            what,
            format!(
                "rows of {}.{} reference it through a foreign key, and the role's row rules may hide some of them, so the key's check or action would tell that they exist or change them",
                other.schema,
                other.name,
            ),
        ));
    }
    Ok(())
}

/// The table at the other end of a key; one pgvakt's catalog does not know is refused.
fn other_end(
    ctx: &Ctx,
    rel: &Relation,
    fk: &ForeignKey,
) -> Result<std::sync::Arc<Relation>, Refusal> {
    ctx.catalog.by_oid(fk.other).cloned().ok_or_else(|| {
        ctx.refuse(format!(
            "a foreign key of {}.{} ({}) leads to a relation pgvakt's catalog does not know, whose row rules it cannot tell",
            rel.schema,
            rel.name,
            fk.columns.join(", ")
        ))
    })
}

/// `rel.column` → `subject.key` is the reference to the written row's subject, whose values
/// `row_writes` replaces by a visible subject's key or a refusal.
fn names_guarded_subject(ctx: &Ctx, rel: &Relation, subject: &Relation, fk: &ForeignKey) -> bool {
    ctx.row_filter(rel, ROW_ALIAS).is_some()
        && is_subject_key(ctx, rel, subject, &fk.columns, &fk.other_columns)
}

/// `referencing.column` → `subject.key` is the subject reference of a table whose rows the
/// role sees exactly when it sees their subject.
fn follows_subject(ctx: &Ctx, subject: &Relation, referencing: &Relation, fk: &ForeignKey) -> bool {
    let own_rules = ctx
        .row_filter(referencing, ROW_ALIAS)
        .and_then(|f| f.through_subject)
        .is_none_or(|(s, t)| s != subject.schema || t != subject.name);
    !own_rules && is_subject_key(ctx, referencing, subject, &fk.other_columns, &fk.columns)
}

/// Whether `columns` of `rel` are its subject key and `keys` of `subject` are the subject's.
fn is_subject_key(
    ctx: &Ctx,
    rel: &Relation,
    subject: &Relation,
    columns: &[String],
    keys: &[String],
) -> bool {
    let declared = ctx.rules.subject_type(&rel.schema, &rel.name);
    declared.as_deref() == Some(&format!("{}.{}", subject.schema, subject.name))
        && (subject.schema != rel.schema || subject.name != rel.name)
        && ctx.rules.subject_key(&rel.schema, &rel.name).as_deref()
            == columns.first().map(String::as_str)
        && columns.len() == 1
        && ctx
            .rules
            .subject_key(&subject.schema, &subject.name)
            .as_deref()
            == keys.first().map(String::as_str)
        && keys.len() == 1
}
