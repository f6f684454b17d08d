//! Semantic checks of purposes, consent and restriction declarations, retention periods and
//! roles' row rules (continues `validate.rs`; compiled forms in `rows.rs`).

use serde_saphyr::Spanned;

use super::diag::{Diagnostics, Pos};
use super::inventory::{is_pattern, Classified, TableEntry};
use super::rows::{
    ConsentSource, Period, Purpose, RestrictionSource, Retention, RowRules, WhereRule,
};
use super::source::{PolicyFile, RestrictionsSpec, RetentionSpec, RoleSpec, RowsSpec};
use super::validate::{origin, qualify, sorted, Checked, CheckedRole};
use super::validate_roles::LEGAL_BASES;

use super::validate::First;

/// Purpose names end up as SQL literals and in audit records: plain names only.
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// `purposes:` of every file.
pub(crate) fn purposes(
    docs: &[(&str, &PolicyFile)],
    c: &mut Checked,
    first: &mut First<'_>,
    diags: &mut Diagnostics,
) {
    for (file, doc) in docs {
        for (name, spec) in sorted(&doc.purposes) {
            let pos = Pos::new(file, &name.referenced);
            let path = format!("purposes.{}", name.value);
            if !plain_name(&name.value) {
                diags.error(
                    &pos,
                    &path,
                    "a purpose name is letters, digits, '_', '.' or '-' (at most 63)",
                );
                continue;
            }
            if !first(format!("purpose {}", name.value), &pos, &path, diags) {
                continue;
            }
            let s = &spec.value;
            if s.legal_basis.is_empty() {
                diags.error(
                    &Pos::new(file, &spec.referenced),
                    format!("{path}.legal_basis"),
                    "a purpose needs at least one legal basis (GDPR Art. 6(1))",
                );
            }
            let mut bases = Vec::new();
            for (i, b) in s.legal_basis.iter().enumerate() {
                if LEGAL_BASES.contains(&b.value.as_str()) {
                    bases.push(b.value.clone());
                } else {
                    diags.unknown(
                        &Pos::new(file, &b.referenced),
                        format!("{path}.legal_basis[{i}]"),
                        format!("'{}' is not a lawful basis of GDPR Art. 6(1)", b.value),
                        &b.value,
                        LEGAL_BASES.iter().copied(),
                    );
                }
            }
            c.purposes.insert(
                name.value.clone(),
                Purpose {
                    name: name.value.clone(),
                    description: s.description.clone(),
                    legal_bases: bases,
                },
            );
        }
    }
}

/// A table's `retention`, its column checked against the table's classified columns.
pub(crate) fn retention(
    r: &Spanned<RetentionSpec>,
    file: &str,
    path: &str,
    columns: &[(String, Classified, Pos)],
    diags: &mut Diagnostics,
) -> Option<Retention> {
    let rpath = format!("{path}.retention");
    let col = &r.value.column;
    let known = columns.is_empty() || columns.iter().any(|(n, _, _)| *n == col.value);
    if !known {
        diags.unknown(
            &Pos::new(file, &col.referenced),
            format!("{rpath}.column"),
            format!("'{}' is not a column of this table", col.value),
            &col.value,
            columns.iter().map(|(n, _, _)| n.as_str()),
        );
        return None;
    }
    let delete = match r.value.action.as_ref().map(|a| (a.value.as_str(), a)) {
        None | Some(("anonymise", _)) => false,
        Some(("delete", _)) => true,
        Some((other, a)) => {
            diags.error(
                &Pos::new(file, &a.referenced),
                format!("{rpath}.action"),
                format!("'{other}': the action is anonymise (the default) or delete"),
            );
            return None;
        }
    };
    match Period::parse(&r.value.keep.value) {
        Ok(keep) => Some(Retention {
            column: col.value.clone(),
            keep,
            rule: origin(&rpath, &Pos::new(file, &r.referenced)),
            delete,
        }),
        Err(e) => {
            diags.error(
                &Pos::new(file, &r.value.keep.referenced),
                format!("{rpath}.keep"),
                e,
            );
            None
        }
    }
}

/// The exact inventory entry a declaration names.
fn entry<'a>(
    c: &'a Checked,
    name: &Spanned<String>,
    schema: &str,
    file: &str,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<&'a TableEntry> {
    let pos = Pos::new(file, &name.referenced);
    let q = qualify(&name.value, 2, schema);
    let found = q.as_ref().and_then(|q| {
        c.inventory
            .tables
            .iter()
            .find(|t| t.schema == q[0] && t.table == q[1] && !is_pattern(&t.table))
    });
    if found.is_none() {
        diags.unknown(
            &pos,
            path,
            format!(
                "'{}' is not a table of the inventory (list it under inventory.tables)",
                name.value
            ),
            &name.value,
            c.inventory
                .tables
                .iter()
                .filter(|t| !is_pattern(&t.table))
                .map(|t| t.table.as_str()),
        );
    }
    found
}

/// A column of `e`, when the entry lists its columns.
fn column(e: &TableEntry, col: &Spanned<String>, file: &str, path: &str, diags: &mut Diagnostics) {
    if e.columns.is_empty() || e.columns.iter().any(|(n, _)| *n == col.value) {
        return;
    }
    diags.unknown(
        &Pos::new(file, &col.referenced),
        path,
        format!(
            "'{}' is not a column of {}.{}",
            col.value, e.schema, e.table
        ),
        &col.value,
        e.columns.iter().map(|(n, _)| n.as_str()),
    );
}

/// The subject type a referring table's key names: its `subject`, which must be declared.
fn subject_of(
    e: &TableEntry,
    key: &Spanned<String>,
    file: &str,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<(String, String)> {
    let pos = Pos::new(file, &key.referenced);
    if e.subject_key.as_deref() != Some(key.value.as_str()) {
        diags.error(&pos, path, format!("{}.{} must be listed with subject_key: {} (and subject: the table holding the subjects)", e.schema, e.table, key.value));
        return None;
    }
    match &e.subject {
        Some(s) => Some(s.clone()),
        None => {
            diags.error(
                &pos,
                path,
                format!(
                    "{}.{} must name the table holding the subjects its {} refers to (subject:)",
                    e.schema, e.table, key.value
                ),
            );
            None
        }
    }
}

/// `inventory.consents` and `inventory.restrictions`, once every table is known.
pub(crate) fn inventory(
    docs: &[(&str, &PolicyFile)],
    c: &mut Checked,
    first: &mut First<'_>,
    diags: &mut Diagnostics,
) {
    for (file, doc) in docs {
        let schema = doc.schema.as_ref().map_or("public", |s| s.value.as_str());
        let Some(inv) = &doc.inventory else { continue };
        if let Some(cs) = &inv.consents {
            let pos = Pos::new(file, &cs.referenced);
            let path = "inventory.consents";
            let s = &cs.value;
            if first("consents".into(), &pos, path, diags) {
                let found =
                    entry(c, &s.table, schema, file, &format!("{path}.table"), diags).map(|e| {
                        for (col, p) in [
                            (Some(&s.purpose), "purpose"),
                            (s.withdrawn.as_ref(), "withdrawn"),
                            (s.expires.as_ref(), "expires"),
                        ] {
                            if let Some(col) = col {
                                column(e, col, file, &format!("{path}.{p}"), diags);
                            }
                        }
                        (
                            e.schema.clone(),
                            e.table.clone(),
                            subject_of(
                                e,
                                &s.subject_key,
                                file,
                                &format!("{path}.subject_key"),
                                diags,
                            ),
                        )
                    });
                if let Some((sch, table, Some(subject))) = found {
                    c.inventory.consents = Some(ConsentSource {
                        schema: sch,
                        table,
                        subject_key: s.subject_key.value.clone(),
                        purpose: s.purpose.value.clone(),
                        withdrawn: s.withdrawn.as_ref().map(|w| w.value.clone()),
                        expires: s.expires.as_ref().map(|w| w.value.clone()),
                        subject,
                        rule: origin(path, &pos),
                    });
                }
            }
        }
        if let Some(rs) = &inv.restrictions {
            let pos = Pos::new(file, &rs.referenced);
            if first("restrictions".into(), &pos, "inventory.restrictions", diags) {
                c.inventory.restrictions = restrictions(c, &rs.value, schema, file, &pos, diags);
            }
        }
    }
}

fn restrictions(
    c: &Checked,
    r: &RestrictionsSpec,
    schema: &str,
    file: &str,
    pos: &Pos,
    diags: &mut Diagnostics,
) -> Option<RestrictionSource> {
    let path = "inventory.restrictions";
    let rule = origin(path, pos);
    match (&r.table, &r.subject_key, &r.column) {
        (Some(t), Some(k), None) => {
            let e = entry(c, t, schema, file, &format!("{path}.table"), diags)?;
            if let Some(l) = &r.lifted {
                column(e, l, file, &format!("{path}.lifted"), diags);
            }
            let subject = subject_of(e, k, file, &format!("{path}.subject_key"), diags)?;
            Some(RestrictionSource::Table {
                schema: e.schema.clone(),
                table: e.table.clone(),
                subject_key: k.value.clone(),
                lifted: r.lifted.as_ref().map(|l| l.value.clone()),
                subject,
                rule,
            })
        }
        (None, None, Some(col)) if r.lifted.is_none() => {
            let cpos = Pos::new(file, &col.referenced);
            let Some(q) = qualify(&col.value, 3, schema) else {
                diags.error(
                    &cpos,
                    format!("{path}.column"),
                    "expected table.column or schema.table.column",
                );
                return None;
            };
            let e = c
                .inventory
                .tables
                .iter()
                .find(|t| t.schema == q[0] && t.table == q[1] && !is_pattern(&t.table));
            match e {
                Some(e) if e.subject_key.is_some() && e.subject.is_none() => {
                    if !e.columns.is_empty() && !e.columns.iter().any(|(n, _)| *n == q[2]) {
                        diags.error(
                            &cpos,
                            format!("{path}.column"),
                            format!("'{}' is not a column of {}.{}", q[2], e.schema, e.table),
                        );
                        return None;
                    }
                    Some(RestrictionSource::Flag {
                        schema: q[0].clone(),
                        table: q[1].clone(),
                        column: q[2].clone(),
                        rule,
                    })
                }
                _ => {
                    diags.error(&cpos, format!("{path}.column"), "the flag must be a column of an inventory table that holds subjects (with subject_key and no subject:)");
                    None
                }
            }
        }
        _ => {
            diags.error(pos, path, "expected either table and subject_key (and optionally lifted), or column (a boolean flag of the subject table)");
            None
        }
    }
}

/// A role's `purposes`, `rows`, `see_restricted` and `row_pushdown`.
pub(crate) fn role(
    r: &RoleSpec,
    (file, schema, path): (&str, &str, &str),
    pos: &Pos,
    c: &Checked,
    role: &mut CheckedRole,
    diags: &mut Diagnostics,
) {
    if let Some(list) = &r.purposes {
        role_purposes(r, list, (file, path), pos, c, role, diags);
    }
    see_restricted(r, (file, path), pos, role);
    role.rows.pushdown = r.row_pushdown.as_ref().is_some_and(|p| p.value);
    let Some(rows) = &r.rows else { return };
    role.rows = row_rules(rows, (file, schema, path), c, role, diags);
}

/// The role's purposes, each checked against its declaration: a purpose only covers the legal
/// bases it declares, so a role claiming another basis for it is an error, not a widening.
fn role_purposes(
    r: &RoleSpec,
    list: &[Spanned<String>],
    (file, path): (&str, &str),
    pos: &Pos,
    c: &Checked,
    role: &mut CheckedRole,
    diags: &mut Diagnostics,
) {
    let basis = r.legal_basis.as_ref().map(|b| b.value.as_str());
    if basis.is_none() {
        diags.error(
            pos,
            format!("{path}.purposes"),
            "a role with purposes needs its legal_basis (GDPR Art. 6(1))",
        );
    }
    for (i, p) in list.iter().enumerate() {
        let ppos = Pos::new(file, &p.referenced);
        let ppath = format!("{path}.purposes[{i}]");
        match c.purposes.get(&p.value) {
            None => diags.unknown(
                &ppos,
                ppath,
                format!("unknown purpose '{}' (declare it under purposes:)", p.value),
                &p.value,
                c.purposes.keys().map(String::as_str),
            ),
            Some(decl) => {
                if let Some(b) = basis.filter(|b| !decl.legal_bases.iter().any(|x| x == b)) {
                    diags.error(
                        &ppos,
                        ppath,
                        format!(
                            "purpose '{}' allows legal basis {}, not the role's '{b}'",
                            p.value,
                            decl.legal_bases.join(", ")
                        ),
                    );
                }
                if !role.purposes.contains(&p.value) {
                    role.purposes.push(p.value.clone());
                }
            }
        }
    }
}

/// `see_restricted` and where it was decided; the built-in default is named too, so an
/// explanation of a hidden row can point at the rule even when the policy says nothing.
fn see_restricted(r: &RoleSpec, (file, path): (&str, &str), pos: &Pos, role: &mut CheckedRole) {
    role.rows.restricted_rule = format!("{path}.see_restricted (built-in default: false) ({pos})");
    if let Some(s) = &r.see_restricted {
        role.rows.see_restricted = s.value;
        role.rows.restricted_rule = origin(
            &format!("{path}.see_restricted"),
            &Pos::new(file, &s.referenced),
        );
    }
}

/// The role's `rows:` compiled; it replaces the role's row rules whole, carrying over the
/// `see_restricted` and `row_pushdown` decisions made before it.
fn row_rules(
    rows: &Spanned<RowsSpec>,
    (file, schema, path): (&str, &str, &str),
    c: &Checked,
    role: &CheckedRole,
    diags: &mut Diagnostics,
) -> RowRules {
    let rpos = Pos::new(file, &rows.referenced);
    let rpath = format!("{path}.rows");
    let spec = &rows.value;
    let mut out = RowRules {
        consent: spec.consent,
        retention: spec.retention,
        see_restricted: role.rows.see_restricted,
        where_: Vec::new(),
        rule: origin(&rpath, &rpos),
        restricted_rule: role.rows.restricted_rule.clone(),
        pushdown: role.rows.pushdown,
    };
    needs_of_row_rules(spec, &rpos, &rpath, c, role, diags);
    for (table, text) in sorted(&spec.where_) {
        let tpath = format!("{rpath}.where.{}", table.value);
        let Some(e) = entry(c, table, schema, file, &tpath, diags) else {
            continue;
        };
        if let Some(w) = where_rule(e, table, text, file, &tpath, diags) {
            out.where_.push(w);
        }
    }
    out
}

/// Consent and retention rules filter by data the inventory must declare (where consents live,
/// which tables have a retention period); without it they would hide nothing, silently.
fn needs_of_row_rules(
    spec: &RowsSpec,
    rpos: &Pos,
    rpath: &str,
    c: &Checked,
    role: &CheckedRole,
    diags: &mut Diagnostics,
) {
    if spec.consent {
        if c.inventory.consents.is_none() {
            diags.error(
                rpos,
                format!("{rpath}.consent"),
                "consent rules need inventory.consents (where consents live)",
            );
        }
        if role.purposes.is_empty() {
            diags.error(
                rpos,
                format!("{rpath}.consent"),
                "consent rules need the role's purposes (consent is given for a purpose)",
            );
        }
    }
    if spec.retention && !c.inventory.tables.iter().any(|t| t.retention.is_some()) {
        diags.error(
            rpos,
            format!("{rpath}.retention"),
            "no inventory table declares a retention period",
        );
    }
}

/// One `where:` condition compiled for table `e`. Its columns are checked against the
/// inventory here, so a misspelt column fails the policy check instead of the first query.
fn where_rule(
    e: &TableEntry,
    table: &Spanned<String>,
    text: &Spanned<String>,
    file: &str,
    tpath: &str,
    diags: &mut Diagnostics,
) -> Option<WhereRule> {
    let tpos = Pos::new(file, &table.referenced);
    match super::predicate::compile(&text.value) {
        Ok(p) => {
            for col in &p.columns {
                if !e.columns.is_empty() && !e.columns.iter().any(|(n, _)| n == col) {
                    diags.unknown(
                        &Pos::new(file, &text.referenced),
                        tpath,
                        format!("'{col}' is not a column of {}.{}", e.schema, e.table),
                        col,
                        e.columns.iter().map(|(n, _)| n.as_str()),
                    );
                }
            }
            Some(WhereRule {
                schema: e.schema.clone(),
                table: e.table.clone(),
                predicate: p,
                text: text.value.clone(),
                rule: origin(tpath, &tpos),
            })
        }
        Err(why) => {
            diags.error(&Pos::new(file, &text.referenced), tpath, why);
            None
        }
    }
}
