//! Byte fixtures through the result filter: what a client receives for frames PostgreSQL
//! sends, no PostgreSQL needed.

use super::*;

fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![tag];
    f.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    f.extend_from_slice(body);
    f
}

/// A RowDescription: (name, table oid, column number) per column, all text.
fn row_description(columns: &[(&str, u32, i16)]) -> Vec<u8> {
    let mut b = (columns.len() as i16).to_be_bytes().to_vec();
    for (name, oid, attnum) in columns {
        b.extend_from_slice(name.as_bytes());
        b.push(0);
        b.extend_from_slice(&oid.to_be_bytes());
        b.extend_from_slice(&attnum.to_be_bytes());
        b.extend_from_slice(&25u32.to_be_bytes());
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&0i16.to_be_bytes());
    }
    frame(b'T', &b)
}

fn data_row(values: &[Option<&str>]) -> Vec<u8> {
    let mut b = (values.len() as i16).to_be_bytes().to_vec();
    for v in values {
        match v {
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v.as_bytes());
            }
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    frame(b'D', &b)
}

fn error(fields: &[(u8, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (c, v) in fields {
        b.push(*c);
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    }
    b.push(0);
    frame(b'E', &b)
}

fn parameter_status(name: &str, value: &str) -> Vec<u8> {
    frame(b'S', format!("{name}\0{value}\0").as_bytes())
}

fn ready(status: u8) -> Vec<u8> {
    frame(b'Z', &[status])
}

fn complete(tag: &str) -> Vec<u8> {
    frame(b'C', format!("{tag}\0").as_bytes())
}

struct Fixture {
    filter: ResultFilter,
    refusals: Refusals,
    protected: Protected,
}

impl Fixture {
    fn restricted() -> Fixture {
        Fixture {
            filter: ResultFilter::new(true, true),
            refusals: Refusals::new(),
            protected: [(16400, 12)].into_iter().collect(),
        }
    }

    fn step(&mut self, frame: &[u8]) -> Step {
        let view = View {
            protected: Some(&self.protected),
            refusals: &self.refusals,
            trail: None,
        };
        self.filter.step(frame, view).expect("a well-formed frame")
    }
}

#[test]
fn protected_origin_in_a_result_nulls_that_column_until_the_next_result() {
    let mut f = Fixture::restricted();
    let t = f.step(&row_description(&[
        ("id", 16400, 1),
        ("bank_account", 16400, 12),
    ]));
    assert_eq!(t.output, Output::Keep);
    assert_eq!(t.anomaly, Some(vec!["bank_account".to_owned()]));
    let d = f.step(&data_row(&[Some("7"), Some("DE89370400440532013000")]));
    assert_eq!(
        d.output,
        Output::Replace(data_row(&[Some("7"), None]).into())
    );
    // A result without protected origins resets the watch.
    let t = f.step(&row_description(&[("id", 16400, 1), ("n", 0, 0)]));
    assert_eq!(t.anomaly, None);
    let d = f.step(&data_row(&[Some("7"), Some("x")]));
    assert_eq!(d.output, Output::Keep);
}

#[test]
fn unrestricted_roles_see_results_unchanged() {
    let mut f = Fixture::restricted();
    f.filter = ResultFilter::new(true, false);
    let t = f.step(&row_description(&[("bank_account", 16400, 12)]));
    assert_eq!((t.output, t.anomaly), (Output::Keep, None));
    let d = f.step(&data_row(&[Some("DE89370400440532013000")]));
    assert_eq!(d.output, Output::Keep);
}

#[test]
fn a_malformed_data_row_under_the_watch_is_an_upstream_error() {
    let mut f = Fixture::restricted();
    f.step(&row_description(&[("bank_account", 16400, 12)]));
    let view = View {
        protected: Some(&f.protected),
        refusals: &f.refusals,
        trail: None,
    };
    // Claims one 100-byte value and carries three bytes.
    let bad = frame(b'D', &[0, 1, 0, 0, 0, 100, b'a', b'b', b'c']);
    assert!(f.filter.step(&bad, view).is_err());
}

#[test]
fn the_error_of_a_refusal_marker_becomes_the_refusal() {
    let mut f = Fixture::restricted();
    let refusal =
        PgError::insufficient_privilege("pgvakt: column contacts.bank_account is blocked");
    let marker = f.refusals.marker(refusal.clone());
    let column = marker.trim_start_matches("SELECT ").trim_matches('"');
    let upstream = error(&[
        (b'S', "ERROR"),
        (b'C', "42703"),
        (b'M', &format!("column \"{column}\" does not exist")),
    ]);
    let step = f.step(&upstream);
    assert_eq!(step.output, Output::Replace(refusal.to_bytes().freeze()));
    // A marker resolves once: the same text again is PostgreSQL's own error.
    assert_eq!(f.step(&upstream).output, Output::Keep);
}

#[test]
fn a_forged_marker_with_another_nonce_stays_an_ordinary_error() {
    let mut f = Fixture::restricted();
    f.refusals
        .marker(PgError::insufficient_privilege("pgvakt: refused"));
    let forged = error(&[
        (b'S', "ERROR"),
        (b'C', "42703"),
        (
            b'M',
            "column \"pgvakt-refusal-00000000000000000000000000000000-1\" does not exist",
        ),
    ]);
    assert_eq!(f.step(&forged).output, Output::Keep);
}

#[test]
fn integrity_error_details_are_withheld_from_restricted_roles() {
    let mut f = Fixture::restricted();
    let upstream = error(&[
        (b'S', "ERROR"),
        (b'C', "23505"),
        (b'M', "duplicate key value violates unique constraint"),
        (
            b'D',
            "Key (bank_account)=(DE89370400440532013000) already exists.",
        ),
    ]);
    let Output::Replace(sent) = f.step(&upstream).output else {
        panic!("the detail must be replaced");
    };
    let text = String::from_utf8_lossy(&sent);
    assert!(!text.contains("DE8937"), "{text}");
    assert!(text.contains("duplicate key value"), "{text}");
}

#[test]
fn transaction_ends_are_reported_with_whether_they_committed() {
    let mut f = Fixture::restricted();
    assert_eq!(f.step(&ready(b'I')).ready.map(|r| r.ended), Some(None));
    f.step(&ready(b'T'));
    f.step(&complete("COMMIT"));
    let r = f.step(&ready(b'I')).ready;
    assert_eq!(
        r,
        Some(Ready {
            status: b'I',
            ended: Some(true)
        })
    );

    f.step(&ready(b'T'));
    f.step(&complete("ROLLBACK"));
    assert_eq!(
        f.step(&ready(b'I')).ready.and_then(|r| r.ended),
        Some(false)
    );

    // ROLLBACK TO SAVEPOINT answers ROLLBACK, but the COMMIT after it decides.
    f.step(&ready(b'T'));
    f.step(&complete("ROLLBACK"));
    f.step(&complete("COMMIT"));
    assert_eq!(f.step(&ready(b'I')).ready.and_then(|r| r.ended), Some(true));

    // A failed block ends rolled back whatever its last command said.
    f.step(&ready(b'T'));
    f.step(&ready(b'E'));
    f.step(&complete("COMMIT"));
    assert_eq!(
        f.step(&ready(b'I')).ready.and_then(|r| r.ended),
        Some(false)
    );
}

#[test]
fn settings_analysis_cannot_follow_end_a_restricted_session() {
    let mut f = Fixture::restricted();
    let step = f.step(&parameter_status("client_encoding", "LATIN1"));
    assert_eq!(step.client_utf8, Some(false));
    let Output::Fatal(e) = step.output else {
        panic!("expected a FATAL");
    };
    assert!(e.message.contains("client_encoding"), "{}", e.message);
    let step = f.step(&parameter_status("standard_conforming_strings", "off"));
    assert!(matches!(step.output, Output::Fatal(_)));
    let step = f.step(&parameter_status("client_encoding", "UTF8"));
    assert_eq!((step.output, step.client_utf8), (Output::Keep, Some(true)));
    assert_eq!(
        f.step(&parameter_status("TimeZone", "UTC")).output,
        Output::Keep
    );

    let mut open = Fixture::restricted();
    open.filter = ResultFilter::new(true, false);
    let step = open.step(&parameter_status("client_encoding", "LATIN1"));
    assert_eq!((step.output, step.client_utf8), (Output::Keep, Some(false)));
}

#[test]
fn empty_and_truncated_frames_do_not_panic() {
    let mut f = Fixture::restricted();
    for bytes in [
        &b""[..],
        b"T",
        b"D\0\0\0\x04",
        b"E\0\0",
        b"Z\0\0\0\x04",
        b"S\0\0\0\x05a",
    ] {
        let view = View {
            protected: Some(&f.protected),
            refusals: &f.refusals,
            trail: None,
        };
        let _ = f.filter.step(bytes, view);
    }
}

#[test]
fn withheld_answers_become_the_error_in_front_of_their_ready_for_query() {
    let mut f = Fixture::restricted();
    let refusal = PgError::insufficient_privilege("audit trail cannot be written");
    f.filter.withhold(refusal.clone());
    for answer in [
        row_description(&[("id", 16400, 1), ("first_name", 16400, 2)]),
        data_row(&[Some("7"), Some("Ada")]),
        complete("SELECT 1"),
    ] {
        assert_eq!(f.step(&answer).output, Output::Replace(Bytes::new()));
    }
    let mut expected = refusal.to_bytes();
    expected.extend_from_slice(&ready(b'I'));
    let z = f.step(&ready(b'I'));
    assert_eq!(z.output, Output::Replace(expected.freeze()));
    assert_eq!(z.ready.map(|r| r.status), Some(b'I'));
    // The next statement's answers go through again.
    let d = f.step(&data_row(&[Some("8"), Some("Grace")]));
    assert_eq!(d.output, Output::Keep);
}

#[test]
fn another_sessions_notification_passes_while_answers_are_withheld() {
    let mut f = Fixture::restricted();
    f.filter.withhold(PgError::insufficient_privilege(
        "audit trail cannot be written",
    ));
    let notification = frame(b'A', b"\0\0\x30\x39crm_events\0contact changed\0");
    assert_eq!(f.step(&notification).output, Output::Keep);
    assert_eq!(
        f.step(&complete("SELECT 1")).output,
        Output::Replace(Bytes::new())
    );
}
