//! Reads of the demo's contacts as a client under load makes them, for tests of what the audit
//! trail promises about every read a client received.
#![allow(dead_code)]

use tokio_postgres::{Client, Error};

/// One read of a contact's name and e-mail (personal data, so audited), over the simple
/// protocol or the extended one (a parameter).
pub async fn read_contact(client: &Client, id: i64, simple: bool) -> Result<(), Error> {
    if simple {
        client
            .simple_query(&format!(
                "SELECT first_name, email FROM contacts WHERE id = {id}"
            ))
            .await
            .map(|_| ())
    } else {
        client
            .query(
                "SELECT first_name, email FROM contacts WHERE id = $1",
                &[&id],
            )
            .await
            .map(|_| ())
    }
}
