//! The YAML file shapes and reading them with locations.
//!
//! Every shape denies unknown fields. Names that refer to other parts of the policy are
//! `Spanned` so validation can point at them. A file that does not match these shapes yields one
//! problem (serde stops there); the other files are still read and validated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_saphyr::{DuplicateKeyPolicy, Spanned};

use super::diag::{Diagnostics, Pos};

/// Policy files are small; a larger one is a mistake or an attack on the loader.
const MAX_FILE_BYTES: usize = 4 * 1024 * 1024;

pub type Name = Spanned<String>;

/// One policy file. All sections are optional so that a policy can be split across files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Schema for unqualified table names in this file. Default: `public`.
    #[serde(default)]
    pub schema: Option<Name>,
    /// Role for users without a valid grant. Must be set in exactly one file.
    #[serde(default)]
    pub default_role: Option<Name>,
    /// Where the pseudonym key comes from (never the key itself).
    #[serde(default)]
    pub pseudonym: Option<Spanned<PseudonymSource>>,
    /// What relations the inventory does not list are. At most one file may set it.
    /// Default: `personal` (category `unclassified`; privacy by default).
    #[serde(default)]
    pub unlisted_relations: Option<Spanned<UnlistedSpec>>,
    /// Extra inventory categories beyond the built-in ones: name → description.
    #[serde(default)]
    pub categories: HashMap<Name, String>,
    /// Declared purposes of processing (GDPR Art. 5(1)(b)): name → description and the legal
    /// bases it may rest on. Roles name the purposes they process for.
    #[serde(default)]
    pub purposes: HashMap<Name, Spanned<PurposeSpec>>,
    #[serde(default)]
    pub inventory: Option<InventorySpec>,
    /// Named mask methods: parameterised built-ins or custom SQL templates.
    #[serde(default)]
    pub masks: HashMap<Name, Spanned<MaskSpec>>,
    #[serde(default)]
    pub roles: HashMap<Name, Spanned<RoleSpec>>,
    #[serde(default)]
    pub grants: Vec<Spanned<GrantSpec>>,
}

/// Every top-level key [`PolicyFile`] accepts; the JSON Schema test keeps them in sync.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "schema",
    "default_role",
    "pseudonym",
    "unlisted_relations",
    "categories",
    "purposes",
    "inventory",
    "masks",
    "roles",
    "grants",
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PseudonymSource {
    /// Environment variable holding the key. Default: `PGVAKT_PSEUDONYM_KEY`.
    #[serde(default)]
    pub key_env: Option<String>,
    /// File holding the key (trailing newline ignored); used when the variable is unset.
    #[serde(default)]
    pub key_file: Option<String>,
}

/// `unlisted_relations`: how relations no `inventory.tables` entry names are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnlistedSpec {
    /// Personal data of category `unclassified` (the default).
    Personal,
    /// Not personal data: every role reads them unmasked and reads are not audited.
    NotPersonal,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventorySpec {
    /// Column patterns across tables: `table.column` or `schema.table.column` → category.
    #[serde(default)]
    pub columns: HashMap<Name, Name>,
    /// Tables (exact or pattern, optionally schema-qualified).
    #[serde(default)]
    pub tables: HashMap<Name, Spanned<TableSpec>>,
    /// Where consents live; row rules `consent: true` read it. At most one in all files.
    #[serde(default)]
    pub consents: Option<Spanned<ConsentsSpec>>,
    /// Where Art. 18 restrictions live: a table or a flag column. At most one in all files.
    #[serde(default)]
    pub restrictions: Option<Spanned<RestrictionsSpec>>,
}

/// `purposes.<name>`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurposeSpec {
    pub description: Option<String>,
    /// GDPR Art. 6(1) bases processing for this purpose may rest on (at least one).
    pub legal_basis: Vec<Name>,
}

/// `inventory.consents`: the table holding one row per (subject, purpose) consent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentsSpec {
    pub table: Name,
    /// Column holding the subject's key (the table must be in the inventory with this key).
    pub subject_key: Name,
    /// Column holding the purpose name.
    pub purpose: Name,
    /// Column of the withdrawal time: the consent is active while it is NULL or in the future.
    #[serde(default)]
    pub withdrawn: Option<Name>,
    /// Column of the expiry time: active while NULL or in the future.
    #[serde(default)]
    pub expires: Option<Name>,
}

/// `inventory.restrictions`: either `table` + `subject_key` (+ `lifted`), or `column`
/// (`table.flag`, a boolean column of the subject table).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestrictionsSpec {
    #[serde(default)]
    pub table: Option<Name>,
    #[serde(default)]
    pub subject_key: Option<Name>,
    /// Column of the time the restriction was lifted: in force while NULL or in the future.
    #[serde(default)]
    pub lifted: Option<Name>,
    #[serde(default)]
    pub column: Option<Name>,
}

/// `inventory.tables.<t>.retention`: rows whose `column` is older than `keep` are past
/// retention (a NULL column is not).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionSpec {
    pub column: Name,
    /// A period: a positive number and a unit, `d`, `w`, `m` or `y` (e.g. `3y`, `90d`).
    pub keep: Name,
    /// What `pgvakt retention run` does to rows past the period: `anonymise` (the table's
    /// `erase` declaration, the default) or `delete`.
    #[serde(default)]
    pub action: Option<Name>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// Column identifying the data subject of a row.
    #[serde(default)]
    pub subject_key: Option<Name>,
    /// The subject type `subject_key` refers to: the inventory table that holds these
    /// subjects (`activities.contact_id` refers to `contacts`), so a person has one pseudonym
    /// across tables. Default: this table.
    #[serde(default)]
    pub subject: Option<Name>,
    /// Whether the table holds personal data. Default: true.
    #[serde(default)]
    pub personal: Option<bool>,
    pub description: Option<String>,
    /// Column (exact or pattern) → category.
    #[serde(default)]
    pub columns: HashMap<Name, Name>,
    /// How long rows stay in daily use; roles with `rows.retention: true` do not see rows
    /// (and subjects) past it.
    #[serde(default)]
    pub retention: Option<Spanned<RetentionSpec>>,
    /// How `pgvakt subject erase` and `retention run` anonymise this table's rows of a subject.
    #[serde(default)]
    pub erase: Option<Spanned<EraseSpec>>,
}

/// `inventory.tables.<t>.erase`: per column `null`, `redact`, `pseudonym` or `keep`, and what
/// becomes of the rows (`keep`, anonymised in place, or `delete`). Columns not named get the
/// default of their category (`keep` for `none`, `redact` for every personal category).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EraseSpec {
    #[serde(default)]
    pub columns: HashMap<Name, Name>,
    #[serde(default)]
    pub rows: Option<Name>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskSpec {
    /// A built-in method to parameterise (`partial` takes `keep_first`/`keep_last`).
    #[serde(default)]
    pub method: Option<Name>,
    /// Characters kept at the start (partial). Default: 1.
    #[serde(default)]
    pub keep_first: Option<u32>,
    /// Characters kept at the end (partial). Default: 0.
    #[serde(default)]
    pub keep_last: Option<u32>,
    /// Custom SQL expression template with the `{col}` placeholder.
    #[serde(default)]
    pub sql: Option<Spanned<String>>,
    pub description: Option<String>,
}

/// What a rule does with a column: `allow`, `block` or `{mask: <method>}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionSpec {
    Allow,
    Block,
    Mask(Name),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    pub description: Option<String>,
    /// Why the role processes personal data, e.g. `customer service`; audit records of the
    /// role's sessions carry it. Needs `legal_basis`.
    #[serde(default)]
    pub purpose: Option<Spanned<String>>,
    /// GDPR Art. 6(1) basis of that processing: `consent`, `contract`, `legal_obligation`,
    /// `vital_interests`, `public_task` or `legitimate_interests`. Needs `purpose`.
    #[serde(default)]
    pub legal_basis: Option<Spanned<String>>,
    /// No restriction at all (statements pass untouched). Default: false.
    #[serde(default)]
    pub unrestricted: bool,
    /// What happens to personal columns no rule opens: `{mask: ...}` or `block`.
    /// Default: `{mask: redact}`.
    #[serde(default)]
    pub default: Option<Spanned<ActionSpec>>,
    /// Category → action.
    #[serde(default)]
    pub categories: HashMap<Name, Spanned<ActionSpec>>,
    /// Column (`table.column`, `schema.table.column`, patterns allowed) → action.
    #[serde(default)]
    pub columns: HashMap<Name, Spanned<ActionSpec>>,
    /// Allowed statement classes. Default: read, write, copy, utility (all of them).
    #[serde(default)]
    pub statements: Option<Vec<Spanned<ClassSpec>>>,
    /// Constructs otherwise refused: `temp_objects`, `notify`, `statistics_views`,
    /// `server_files`. Default: none.
    #[serde(default)]
    pub capabilities: Vec<Spanned<CapabilitySpec>>,
    /// What the role may write into columns it cannot read as stored, separately from what it
    /// reads. Default: `keep` for every masked or blocked column.
    #[serde(default)]
    pub writes: Option<WritesSpec>,
    /// Names from `purposes:` the role processes for; each must allow the role's legal_basis.
    #[serde(default)]
    pub purposes: Option<Vec<Name>>,
    /// Which rows (people) the role sees: "as if the tables held only these rows".
    #[serde(default)]
    pub rows: Option<Spanned<RowsSpec>>,
    /// Whether the role sees subjects whose processing is restricted (Art. 18). Default:
    /// false (privacy by default) when the inventory declares restrictions.
    #[serde(default)]
    pub see_restricted: Option<Spanned<bool>>,
    /// Whether the client's conditions on row-ruled tables are repeated inside their stand-ins
    /// so PostgreSQL can use indexes (faster; how long a statement takes then grows with the
    /// hidden rows its conditions select). Default: false.
    #[serde(default)]
    pub row_pushdown: Option<Spanned<bool>>,
    /// Personal data a user may read per hour before an alarm or a block.
    #[serde(default)]
    pub limits: Option<Spanned<super::limits::LimitsSpec>>,
}

/// `roles.<r>.rows`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowsSpec {
    /// Only subjects with an active consent for one of the role's purposes. Default: false.
    #[serde(default)]
    pub consent: bool,
    /// Hide rows and subjects past their table's retention. Default: false.
    #[serde(default)]
    pub retention: bool,
    /// Table → SQL predicate over the table's columns (a validated expression).
    #[serde(default, rename = "where")]
    pub where_: HashMap<Name, Spanned<String>>,
}

/// Write rules per category and column (`table.column`, patterns allowed); columns win.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WritesSpec {
    #[serde(default)]
    pub categories: HashMap<Name, Spanned<WriteSpec>>,
    #[serde(default)]
    pub columns: HashMap<Name, Spanned<WriteSpec>>,
}

/// `allow`: any value (a write-only field when reads are masked or blocked); `keep`: NULL or
/// DEFAULT into a new row, the masked value written back leaves the stored one, anything else
/// is refused; `refuse`: no write at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteSpec {
    Allow,
    Keep,
    Refuse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassSpec {
    Read,
    Write,
    Copy,
    Utility,
    /// Removed: read only so that validation can say why (`validate::class`).
    Ddl,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CapabilitySpec {
    TempObjects,
    Notify,
    StatisticsViews,
    ServerFiles,
    /// Removed: read only so that validation can say why (`validate::capability`).
    ProceduralCode,
    /// Removed: read only so that validation can say why (`validate::capability`).
    SqlPrepare,
}

/// A user or PostgreSQL group mapped to a policy role, optionally for a period.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    #[serde(default)]
    pub user: Option<Name>,
    #[serde(default)]
    pub group: Option<Name>,
    pub role: Name,
    /// RFC 3339 timestamp or date (start of day, UTC). Default: always.
    #[serde(default)]
    pub valid_from: Option<Name>,
    /// RFC 3339 timestamp (exclusive) or date (inclusive: to the end of that day, UTC).
    #[serde(default)]
    pub valid_until: Option<Name>,
    /// Why the grant exists (ticket, approval); for reviewers only.
    pub reason: Option<String>,
}

/// A read policy file: its name as given, its text (for the version hash) and its content.
#[derive(Debug)]
pub struct SourceFile {
    pub path: String,
    pub text: String,
    pub doc: Option<PolicyFile>,
}

/// Expands directories (their `*.yaml`/`*.yml` files, sorted, not recursive) and reads and
/// parses every file; problems go to `diags`.
pub fn read_all(paths: &[PathBuf], diags: &mut Diagnostics) -> Vec<SourceFile> {
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            match std::fs::read_dir(p) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok().map(|e| e.path()))
                        .filter(|f| {
                            f.is_file()
                                && matches!(
                                    f.extension().and_then(|e| e.to_str()),
                                    Some("yaml" | "yml")
                                )
                        })
                        .collect();
                    found.sort();
                    files.extend(found);
                }
                Err(e) => diags.error(
                    &Pos::file_only(&display(p)),
                    "",
                    format!("cannot read directory: {e}"),
                ),
            }
        } else {
            files.push(p.clone());
        }
    }
    if files.is_empty() {
        diags.error(&Pos::file_only("<policy>"), "", "no policy files given");
    }
    files
        .iter()
        .filter_map(|f| {
            let name = display(f);
            match std::fs::read_to_string(f) {
                Ok(text) => Some(parse(&name, text, diags)),
                Err(e) => {
                    diags.error(&Pos::file_only(&name), "", format!("cannot read file: {e}"));
                    None
                }
            }
        })
        .collect()
}

fn display(p: &Path) -> String {
    p.display().to_string()
}

/// Parses one file's text.
pub fn parse(name: &str, text: String, diags: &mut Diagnostics) -> SourceFile {
    if text.len() > MAX_FILE_BYTES {
        diags.error(
            &Pos::file_only(name),
            "",
            format!("file is larger than {MAX_FILE_BYTES} bytes"),
        );
        return SourceFile {
            path: name.into(),
            text,
            doc: None,
        };
    }
    // Budgets far above any real policy, far below what would hurt the proxy.
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_events: 500_000,
            max_aliases: 10_000,
            max_anchors: 10_000,
            max_depth: 64,
        },
        duplicate_keys: DuplicateKeyPolicy::Error,
    };
    let doc = match serde_saphyr::from_str_with_options::<Option<PolicyFile>>(&text, options) {
        Ok(doc) => Some(doc.unwrap_or_else(empty_file)),
        Err(e) => {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            let pos = Pos {
                file: name.into(),
                line,
                column,
            };
            let message = first_line(&super::diag::yaml_message(&e, false));
            let path = path_at(&text, line);
            let suggestion = unknown_field_suggestion(&message);
            diags.items.push(super::diag::Diagnostic {
                severity: super::diag::Severity::Error,
                file: pos.file,
                line,
                column,
                path,
                message,
                suggestion,
            });
            None
        }
    };
    SourceFile {
        path: name.into(),
        text,
        doc,
    }
}

fn empty_file() -> PolicyFile {
    PolicyFile {
        schema: None,
        default_role: None,
        pseudonym: None,
        unlisted_relations: None,
        categories: HashMap::new(),
        purposes: HashMap::new(),
        inventory: None,
        masks: HashMap::new(),
        roles: HashMap::new(),
        grants: Vec::new(),
    }
}

/// serde's message without serde-saphyr's trailing location text.
fn first_line(msg: &str) -> String {
    let line = msg.lines().next().unwrap_or_default();
    match line.find(" at line ") {
        Some(i) => line[..i].to_owned(),
        None => line.to_owned(),
    }
}

/// serde says "unknown field `x`, expected one of `a`, `b`": turn that into a suggestion.
fn unknown_field_suggestion(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let (_, expected) = rest.split_once("expected ")?;
    let expected = expected.strip_prefix("one of ").unwrap_or(expected);
    let known: Vec<&str> = expected.split(", ").map(|k| k.trim_matches('`')).collect();
    super::diag::suggest(field, known)
}

/// The dotted key path of the node on `line`, worked out from block indentation. Serde errors
/// carry a position but no path; policy files are block-style YAML, so indentation suffices.
pub fn path_at(text: &str, line: u64) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let Some(idx) = usize::try_from(line).ok().and_then(|l| l.checked_sub(1)) else {
        return String::new();
    };
    if idx >= lines.len() {
        return String::new();
    }
    let mut parts: Vec<String> = Vec::new();
    let mut limit = usize::MAX;
    for l in lines[..=idx].iter().rev() {
        let trimmed = l.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = l.len() - trimmed.len();
        if indent >= limit {
            continue;
        }
        let body = trimmed.strip_prefix("- ").unwrap_or(trimmed);
        if let Some((key, _)) = body.split_once(':') {
            parts.push(key.trim().trim_matches('"').trim_matches('\'').to_owned());
        }
        limit = indent;
        if indent == 0 {
            break;
        }
    }
    parts.reverse();
    parts.join(".")
}
