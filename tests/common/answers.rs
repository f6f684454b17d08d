//! What a client learns from a statement, in forms tests compare: rows as text, the first
//! value, or the refusal.
#![allow(dead_code)]

use tokio_postgres::{Client, Error, Row, SimpleQueryMessage};

/// Every value of every row in simple-protocol messages, in text format.
pub fn text_rows(msgs: &[SimpleQueryMessage]) -> Vec<Vec<Option<String>>> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_owned)).collect())
            }
            _ => None,
        })
        .collect()
}

/// Every value of every row `sql` returns over the simple protocol, in text format, or the
/// SQLSTATE and message of its error.
pub async fn rows_or_error(c: &Client, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    let msgs = c
        .simple_query(sql)
        .await
        .map_err(|e| format!("{} {}", super::sqlstate(&e), super::message(&e)))?;
    Ok(text_rows(&msgs))
}

/// What a client learns from one statement: its rows and command tags, or its error.
pub async fn outcome(c: &Client, sql: &str) -> String {
    let result = c.simple_query(sql).await;
    // A failed statement inside BEGIN ... ROLLBACK leaves the transaction open and aborted.
    let _ = c.simple_query("ROLLBACK").await;
    match result {
        Ok(msgs) => msgs
            .iter()
            .map(|m| match m {
                SimpleQueryMessage::Row(r) => format!("row {:?}", r.get(0)),
                SimpleQueryMessage::CommandComplete(n) => format!("done {n}"),
                _ => String::new(),
            })
            .collect::<Vec<_>>()
            .join("; "),
        Err(e) => format!("error {} {}", super::sqlstate(&e), super::message(&e)),
    }
}

/// The first value read, or the SQLSTATE of the refusal.
pub fn first_value(r: Result<Vec<Row>, Error>) -> Result<Option<String>, String> {
    match r {
        Ok(rows) => Ok(rows.first().and_then(|row| row.get::<_, Option<String>>(0))),
        Err(e) => Err(super::sqlstate(&e)),
    }
}

/// The first value of a simple-protocol statement, or the SQLSTATE of the refusal.
pub fn simple_first_value(
    r: Result<Vec<SimpleQueryMessage>, Error>,
) -> Result<Option<String>, String> {
    match r {
        Ok(messages) => Ok(messages.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })),
        Err(e) => Err(super::sqlstate(&e)),
    }
}
