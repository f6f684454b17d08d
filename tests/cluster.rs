//! The throwaway PostgreSQL server: it starts, answers SCRAM logins, survives a restart with its
//! data, and leaves nothing behind when dropped.

use std::net::TcpStream;
use std::time::Duration;

use pgvakt::cluster::{Cluster, ClusterOptions};

#[tokio::test]
async fn superuser_can_query_over_tcp() {
    let cluster = Cluster::start_async(ClusterOptions::default())
        .await
        .unwrap();
    let client = cluster.connect("postgres").await.unwrap();

    let row = client
        .query_one(
            "SELECT current_user::text, 40 + 2, current_setting('fsync')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "postgres");
    assert_eq!(row.get::<_, i32>(1), 42);
    assert_eq!(row.get::<_, String>(2), "off");
    assert!(cluster.dsn("u", "p w", "crm").contains("password='p w'"));
}

#[tokio::test]
async fn wrong_password_is_refused() {
    let cluster = Cluster::start_async(ClusterOptions::default())
        .await
        .unwrap();
    let mut config = cluster.superuser_config("postgres");
    config.password("not-the-password");

    let Err(error) = config.connect(tokio_postgres::NoTls).await else {
        panic!("a wrong password was accepted");
    };
    assert_eq!(
        error.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_the_data() {
    let opts = ClusterOptions {
        superuser: "boss".into(),
        password: "s3cret 'quoted'".into(),
        ..ClusterOptions::default()
    };
    let mut cluster = Cluster::start_async(opts).await.unwrap();
    let client = cluster.connect("postgres").await.unwrap();
    client
        .batch_execute("CREATE TABLE kept(v text); INSERT INTO kept VALUES ('still here')")
        .await
        .unwrap();
    drop(client);

    let mut cluster = tokio::task::spawn_blocking(move || {
        cluster.stop_server().unwrap();
        assert!(TcpStream::connect(("127.0.0.1", cluster.port())).is_err());
        cluster.start_server().unwrap();
        cluster
    })
    .await
    .unwrap();

    let client = cluster.connect("postgres").await.unwrap();
    let row = client.query_one("SELECT v FROM kept", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "still here");
    tokio::task::block_in_place(|| cluster.stop_server().unwrap());
    assert!(!cluster.is_running());
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_stops_the_server_and_removes_the_directory() {
    let cluster = Cluster::start_async(ClusterOptions::default())
        .await
        .unwrap();
    let port = cluster.port();
    let dir = cluster.dir().to_path_buf();
    assert!(cluster.data_dir().join("PG_VERSION").is_file());
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());

    tokio::task::block_in_place(|| drop(cluster));

    assert!(!dir.exists(), "{} still exists", dir.display());
    let refused = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    );
    assert!(refused.is_err(), "port {port} still accepts connections");
}

#[test]
fn kept_directory_survives_drop() {
    let cluster = Cluster::start(ClusterOptions {
        keep: true,
        ..ClusterOptions::default()
    })
    .unwrap();
    let dir = cluster.dir().to_path_buf();
    drop(cluster);
    assert!(dir.join("server.log").is_file());
    assert!(!dir.join("data/postmaster.pid").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn tls_option_turns_on_ssl_with_a_private_key_copy() {
    let pems = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert_pem = pems.path().join("server.crt");
    let key_pem = pems.path().join("server.key");
    std::fs::write(&cert_pem, generated.cert.pem()).unwrap();
    // Deliberately world-readable: the cluster must fix this in its own copy.
    std::fs::write(&key_pem, generated.signing_key.serialize_pem()).unwrap();

    let cluster = Cluster::start_async(ClusterOptions {
        tls: Some(pgvakt::cluster::ServerTls { cert_pem, key_pem }),
        ..ClusterOptions::default()
    })
    .await
    .unwrap();
    let client = cluster.connect("postgres").await.unwrap();
    let row = client
        .query_one(
            "SELECT current_setting('ssl'), current_setting('ssl_key_file')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "on");
    let key_copy = std::path::PathBuf::from(row.get::<_, String>(1));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&key_copy).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}
