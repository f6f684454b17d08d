//! `inventory.tables.<t>.erase`: declarations resolved, mistakes reported where written.

use super::erase::{column_action, EraseAction, RowsAction};
use super::tests::{compiled, demo, problems};

const POLICY: &str = "default_role: nobody
inventory:
  tables:
    people:
      subject_key: id
      columns: {id: none, name: identity, email: contact, iban: financial}
      erase:
        columns: {EXTRA}
        rows: ROWS
roles:
  nobody: {default: block}
";

fn policy(columns: &str, rows: &str) -> String {
    POLICY.replace("{EXTRA}", columns).replace("ROWS", rows)
}

#[test]
fn declared_actions_win_and_categories_give_the_rest() {
    let p = compiled(&policy("{iban: \"null\", email: pseudonym}", "delete"));
    let e = p.inventory.tables[0].erase.as_ref().expect("erase");
    assert_eq!(e.rows, RowsAction::Delete);
    let action = |c: &str, cat: &str| column_action(Some(e), Some("id"), c, cat).0;
    assert_eq!(action("iban", "financial"), EraseAction::Null);
    assert_eq!(action("email", "contact"), EraseAction::Pseudonym);
    assert_eq!(action("name", "identity"), EraseAction::Redact);
    assert_eq!(action("id", "none"), EraseAction::Keep);
    assert_eq!(
        column_action(None, None, "created", "none").0,
        EraseAction::Keep
    );
    // The demo declares erasure for contacts and activities.
    let d = demo();
    assert!(d
        .inventory
        .tables
        .iter()
        .any(|t| t.table == "contacts" && t.erase.is_some()));
}

#[test]
fn mistakes_are_reported_with_their_location() {
    let got = problems(&policy(
        "{nme: redact, iban: scramble, id: \"null\"}",
        "drop",
    ));
    let has = |s: &str| got.iter().any(|g| g.contains(s));
    assert!(
        has("p.yaml:8:19: warning: inventory.tables.people.erase.columns.nme: 'nme' is not a classified column of this table (did you mean 'name'?)"),
        "{got:?}"
    );
    assert!(has("erase.columns.iban: 'scramble': an erase action is one of null, redact, pseudonym, keep"), "{got:?}");
    assert!(
        has("erase.columns.id: the subject key cannot be erased"),
        "{got:?}"
    );
    assert!(
        has("p.yaml:9:15: error: inventory.tables.people.erase.rows: 'drop'"),
        "{got:?}"
    );
}
