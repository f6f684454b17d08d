//! Streams the generated rows into PostgreSQL with binary `COPY ... FROM STDIN`: one row in memory
//! at a time, so a million contacts load as easily as ten thousand.

use std::error::Error;
use std::pin::pin;

use bytes::{BufMut, BytesMut};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{accepts, to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Client;

use super::data::{Generator, PgDate, PgTimestamp};
use super::DemoError;

/// Rows written per table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    pub companies: u64,
    pub contacts: u64,
    pub activities: u64,
    pub consents: u64,
    pub restrictions: u64,
}

impl ToSql for PgDate {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_i32(self.0);
        Ok(IsNull::No)
    }
    accepts!(DATE);
    to_sql_checked!();
}

impl ToSql for PgTimestamp {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_i64(self.0);
        Ok(IsNull::No)
    }
    accepts!(TIMESTAMPTZ);
    to_sql_checked!();
}

/// Loads all five tables; companies first so the later foreign keys hold.
pub async fn load_all(client: &Client, contacts: usize) -> Result<RowCounts, DemoError> {
    let mut generator = Generator::new(contacts);
    Ok(RowCounts {
        companies: companies(client, &mut generator).await?,
        contacts: contacts_table(client, &mut generator).await?,
        activities: activities(client, &generator).await?,
        consents: consents(client, &generator).await?,
        restrictions: restrictions(client, &generator).await?,
    })
}

async fn writer(
    client: &Client,
    table: &'static str,
    columns: &str,
    types: &[Type],
) -> Result<BinaryCopyInWriter, DemoError> {
    let sink = client
        .copy_in(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(|source| DemoError::Copy { table, source })?;
    Ok(BinaryCopyInWriter::new(sink, types))
}

fn copy_err(table: &'static str) -> impl Fn(tokio_postgres::Error) -> DemoError {
    move |source| DemoError::Copy { table, source }
}

async fn companies(client: &Client, generator: &mut Generator) -> Result<u64, DemoError> {
    let table = "companies";
    let copy = writer(
        client,
        table,
        "id, name, org_number, industry, city, website, created_at",
        &[
            Type::INT8,
            Type::TEXT,
            Type::VARCHAR,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
        ],
    )
    .await?;
    let mut copy = pin!(copy);
    for id in 1..=generator.companies() as i64 {
        let c = generator.company(id);
        copy.as_mut()
            .write(&[
                &c.id,
                &c.name,
                &c.org_number,
                &c.industry,
                &c.city,
                &c.website,
                &c.created_at,
            ])
            .await
            .map_err(copy_err(table))?;
    }
    copy.as_mut().finish().await.map_err(copy_err(table))
}

async fn contacts_table(client: &Client, generator: &mut Generator) -> Result<u64, DemoError> {
    let table = "contacts";
    let copy = writer(
        client,
        table,
        "id, company_id, first_name, last_name, email, phone, street_address, postal_code, city, \
         country, date_of_birth, bank_account, notes, created_at, last_activity_at",
        &[
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::DATE,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
        ],
    )
    .await?;
    let mut copy = pin!(copy);
    for id in 1..=generator.contacts() as i64 {
        let c = generator.contact(id);
        copy.as_mut()
            .write(&[
                &c.id,
                &c.company_id,
                &c.first_name,
                &c.last_name,
                &c.email,
                &c.phone,
                &c.street_address,
                &c.postal_code,
                &c.city,
                &c.country,
                &c.date_of_birth,
                &c.bank_account,
                &c.notes,
                &c.created_at,
                &c.last_activity_at,
            ])
            .await
            .map_err(copy_err(table))?;
    }
    copy.as_mut().finish().await.map_err(copy_err(table))
}

async fn activities(client: &Client, generator: &Generator) -> Result<u64, DemoError> {
    let table = "activities";
    let copy = writer(
        client,
        table,
        "id, contact_id, kind, subject, body, happened_at",
        &[
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
        ],
    )
    .await?;
    let mut copy = pin!(copy);
    let mut next_id: i64 = 1;
    for contact in 1..=generator.contacts() as i64 {
        for a in generator.activities(contact) {
            copy.as_mut()
                .write(&[
                    &next_id,
                    &a.contact_id,
                    &a.kind,
                    &a.subject,
                    &a.body,
                    &a.happened_at,
                ])
                .await
                .map_err(copy_err(table))?;
            next_id += 1;
        }
    }
    copy.as_mut().finish().await.map_err(copy_err(table))
}

async fn consents(client: &Client, generator: &Generator) -> Result<u64, DemoError> {
    let table = "consents";
    let copy = writer(
        client,
        table,
        "id, contact_id, purpose, legal_basis, source, granted_at, granted_by, withdrawn_at",
        &[
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TEXT,
            Type::TIMESTAMPTZ,
        ],
    )
    .await?;
    let mut copy = pin!(copy);
    let mut next_id: i64 = 1;
    for contact in 1..=generator.contacts() as i64 {
        for c in generator.consents(contact) {
            copy.as_mut()
                .write(&[
                    &next_id,
                    &c.contact_id,
                    &c.purpose,
                    &c.legal_basis,
                    &c.source,
                    &c.granted_at,
                    &c.granted_by,
                    &c.withdrawn_at,
                ])
                .await
                .map_err(copy_err(table))?;
            next_id += 1;
        }
    }
    copy.as_mut().finish().await.map_err(copy_err(table))
}

async fn restrictions(client: &Client, generator: &Generator) -> Result<u64, DemoError> {
    let table = "restrictions";
    let copy = writer(
        client,
        table,
        "id, contact_id, reason, requested_at, lifted_at",
        &[
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TIMESTAMPTZ,
            Type::TIMESTAMPTZ,
        ],
    )
    .await?;
    let mut copy = pin!(copy);
    let mut next_id: i64 = 1;
    for contact in 1..=generator.contacts() as i64 {
        for r in generator.restrictions(contact) {
            copy.as_mut()
                .write(&[
                    &next_id,
                    &r.contact_id,
                    &r.reason,
                    &r.requested_at,
                    &r.lifted_at,
                ])
                .await
                .map_err(copy_err(table))?;
            next_id += 1;
        }
    }
    copy.as_mut().finish().await.map_err(copy_err(table))
}
