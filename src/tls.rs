//! TLS configuration: the server side clients connect to, and the optional client side towards
//! PostgreSQL.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::config::{ClientTlsConfig, TlsVersion, UpstreamConfig, UpstreamTlsMode};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: cannot read certificates: {reason}")]
    Certs { path: String, reason: String },
    #[error("{path}: cannot read private key: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS configuration rejected: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
    #[error("invalid upstream TLS server name {0:?}")]
    ServerName(String),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Certs {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?
        .collect();
    let certs = certs.map_err(|e| TlsError::Certs {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Certs {
            path: path.display().to_string(),
            reason: "no CERTIFICATE block found".into(),
        });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

fn roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in load_certs(path)? {
        store.add(cert).map_err(|e| TlsError::Certs {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
    }
    Ok(store)
}

/// The most plaintext pgvakt puts in one TLS record towards clients.
pub const TLS_RECORD_PLAINTEXT: usize = 8192;

/// The server side's TLS configuration and when the certificate it presents expires.
pub struct ServerTls {
    pub config: Arc<ServerConfig>,
    /// The leaf certificate's notAfter (None when it cannot be read from the DER).
    pub not_after: Option<std::time::SystemTime>,
}

/// notAfter of a DER certificate.
pub fn not_after(cert: &CertificateDer<'_>) -> Option<std::time::SystemTime> {
    use x509_cert::der::Decode;
    let cert = x509_cert::Certificate::from_der(cert.as_ref()).ok()?;
    Some(cert.tbs_certificate.validity.not_after.to_system_time())
}

/// The server configuration for client connections, with the served certificate's expiry
/// read from the same file contents. Called again on SIGHUP so renewed certificates are used
/// by the next handshake.
pub fn server_tls(cfg: &ClientTlsConfig) -> Result<ServerTls, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] = match cfg.min_version {
        TlsVersion::V12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V13 => &[&rustls::version::TLS13],
    };
    let builder =
        ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions)?;
    let builder = match &cfg.client_ca_file {
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)?),
                provider(),
            )
            .build()
            .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let chain = load_certs(&cfg.cert_file)?;
    let not_after = chain.first().and_then(not_after);
    let mut config = builder.with_single_cert(chain, load_key(&cfg.key_file)?)?;
    // PostgreSQL 17 clients using direct TLS negotiation insist on this ALPN protocol.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    // Records no larger than PostgreSQL's own (it writes 8 KiB at a time): libpq keeps 8 KiB
    // free for one read, and a larger record leaves plaintext inside OpenSSL that no socket
    // event announces, so a non-blocking libpq client (psycopg's Python implementation) would
    // wait for a result that has already arrived.
    config.max_fragment_size = Some(TLS_RECORD_PLAINTEXT);
    Ok(ServerTls {
        config: Arc::new(config),
        not_after,
    })
}

/// The client configuration towards the upstream, or `None` when upstream TLS is off.
pub fn upstream_config(cfg: &UpstreamConfig) -> Result<Option<Arc<ClientConfig>>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match cfg.tls {
        UpstreamTlsMode::Disable => return Ok(None),
        UpstreamTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
        UpstreamTlsMode::VerifyFull => {
            let Some(ca) = &cfg.ca_file else {
                return Err(TlsError::Certs {
                    path: "upstream.ca_file".into(),
                    reason: "required for verify-full".into(),
                });
            };
            builder
                .with_root_certificates(roots(ca)?)
                .with_no_client_auth()
        }
    };
    Ok(Some(Arc::new(config)))
}

/// A client configuration for the command-line tools' connections: verified against the CA
/// certificates in `roots_file`, or (None) encrypted without authenticating the server, as
/// libpq's `sslmode=require` does.
pub fn tool_client_config(roots_file: Option<&Path>) -> Result<Arc<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let config = match roots_file {
        Some(ca) => builder
            .with_root_certificates(roots(ca)?)
            .with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
            .with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The name the upstream certificate is checked against.
pub fn upstream_server_name(cfg: &UpstreamConfig) -> Result<ServerName<'static>, TlsError> {
    let name = cfg.server_name.clone().unwrap_or_else(|| cfg.host.clone());
    ServerName::try_from(name.clone()).map_err(|_| TlsError::ServerName(name))
}

/// `sslmode=require` semantics: encrypted, but the server is not authenticated. Signatures are
/// still checked so the handshake itself is sound.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_after_is_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = time::macros::datetime!(2031-05-17 12:00 UTC);
        let cert = params.self_signed(&key).unwrap();
        let at = not_after(cert.der()).unwrap();
        let secs = at.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        assert_eq!(secs, 1_936_785_600);
        assert_eq!(
            not_after(&CertificateDer::from(vec![0x30, 0x03, 1, 2, 3])),
            None
        );
    }
}
