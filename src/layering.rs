//! The documented layering of the crate's modules, checked against the source: a module may use
//! modules of lower layers only, so there are no cycles and no arrows back up. The same order is
//! drawn in the README ("How the pieces fit").

/// Bottom to top. A module may use any module in an earlier entry, never one in its own entry
/// or a later one (modules in one entry are independent of each other).
pub(crate) const LAYERS: &[&[&str]] = &[
    // Error texts with their causes, for every module that reports a library's error.
    &["cause"],
    // Protocol bytes, streams and test/demo infrastructure: no knowledge of policy.
    &["protocol", "stream", "certs", "cluster"],
    // What the security team writes, and what PostgreSQL holds.
    &["policy"],
    &["catalog"],
    // Decisions on statements, and the record of what was decided and read.
    &["analysis", "audit", "access"],
    &["metrics", "config"],
    &["tls"],
    &["dsn"],
    &["upstream", "enforce", "cancel"],
    // The running proxy.
    &["readiness", "registry"],
    &["proxy"],
    &["console"],
    &["session"],
    &["listener"],
    // Commands around the proxy.
    &["install", "explain", "preflight", "admin", "mask_check"],
    &["policy_cli", "demo", "subject"],
    // The binary's command line (`src/cli/`, declared by `src/main.rs`, not by the library).
    &["cli"],
];

#[cfg(test)]
mod tests {
    use super::LAYERS;
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    fn layer_of(module: &str) -> Option<usize> {
        LAYERS.iter().position(|l| l.contains(&module))
    }

    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("readable src/").flatten() {
            let p = e.path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// Every `crate::NAME` a file mentions (imports and inline paths alike).
    fn used_modules(text: &str) -> BTreeSet<String> {
        text.match_indices("crate::")
            .filter(|(i, _)| !text[..*i].ends_with(|c: char| c.is_alphanumeric() || c == '_'))
            .map(|(i, m)| {
                text[i + m.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .filter(|m| !m.is_empty())
            .collect()
    }

    #[test]
    fn no_module_uses_one_above_or_beside_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        sources(&src, &mut files);
        let mut wrong = Vec::new();
        for f in files {
            let rel = f.strip_prefix(&src).expect("under src/");
            let top = rel
                .iter()
                .next()
                .and_then(|c| c.to_str())
                .map(|c| c.trim_end_matches(".rs").to_string())
                .unwrap_or_default();
            if matches!(top.as_str(), "lib" | "main" | "layering") {
                continue;
            }
            let Some(mine) = layer_of(&top) else {
                wrong.push(format!("{top} (from {}) is in no layer", rel.display()));
                continue;
            };
            let text = std::fs::read_to_string(&f).expect("readable source");
            for used in used_modules(&text) {
                if used == top {
                    continue;
                }
                match layer_of(&used) {
                    Some(l) if l < mine => {}
                    Some(_) => wrong.push(format!("{} uses crate::{used}", rel.display())),
                    None => {
                        wrong.push(format!("{} uses crate::{used}, in no layer", rel.display()))
                    }
                }
            }
        }
        assert!(
            wrong.is_empty(),
            "arrows against the layering:\n{}",
            wrong.join("\n")
        );
    }

    #[test]
    fn every_module_of_the_crate_has_a_layer() {
        let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
            .expect("src/lib.rs");
        for line in lib.lines() {
            let line = line.trim();
            let declared = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("pub(crate) mod "));
            if let Some(m) = declared.and_then(|l| l.strip_suffix(';')) {
                assert!(
                    layer_of(m).is_some(),
                    "module {m} has no layer in src/layering.rs"
                );
            }
        }
    }
}
