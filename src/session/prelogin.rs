//! Connections refused before login, and failed logins: recorded and logged through the
//! rate limit in `audit::refusals`, with a timer for the summary of a window that ends
//! quietly.

use std::sync::Arc;
use std::time::Instant;

use crate::audit::refusals::{Refusal, MAX_TRACKED, WINDOW};
use crate::audit::Record;
use crate::proxy::Proxy;

/// Record and log `r`, or count it if one like it was recorded in this window.
pub async fn report(proxy: &Arc<Proxy>, r: Refusal) {
    let admitted = proxy.prelogin.admit(&r, Instant::now());
    write_summaries(proxy, admitted.summaries).await;
    if admitted.write {
        r.log(None);
        write(proxy, r.record(None)).await;
    }
    if let Some(after) = admitted.schedule_flush {
        let proxy = proxy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let due = proxy.prelogin.flush(Instant::now());
            write_summaries(&proxy, due).await;
        });
    }
}

async fn write_summaries(proxy: &Arc<Proxy>, due: Vec<(Refusal, u64)>) {
    for (first, n) in due {
        let mut rec = first.record(Some(n));
        if first.client.port() == 0 && first.client.ip().is_unspecified() {
            rec.client_addr = Some("*".into());
            rec.message = Some(format!(
                "{} more from further addresses (over {MAX_TRACKED} addresses in {} s), not \
                 recorded one by one",
                n,
                WINDOW.as_secs()
            ));
        }
        first.log(Some(n));
        write(proxy, rec).await;
    }
}

async fn write(proxy: &Proxy, rec: Record) {
    if let Some(h) = &proxy.audit {
        if let Err(e) = h.record(rec).await {
            tracing::error!(error = %e, "audit record not written");
        }
    }
}
