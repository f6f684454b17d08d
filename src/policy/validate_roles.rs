//! Semantic checks of roles, the default role and grants (continues `validate.rs`).

use std::collections::BTreeSet;

use super::diag::{Diagnostics, Pos};
use super::grants::{parse_bound, Grant, Grantee};
use super::inventory::{glob_match, globs_overlap, is_pattern, NONE};
use super::source::{ActionSpec, GrantSpec, PolicyFile, RoleSpec};
use super::validate::{
    action, capability, check_category, class, origin, qualify, sorted, ActionRef, Checked,
    CheckedRole, DEFAULT_CLASSES,
};

/// GDPR Art. 6(1) lawful bases, (a) to (f), as `legal_basis` spells them.
pub const LEGAL_BASES: [&str; 6] = [
    "consent",
    "contract",
    "legal_obligation",
    "vital_interests",
    "public_task",
    "legitimate_interests",
];

/// A role's `purpose` and `legal_basis`: both or neither, the basis one of Art. 6(1)'s.
fn purpose(
    r: &super::source::RoleSpec,
    file: &str,
    path: &str,
    pos: &Pos,
    diags: &mut Diagnostics,
) -> Option<(String, String)> {
    match (&r.purpose, &r.legal_basis) {
        (None, None) => None,
        (Some(p), None) => {
            let ppos = Pos::new(file, &p.referenced);
            diags.error(&ppos, format!("{path}.purpose"), "a purpose needs its legal_basis (GDPR Art. 6(1)): consent, contract, legal_obligation, vital_interests, public_task or legitimate_interests");
            None
        }
        (None, Some(b)) if r.purposes.as_ref().is_some_and(|p| !p.is_empty()) => {
            // The declared purposes' names stand for the purpose in audit records.
            let names: Vec<&str> = r
                .purposes
                .iter()
                .flatten()
                .map(|p| p.value.as_str())
                .collect();
            LEGAL_BASES
                .contains(&b.value.as_str())
                .then(|| (names.join(", "), b.value.clone()))
        }
        (None, Some(b)) => {
            let bpos = Pos::new(file, &b.referenced);
            diags.error(
                &bpos,
                format!("{path}.legal_basis"),
                "a legal_basis needs the purpose it is the basis of",
            );
            None
        }
        (Some(p), Some(b)) => {
            let bpath = format!("{path}.legal_basis");
            let bpos = Pos::new(file, &b.referenced);
            if p.value.trim().is_empty() {
                diags.error(pos, format!("{path}.purpose"), "the purpose is empty");
                return None;
            }
            if !LEGAL_BASES.contains(&b.value.as_str()) {
                diags.unknown(
                    &bpos,
                    bpath,
                    format!(
                        "'{}' is not a lawful basis of GDPR Art. 6(1) (consent, contract, \
                         legal_obligation, vital_interests, public_task, legitimate_interests)",
                        b.value
                    ),
                    &b.value,
                    LEGAL_BASES.iter().copied(),
                );
                return None;
            }
            Some((p.value.clone(), b.value.clone()))
        }
    }
}

use super::validate::First;

pub(crate) fn roles_and_grants(
    docs: &[(&str, &PolicyFile)],
    categories: &BTreeSet<String>,
    c: &mut Checked,
    first: &mut First<'_>,
    diags: &mut Diagnostics,
) {
    let masks = MaskNames(c.masks.keys().cloned().collect());
    for (file, doc) in docs {
        let schema = doc.schema.as_ref().map_or("public", |s| s.value.as_str());
        for (name, spec) in sorted(&doc.roles) {
            let pos = Pos::new(file, &name.referenced);
            let path = format!("roles.{}", name.value);
            if !first(format!("role {}", name.value), &pos, &path, diags) {
                continue;
            }
            let at = RoleAt {
                file,
                schema,
                path: &path,
                pos: &pos,
            };
            let role = checked_role(&name.value, &spec.value, &at, categories, &masks, c, diags);
            c.roles.insert(role.name.clone(), role);
        }
    }
    check_default_role(docs, c, diags);
    grants(docs, c, diags);
}

/// Where a role is defined: its file, the file's schema, its path and position.
struct RoleAt<'a> {
    file: &'a str,
    schema: &'a str,
    path: &'a str,
    pos: &'a Pos,
}

/// The policy's mask methods, which an action may name.
struct MaskNames(Vec<String>);

impl MaskNames {
    /// Whether `a` names no mask, or a known one (else reported).
    fn check(&self, a: &ActionSpec, file: &str, path: &str, diags: &mut Diagnostics) -> bool {
        if let ActionSpec::Mask(m) = a {
            if !self.0.contains(&m.value) {
                diags.unknown(
                    &Pos::new(file, &m.referenced),
                    format!("{path}.mask"),
                    format!("unknown mask method '{}'", m.value),
                    &m.value,
                    self.0.iter().map(String::as_str),
                );
                return false;
            }
        }
        true
    }
}

/// One role's rules, checked: its read and write rules, row rules, limits, statement classes
/// and capabilities.
fn checked_role(
    name: &str,
    r: &RoleSpec,
    at: &RoleAt<'_>,
    categories: &BTreeSet<String>,
    masks: &MaskNames,
    c: &mut Checked,
    diags: &mut Diagnostics,
) -> CheckedRole {
    let (file, schema, path, pos) = (at.file, at.schema, at.path, at.pos);
    let has_rules = r.default.is_some()
        || !r.categories.is_empty()
        || !r.columns.is_empty()
        || r.statements.is_some()
        || !r.capabilities.is_empty()
        || r.writes.is_some()
        || r.rows.is_some()
        || r.see_restricted.is_some()
        || r.row_pushdown.is_some();
    if r.unrestricted && has_rules {
        diags.error(pos, path, "an unrestricted role cannot also have rules");
    }
    let mut role = CheckedRole {
        name: name.to_owned(),
        unrestricted: r.unrestricted,
        purpose: purpose(r, file, path, pos, diags),
        default: (
            ActionRef::Mask("redact".into()),
            format!("{path}.default (built-in default: mask redact) ({pos})"),
        ),
        categories: Default::default(),
        columns: Vec::new(),
        classes: DEFAULT_CLASSES.to_vec(),
        capabilities: Vec::new(),
        write_categories: Default::default(),
        write_columns: Vec::new(),
        purposes: Vec::new(),
        rows: Default::default(),
    };
    super::validate_rows::role(r, (file, schema, path), pos, c, &mut role, diags);
    if let Some(l) = super::limits::validate(r, file, path, diags) {
        c.read_limits.insert(name.to_owned(), l);
    }
    if let Some(w) = &r.writes {
        super::validate_writes::writes(w, (file, schema, path), categories, c, &mut role, diags);
    }
    if let Some(d) = &r.default {
        let dpos = Pos::new(file, &d.referenced);
        let dpath = format!("{path}.default");
        if d.value == ActionSpec::Allow {
            diags.error(&dpos, &dpath, "the default must be a mask or 'block' (privacy by default); allow categories or columns explicitly");
        } else if masks.check(&d.value, file, &dpath, diags) {
            role.default = (action(&d.value), origin(&dpath, &dpos));
        }
    }
    role_categories(r, at, categories, masks, &mut role, diags);
    role_columns(r, at, masks, c, &mut role, diags);
    classes_and_capabilities(r, at, &mut role, diags);
    statistics_with_rows(&role, c, at.pos, at.path, diags);
    role
}

/// Statistics views show values of every row (most common values, histogram bounds), hidden
/// ones too: a role whose row rules hide people cannot read them.
fn statistics_with_rows(
    role: &CheckedRole,
    c: &Checked,
    pos: &Pos,
    path: &str,
    diags: &mut Diagnostics,
) {
    let rows = &role.rows;
    let hides = rows.consent
        || rows.retention
        || !rows.where_.is_empty()
        || (!rows.see_restricted && c.inventory.restrictions.is_some());
    if hides
        && role
            .capabilities
            .contains(&super::model::Capability::StatisticsViews)
    {
        diags.error(
            pos,
            format!("{path}.capabilities"),
            "capability 'statistics_views' cannot be given to a role with row rules: pg_stats shows values of every row, the ones the rules hide too (give the role see_restricted: true and no rows: rules, or drop the capability)",
        );
    }
}

/// `roles.*.categories`: an action per inventory category.
fn role_categories(
    r: &RoleSpec,
    at: &RoleAt<'_>,
    categories: &BTreeSet<String>,
    masks: &MaskNames,
    role: &mut CheckedRole,
    diags: &mut Diagnostics,
) {
    let (file, path) = (at.file, at.path);
    for (cat, act) in sorted(&r.categories) {
        let cpos = Pos::new(file, &cat.referenced);
        let cpath = format!("{path}.categories.{}", cat.value);
        if !check_category(&cat.value, categories, &cpos, &cpath, diags) {
            continue;
        }
        if cat.value == NONE {
            diags.error(
                &cpos,
                &cpath,
                "category 'none' is not personal data and is always allowed",
            );
            continue;
        }
        if masks.check(&act.value, file, &cpath, diags) {
            role.categories.insert(
                cat.value.clone(),
                (action(&act.value), origin(&cpath, &cpos)),
            );
        }
    }
}

/// `roles.*.columns`: an action per column (or column pattern); two patterns a column could
/// match both must not disagree.
fn role_columns(
    r: &RoleSpec,
    at: &RoleAt<'_>,
    masks: &MaskNames,
    c: &Checked,
    role: &mut CheckedRole,
    diags: &mut Diagnostics,
) {
    let (file, schema, path) = (at.file, at.schema, at.path);
    let mut seen_cols: Vec<((String, String, String), ActionRef, Pos)> = Vec::new();
    for (col, act) in sorted(&r.columns) {
        let cpos = Pos::new(file, &col.referenced);
        let cpath = format!("{path}.columns.{}", col.value);
        let Some(key) = known_column(c, &col.value, schema, &cpos, &cpath, diags) else {
            continue;
        };
        if !masks.check(&act.value, file, &cpath, diags) {
            continue;
        }
        let a = action(&act.value);
        let mut ok = true;
        for (okey, oact, opos) in &seen_cols {
            if *okey == key {
                diags.error(
                    &cpos,
                    &cpath,
                    format!("duplicate rule for the same column, first at {opos}"),
                );
                ok = false;
            } else if *oact != a
                && is_pattern_name(okey)
                && is_pattern_name(&key)
                && globs_overlap(&okey.0, &key.0)
                && globs_overlap(&okey.1, &key.1)
                && globs_overlap(&okey.2, &key.2)
            {
                diags.error(&cpos, &cpath, format!("pattern conflicts with the rule at {opos}: a column could match both with different actions"));
                ok = false;
            }
        }
        if ok {
            seen_cols.push((key.clone(), a.clone(), cpos.clone()));
            role.columns.push((key, (a, origin(&cpath, &cpos))));
        }
    }
}

/// `roles.*.statements` and `roles.*.capabilities`.
fn classes_and_capabilities(
    r: &RoleSpec,
    at: &RoleAt<'_>,
    role: &mut CheckedRole,
    diags: &mut Diagnostics,
) {
    let (file, path) = (at.file, at.path);
    if let Some(classes) = &r.statements {
        role.classes.clear();
        for (i, s) in classes.iter().enumerate() {
            match class(s.value) {
                Ok(c) => role.classes.push(c),
                Err(why) => diags.error(
                    &Pos::new(file, &s.referenced),
                    format!("{path}.statements[{i}]"),
                    why,
                ),
            }
        }
    }
    for (i, s) in r.capabilities.iter().enumerate() {
        match capability(s.value) {
            Ok(c) => role.capabilities.push(c),
            Err(why) => diags.error(
                &Pos::new(file, &s.referenced),
                format!("{path}.capabilities[{i}]"),
                why,
            ),
        }
    }
}

/// Exact names win over patterns, so only two patterns can conflict.
fn is_pattern_name(k: &(String, String, String)) -> bool {
    is_pattern(&k.0) || is_pattern(&k.1) || is_pattern(&k.2)
}

/// The `(schema, table, column)` a role rule names as `[schema.]table.column`, when the
/// inventory knows it; otherwise the error is reported and None returned.
pub(crate) fn known_column(
    c: &Checked,
    name: &str,
    schema: &str,
    pos: &Pos,
    path: &str,
    diags: &mut Diagnostics,
) -> Option<(String, String, String)> {
    let Some(q) = qualify(name, 3, schema) else {
        diags.error(pos, path, "expected table.column or schema.table.column");
        return None;
    };
    let key = (q[0].clone(), q[1].clone(), q[2].clone());
    check_column_known(c, &key, pos, path, diags).then_some(key)
}

/// A role rule must name a column the inventory knows, or it silently does nothing.
pub(crate) fn check_column_known(
    c: &Checked,
    key: &(String, String, String),
    pos: &Pos,
    path: &str,
    diags: &mut Diagnostics,
) -> bool {
    let (s, t, col) = key;
    if is_pattern(s) || is_pattern(t) {
        return true;
    }
    let Some(entry) = c.inventory.table_entry(s, t) else {
        let known: Vec<String> = c.inventory.tables.iter().map(|e| e.table.clone()).collect();
        let global = c
            .inventory
            .columns
            .patterns
            .iter()
            .any(|(k, _)| glob_match(&k.0, s) && glob_match(&k.1, t));
        if !global {
            diags.unknown(
                pos,
                path,
                format!("unknown table '{s}.{t}' (not in the inventory)"),
                t,
                known.iter().map(String::as_str),
            );
            return false;
        }
        return true;
    };
    if is_pattern(col) || entry.columns.is_empty() {
        return true;
    }
    if entry
        .columns
        .iter()
        .any(|(n, _)| n == col || (is_pattern(n) && glob_match(n, col)))
    {
        return true;
    }
    diags.unknown(
        pos,
        path,
        format!("unknown column '{col}' of table '{s}.{t}'"),
        col,
        entry.columns.iter().map(|(n, _)| n.as_str()),
    );
    false
}

/// The default role is what unknown users get: it must exist and open no personal data.
fn check_default_role(docs: &[(&str, &PolicyFile)], c: &Checked, diags: &mut Diagnostics) {
    let Some((file, name)) = docs
        .iter()
        .find_map(|(f, d)| d.default_role.as_ref().map(|r| (*f, r)))
    else {
        if !c.complete {
            // A file that failed to parse may well hold it; its parse error is reported.
            return;
        }
        let file = docs.first().map_or("<policy>", |(f, _)| *f);
        diags.error(
            &Pos::file_only(file),
            "default_role",
            "no default_role is set (the role for users without a grant)",
        );
        return;
    };
    let pos = Pos::new(file, &name.referenced);
    let Some(role) = c.roles.get(&name.value) else {
        diags.unknown(
            &pos,
            "default_role",
            format!("unknown role '{}'", name.value),
            &name.value,
            c.roles.keys().map(String::as_str),
        );
        return;
    };
    let opens = role.unrestricted
        || role
            .categories
            .values()
            .any(|(a, _)| *a == ActionRef::Allow)
        || role
            .columns
            .iter()
            .any(|(_, (a, _))| *a == ActionRef::Allow);
    if opens {
        diags.error(&pos, "default_role", format!("role '{}' allows personal data, but the default role must not (privacy by default)", name.value));
    }
}

fn grants(docs: &[(&str, &PolicyFile)], c: &mut Checked, diags: &mut Diagnostics) {
    let mut index = 0usize;
    let mut placed: Vec<(Grant, Pos)> = Vec::new();
    for (file, doc) in docs {
        for g in &doc.grants {
            let pos = Pos::new(file, &g.referenced);
            let path = format!("grants[{index}]");
            index += 1;
            let Some(grant) = grant(file, &g.value, &path, &pos, c, diags) else {
                continue;
            };
            if let Some((_, opos)) = placed
                .iter()
                .find(|(o, _)| o.grantee == grant.grantee && o.overlaps(&grant))
            {
                diags.error(
                    &pos,
                    &path,
                    format!(
                        "duplicate grant: overlaps the grant at {opos} for the same user or group"
                    ),
                );
                continue;
            }
            placed.push((grant, pos));
        }
    }
    c.grants = placed.into_iter().map(|(g, _)| g).collect();
}

/// One grant as written: to one user or one group, of a declared role, over a period that is
/// not empty. Whether it collides with another grant is the caller's to judge.
fn grant(
    file: &str,
    s: &GrantSpec,
    path: &str,
    pos: &Pos,
    c: &Checked,
    diags: &mut Diagnostics,
) -> Option<Grant> {
    let grantee = match (&s.user, &s.group) {
        (Some(u), None) => Grantee::User(u.value.clone()),
        (None, Some(gr)) => Grantee::Group(gr.value.clone()),
        _ => {
            diags.error(pos, path, "a grant needs exactly one of 'user' or 'group'");
            return None;
        }
    };
    if !c.roles.contains_key(&s.role.value) {
        diags.unknown(
            &Pos::new(file, &s.role.referenced),
            format!("{path}.role"),
            format!("unknown role '{}'", s.role.value),
            &s.role.value,
            c.roles.keys().map(String::as_str),
        );
        return None;
    }
    let (from, until) = validity(file, s, path, pos, diags)?;
    Some(Grant {
        grantee,
        role: s.role.value.clone(),
        valid_from: from,
        valid_until: until,
        origin: origin(path, pos),
        reason: s.reason.clone(),
        pos: pos.clone(),
    })
}

/// `valid_from` and `valid_until` as times; both are parsed (and both reported) before the
/// order of the two is checked.
fn validity(
    file: &str,
    s: &GrantSpec,
    path: &str,
    pos: &Pos,
    diags: &mut Diagnostics,
) -> Option<(Option<i64>, Option<i64>)> {
    let mut parse =
        |v: &Option<super::source::Name>, field: &str, end: bool| -> Result<Option<i64>, ()> {
            match v {
                None => Ok(None),
                Some(v) => parse_bound(&v.value, end).map(Some).map_err(|e| {
                    diags.error(&Pos::new(file, &v.referenced), format!("{path}.{field}"), e);
                }),
            }
        };
    let (Ok(from), Ok(until)) = (
        parse(&s.valid_from, "valid_from", false),
        parse(&s.valid_until, "valid_until", true),
    ) else {
        return None;
    };
    if let (Some(f), Some(u)) = (from, until) {
        if f >= u {
            diags.error(pos, path, "valid_from is not before valid_until");
            return None;
        }
    }
    Some((from, until))
}
