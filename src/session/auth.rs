//! Authentication relayed between the client and the upstream, then the upstream's
//! ParameterStatus and BackendKeyData, up to the first ReadyForQuery.

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::SessionError;
use crate::cancel::{CancelKey, CancelTarget};
use crate::protocol::message::{self, decode_auth, decode_sasl_mechanisms, encode_auth};
use crate::protocol::{Frame, FrameReader, PgError};
use crate::proxy::Proxy;
use crate::stream::BoxStream;

/// Authentication exchanges are small; anything larger is not a legitimate startup message.
const AUTH_MAX_MESSAGE: usize = 1 << 20;

const AUTH_OK: i32 = 0;
const AUTH_CLEARTEXT: i32 = 3;
const AUTH_MD5: i32 = 5;
const AUTH_SASL: i32 = 10;
const AUTH_SASL_CONTINUE: i32 = 11;
const AUTH_SASL_FINAL: i32 = 12;

/// The state the relay starts from after a successful login.
pub struct LoggedIn {
    /// The cancel key handed to the client: the upstream's process id with the proxy's secret.
    pub cancel_key: CancelKey,
    /// ParameterStatus values the upstream reported.
    pub parameters: Vec<(String, String)>,
    /// The upstream's first ReadyForQuery, not yet relayed: the client gets it once the
    /// session's identity is confirmed.
    pub ready: Frame,
}

pub async fn read_frame(
    stream: &mut BoxStream,
    buf: &mut BytesMut,
    reader: &FrameReader,
) -> Result<Frame, SessionError> {
    loop {
        if let Some(f) = reader.next(buf)? {
            return Ok(f);
        }
        buf.reserve(4096);
        if stream.read_buf(buf).await? == 0 {
            return Err(SessionError::Closed);
        }
    }
}

/// Relay the login. On success the client has seen everything up to, but not including, the
/// first ReadyForQuery, which is returned. `after_auth` is written to the upstream as soon as
/// it reports AuthenticationOk (the identity probe); `upstream_buf` keeps any bytes read past
/// the ReadyForQuery.
pub async fn relay_login(
    client: &mut BoxStream,
    client_buf: &mut BytesMut,
    upstream: &mut BoxStream,
    upstream_buf: &mut BytesMut,
    proxy: &Proxy,
    after_auth: &Frame,
) -> Result<LoggedIn, SessionError> {
    let reader = FrameReader::new(AUTH_MAX_MESSAGE);
    relay_authentication(
        client,
        client_buf,
        upstream,
        upstream_buf,
        &reader,
        after_auth,
    )
    .await?;
    let mut cancel_key = None;
    let result = session_start(
        client,
        upstream,
        upstream_buf,
        &reader,
        proxy,
        &mut cancel_key,
    )
    .await;
    if let (Err(_), Some(key)) = (&result, cancel_key) {
        // The cancel key of a session that never started would stay registered forever.
        proxy.cancels.unregister(key);
    }
    result
}

/// The authentication exchange, up to AuthenticationOk (relayed, with `after_auth` sent to the
/// upstream right after it).
async fn relay_authentication(
    client: &mut BoxStream,
    client_buf: &mut BytesMut,
    upstream: &mut BoxStream,
    upstream_buf: &mut BytesMut,
    reader: &FrameReader,
    after_auth: &Frame,
) -> Result<(), SessionError> {
    loop {
        let frame = read_frame(upstream, upstream_buf, reader).await?;
        match frame.tag {
            b'R' => {
                let authenticated =
                    relay_auth_request(client, client_buf, upstream, reader, &frame).await?;
                if authenticated {
                    upstream.write_all(&after_auth.raw).await?;
                    upstream.flush().await?;
                    return Ok(());
                }
            }
            b'E' => {
                // Relayed by the caller once the failure is counted.
                let mut e = login_failed(&frame);
                if let SessionError::LoginFailed { unsent, .. } = &mut e {
                    *unsent = Some(frame.raw.clone());
                }
                return Err(e);
            }
            b'v' | b'N' => client.write_all(&frame.raw).await?,
            other => {
                return Err(SessionError::Upstream(format!(
                    "unexpected message {:?} during authentication",
                    other as char
                )))
            }
        }
    }
}

/// Relay one authentication request to the client and, when it asks for one, the client's
/// response to the upstream. True at AuthenticationOk.
async fn relay_auth_request(
    client: &mut BoxStream,
    client_buf: &mut BytesMut,
    upstream: &mut BoxStream,
    reader: &FrameReader,
    frame: &Frame,
) -> Result<bool, SessionError> {
    let (code, data) = decode_auth(frame)?;
    match code {
        AUTH_OK => {
            client.write_all(&frame.raw).await?;
            return Ok(true);
        }
        AUTH_CLEARTEXT | AUTH_MD5 | AUTH_SASL_CONTINUE => {
            client.write_all(&frame.raw).await?;
            client.flush().await?;
            relay_client_response(client, client_buf, upstream, reader).await?;
        }
        AUTH_SASL => {
            let offer = relayable_sasl(data)?;
            client.write_all(&encode_auth(AUTH_SASL, &offer).raw).await?;
            client.flush().await?;
            relay_client_response(client, client_buf, upstream, reader).await?;
        }
        AUTH_SASL_FINAL => client.write_all(&frame.raw).await?,
        other => {
            return Err(SessionError::Client(PgError::auth_failed(format!(
                "pgvakt cannot relay authentication method {other} (supported: trust, password, md5, scram-sha-256)"
            ))))
        }
    }
    Ok(false)
}

/// The AuthenticationSASL body the client is offered: the upstream's mechanisms without
/// channel binding.
fn relayable_sasl(data: &[u8]) -> Result<Vec<u8>, SessionError> {
    let offered = decode_sasl_mechanisms(data)?;
    // Channel binding ties SCRAM to one TLS connection; the client's TLS ends at the proxy,
    // so only mechanisms without binding can be relayed.
    let relayable: Vec<&[u8]> = offered
        .into_iter()
        .filter(|m| !m.ends_with(b"-PLUS"))
        .collect();
    if relayable.is_empty() {
        return Err(SessionError::Client(PgError::auth_failed(
            "pgvakt cannot relay SCRAM with channel binding and the server offers nothing else",
        )));
    }
    let mut offer = Vec::new();
    for m in relayable {
        offer.extend_from_slice(m);
        offer.push(0);
    }
    offer.push(0);
    Ok(offer)
}

/// ParameterStatus, BackendKeyData and notices after AuthenticationOk, up to ReadyForQuery.
/// `cancel_key` is the registered cancel key, set as soon as there is one.
async fn session_start(
    client: &mut BoxStream,
    upstream: &mut BoxStream,
    upstream_buf: &mut BytesMut,
    reader: &FrameReader,
    proxy: &Proxy,
    cancel_key: &mut Option<CancelKey>,
) -> Result<LoggedIn, SessionError> {
    let mut parameters = Vec::new();
    loop {
        let frame = read_frame(upstream, upstream_buf, reader).await?;
        match frame.tag {
            b'S' => {
                parameters.push(message::decode_parameter_status(&frame)?);
                client.write_all(&frame.raw).await?;
            }
            b'K' => {
                let (pid, secret) = message::decode_backend_key(&frame)?;
                if let Some(old) = cancel_key.take() {
                    // PostgreSQL sends one; a second replaces the first.
                    proxy.cancels.unregister(old);
                }
                // The client sees PostgreSQL's process id (pg_stat_activity, notifications,
                // pg_terminate_backend) but only the proxy's secret, which finds this session.
                let (key, pid, secret) = proxy.cancels.register(CancelTarget {
                    upstream_pid: pid,
                    upstream_secret: secret,
                });
                *cancel_key = Some(key);
                client
                    .write_all(&message::encode_backend_key(pid, &secret).raw)
                    .await?;
            }
            b'N' => client.write_all(&frame.raw).await?,
            b'E' => {
                client.write_all(&frame.raw).await?;
                client.flush().await?;
                return Err(login_failed(&frame));
            }
            b'Z' => {
                return Ok(LoggedIn {
                    cancel_key: cancel_key.unwrap_or(CancelKey::NONE),
                    parameters,
                    ready: frame,
                });
            }
            other => {
                return Err(SessionError::Upstream(format!(
                    "unexpected message {:?} after authentication",
                    other as char
                )))
            }
        }
    }
}

async fn relay_client_response(
    client: &mut BoxStream,
    client_buf: &mut BytesMut,
    upstream: &mut BoxStream,
    reader: &FrameReader,
) -> Result<(), SessionError> {
    let frame = read_frame(client, client_buf, reader).await?;
    match frame.tag {
        b'p' => {
            upstream.write_all(&frame.raw).await?;
            upstream.flush().await?;
            Ok(())
        }
        // A client that gives up at the password prompt (psql does, to ask the user) just leaves.
        b'X' => Err(SessionError::Closed),
        other => Err(SessionError::Protocol(format!(
            "expected a password message, got message type {:?}",
            other as char
        ))),
    }
}

/// PostgreSQL's ErrorResponse during login, with its SQLSTATE.
fn login_failed(frame: &Frame) -> SessionError {
    let code = message::decode_fields(frame)
        .ok()
        .and_then(|f| f.into_iter().find(|(c, _)| *c == b'C').map(|(_, m)| m))
        .filter(|c| {
            c.len() == 5
                && c.bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        });
    SessionError::LoginFailed {
        message: error_text(frame),
        sqlstate: code,
        unsent: None,
    }
}

pub(super) fn error_text(frame: &Frame) -> String {
    message::decode_fields(frame)
        .ok()
        .and_then(|f| f.into_iter().find(|(c, _)| *c == b'M').map(|(_, m)| m))
        .unwrap_or_else(|| "login failed".into())
}
