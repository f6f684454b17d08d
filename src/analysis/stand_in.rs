//! Masked stand-ins for protected tables enter the statement as placeholder names and are put
//! in place after the rendering check, as text that was itself checked once to read back the
//! same. The placeholders carry a per-process random nonce, so client text cannot name one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use rand::Rng;

use super::parse_query;

static NONCE: LazyLock<String> =
    LazyLock::new(|| format!("{:032x}", rand::thread_rng().gen::<u128>()));
static NEXT: AtomicU64 = AtomicU64::new(0);

/// Checked stand-ins: the generated text → its rendering. Bounded; past the bound it starts
/// over (texts are checked again, nothing else changes).
static CHECKED: LazyLock<Mutex<HashMap<String, Arc<str>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));
const CHECKED_MAX: usize = 10_000;

/// A stand-in's checked rendering reading `rel` without its inheritance children: the
/// generated SELECT ends in `FROM "schema"."name"`, or (with row rules) reads it as
/// `FROM "schema"."name" AS "pgvakt_row" WHERE ...`; that FROM becomes `FROM ONLY ...`
/// (sqlparser has no ONLY, so the check ran without it). Sub-queries of the row rules read
/// their tables with their children, as any reference to a subject does.
pub fn with_only(checked: &str, schema: &str, name: &str) -> Result<Arc<str>, String> {
    let from = format!(" FROM {}.{}", super::quote(schema), super::quote(name));
    let only = format!(" FROM ONLY {}.{}", super::quote(schema), super::quote(name));
    if let Some(head) = checked.strip_suffix(&from) {
        return Ok(format!("{head}{only}").into());
    }
    let aliased = format!(
        "{from} AS {} WHERE ",
        super::quote(super::row_rules::ROW_ALIAS)
    );
    let at = checked
        .find(&aliased)
        .ok_or("the stand-in does not read its relation where expected")?;
    Ok(format!("{}{only}{}", &checked[..at], &checked[at + from.len()..]).into())
}

/// Whether an identifier is one of this process's placeholders.
pub fn is_placeholder(i: &sqlparser::ast::Ident) -> bool {
    i.quote_style == Some('"')
        && i.value
            .strip_prefix("pgvakt_stand_in_")
            .and_then(|r| r.strip_prefix(NONCE.as_str()))
            .is_some_and(|r| r.starts_with('_'))
}

/// Whether a text still names one of this process's placeholders anywhere.
pub fn mentions_placeholder(text: &str) -> bool {
    text.contains(&format!("pgvakt_stand_in_{}_", *NONCE))
}

/// A fresh placeholder, as the quoted identifier the rendering will contain.
pub fn placeholder() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("\"pgvakt_stand_in_{}_{n}\"", *NONCE)
}

/// The rendering of a generated stand-in query, checked to read back the same.
pub fn check(sql: &str) -> Result<Arc<str>, String> {
    let mut cache = match CHECKED.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some(r) = cache.get(sql) {
        return Ok(r.clone());
    }
    let rendered = parse_query(sql).map_err(|e| e.to_string())?.to_string();
    let again = parse_query(&rendered)
        .map_err(|e| e.to_string())?
        .to_string();
    if again != rendered {
        return Err("the stand-in does not read back the same".into());
    }
    // It is put in place of one token: PostgreSQL must read it as the same tokens.
    super::authority::tokens_agree(&rendered)?;
    if cache.len() >= CHECKED_MAX {
        cache.clear();
    }
    let r: Arc<str> = rendered.into();
    cache.insert(sql.to_owned(), r.clone());
    Ok(r)
}

/// The rendering of a generated mask expression, checked like a stand-in; it is put in
/// place in parentheses.
pub fn check_expr(sql: &str) -> Result<Arc<str>, String> {
    let key = format!("expr:{sql}");
    let mut cache = match CHECKED.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some(r) = cache.get(&key) {
        return Ok(r.clone());
    }
    let rendered = super::parse_expr(sql)
        .map_err(|e| e.to_string())?
        .to_string();
    let again = super::parse_expr(&rendered)
        .map_err(|e| e.to_string())?
        .to_string();
    if again != rendered {
        return Err("the mask expression does not read back the same".into());
    }
    super::authority::tokens_agree(&rendered)?;
    if cache.len() >= CHECKED_MAX {
        cache.clear();
    }
    let r: Arc<str> = rendered.into();
    cache.insert(key, r.clone());
    Ok(r)
}

/// `sql` with each placeholder replaced by its stand-in; every placeholder must occur exactly
/// once (anything else means the rendering is not what was analysed). One pass over the text,
/// however many stand-ins there are.
pub fn put_in_place(sql: &str, stand_ins: &[(String, Arc<str>)]) -> Result<String, String> {
    let by_name: HashMap<&str, &Arc<str>> =
        stand_ins.iter().map(|(p, t)| (p.as_str(), t)).collect();
    let prefix = format!("\"pgvakt_stand_in_{}_", *NONCE);
    let mut out = String::with_capacity(
        sql.len() + stand_ins.iter().map(|(_, t)| t.len() + 2).sum::<usize>(),
    );
    let mut used = std::collections::HashSet::new();
    let mut rest = sql;
    while let Some(at) = rest.find(&prefix) {
        let tail = &rest[at + prefix.len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        let end = at + prefix.len() + digits + 1;
        let placeholder = rest
            .get(at..end)
            .ok_or("a stand-in placeholder is cut off")?;
        let text = by_name
            .get(placeholder)
            .ok_or("an unknown stand-in placeholder")?;
        if !used.insert(placeholder) {
            return Err("a stand-in placeholder occurs twice".into());
        }
        out.push_str(&rest[..at]);
        out.push('(');
        out.push_str(text);
        out.push(')');
        rest = &rest[end..];
    }
    out.push_str(rest);
    if used.len() != stand_ins.len() {
        return Err("a stand-in placeholder does not occur".into());
    }
    Ok(out)
}
