//! A strict checker for the JSON Schema subset `deploy/audit-record.schema.json` uses, so the
//! tests can validate every audit record they write against the published schema.
//!
//! Why not a JSON-Schema crate: the maintained validators (jsonschema, boon) bring a few dozen
//! crates (regex engines, URL and IDNA handling, HTTP for remote references) into a build
//! shared by several developers on two cores, for a schema that uses a dozen keywords. This
//! checker implements those keywords and refuses any other one, so the schema can never claim
//! a constraint that is not checked: `type`, `properties`, `required`, `additionalProperties`,
//! `items`, `enum`, `const`, `minimum`, `minLength`, `$ref` to `#/$defs/...`, `format:
//! date-time`, and `pattern` of the form `^[classes]{n}$` (hex digits, SQLSTATEs).
#![allow(dead_code)]

use serde_json::{Map, Value};

/// Keywords that only annotate.
const ANNOTATIONS: &[&str] = &["$schema", "$id", "title", "description", "$defs"];
const CHECKED: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "minLength",
    "$ref",
    "format",
    "pattern",
];

pub struct Schema {
    root: Value,
}

/// The published audit record schema.
pub fn audit_record_schema() -> Schema {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/audit-record.schema.json");
    let text = std::fs::read_to_string(&path).expect("deploy/audit-record.schema.json");
    Schema {
        root: serde_json::from_str(&text).expect("the schema is JSON"),
    }
}

impl Schema {
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// Every violation of `value`, as `path: problem`.
    pub fn errors(&self, value: &Value) -> Vec<String> {
        let mut out = Vec::new();
        self.check(&self.root, value, "$", &mut out);
        out
    }

    fn resolve<'a>(&'a self, r: &str) -> &'a Value {
        let name = r
            .strip_prefix("#/$defs/")
            .unwrap_or_else(|| panic!("checker: only #/$defs/ references, not {r}"));
        self.root["$defs"]
            .get(name)
            .unwrap_or_else(|| panic!("checker: no $defs/{name}"))
    }

    fn check(&self, schema: &Value, v: &Value, at: &str, out: &mut Vec<String>) {
        let Some(s) = schema.as_object() else {
            panic!("checker: schema at {at} is not an object");
        };
        for k in s.keys() {
            assert!(
                ANNOTATIONS.contains(&k.as_str()) || CHECKED.contains(&k.as_str()),
                "checker: keyword {k:?} at {at} is not supported, so it would not be checked"
            );
        }
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            self.check(self.resolve(r), v, at, out);
        }
        if let Some(t) = s.get("type").and_then(Value::as_str) {
            if !type_matches(t, v) {
                out.push(format!("{at}: expected {t}, got {v}"));
                return;
            }
        }
        if let Some(c) = s.get("const") {
            if c != v {
                out.push(format!("{at}: expected {c}, got {v}"));
            }
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array) {
            if !e.contains(v) {
                out.push(format!(
                    "{at}: {v} is not one of {}",
                    Value::from(e.clone())
                ));
            }
        }
        if let (Some(min), Some(n)) = (s.get("minimum").and_then(Value::as_i64), v.as_i64()) {
            if n < min {
                out.push(format!("{at}: {n} is below {min}"));
            }
        }
        if let Some(text) = v.as_str() {
            check_string(s, text, at, out);
        }
        if let Some(obj) = v.as_object() {
            self.check_object(s, obj, at, out);
        }
        if let (Some(items), Some(arr)) = (s.get("items"), v.as_array()) {
            for (i, item) in arr.iter().enumerate() {
                self.check(items, item, &format!("{at}[{i}]"), out);
            }
        }
    }

    fn check_object(
        &self,
        s: &Map<String, Value>,
        obj: &Map<String, Value>,
        at: &str,
        out: &mut Vec<String>,
    ) {
        let props = s.get("properties").and_then(Value::as_object);
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = r.as_str().expect("required names are strings");
            if !obj.contains_key(name) {
                out.push(format!("{at}: required field {name} is missing"));
            }
        }
        for (k, val) in obj {
            let path = format!("{at}.{k}");
            match (props.and_then(|p| p.get(k)), s.get("additionalProperties")) {
                (Some(sub), _) => self.check(sub, val, &path, out),
                (None, Some(Value::Bool(false))) => {
                    out.push(format!("{path}: field not in the schema"))
                }
                (None, Some(extra)) if extra.is_object() => self.check(extra, val, &path, out),
                (None, _) => {}
            }
        }
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("checker: unknown type {other}"),
    }
}

fn check_string(s: &Map<String, Value>, text: &str, at: &str, out: &mut Vec<String>) {
    if let Some(min) = s.get("minLength").and_then(Value::as_u64) {
        if (text.chars().count() as u64) < min {
            out.push(format!("{at}: shorter than {min}"));
        }
    }
    match s.get("format").and_then(Value::as_str) {
        None => {}
        Some("date-time") if pgvakt::policy::grants::parse_rfc3339(text).is_err() => {
            out.push(format!("{at}: {text:?} is not an RFC 3339 date-time"));
        }
        Some("date-time") => {}
        Some(other) => panic!("checker: format {other} is not supported"),
    }
    if let Some(p) = s.get("pattern").and_then(Value::as_str) {
        if !class_pattern_matches(p, text) {
            out.push(format!("{at}: {text:?} does not match {p}"));
        }
    }
}

/// `^[a-z0-9...]{n}$`: exactly `n` characters, each in one of the ranges or single characters
/// of the class. Other patterns are refused by the checker.
fn class_pattern_matches(p: &str, text: &str) -> bool {
    let unsupported = || panic!("checker: pattern {p} is not of the form ^[class]{{n}}$");
    let Some(rest) = p.strip_prefix("^[") else {
        unsupported()
    };
    let Some((class, rest)) = rest.split_once("]{") else {
        unsupported()
    };
    let Some(count) = rest.strip_suffix("}$") else {
        unsupported()
    };
    let Ok(count) = count.parse::<usize>() else {
        unsupported()
    };
    let class: Vec<char> = class.chars().collect();
    let mut ranges = Vec::new();
    let mut i = 0;
    while i < class.len() {
        if class.get(i + 1) == Some(&'-') && i + 2 < class.len() {
            ranges.push((class[i], class[i + 2]));
            i += 3;
        } else {
            ranges.push((class[i], class[i]));
            i += 1;
        }
    }
    text.chars().count() == count
        && text
            .chars()
            .all(|c| ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&c)))
}

/// Every complete line of every audit-*.jsonl file in `dir`, checked against the schema;
/// panics with the violations. Returns how many records were checked. A last line without
/// its newline (a write in progress) is left out.
pub fn assert_audit_dir_valid(dir: &std::path::Path) -> usize {
    let schema = audit_record_schema();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut checked = 0;
    let mut problems = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if !(name.starts_with("audit-") && name.ends_with(".jsonl")) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for (no, line) in text.split_inclusive('\n').enumerate() {
            let Some(line) = line.strip_suffix('\n') else {
                continue;
            };
            checked += 1;
            match serde_json::from_str::<Value>(line) {
                Ok(v) => problems.extend(
                    schema
                        .errors(&v)
                        .into_iter()
                        .map(|p| format!("{name}:{}: {p}", no + 1)),
                ),
                Err(e) => problems.push(format!("{name}:{}: not JSON: {e}", no + 1)),
            }
        }
    }
    assert!(
        problems.is_empty(),
        "audit records that do not match deploy/audit-record.schema.json:\n{}",
        problems.join("\n")
    );
    checked
}
