//! TLS towards clients: versions, plaintext, certificates.

use crate::common;

use std::sync::Arc;

use common::Env;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS 1.1 ClientHello (record version 3.2, one CBC suite, no extensions).
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02];
    hello.extend_from_slice(&[7u8; 32]);
    hello.push(0);
    hello.extend_from_slice(&[0x00, 0x02, 0x00, 0x2f]);
    hello.extend_from_slice(&[0x01, 0x00]);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&hello);
    let mut rec = vec![0x16, 0x03, 0x02];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test]
async fn tls_1_1_is_refused() {
    let env = Env::start().await;
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", env.proxy_port()))
        .await
        .unwrap();
    tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut b = [0u8; 1];
    tcp.read_exact(&mut b).await.unwrap();
    assert_eq!(b[0], b'S');
    tcp.write_all(&tls11_client_hello()).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tcp.read_to_end(&mut reply),
    )
    .await;
    // An alert record (type 21), never a ServerHello (22).
    assert_eq!(reply.first(), Some(&0x15), "reply {reply:?}");
    let failed = "pgvakt_tls_handshakes_total{outcome=\"failed\"}";
    let m = env
        .metrics_when("a failed handshake", |m| common::metric(m, failed) >= 1.0)
        .await;
    assert_eq!(common::metric(&m, failed), 1.0, "{m}");
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_accepted() {
    let env = Env::start().await;
    env.create_user("alice", "pw", false).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        use rustls::pki_types::pem::PemObject;
        for c in rustls::pki_types::CertificateDer::pem_file_iter(&env.certs.ca_cert).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let (client, conn) = env
            .pg_config("alice", "pw", "postgres")
            .connect(tokio_postgres_rustls::MakeRustlsConnect::new(cfg))
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        tokio::spawn(conn);
        assert_eq!(
            client
                .query_one("SELECT 1", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
            1
        );
    }
}
