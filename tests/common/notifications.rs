//! Notifications (`LISTEN`/`NOTIFY`) as a client receives them: tokio-postgres hands them over
//! only to whoever polls the connection, so a task polls it and passes them on.
#![allow(dead_code)]

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio_postgres::{AsyncMessage, Connection, Notification};

/// Runs `conn` in the background; what `keep` takes from each notification arrives on the
/// receiver, until the connection ends.
pub fn notifications<S, T, R>(
    mut conn: Connection<S, T>,
    keep: impl Fn(&Notification) -> R + Send + 'static,
) -> UnboundedReceiver<R>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Send + 'static,
{
    let (tx, rx) = unbounded_channel();
    tokio::spawn(async move {
        let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(Ok(m)) = stream.next().await {
            if let AsyncMessage::Notification(n) = m {
                let _ = tx.send(keep(&n));
            }
        }
    });
    rx
}
