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
/// once (anything else means the rendering is not what was analysed).
pub fn put_in_place(sql: &str, stand_ins: &[(String, Arc<str>)]) -> Result<String, String> {
    let mut out = sql.to_owned();
    for (placeholder, text) in stand_ins {
        if out.matches(placeholder.as_str()).count() != 1 {
            return Err("a stand-in placeholder does not occur exactly once".into());
        }
        out = out.replacen(placeholder.as_str(), &format!("({text})"), 1);
    }
    Ok(out)
}
