//! Semantic checks over all parsed files, every problem collected, names resolved.
//!
//! The result, [`Checked`], is only used when no error was found; `compile.rs` then needs no
//! error handling of its own beyond reading the pseudonym key.

use std::collections::{BTreeMap, BTreeSet};

use serde_saphyr::Spanned;

use super::diag::{Diagnostics, Pos};
use super::grants::Grant;
use super::inventory::{
    globs_overlap, is_pattern, is_system_schema, Classified, ColumnName, ColumnRules, Inventory,
    TableEntry, UnlistedRelations, NONE, UNCLASSIFIED,
};
use super::masks::{validate_custom_template, MaskKind, BUILTIN_METHODS};
use super::model::{Capability, StatementClass};
use super::source::{ActionSpec, CapabilitySpec, ClassSpec, PolicyFile, SourceFile, UnlistedSpec};

/// Categories every policy knows; `categories:` adds more.
pub const BUILTIN_CATEGORIES: &[&str] = &[
    NONE,
    "identity",
    "contact",
    "financial",
    "special",
    "free_text",
    "location",
    "online_id",
    UNCLASSIFIED,
];

/// Default environment variable for the pseudonym key.
pub const DEFAULT_KEY_ENV: &str = "PGVAKT_PSEUDONYM_KEY";

/// Default statement classes of a restricted role: all of them. DDL is not a class a policy can
/// grant: restricted roles never run it (it can copy protected data into new tables).
pub const DEFAULT_CLASSES: &[StatementClass] = &[
    StatementClass::Read,
    StatementClass::Write,
    StatementClass::Copy,
    StatementClass::Utility,
];

/// A resolved action; mask methods by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ActionRef {
    Allow,
    Block,
    Mask(String),
}

#[derive(Debug, Clone)]
pub struct CheckedRole {
    pub name: String,
    pub unrestricted: bool,
    /// Declared purpose and GDPR Art. 6(1) legal basis (both or neither).
    pub purpose: Option<(String, String)>,
    pub default: (ActionRef, String),
    pub categories: BTreeMap<String, (ActionRef, String)>,
    pub columns: Vec<(ColumnName, (ActionRef, String))>,
    pub classes: Vec<StatementClass>,
    pub capabilities: Vec<Capability>,
    pub write_categories: BTreeMap<String, (super::model::WriteAction, String)>,
    pub write_columns: Vec<(ColumnName, (super::model::WriteAction, String))>,
    /// Names from `purposes:` the role processes for.
    pub purposes: Vec<String>,
    pub rows: super::rows::RowRules,
}

#[derive(Debug, Default)]
pub struct Checked {
    /// Every file parsed; otherwise "missing" checks are skipped (the parse error explains).
    pub complete: bool,
    pub default_role: String,
    pub key_env: String,
    pub key_file: Option<String>,
    /// Where the `pseudonym` section is, for problems with its key.
    pub pseudonym_pos: Option<Pos>,
    pub inventory: Inventory,
    /// Method name → (kind, custom template). Built-ins are included.
    pub masks: BTreeMap<String, (MaskKind, Option<String>)>,
    pub roles: BTreeMap<String, CheckedRole>,
    pub grants: Vec<Grant>,
    /// Declared purposes by name.
    pub purposes: BTreeMap<String, super::rows::Purpose>,
    /// Role → read limits.
    pub read_limits: BTreeMap<String, super::limits::ReadLimit>,
}

pub(crate) fn origin(path: &str, pos: &Pos) -> String {
    format!("{path} ({pos})")
}

/// Splits `[schema.]table` or `[[schema.]table.]column`-style names into `parts` parts, filling
/// the schema from the file default.
pub(crate) fn qualify(name: &str, parts: usize, schema: &str) -> Option<Vec<String>> {
    let mut v: Vec<String> = name.split('.').map(str::to_owned).collect();
    if v.iter().any(String::is_empty) || v.len() > parts || v.len() < parts - 1 {
        return None;
    }
    if v.len() == parts - 1 {
        v.insert(0, schema.to_owned());
    }
    Some(v)
}

pub(crate) fn action(spec: &ActionSpec) -> ActionRef {
    match spec {
        ActionSpec::Allow => ActionRef::Allow,
        ActionSpec::Block => ActionRef::Block,
        ActionSpec::Mask(m) => ActionRef::Mask(m.value.clone()),
    }
}

pub(crate) fn sorted<K, V>(m: &std::collections::HashMap<Spanned<K>, V>) -> Vec<(&Spanned<K>, &V)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by_key(|(k, _)| (k.referenced.line(), k.referenced.column()));
    v
}

/// Re-definitions of a name are errors: `first` says whether a key is new, noting where.
pub(crate) type First<'a> = dyn FnMut(String, &Pos, &str, &mut Diagnostics) -> bool + 'a;

/// Validates all files together.
pub fn validate(files: &[SourceFile], diags: &mut Diagnostics) -> Checked {
    let docs: Vec<(&str, &PolicyFile)> = files
        .iter()
        .filter_map(|f| f.doc.as_ref().map(|d| (f.path.as_str(), d)))
        .collect();
    let mut c = Checked {
        key_env: DEFAULT_KEY_ENV.into(),
        complete: files.iter().all(|f| f.doc.is_some()),
        ..Checked::default()
    };
    let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
    let mut first = |key: String, pos: &Pos, path: &str, diags: &mut Diagnostics| -> bool {
        if let Some(prev) = seen.get(&key) {
            diags.error(
                pos,
                path,
                format!("duplicate definition, first defined at {prev}"),
            );
            false
        } else {
            seen.insert(key, pos.clone());
            true
        }
    };
    // Pass 1: names that other sections refer to (categories, masks, roles).
    let categories = names(&docs, &mut c, &mut first, diags);
    masks(&docs, &mut c, &mut first, diags);
    // Pass 2: the inventory, then what refers to it.
    inventory(&docs, &categories, &mut c, &mut first, diags);
    super::validate_rows::inventory(&docs, &mut c, &mut first, diags);
    super::validate_rows::purposes(&docs, &mut c, &mut first, diags);
    super::validate_roles::roles_and_grants(&docs, &categories, &mut c, &mut first, diags);
    c
}

/// Categories (built-in and declared), the pseudonym key, the default role, the setting for
/// unlisted relations and each file's schema.
fn names(
    docs: &[(&str, &PolicyFile)],
    c: &mut Checked,
    first: &mut First<'_>,
    diags: &mut Diagnostics,
) -> BTreeSet<String> {
    let mut categories: BTreeSet<String> =
        BUILTIN_CATEGORIES.iter().map(|s| (*s).to_owned()).collect();
    for (file, doc) in docs {
        for (name, _) in sorted(&doc.categories) {
            let pos = Pos::new(file, &name.referenced);
            let path = format!("categories.{}", name.value);
            if BUILTIN_CATEGORIES.contains(&name.value.as_str()) {
                diags.error(&pos, path, "redefines a built-in category");
            } else if first(format!("category {}", name.value), &pos, &path, diags) {
                categories.insert(name.value.clone());
            }
        }
        if let Some(p) = &doc.pseudonym {
            let pos = Pos::new(file, &p.referenced);
            if first("pseudonym".into(), &pos, "pseudonym", diags) {
                if let Some(env) = &p.value.key_env {
                    c.key_env = env.clone();
                }
                c.key_file = p.value.key_file.clone();
                c.pseudonym_pos = Some(pos.clone());
            }
        }
        if let Some(r) = &doc.default_role {
            let pos = Pos::new(file, &r.referenced);
            if first("default_role".into(), &pos, "default_role", diags) {
                c.default_role = r.value.clone();
            }
        }
        if let Some(u) = &doc.unlisted_relations {
            let pos = Pos::new(file, &u.referenced);
            if first(
                "unlisted_relations".into(),
                &pos,
                "unlisted_relations",
                diags,
            ) {
                c.inventory.unlisted = match u.value {
                    UnlistedSpec::Personal => UnlistedRelations::Personal,
                    UnlistedSpec::NotPersonal => {
                        diags.warning(&pos, "unlisted_relations", "relations the inventory does not list are not personal data: every role reads them unmasked and their reads are not audited");
                        UnlistedRelations::NotPersonal
                    }
                };
                c.inventory.unlisted_rule = origin("unlisted_relations", &pos);
            }
        }
        let schema = doc.schema.as_ref().map_or("public", |s| s.value.as_str());
        c.inventory.schemas.insert(schema.to_owned());
        if !c.inventory.file_schemas.iter().any(|s| s == schema) {
            c.inventory.file_schemas.push(schema.to_owned());
        }
    }
    categories
}

/// Mask methods: the built-ins, then each declared one (a built-in with parameters or a
/// checked SQL template).
fn masks(
    docs: &[(&str, &PolicyFile)],
    c: &mut Checked,
    first: &mut First<'_>,
    diags: &mut Diagnostics,
) {
    for b in BUILTIN_METHODS {
        let kind = match *b {
            "null" => MaskKind::Null,
            "redact" => MaskKind::Redact,
            "partial" => MaskKind::Partial {
                keep_first: 1,
                keep_last: 0,
            },
            "email" => MaskKind::Email,
            "phone" => MaskKind::Phone,
            "bank_account" => MaskKind::BankAccount,
            "date_year" => MaskKind::DateYear,
            _ => MaskKind::Pseudonym(None),
        };
        c.masks.insert((*b).to_owned(), (kind, None));
    }
    for (file, doc) in docs {
        for (name, spec) in sorted(&doc.masks) {
            let pos = Pos::new(file, &name.referenced);
            let path = format!("masks.{}", name.value);
            if BUILTIN_METHODS.contains(&name.value.as_str()) {
                diags.error(&pos, &path, "redefines a built-in mask method");
                continue;
            }
            if first(format!("mask {}", name.value), &pos, &path, diags) {
                declared_mask(file, (name, spec), (&pos, &path), c, diags);
            }
        }
    }
}

/// A declared mask method: a built-in with its parameters, or a checked SQL template.
fn declared_mask(
    file: &str,
    (name, spec): (&Spanned<String>, &Spanned<super::source::MaskSpec>),
    (pos, path): (&Pos, &str),
    c: &mut Checked,
    diags: &mut Diagnostics,
) {
    let s = &spec.value;
    let params = s.keep_first.is_some() || s.keep_last.is_some();
    match (&s.method, &s.sql) {
        (Some(m), None) => {
            let mpos = Pos::new(file, &m.referenced);
            if m.value != "partial" && params {
                diags.error(
                    &mpos,
                    format!("{path}.method"),
                    "keep_first/keep_last apply to method 'partial' only",
                );
            }
            match c.masks.get(&m.value) {
                Some((MaskKind::Partial { .. }, None)) => {
                    let kind = MaskKind::Partial {
                        keep_first: s.keep_first.unwrap_or(1),
                        keep_last: s.keep_last.unwrap_or(0),
                    };
                    c.masks.insert(name.value.clone(), (kind, None));
                }
                Some((kind, None)) => {
                    let kind = kind.clone();
                    c.masks.insert(name.value.clone(), (kind, None));
                }
                _ => diags.unknown(
                    &mpos,
                    format!("{path}.method"),
                    format!("unknown built-in method '{}'", m.value),
                    &m.value,
                    BUILTIN_METHODS.iter().copied(),
                ),
            }
        }
        (None, Some(sql)) => {
            if params {
                diags.error(
                    pos,
                    path,
                    "keep_first/keep_last apply to method 'partial' only",
                );
            }
            match validate_custom_template(&sql.value) {
                Ok(()) => {
                    c.masks.insert(
                        name.value.clone(),
                        (MaskKind::Custom, Some(sql.value.clone())),
                    );
                }
                Err(e) => diags.error(&Pos::new(file, &sql.referenced), format!("{path}.sql"), e),
            }
        }
        _ => diags.error(pos, path, "a mask needs exactly one of 'method' or 'sql'"),
    }
}

/// Column and table entries of the inventory, then the conflicts between their patterns.
fn inventory(
    docs: &[(&str, &PolicyFile)],
    categories: &BTreeSet<String>,
    c: &mut Checked,
    first: &mut First<'_>,
    diags: &mut Diagnostics,
) {
    let mut global: Vec<(ColumnName, Classified, Pos, String)> = Vec::new();
    let mut subject_refs = Vec::new();
    for (file, doc) in docs {
        let Some(inv) = &doc.inventory else { continue };
        let at = super::validate_inventory::Where {
            file,
            schema: doc.schema.as_ref().map_or("public", |s| s.value.as_str()),
        };
        for entry in sorted(&inv.columns) {
            if let Some(e) =
                super::validate_inventory::inventory_column(at, entry, categories, c, first, diags)
            {
                global.push(e);
            }
        }
        for entry in sorted(&inv.tables) {
            let mut refs = (categories, &mut subject_refs);
            super::validate_inventory::inventory_table(at, entry, &mut refs, c, first, diags);
        }
    }
    for (i, (key, cls, pos, path)) in global.iter().enumerate() {
        for (okey, ocls, opos, _) in &global[..i] {
            if ocls.category != cls.category
                && globs_overlap(&okey.0, &key.0)
                && globs_overlap(&okey.1, &key.1)
                && globs_overlap(&okey.2, &key.2)
            {
                diags.error(pos, path, format!("pattern conflicts with '{}.{}.{}' at {opos}: a column could match both with different categories", okey.0, okey.1, okey.2));
            }
        }
    }
    super::validate_subjects::resolve(&mut c.inventory, subject_refs, diags);
    let table_patterns: Vec<&TableEntry> = c
        .inventory
        .tables
        .iter()
        .filter(|t| is_pattern(&t.schema) || is_pattern(&t.table))
        .collect();
    for (i, t) in table_patterns.iter().enumerate() {
        for o in &table_patterns[..i] {
            if globs_overlap(&o.schema, &t.schema) && globs_overlap(&o.table, &t.table) {
                diags.error(
                    &Pos::file_only(""),
                    "",
                    format!(
                        "table pattern {} conflicts with {}: a table could match both",
                        t.rule, o.rule
                    ),
                );
            }
        }
    }
    c.inventory.columns = ColumnRules::default();
    for (key, cls, _, _) in global {
        c.inventory.columns.insert(key, cls);
    }
}

/// Notes an inventory name's schema as one of the policy's schemas; a system schema is an
/// error: its relations are never personal data, so the entry would silently do nothing.
pub(super) fn check_schema(
    inv: &mut Inventory,
    schema: &str,
    pos: &Pos,
    path: &str,
    diags: &mut Diagnostics,
) -> bool {
    if is_system_schema(schema) {
        diags.error(pos, path, format!("schema '{schema}' holds PostgreSQL's catalogs, which are not personal data (a separate catalog allowlist governs what restricted roles read there)"));
        return false;
    }
    if !is_pattern(schema) {
        inv.schemas.insert(schema.to_owned());
    }
    true
}

/// Reports an unknown category; true when the category is known.
pub(crate) fn check_category(
    cat: &str,
    known: &BTreeSet<String>,
    pos: &Pos,
    path: &str,
    diags: &mut Diagnostics,
) -> bool {
    if known.contains(cat) {
        return true;
    }
    diags.unknown(
        pos,
        path,
        format!("unknown category '{cat}'"),
        cat,
        known.iter().map(String::as_str),
    );
    false
}

/// The class, or why a removed one no longer exists.
pub(crate) fn class(c: ClassSpec) -> Result<StatementClass, &'static str> {
    match c {
        ClassSpec::Read => Ok(StatementClass::Read),
        ClassSpec::Write => Ok(StatementClass::Write),
        ClassSpec::Copy => Ok(StatementClass::Copy),
        ClassSpec::Utility => Ok(StatementClass::Utility),
        ClassSpec::Ddl => Err("statement class 'ddl' was removed: restricted roles can never run DDL, because pgvakt cannot analyse what it does with protected data (CREATE TABLE ... AS, CREATE VIEW, ALTER ...); run DDL as an unrestricted role and delete 'ddl' here"),
    }
}

/// The capability, or why a removed one no longer exists.
pub(crate) fn capability(c: CapabilitySpec) -> Result<Capability, &'static str> {
    match c {
        CapabilitySpec::TempObjects => Ok(Capability::TempObjects),
        CapabilitySpec::Notify => Ok(Capability::Notify),
        CapabilitySpec::StatisticsViews => Ok(Capability::StatisticsViews),
        CapabilitySpec::ServerFiles => Ok(Capability::ServerFiles),
        CapabilitySpec::ProceduralCode => Err("capability 'procedural_code' was removed: restricted roles can never run DO blocks or CREATE FUNCTION/PROCEDURE, because pgvakt cannot analyse procedural code; run it as an unrestricted role and delete 'procedural_code' here"),
        CapabilitySpec::SqlPrepare => Err("capability 'sql_prepare' was removed: PREPARE, EXECUTE and DECLARE are always allowed and analysed like the statement they wrap, so it changed nothing; delete it"),
    }
}
