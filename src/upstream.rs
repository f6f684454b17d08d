//! Connections to the upstream PostgreSQL server.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::config::{UpstreamConfig, UpstreamTlsMode};
use crate::protocol::startup;
use crate::stream::BoxStream;
use crate::tls;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to upstream PostgreSQL at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("timed out connecting to upstream PostgreSQL at {0}")]
    Timeout(String),
    #[error("upstream PostgreSQL at {0} does not accept TLS")]
    TlsRefused(String),
    #[error("TLS handshake with upstream PostgreSQL at {addr} failed: {source}")]
    Handshake {
        addr: String,
        source: std::io::Error,
    },
    #[error("upstream TLS configuration: {0}")]
    Config(#[from] tls::TlsError),
}

/// Everything needed to open connections to the upstream; cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    cfg: UpstreamConfig,
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let tls = match tls::upstream_config(cfg)? {
            Some(c) => Some((TlsConnector::from(c), tls::upstream_server_name(cfg)?)),
            None => None,
        };
        Ok(Upstream {
            cfg: cfg.clone(),
            tls,
        })
    }

    pub fn addr(&self) -> String {
        format!("{}:{}", self.cfg.host, self.cfg.port)
    }

    pub fn config(&self) -> &UpstreamConfig {
        &self.cfg
    }

    /// Open a connection, negotiating TLS when configured; nothing is sent after that.
    pub async fn connect(&self) -> Result<BoxStream, UpstreamError> {
        let addr = self.addr();
        let timeout = Duration::from_millis(self.cfg.connect_timeout_ms);
        let tcp = tokio::time::timeout(
            timeout,
            TcpStream::connect((self.cfg.host.as_str(), self.cfg.port)),
        )
        .await
        .map_err(|_| UpstreamError::Timeout(addr.clone()))?
        .map_err(|source| UpstreamError::Connect {
            addr: addr.clone(),
            source,
        })?;
        let _ = tcp.set_nodelay(true);
        let Some((connector, name)) = &self.tls else {
            return Ok(Box::new(tcp));
        };
        let mut tcp = tcp;
        let io = |source| UpstreamError::Handshake {
            addr: addr.clone(),
            source,
        };
        tcp.write_all(&startup::encode_ssl_request())
            .await
            .map_err(io)?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await.map_err(io)?;
        if answer[0] != b'S' {
            return Err(UpstreamError::TlsRefused(addr));
        }
        let stream = tokio::time::timeout(timeout, connector.connect(name.clone(), tcp))
            .await
            .map_err(|_| UpstreamError::Timeout(addr.clone()))?
            .map_err(io)?;
        Ok(Box::new(stream))
    }

    /// Forward a cancel request for an upstream backend.
    pub async fn cancel(&self, pid: i32, secret: &[u8]) -> Result<(), UpstreamError> {
        let mut stream = self.connect().await?;
        let packet = startup::encode_cancel_request(pid, secret);
        let addr = self.addr();
        let io = |source| UpstreamError::Connect {
            addr: addr.clone(),
            source,
        };
        stream.write_all(&packet).await.map_err(io)?;
        stream.flush().await.map_err(io)?;
        // PostgreSQL closes the connection once it has processed the request.
        let mut sink = [0u8; 16];
        let _ = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut sink)).await;
        Ok(())
    }

    pub fn tls_mode(&self) -> UpstreamTlsMode {
        self.cfg.tls
    }
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Upstream({}, tls={:?})", self.addr(), self.cfg.tls)
    }
}
