//! A burst of connects (application servers starting or reconnecting together) waits in the
//! kernel's accept queue, which pgvakt sizes as PostgreSQL does, and not in TCP retransmissions:
//! with the 128 places tokio's `bind` asks for, thousands of simultaneous connects took seconds
//! while pgvakt was idle.

use crate::common;

use common::Env;

/// The accept queue length the kernel granted the listening socket on `port` (`ss`'s Send-Q
/// of a LISTEN socket).
fn listen_queue(port: u16) -> u32 {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("run ss (iproute2)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {port}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("unexpected ss output: {line}"))
}

#[tokio::test]
async fn the_accept_queue_holds_a_burst_of_connects_as_postgresql_does() {
    let env = Env::start().await;
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("a number");
    // The default limits.max_connections is 4096: PostgreSQL would ask for twice that.
    let want = pgvakt::listener::listen_backlog(4096).min(somaxconn);
    assert_eq!(pgvakt::listener::listen_backlog(4096), 8192);
    assert_eq!(listen_queue(env.proxy_port()), want);
    // PostgreSQL's own listener, for comparison: twice its backends (max_connections, 200
    // here, and its worker processes).
    assert!(listen_queue(env.cluster.port()) >= 400.min(somaxconn));
}
