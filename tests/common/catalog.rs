//! Waiting for pgvakt's catalog: after DDL it relayed it reloads the catalog in the background,
//! and a relation it does not know yet is refused until then.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use tokio_postgres::Client;

/// Waits (at most 30 s) until `probe` runs for `c`: pgvakt's catalog, reloaded after DDL it
/// relayed, knows `probe`'s relations. Returns either way; the test's own reads then say what
/// went wrong.
pub async fn until_known(c: &Client, probe: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.simple_query(probe).await.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
