//! The export as one self-contained HTML page (no scripts, no external files) for the person
//! the data is about: their rows per table, and who received the data.

use std::fmt::Write;

use serde_json::Value;

use super::export::Export;

/// Text escaped for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn value_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;max-width:70em}\
table{border-collapse:collapse;margin-bottom:2em}td,th{border:1px solid #bbb;padding:.3em .6em;\
text-align:left;vertical-align:top}th{background:#eee}caption{text-align:left;font-weight:bold;\
margin:.5em 0}.cat{color:#666;font-weight:normal;font-size:.85em}";

pub fn page(e: &Export) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Personal data of subject {id}</title><style>{STYLE}</style></head><body>\
         <h1>Personal data held about subject {id}</h1>\
         <p>Subject type {ty} in database {db}, generated {at}. The same data is in the \
         machine-readable file next to this page.</p>",
        id = esc(&e.subject_id),
        ty = esc(&e.subject_type),
        db = esc(&e.database),
        at = esc(&e.generated_at),
    );
    h.push_str("<h2>Data</h2>");
    for t in &e.tables {
        let _ = write!(
            h,
            "<table><caption>{} ({} rows)</caption><tr>",
            esc(&t.table),
            t.rows.len()
        );
        for c in &t.columns {
            let _ = write!(
                h,
                "<th>{}<br><span class=\"cat\">{}</span></th>",
                esc(&c.name),
                esc(&c.category)
            );
        }
        h.push_str("</tr>");
        for r in &t.rows {
            h.push_str("<tr>");
            for c in &t.columns {
                let _ = write!(h, "<td>{}</td>", esc(&value_text(r.get(&c.name))));
            }
            h.push_str("</tr>");
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Who received the data</h2>");
    let r = &e.recipients;
    if !r.searched {
        h.push_str("<p>The access log was not searched for this export.</p>");
    } else if r.recipients.is_empty() {
        h.push_str("<p>The access log records no one who read or changed this data.</p>");
    } else {
        h.push_str(
            "<table><tr><th>User</th><th>Role</th><th>Purpose</th><th>Reads</th>\
             <th>Changes</th><th>Reads that may have included it</th><th>First</th>\
             <th>Last</th><th>Data</th></tr>",
        );
        for p in &r.recipients {
            let purposes: Vec<&str> = p.purposes.iter().map(String::as_str).collect();
            let columns: Vec<&str> = p.columns.iter().map(String::as_str).collect();
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&p.user),
                esc(&p.role),
                esc(&purposes.join("; ")),
                p.reads,
                p.writes,
                p.possible_reads,
                esc(&p.first),
                esc(&p.last),
                esc(&columns.join(", "))
            );
        }
        h.push_str("</table>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn markup_in_values_is_text() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
