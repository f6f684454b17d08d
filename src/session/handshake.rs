//! From TCP accept to a StartupMessage: SSL/GSS negotiation, TLS, cancel requests.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::SessionError;
use crate::config::ClientTlsMode;
use crate::metrics::{Outcome, OutcomeLabel, RefuseReason};
use crate::protocol::startup::{self, Initial, StartupMessage};
use crate::protocol::PgError;
use crate::proxy::Proxy;
use crate::stream::BoxStream;

/// What the opening of a connection ended with.
pub enum Opened {
    /// A client ready to authenticate.
    Session {
        stream: BoxStream,
        startup: StartupMessage,
        tls_version: Option<String>,
    },
    /// The connection was a cancel request; nothing more to do.
    Done,
    /// The connection was refused (and told why); the caller records it.
    Refused {
        reason: &'static str,
        error: PgError,
    },
}

/// TLS record type of a ClientHello: a client using direct TLS negotiation (PostgreSQL 17+).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Read one untagged packet; a malformed one is answered with FATAL 08P01 before the error
/// ends the session.
async fn read_initial<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<Initial, SessionError> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await?;
    let decoded = match startup::packet_len(header) {
        Ok(len) => {
            let mut body = vec![0u8; len - 4];
            s.read_exact(&mut body).await?;
            startup::decode(&body)
        }
        Err(e) => Err(e),
    };
    match decoded {
        Ok(initial) => Ok(initial),
        Err(e) => {
            let err = PgError::protocol_violation(format!("pgvakt: {e}"));
            let _ = s.write_all(&err.to_bytes()).await;
            let _ = s.flush().await;
            Err(SessionError::Startup(e))
        }
    }
}

pub async fn open(mut tcp: TcpStream, proxy: &Arc<Proxy>) -> Result<Opened, SessionError> {
    let mut first = [0u8; 1];
    let n = tcp.peek(&mut first).await?;
    if n == 0 {
        return Ok(Opened::Done);
    }
    if first[0] == TLS_HANDSHAKE_RECORD {
        let (stream, version) = accept_tls(tcp, proxy, true).await?;
        return after_tls(stream, version, proxy).await;
    }
    loop {
        match read_initial(&mut tcp).await? {
            Initial::GssEncRequest => tcp.write_all(b"N").await?,
            Initial::SslRequest => {
                tcp.write_all(b"S").await?;
                let (stream, version) = accept_tls(tcp, proxy, false).await?;
                return after_tls(stream, version, proxy).await;
            }
            Initial::Cancel { pid, secret } => {
                forward_cancel(proxy, pid, &secret).await;
                return Ok(Opened::Done);
            }
            Initial::Startup(msg) => {
                if proxy.config.tls.mode == ClientTlsMode::Required {
                    proxy.metrics.refused(RefuseReason::TlsRequired);
                    let error = PgError::tls_required();
                    let _ = tcp.write_all(&error.to_bytes()).await;
                    let _ = tcp.shutdown().await;
                    return Ok(Opened::Refused {
                        reason: "tls_required",
                        error,
                    });
                }
                return Ok(Opened::Session {
                    stream: Box::new(tcp),
                    startup: msg,
                    tls_version: None,
                });
            }
        }
    }
}

async fn accept_tls(
    tcp: TcpStream,
    proxy: &Arc<Proxy>,
    direct: bool,
) -> Result<(BoxStream, String), SessionError> {
    let acceptor = TlsAcceptor::from(proxy.tls.load_full());
    let handshake = |outcome| {
        proxy
            .metrics
            .tls_handshakes
            .get_or_create(&OutcomeLabel { outcome })
            .inc()
    };
    let accepted = proxy
        .handshakes
        .run(async move { acceptor.accept(tcp).await })
        .await
        .unwrap_or_else(|| Err(std::io::Error::other("the TLS handshake task failed")));
    let stream = match accepted {
        Ok(s) => s,
        Err(e) => {
            handshake(Outcome::Failed);
            proxy.metrics.refused(RefuseReason::TlsHandshake);
            return Err(SessionError::TlsHandshake(e));
        }
    };
    handshake(Outcome::Ok);
    let conn = stream.get_ref().1;
    if direct && conn.alpn_protocol() != Some(b"postgresql") {
        return Err(SessionError::Tls(
            "direct TLS negotiation without ALPN protocol \"postgresql\"".into(),
        ));
    }
    let version = conn
        .protocol_version()
        .and_then(|v| v.as_str())
        .unwrap_or("unknown")
        .to_owned();
    Ok((Box::new(stream), version))
}

async fn after_tls(
    mut stream: BoxStream,
    version: String,
    proxy: &Arc<Proxy>,
) -> Result<Opened, SessionError> {
    match read_initial(&mut stream).await? {
        Initial::Startup(msg) => Ok(Opened::Session {
            stream,
            startup: msg,
            tls_version: Some(version),
        }),
        Initial::Cancel { pid, secret } => {
            forward_cancel(proxy, pid, &secret).await;
            // libpq 17 sends cancel requests over TLS and reports a close without close_notify
            // as "SSL error: unexpected eof", failing the cancel call that did its work.
            let _ = stream.shutdown().await;
            Ok(Opened::Done)
        }
        Initial::SslRequest | Initial::GssEncRequest => Err(SessionError::Protocol(
            "encryption requested twice on one connection".into(),
        )),
    }
}

/// Cancel requests get no answer either way, as in PostgreSQL; unknown keys are ignored.
async fn forward_cancel(proxy: &Arc<Proxy>, pid: i32, secret: &[u8]) {
    let Some(target) = proxy.cancels.lookup(pid, secret) else {
        tracing::debug!("cancel request with an unknown key ignored");
        return;
    };
    if let Err(e) = proxy
        .upstream
        .cancel(target.upstream_pid, &target.upstream_secret)
        .await
    {
        tracing::warn!(error = %e, "forwarding cancel request failed");
    }
}

/// A bounded buffer for reading frames during startup.
pub fn startup_buffer() -> BytesMut {
    BytesMut::with_capacity(4096)
}
