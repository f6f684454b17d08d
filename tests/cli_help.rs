//! Every subcommand answers `--help`, every option and argument there has a description, and
//! the commands a user starts with show examples.

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
                let inline = t.split("  ").filter(|p| !p.trim().is_empty()).count() > 1;
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
    for with_examples in [
        "run",
        "check-config",
        "demo",
        "policy check",
        "policy explain",
        "policy test",
        "policy snapshot",
    ] {
        assert!(
            seen.contains(with_examples),
            "no subcommand {with_examples}"
        );
        let path: Vec<String> = with_examples.split(' ').map(str::to_owned).collect();
        assert!(
            help(&path).contains("Examples:\n  pgvakt "),
            "pgvakt {with_examples} --help has no example"
        );
    }
    assert!(seen.len() > 15, "{seen:?}");
}
