//! After login: the user and database PostgreSQL actually logged the session into must be the
//! ones pgvakt chose the policy for and writes into the audit trail.
//!
//! Startup parsing refuses repeated keys, but PostgreSQL can still read a name differently from
//! pgvakt (it truncates names to NAMEDATALEN - 1 bytes, a server may add `@database` with
//! `db_user_namespace`, and so on). Rather than mirror every such rule, the session asks
//! PostgreSQL: the `session_authorization` ParameterStatus names the login user, and a probe
//! query reports the raw bytes of `session_user` and `current_database()`. Any difference, or no
//! answer, ends the session with FATAL 28000 before the client sees its first ReadyForQuery.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use super::auth::read_frame;
use super::SessionError;
use crate::protocol::message;
use crate::protocol::results::data_row_values;
use crate::protocol::{Frame, FrameReader, PgError};
use crate::stream::BoxStream;

/// The probe's answers are two short hex strings; nothing legitimate is larger.
const PROBE_MAX_MESSAGE: usize = 64 * 1024;

/// The probe query. It is written right after AuthenticationOk, so PostgreSQL answers it right
/// after its own first ReadyForQuery: the check adds no round trip, only the time PostgreSQL
/// takes to run it. Functions are schema-qualified so that a role's `search_path` cannot
/// substitute its own (`session_user` is SQL syntax, not a function lookup). The names come
/// back as hex of their bytes in the server encoding, so neither `client_encoding` conversion
/// nor `bytea_output` changes what is compared (PostgreSQL matches startup names against the
/// catalog byte for byte).
const PROBE_SQL: &str = "SELECT \
     pg_catalog.encode(pg_catalog.convert_to(session_user::pg_catalog.text, pg_catalog.getdatabaseencoding()), 'hex'), \
     pg_catalog.encode(pg_catalog.convert_to(pg_catalog.current_database()::pg_catalog.text, pg_catalog.getdatabaseencoding()), 'hex')";

/// The Query message of the probe.
pub fn probe() -> Frame {
    message::encode_query(PROBE_SQL)
}

/// Who pgvakt believes the session is: the names the policy and the audit trail use.
pub struct Expected<'a> {
    pub user: &'a str,
    pub database: &'a str,
}

/// Check the `session_authorization` PostgreSQL reported during startup. A server that does
/// not report it cannot be checked, which fails closed.
pub fn check_reported_user(
    parameters: &[(String, String)],
    expected: &Expected<'_>,
) -> Result<(), PgError> {
    let reported = parameters
        .iter()
        .rev()
        .find(|(k, _)| k == "session_authorization")
        .map(|(_, v)| v.as_str());
    match reported {
        Some(u) if u == expected.user => Ok(()),
        Some(u) => Err(mismatch(format!(
            "PostgreSQL logged in user {u:?}, but the startup named {:?}",
            expected.user
        ))),
        None => Err(mismatch(
            "PostgreSQL did not report session_authorization".to_owned(),
        )),
    }
}

/// Read the probe's answer, which follows the login's ReadyForQuery, and compare it with what
/// pgvakt expects. The probe's own messages are swallowed; ParameterStatus and notices that
/// arrive meanwhile are passed on to the client.
pub async fn check_probe(
    client: &mut BoxStream,
    upstream: &mut BoxStream,
    upstream_buf: &mut BytesMut,
    expected: &Expected<'_>,
) -> Result<(), SessionError> {
    let reader = FrameReader::new(PROBE_MAX_MESSAGE);
    let mut answer: Option<(String, String)> = None;
    let mut failure: Option<String> = None;
    loop {
        let frame = read_frame(upstream, upstream_buf, &reader).await?;
        match frame.tag {
            b'T' | b'C' => {}
            b'D' => {
                let values = data_row_values(&frame.raw).ok_or_else(|| {
                    SessionError::Upstream("upstream sent a malformed DataRow".into())
                })?;
                let text = |i: usize| {
                    values
                        .get(i)
                        .copied()
                        .flatten()
                        .and_then(|v| std::str::from_utf8(v).ok())
                        .map(str::to_owned)
                };
                match (values.len(), text(0), text(1)) {
                    (2, Some(u), Some(d)) if answer.is_none() => answer = Some((u, d)),
                    _ => failure = Some("unexpected answer to the identity probe".into()),
                }
            }
            b'E' => {
                failure = Some(format!(
                    "identity probe failed: {}",
                    super::auth::error_text(&frame)
                ));
            }
            b'S' | b'N' => client.write_all(&frame.raw).await?,
            b'Z' => break,
            other => {
                return Err(SessionError::Upstream(format!(
                    "unexpected message {:?} in answer to the identity probe",
                    other as char
                )))
            }
        }
    }
    if let Some(why) = failure {
        return Err(SessionError::Client(mismatch(why)));
    }
    let Some((user_hex, database_hex)) = answer else {
        return Err(SessionError::Client(mismatch(
            "the identity probe returned no row".into(),
        )));
    };
    if user_hex != hex(expected.user) {
        return Err(SessionError::Client(mismatch(format!(
            "PostgreSQL's session_user differs from the startup user {:?}",
            expected.user
        ))));
    }
    if database_hex != hex(expected.database) {
        return Err(SessionError::Client(mismatch(format!(
            "PostgreSQL connected to a different database than the startup named ({:?})",
            expected.database
        ))));
    }
    Ok(())
}

/// Lower-case hex of the bytes, as PostgreSQL's `encode(..., 'hex')` writes it.
fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn mismatch(why: String) -> PgError {
    PgError::auth_failed(format!(
        "pgvakt: the session's identity could not be confirmed: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(user: Option<&str>) -> Vec<(String, String)> {
        let mut p = vec![("server_version".to_owned(), "15".to_owned())];
        if let Some(u) = user {
            p.push(("session_authorization".to_owned(), u.to_owned()));
        }
        p
    }

    #[test]
    fn reported_user_must_be_the_startup_user() {
        let expected = Expected {
            user: "marketing",
            database: "crm",
        };
        assert!(check_reported_user(&params(Some("marketing")), &expected).is_ok());
        let e = check_reported_user(&params(Some("admin")), &expected).unwrap_err();
        assert_eq!((e.severity, e.code), ("FATAL", "28000"));
        assert!(e.message.contains("\"admin\""), "{}", e.message);
        assert!(check_reported_user(&params(None), &expected).is_err());
        assert!(check_reported_user(&params(Some("Marketing")), &expected).is_err());
    }

    #[test]
    fn hex_matches_postgres_encode() {
        assert_eq!(hex("crm"), "63726d");
        assert_eq!(hex("é"), "c3a9");
    }
}
