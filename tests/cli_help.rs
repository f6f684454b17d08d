//! Every subcommand answers `--help`, every option and argument there has a description, and
//! every subcommand shows an example of its use.

use std::collections::BTreeSet;

fn help(path: &[String]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgvakt"))
        .args(path)
        .arg("--help")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pgvakt {} --help failed",
        path.join(" ")
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The lines of a help section ("Commands:", "Options:", "Arguments:").
fn section<'a>(text: &'a str, title: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| *l != title)
        .skip(1)
        .take_while(|l| !l.is_empty())
        .collect()
}

#[test]
fn every_subcommand_and_option_is_described() {
    let mut todo = vec![Vec::<String>::new()];
    let mut seen = BTreeSet::new();
    let mut undescribed = Vec::new();
    while let Some(path) = todo.pop() {
        let text = help(&path);
        for line in section(&text, "Commands:") {
            let name = line.split_whitespace().next().unwrap_or("");
            assert!(
                line.trim().len() > name.len(),
                "pgvakt {} {name}: no description",
                path.join(" ")
            );
            if name != "help" {
                let mut next = path.clone();
                next.push(name.to_owned());
                todo.push(next);
            }
        }
        for title in ["Options:", "Arguments:"] {
            // Short help puts descriptions after the flag, long help on the lines below it.
            let lines: Vec<&str> = text
                .lines()
                .skip_while(|l| *l != title)
                .skip(1)
                .take_while(|l| l.is_empty() || l.starts_with(' '))
                .collect();
            for (i, line) in lines.iter().enumerate() {
                let t = line.trim();
                let note = ["[default:", "[possible values:", "[env:", "[aliases:"]
                    .iter()
                    .any(|n| t.starts_with(n));
                // Options and arguments start near the margin; descriptions are indented further.
                let margin = line.len() - line.trim_start().len() <= 6;
                if note
                    || !margin
                    || !(t.starts_with('-') || t.starts_with('[') || t.starts_with('<'))
                {
                    continue;
                }
                // `--policy <POLICY>  [default: policies]` has a default but no description.
                let is_note = |p: &str| {
                    ["[default:", "[possible values:", "[env:", "[aliases:"]
                        .iter()
                        .any(|n| p.trim().starts_with(n))
                };
                let inline = t
                    .split("  ")
                    .filter(|p| !p.trim().is_empty())
                    .skip(1)
                    .any(|p| !is_note(p));
                let below = lines.get(i + 1).is_some_and(|n| {
                    let n = n.trim();
                    !n.is_empty() && !n.starts_with('-')
                });
                if !(inline || below) {
                    undescribed.push(format!("pgvakt {}: {t}", path.join(" ")));
                }
            }
        }
        seen.insert(path.join(" "));
    }
    assert!(
        undescribed.is_empty(),
        "without a description:\n{}",
        undescribed.join("\n")
    );
    // Every command shows how it is used, with its own name.
    let mut without = Vec::new();
    for name in seen.iter().filter(|n| !n.is_empty()) {
        let path: Vec<String> = name.split(' ').map(str::to_owned).collect();
        let text = help(&path);
        let examples: Vec<&str> = text
            .lines()
            .skip_while(|l| *l != "Examples:")
            .skip(1)
            .collect();
        if !examples.iter().any(|l| {
            l.contains(&format!("pgvakt {name} ")) || l.ends_with(&format!("pgvakt {name}"))
        }) {
            without.push(name.clone());
        }
    }
    assert!(without.is_empty(), "no example in --help of: {without:?}");
    for expected in ["run", "policy test", "audit install-table", "admin unlock"] {
        assert!(
            seen.contains(expected),
            "no subcommand {expected}: {seen:?}"
        );
    }
    assert!(seen.len() > 15, "{seen:?}");
}
