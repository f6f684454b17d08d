use super::*;
use crate::protocol::message::encode_parse;

fn bind(portal: &[u8], statement: &[u8]) -> Frame {
    let mut body = portal.to_vec();
    body.push(0);
    body.extend_from_slice(statement);
    body.push(0);
    body.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    Frame::build(b'B', &body)
}

fn execute(portal: &[u8]) -> Frame {
    let mut body = portal.to_vec();
    body.push(0);
    body.extend_from_slice(&[0, 0, 0, 0]);
    Frame::build(b'E', &body)
}

fn sync() -> Frame {
    Frame::build(b'S', &[])
}

/// A decision that must not be asked for (the role changed: nothing is decided again).
fn never(_: &Definition) -> Result<(), String> {
    panic!("nothing is decided again after a change of role")
}

fn frame(e: &mut Epochs, f: &Frame, restricted: bool) -> Result<(), PgError> {
    e.frame(f, restricted, &mut never)
}

fn text(e: &mut Epochs, ops: &[NameOp], restricted: bool) -> Result<(), PgError> {
    e.text(ops, None, restricted, &mut never)
}

fn def(text: &str, forwarded: &str) -> Definition {
    Definition {
        text: text.to_owned(),
        search_path: vec!["public".to_owned()],
        forwarded: forwarded.to_owned(),
    }
}

/// A Parse of `name` decided as forwarding `forwarded`, as the session records it.
fn parse(e: &mut Epochs, name: &[u8], sql: &str, forwarded: &str) {
    frame(e, &encode_parse(name, sql, &[]), true).unwrap();
    if let Some(n) = e.take_parsing() {
        e.parsed(&n, def(sql, forwarded));
    }
}

#[test]
fn nothing_is_checked_until_the_role_changes() {
    let mut e = Epochs::new();
    e.enter("admin", "v1", 1);
    assert!(frame(&mut e, &execute(b"never bound"), true).is_ok());
    assert!(text(&mut e, &[NameOp::Execute("p".into())], true).is_ok());
    e.enter("admin", "v1", 1);
    assert!(!e.checking());
}

#[test]
fn names_from_before_the_change_are_refused_and_new_ones_run() {
    let mut e = Epochs::new();
    e.enter("admin", "v1", 1);
    frame(&mut e, &encode_parse(b"s1", "SELECT 1", &[]), false).unwrap();
    frame(&mut e, &bind(b"held", b"s1"), false).unwrap();
    text(&mut e, &[NameOp::Prepare("p".into())], false).unwrap();
    e.enter("nobody", "v1", 1);
    let err = frame(&mut e, &execute(b"held"), true).unwrap_err();
    assert_eq!(err.code, "42501");
    assert!(err.message.contains("changed to nobody"), "{}", err.message);
    // A portal bound now from a statement prepared before is just as old.
    frame(&mut e, &sync(), true).unwrap();
    frame(&mut e, &bind(b"", b"s1"), true).unwrap();
    assert!(frame(&mut e, &execute(b""), true).is_err());
    assert!(text(&mut e, &[NameOp::Execute("p".into())], true).is_err());
    // Defined since the change: runs.
    frame(&mut e, &sync(), true).unwrap();
    frame(&mut e, &encode_parse(b"s2", "SELECT 1", &[]), true).unwrap();
    frame(&mut e, &bind(b"", b"s2"), true).unwrap();
    assert!(frame(&mut e, &execute(b""), true).is_ok());
    text(
        &mut e,
        &[NameOp::Prepare("q".into()), NameOp::Execute("q".into())],
        true,
    )
    .unwrap();
    // An unrestricted role runs anything (what was decided before is no wider).
    assert!(frame(&mut e, &execute(b"held"), false).is_ok());
}

#[test]
fn a_name_used_before_stays_old_even_when_defined_again() {
    let mut e = Epochs::new();
    e.enter("admin", "v1", 1);
    frame(&mut e, &encode_parse(b"s1", "SELECT 1", &[]), false).unwrap();
    let declare = NameOp::Declare {
        name: "c".into(),
        hold: true,
    };
    text(&mut e, std::slice::from_ref(&declare), false).unwrap();
    e.enter("nobody", "v1", 1);
    // PostgreSQL refuses these (the names exist) and keeps the old definitions.
    frame(&mut e, &encode_parse(b"s1", "SELECT 2", &[]), true).unwrap();
    frame(&mut e, &bind(b"p", b"s1"), true).unwrap();
    assert!(frame(&mut e, &execute(b"p"), true).is_err());
    text(&mut e, &[declare], true).unwrap();
    let fetch = NameOp::Fetch {
        name: "c".into(),
        moves: false,
    };
    assert!(text(&mut e, &[fetch], true).is_err());
}

#[test]
fn an_unnamed_statement_defined_after_a_possible_error_in_its_batch_is_not_trusted() {
    let mut e = Epochs::new();
    e.enter("admin", "v1", 1);
    frame(&mut e, &encode_parse(b"", "SELECT 1", &[]), false).unwrap();
    e.enter("nobody", "v1", 1);
    frame(&mut e, &sync(), true).unwrap();
    // Parse '' after another message: PostgreSQL may have skipped it after an error.
    frame(&mut e, &execute(b"x"), true).unwrap_err();
    frame(&mut e, &encode_parse(b"", "SELECT 2", &[]), true).unwrap();
    frame(&mut e, &sync(), true).unwrap();
    frame(&mut e, &bind(b"", b""), true).unwrap();
    assert!(frame(&mut e, &execute(b""), true).is_err());
    // At the start of a batch it counts.
    frame(&mut e, &sync(), true).unwrap();
    frame(&mut e, &encode_parse(b"", "SELECT 3", &[]), true).unwrap();
    frame(&mut e, &bind(b"", b""), true).unwrap();
    assert!(frame(&mut e, &execute(b""), true).is_ok());
}

#[test]
fn after_a_reload_a_name_runs_when_its_text_is_decided_the_same_and_only_then() {
    let mut e = Epochs::new();
    e.enter("secretary", "v1", 1);
    parse(&mut e, b"same", "SELECT id FROM t", "SELECT id FROM t");
    parse(&mut e, b"wider", "SELECT c FROM t", "SELECT mask(c) FROM t");
    frame(&mut e, &bind(b"portal", b"wider"), true).unwrap();
    frame(&mut e, &sync(), true).unwrap();
    // Same role, another policy: each name is decided again, once.
    e.enter("secretary", "v2", 1);
    assert!(e.checking());
    let mut asked = Vec::new();
    let mut now = |d: &Definition| {
        asked.push(d.text.clone());
        if d.text.contains("mask") || d.forwarded.contains("mask") {
            Err("refused now".to_owned())
        } else {
            Ok(())
        }
    };
    frame(&mut e, &bind(b"", b"same"), true).unwrap();
    e.frame(&execute(b""), true, &mut now).unwrap();
    // A portal decided the same is not decided again until the next change.
    e.frame(&execute(b""), true, &mut now).unwrap();
    let err = e.frame(&execute(b"portal"), true, &mut now).unwrap_err();
    assert_eq!(err.code, "42501");
    assert!(
        err.message
            .contains("before the policy or the schema changed"),
        "{err:?}"
    );
    assert!(err.message.contains("prepared again"), "{err:?}");
    assert_eq!(err.detail.as_deref(), Some("refused now"));
    assert_eq!(asked, ["SELECT id FROM t", "SELECT c FROM t"]);
}

#[test]
fn after_a_reload_what_an_unrestricted_role_defined_or_an_ambiguous_name_is_refused() {
    let mut e = Epochs::new();
    e.enter("admin", "v1", 1);
    // Unrestricted: forwarded as sent, not analysed.
    frame(&mut e, &encode_parse(b"raw", "SELECT c FROM t", &[]), false).unwrap();
    assert!(e.take_parsing().is_some());
    text(
        &mut e,
        &[NameOp::Declare {
            name: "cur".into(),
            hold: true,
        }],
        false,
    )
    .unwrap();
    // The unnamed statement parsed after a possible error in its batch.
    frame(&mut e, &sync(), true).unwrap();
    parse(&mut e, b"", "SELECT 1", "SELECT 1");
    parse(&mut e, b"", "SELECT 2", "SELECT 2");
    // The reload makes the role restricted.
    e.enter("admin", "v2", 1);
    let mut same = |_: &Definition| Ok(());
    frame(&mut e, &bind(b"p", b"raw"), true).unwrap();
    assert!(e.frame(&execute(b"p"), true, &mut same).is_err());
    let fetch = NameOp::Fetch {
        name: "cur".into(),
        moves: false,
    };
    assert!(e.text(&[fetch], None, true, &mut same).is_err());
    frame(&mut e, &bind(b"", b""), true).unwrap();
    let err = e.frame(&execute(b""), true, &mut same).unwrap_err();
    assert!(
        err.message
            .contains("before the policy or the schema changed"),
        "{err:?}"
    );
}

#[test]
fn prepare_and_declare_in_a_text_carry_that_text_and_are_decided_again() {
    let mut e = Epochs::new();
    e.enter("secretary", "v1", 1);
    let sql = "PREPARE p AS SELECT c FROM t; DECLARE k CURSOR WITH HOLD FOR SELECT c FROM t";
    let ops = [
        NameOp::Prepare("p".into()),
        NameOp::Declare {
            name: "k".into(),
            hold: true,
        },
    ];
    e.text(&ops, Some(def(sql, "rendered")), true, &mut never)
        .unwrap();
    e.enter("secretary", "v2", 1);
    let mut seen = Vec::new();
    let mut decide = |d: &Definition| {
        seen.push((d.text.clone(), d.forwarded.clone()));
        Err("changed".to_owned())
    };
    let run = [
        NameOp::Execute("p".into()),
        NameOp::Fetch {
            name: "k".into(),
            moves: false,
        },
    ];
    for op in run {
        let err = e.text(&[op], None, true, &mut decide).unwrap_err();
        assert_eq!(err.detail.as_deref(), Some("changed"));
    }
    // MOVE returns no rows: not checked.
    let moves = NameOp::Fetch {
        name: "k".into(),
        moves: true,
    };
    e.text(&[moves], None, true, &mut decide).unwrap();
    let expected = (sql.to_owned(), "rendered".to_owned());
    assert_eq!(seen, [expected.clone(), expected]);
}

#[test]
fn past_the_name_bound_a_new_name_counts_as_defined_before() {
    let mut e = Epochs::new();
    e.enter("secretary", "v1", 1);
    for i in 0..MAX_NAMES {
        e.seen_statements.insert(format!("n{i}").into_bytes());
    }
    parse(&mut e, b"late", "SELECT 1", "SELECT 1");
    e.enter("secretary", "v2", 1);
    frame(&mut e, &bind(b"", b"late"), true).unwrap();
    assert!(e.frame(&execute(b""), true, &mut |_| Ok(())).is_err());
}

#[test]
fn texts_replaced_under_a_name_do_not_use_up_the_memory_bound() {
    let mut e = Epochs::new();
    e.enter("secretary", "v1", 1);
    let big = "x".repeat(1 << 20);
    for _ in 0..(MAX_TEXT_BYTES >> 19) {
        frame(&mut e, &sync(), true).unwrap();
        parse(&mut e, b"", &big, &big);
        let declare = NameOp::Declare {
            name: "c".into(),
            hold: false,
        };
        e.text(&[declare], Some(def(&big, &big)), true, &mut never)
            .unwrap();
    }
    assert!(e.text_bytes <= 2 * (2 << 20) + 64, "{}", e.text_bytes);
    e.enter("secretary", "v2", 1);
    frame(&mut e, &bind(b"", b""), true).unwrap();
    let mut asked = 0;
    e.frame(&execute(b""), true, &mut |_| {
        asked += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(asked, 1, "the last text is still known and decided again");
}

#[test]
fn a_new_catalog_has_names_decided_again_like_a_new_policy() {
    let mut e = Epochs::new();
    e.enter("secretary", "v1", 1);
    parse(&mut e, b"s", "SELECT x FROM v", "SELECT x FROM v");
    e.enter("secretary", "v1", 1);
    assert!(!e.checking());
    e.enter("secretary", "v1", 2);
    assert!(e.checking());
    frame(&mut e, &bind(b"", b"s"), true).unwrap();
    let mut asked = 0;
    let err = e
        .frame(&execute(b""), true, &mut |_| {
            asked += 1;
            Err("v.x now shows a masked column".to_owned())
        })
        .unwrap_err();
    assert_eq!(asked, 1);
    assert_eq!(err.detail.as_deref(), Some("v.x now shows a masked column"));
}
