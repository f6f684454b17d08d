//! Self-signed certificates for the demo and the tests (never for production).

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Paths of a generated CA, a server certificate signed by it, and a client certificate.
#[derive(Debug, Clone)]
pub struct GeneratedCerts {
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn write(path: &Path, contents: &str, private: bool) -> Result<(), CertError> {
    let err = |source| CertError::Write {
        path: path.display().to_string(),
        source,
    };
    std::fs::write(path, contents).map_err(err)?;
    if private {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    Ok(())
}

/// Generate a throwaway CA plus server (for `localhost`/127.0.0.1) and client (`CN=client_cn`)
/// certificates into `dir`.
pub fn generate(dir: &Path, client_cn: &str) -> Result<GeneratedCerts, CertError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pgvakt demo CA");
    let ca = ca_params.self_signed(&ca_key)?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    server_params
        .distinguished_name
        .push(DnType::CommonName, "pgvakt");
    let server = server_params.signed_by(&server_key, &issuer)?;

    let client_key = KeyPair::generate()?;
    let mut client_params = CertificateParams::new(Vec::<String>::new())?;
    client_params
        .distinguished_name
        .push(DnType::CommonName, client_cn);
    let client = client_params.signed_by(&client_key, &issuer)?;

    let out = GeneratedCerts {
        ca_cert: dir.join("ca.pem"),
        server_cert: dir.join("server.pem"),
        server_key: dir.join("server.key"),
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    write(&out.ca_cert, &ca.pem(), false)?;
    write(&out.server_cert, &server.pem(), false)?;
    write(&out.server_key, &server_key.serialize_pem(), true)?;
    write(&out.client_cert, &client.pem(), false)?;
    write(&out.client_key, &client_key.serialize_pem(), true)?;
    Ok(out)
}
