//! The record of processing activities (GDPR Art. 30) as the policy states it: categories of
//! data subjects and of personal data, purposes and legal bases, recipients (policy roles and
//! who holds them), retention and erasure, and the technical measures pgvakt applies. Generated
//! from the compiled policy, so it cannot drift from what is enforced.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use super::grants::Grantee;
use super::inventory::NONE;
use super::model::ColumnAction;
use super::{PolicySet, RolePolicy};

/// One section: a title, a sentence, and a table.
struct Section {
    title: &'static str,
    intro: String,
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

fn action(a: &ColumnAction) -> String {
    match a {
        ColumnAction::Allow => "sees".to_owned(),
        ColumnAction::Mask(m) => format!("masked ({})", m.name),
        ColumnAction::Block => "blocked".to_owned(),
    }
}

/// Tables that identify data subjects, so a reader of the record sees whose data the policy
/// covers and which column names them.
fn subject_rows(p: &PolicySet) -> Vec<Vec<String>> {
    p.inventory
        .tables
        .iter()
        .filter(|t| t.subject_key.is_some())
        .map(|t| {
            let ty = t.subject.as_ref().map_or_else(
                || format!("{}.{}", t.schema, t.table),
                |s| format!("{}.{}", s.0, s.1),
            );
            vec![
                format!("{}.{}", t.schema, t.table),
                t.subject_key.clone().unwrap_or_default(),
                ty,
            ]
        })
        .collect()
}

/// Classified columns by category; sorted, so the record reads the same on every run, and
/// shared with the recipients section, which states each role's access per category.
fn columns_by_category(p: &PolicySet) -> BTreeMap<String, BTreeSet<String>> {
    let mut categories: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for t in &p.inventory.tables {
        for (c, cls) in &t.columns {
            if cls.category != NONE {
                categories
                    .entry(cls.category.clone())
                    .or_default()
                    .insert(format!("{}.{}.{c}", t.schema, t.table));
            }
        }
    }
    categories
}

fn purpose_rows(p: &PolicySet) -> Vec<Vec<String>> {
    p.purposes
        .values()
        .map(|x| {
            vec![
                x.name.clone(),
                x.description.clone().unwrap_or_default(),
                x.legal_bases.join(", "),
            ]
        })
        .collect()
}

/// What a role receives, category by category, so the record states access in the same terms
/// as the categories section rather than as column lists.
fn role_access(r: &RolePolicy, categories: &BTreeMap<String, BTreeSet<String>>) -> String {
    if r.unrestricted {
        return "everything, unrestricted".to_owned();
    }
    let mut parts: Vec<String> = categories
        .keys()
        .map(|c| {
            let a = r.categories.get(c).map_or(&r.default_action, |x| &x.action);
            format!("{c}: {}", action(a))
        })
        .collect();
    parts.push(format!("otherwise: {}", action(&r.default_action)));
    parts.join("; ")
}

/// Each policy role with its purpose, legal basis, access and the users and groups granted it:
/// Art. 30(1)(d) asks for recipients, and here a recipient is whoever holds a role.
fn recipient_rows(
    p: &PolicySet,
    categories: &BTreeMap<String, BTreeSet<String>>,
) -> Vec<Vec<String>> {
    let mut recipients = Vec::new();
    for (name, r) in &p.roles {
        let holders: Vec<String> = p
            .grants
            .iter()
            .filter(|g| &g.role == name)
            .map(|g| match &g.grantee {
                Grantee::User(u) => format!("user {u}"),
                Grantee::Group(g) => format!("members of {g}"),
            })
            .collect();
        let access = role_access(r, categories);
        let (purpose, basis) = r.purpose.clone().unwrap_or_default();
        let purpose = if r.purposes.is_empty() {
            purpose
        } else {
            format!("{purpose} ({})", r.purposes.join(", "))
        };
        recipients.push(vec![
            name.clone(),
            purpose,
            basis,
            access,
            holders.join(", "),
        ]);
    }
    recipients
}

fn retention_rows(p: &PolicySet) -> Vec<Vec<String>> {
    p.inventory
        .tables
        .iter()
        .filter_map(|t| {
            let r = t.retention.as_ref()?;
            Some(vec![
                format!("{}.{}", t.schema, t.table),
                format!("{} after {}", r.keep.interval(), r.column),
                if r.delete { "delete" } else { "anonymise" }.to_owned(),
            ])
        })
        .collect()
}

/// The measures pgvakt itself applies; fixed text, since they hold for every policy.
fn measure_rows() -> Vec<Vec<String>> {
    vec![
        vec!["Transport".into(), "TLS required for every client connection; TLS towards PostgreSQL when configured (verify-full).".into()],
        vec!["Access control".into(), "Per-role masking and blocking of personal columns, computed by PostgreSQL; statements pgvakt cannot analyse are refused for restricted roles.".into()],
        vec!["Accountability".into(), "Tamper-evident audit trail (HMAC chain) of every read and change of personal data, naming data subjects by keyed pseudonyms.".into()],
        vec!["Data-subject rights".into(), "pgvakt subject export (Art. 15, 20), pgvakt subject erase (Art. 17) and pgvakt retention run, following this inventory.".into()],
    ]
}

fn sections(p: &PolicySet) -> Vec<Section> {
    let categories = columns_by_category(p);
    let recipients = recipient_rows(p, &categories);
    vec![
        Section {
            title: "Categories of data subjects",
            intro: "Tables that identify data subjects, the key column and the subject type it refers to.".into(),
            header: vec!["table", "subject key", "subject type"],
            rows: subject_rows(p),
        },
        Section {
            title: "Categories of personal data",
            intro: "Every classified personal column; columns of listed personal tables that nothing classifies, and relations the inventory does not list, count as unclassified personal data.".into(),
            header: vec!["category", "columns"],
            rows: categories
                .iter()
                .map(|(c, cols)| vec![c.clone(), cols.iter().cloned().collect::<Vec<_>>().join(", ")])
                .collect(),
        },
        Section {
            title: "Purposes and legal bases",
            intro: "Declared purposes of processing and the GDPR Art. 6(1) bases they may rest on.".into(),
            header: vec!["purpose", "description", "legal bases"],
            rows: purpose_rows(p),
        },
        Section {
            title: "Recipients",
            intro: format!("Policy roles that receive personal data, what each receives, and who holds them. Users without a grant get role {}.", p.default_role.name),
            header: vec!["role", "purpose", "legal basis", "access", "granted to"],
            rows: recipients,
        },
        Section {
            title: "Retention",
            intro: "Periods after which pgvakt retention run anonymises or deletes rows.".into(),
            header: vec!["table", "period", "action"],
            rows: retention_rows(p),
        },
        Section {
            title: "Technical and organisational measures",
            intro: "Applied by pgvakt in front of the database.".into(),
            header: vec!["measure", "how"],
            rows: measure_rows(),
        },
    ]
}

fn md_cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The record as Markdown.
pub fn markdown(p: &PolicySet) -> String {
    let mut out = format!(
        "# Record of processing activities (GDPR Art. 30)\n\nGenerated from policy {} ({}).\n",
        p.version,
        p.files.join(", ")
    );
    for s in sections(p) {
        let _ = write!(out, "\n## {}\n\n{}\n\n", s.title, s.intro);
        let _ = writeln!(out, "| {} |", s.header.join(" | "));
        let _ = writeln!(out, "|{}", "---|".repeat(s.header.len()));
        for r in &s.rows {
            let cells: Vec<String> = r.iter().map(|c| md_cell(c)).collect();
            let _ = writeln!(out, "| {} |", cells.join(" | "));
        }
    }
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The record as a self-contained HTML page.
pub fn html(p: &PolicySet) -> String {
    let mut out = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Record of processing activities</title>\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #bbb;padding:.3em .6em;text-align:left;vertical-align:top}}th{{background:#eee}}</style></head><body>\
         <h1>Record of processing activities (GDPR Art. 30)</h1><p>Generated from policy {} ({}).</p>",
        esc(&p.version),
        esc(&p.files.join(", "))
    );
    for s in sections(p) {
        let _ = write!(
            out,
            "<h2>{}</h2><p>{}</p><table><tr>",
            esc(s.title),
            esc(&s.intro)
        );
        for h in &s.header {
            let _ = write!(out, "<th>{}</th>", esc(h));
        }
        out.push_str("</tr>");
        for r in &s.rows {
            out.push_str("<tr>");
            for c in r {
                let _ = write!(out, "<td>{}</td>", esc(c));
            }
            out.push_str("</tr>");
        }
        out.push_str("</table>");
    }
    out.push_str("</body></html>\n");
    out
}
