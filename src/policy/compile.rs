//! Validated sources → [`PolicySet`]: masks bound to the pseudonym key, roles, grants, version.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::diag::{Diagnostics, PolicyErrors, Pos};
use super::masks::{MaskKind, PseudonymKey};
use super::model::{ColumnAction, MaskMethod, RolePolicy, RuleAction};
use super::source::{read_all, SourceFile};
use super::validate::{validate, ActionRef, Checked, CheckedRole};
use super::PolicySet;

/// Shortest accepted pseudonym key: shorter keys make pseudonyms guessable by brute force.
const MIN_KEY_BYTES: usize = 16;

/// Where environment variables come from; tests pass a map instead of the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads, validates and compiles policy files (directories expand to their YAML files).
pub fn load(paths: &[PathBuf]) -> Result<PolicySet, PolicyErrors> {
    load_with_env(paths, &|k| std::env::var(k).ok())
}

pub fn load_with_env(paths: &[PathBuf], env: EnvLookup<'_>) -> Result<PolicySet, PolicyErrors> {
    let mut diags = Diagnostics::default();
    let files = read_all(paths, &mut diags);
    compile_sources(&files, env, diags)
}

/// Validates and compiles already-read files; `diags` may hold problems from reading.
pub fn compile_sources(
    files: &[SourceFile],
    env: EnvLookup<'_>,
    mut diags: Diagnostics,
) -> Result<PolicySet, PolicyErrors> {
    let checked = validate(files, &mut diags);
    let key = pseudonym_key(&checked, files, env, &mut diags);
    if diags.has_errors() {
        return Err(PolicyErrors {
            diagnostics: diags.sorted(),
        });
    }
    Ok(build(files, checked, key, diags.sorted()))
}

fn pseudonym_key(
    c: &Checked,
    files: &[SourceFile],
    env: EnvLookup<'_>,
    diags: &mut Diagnostics,
) -> Option<PseudonymKey> {
    let pos = c
        .pseudonym_pos
        .clone()
        .unwrap_or_else(|| Pos::file_only(files.first().map_or("<policy>", |f| f.path.as_str())));
    let raw = match env(&c.key_env).filter(|v| !v.is_empty()) {
        Some(v) => Some(v.into_bytes()),
        None => {
            match &c.key_file {
                Some(f) => match std::fs::read(f) {
                    Ok(mut bytes) => {
                        while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                            bytes.pop();
                        }
                        Some(bytes)
                    }
                    Err(e) => {
                        diags.warning(&pos, "pseudonym.key_file", format!("cannot read key file '{f}': {e}; method 'pseudonym' is unavailable"));
                        None
                    }
                },
                None => None,
            }
        }
    };
    match raw {
        Some(k) if k.len() < MIN_KEY_BYTES => {
            diags.error(
                &pos,
                "pseudonym",
                format!("pseudonym key is shorter than {MIN_KEY_BYTES} bytes"),
            );
            None
        }
        Some(k) => Some(PseudonymKey::new(&k)),
        None => {
            let uses = c.roles.values().any(|r| {
                let m = |a: &ActionRef| matches!(a, ActionRef::Mask(n) if matches!(c.masks.get(n), Some((MaskKind::Pseudonym(_), _))));
                m(&r.default.0) || r.categories.values().any(|(a, _)| m(a)) || r.columns.iter().any(|(_, (a, _))| m(a))
            });
            if uses {
                diags.warning(&pos, "pseudonym", format!("no pseudonym key (${} unset and no readable key_file): statements needing method 'pseudonym' will be refused", c.key_env));
            }
            None
        }
    }
}

/// Short hash over every file's content (in load order) and the key's fingerprint: a key change
/// must change the version because rendered masks (and analysis caches) depend on it.
fn version(files: &[SourceFile], key: Option<&PseudonymKey>) -> String {
    let mut h = Sha256::new();
    for f in files {
        let text = f.text.replace("\r\n", "\n");
        h.update((text.len() as u64).to_be_bytes());
        h.update(text.as_bytes());
    }
    h.update(key.map_or("no key", |k| k.fingerprint()).as_bytes());
    hex::encode(h.finalize())[..12].to_owned()
}

fn build(
    files: &[SourceFile],
    c: Checked,
    key: Option<PseudonymKey>,
    warnings: Diagnostics,
) -> PolicySet {
    let version = version(files, key.as_ref());
    let masks = bind_masks(&c.masks, key.as_ref());
    let inventory = Arc::new(c.inventory);
    let roles: BTreeMap<String, Arc<RolePolicy>> = c
        .roles
        .values()
        .map(|r| (r.name.clone(), Arc::new(role_policy(r, &masks, &inventory))))
        .collect();
    let default_role = roles
        .get(&c.default_role)
        .cloned()
        .unwrap_or_else(|| Arc::new(deny_all(&inventory)));
    PolicySet {
        purposes: c.purposes,
        read_limits: c.read_limits,
        version,
        roles,
        default_role,
        grants: c.grants,
        inventory,
        masks,
        warnings,
        files: files.iter().map(|f| f.path.clone()).collect(),
    }
}

/// The declared masks as methods; every `pseudonym` method gets the loaded key (or none), so a
/// reload with another key changes what the masks render.
fn bind_masks(
    declared: &BTreeMap<String, (MaskKind, Option<String>)>,
    key: Option<&PseudonymKey>,
) -> BTreeMap<String, Arc<MaskMethod>> {
    declared
        .iter()
        .map(|(name, (kind, template))| {
            let m = match (kind, template) {
                (MaskKind::Pseudonym(_), _) => {
                    MaskMethod::named(name, MaskKind::Pseudonym(key.cloned()))
                }
                (_, Some(t)) => MaskMethod::custom(name, t),
                (k, None) => MaskMethod::named(name, k.clone()),
            };
            (name.clone(), Arc::new(m))
        })
        .collect()
}

fn to_action(masks: &BTreeMap<String, Arc<MaskMethod>>, a: &ActionRef) -> ColumnAction {
    match a {
        ActionRef::Allow => ColumnAction::Allow,
        ActionRef::Block => ColumnAction::Block,
        // Validation guarantees the name; `null` is the fail-closed fallback regardless.
        ActionRef::Mask(n) => ColumnAction::Mask(
            masks
                .get(n)
                .cloned()
                .unwrap_or_else(|| Arc::new(MaskMethod::builtin(MaskKind::Null))),
        ),
    }
}

/// A validated role as the enforcer reads it: mask names resolved to methods, and every
/// decision paired with the rule it comes from, for `explain` and refusals.
fn role_policy(
    r: &CheckedRole,
    masks: &BTreeMap<String, Arc<MaskMethod>>,
    inventory: &Arc<super::inventory::Inventory>,
) -> RolePolicy {
    let rule = |(a, origin): &(ActionRef, String)| RuleAction {
        action: to_action(masks, a),
        rule: origin.clone(),
    };
    let mut columns = super::inventory::ColumnRules::default();
    for (k, a) in &r.columns {
        columns.insert(k.clone(), rule(a));
    }
    RolePolicy {
        name: r.name.clone(),
        unrestricted: r.unrestricted,
        purpose: r.purpose.clone(),
        inventory: Arc::clone(inventory),
        columns,
        categories: r
            .categories
            .iter()
            .map(|(k, a)| (k.clone(), rule(a)))
            .collect(),
        default_action: to_action(masks, &r.default.0),
        default_rule: r.default.1.clone(),
        classes: r.classes.clone(),
        capabilities: r.capabilities.clone(),
        write_columns: {
            let mut w = super::inventory::ColumnRules::default();
            for (k, (a, origin)) in &r.write_columns {
                w.insert(k.clone(), write_rule(*a, origin));
            }
            w
        },
        write_categories: r
            .write_categories
            .iter()
            .map(|(k, (a, origin))| (k.clone(), write_rule(*a, origin)))
            .collect(),
        purposes: r.purposes.clone(),
        rows: r.rows.clone(),
    }
}

/// A role that blocks every personal column; only reachable if validation were bypassed.
pub(crate) fn deny_all(inventory: &Arc<super::inventory::Inventory>) -> RolePolicy {
    RolePolicy {
        name: "deny_all".into(),
        unrestricted: false,
        purpose: None,
        inventory: Arc::clone(inventory),
        columns: Default::default(),
        categories: BTreeMap::new(),
        default_action: ColumnAction::Block,
        default_rule: "built-in deny_all".into(),
        classes: Vec::new(),
        capabilities: Vec::new(),
        write_columns: Default::default(),
        write_categories: BTreeMap::new(),
        purposes: Vec::new(),
        // Restricted subjects stay hidden (see_restricted false); no consent rule.
        rows: Default::default(),
    }
}

fn write_rule(action: super::model::WriteAction, origin: &str) -> super::model::WriteDecision {
    super::model::WriteDecision {
        action,
        rule: origin.to_owned(),
    }
}
