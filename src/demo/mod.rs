//! The demo CRM: a `crm` database with companies, contacts, activities, consents and
//! restrictions of processing, full of realistic (fake, deterministic) Norwegian personal data,
//! and the staff roles that use it.
//!
//! Layout:
//! - `schema`: the DDL, the roles and their privileges, as SQL text.
//! - `data`: row generation (a pure function of seed and id) and Norwegian account numbers.
//! - `words`: the names, places and free-text phrases the rows are made of.
//! - `rng`: the seeded splitmix64 generator that keeps the data identical across runs.
//! - `load`: streaming binary COPY into PostgreSQL.
//! - `run`: `pgvakt demo`: a throwaway cluster with this data and the proxy in front of it.
//!
//! [`install`] needs a superuser connection configuration, e.g. from
//! [`crate::cluster::Cluster::superuser_config`]:
//!
//! ```no_run
//! # async fn demo(cluster: &pgvakt::cluster::Cluster) -> Result<(), pgvakt::demo::DemoError> {
//! let summary = pgvakt::demo::install(&cluster.superuser_config("postgres"), 10_000).await?;
//! println!("{} contacts in {:?}", summary.rows.contacts, summary.elapsed);
//! # Ok(()) }
//! ```

pub mod data;
pub mod load;
pub mod rng;
pub mod run;
pub mod schema;
pub mod words;

use std::time::{Duration, Instant};

use tokio_postgres::{Client, NoTls};

pub use data::is_valid_norwegian_account;
pub use load::RowCounts;
pub use schema::{schema_sql, DATABASE, LOGIN_ROLES, TABLES};

/// The default demo size.
pub const DEFAULT_CONTACTS: usize = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("connecting as superuser to database `{database}`: {}", crate::cause::chain(.source))]
    Connect {
        database: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{step}: {}", crate::cause::chain(.source))]
    Sql {
        step: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("loading table `{table}`: {}", crate::cause::chain(.source))]
    Copy {
        table: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// What [`install`] created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoSummary {
    pub database: &'static str,
    pub rows: RowCounts,
    pub elapsed: Duration,
}

/// Creates (or refreshes) the roles, recreates the `crm` database owned by `admin`, and loads
/// `contacts` contacts with their companies, activities and consents. An existing `crm` database
/// is dropped first. Connects without TLS using `superuser` (its dbname is ignored).
pub async fn install(
    superuser: &tokio_postgres::Config,
    contacts: usize,
) -> Result<DemoSummary, DemoError> {
    let started = Instant::now();
    let server = connect(superuser, "postgres").await?;
    server
        .batch_execute(&schema::roles_sql())
        .await
        .map_err(sql("creating the demo roles"))?;
    server
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)"))
        .await
        .map_err(sql("dropping the old crm database"))?;
    server
        .batch_execute(&format!("CREATE DATABASE {DATABASE} OWNER admin"))
        .await
        .map_err(sql("creating the crm database"))?;
    drop(server);

    let crm = connect(superuser, DATABASE).await?;
    // Everything below is created as admin, so admin owns it without being a superuser.
    crm.batch_execute("SET ROLE admin")
        .await
        .map_err(sql("switching to the admin role"))?;
    crm.batch_execute(schema::TABLES_SQL)
        .await
        .map_err(sql("creating the tables"))?;
    let rows = load::load_all(&crm, contacts).await?;
    crm.batch_execute(schema::CONSTRAINTS_SQL)
        .await
        .map_err(sql("adding foreign keys and indexes"))?;
    crm.batch_execute(schema::RESET_SEQUENCES_SQL)
        .await
        .map_err(sql("advancing the id sequences"))?;
    crm.batch_execute(schema::GRANTS_SQL)
        .await
        .map_err(sql("granting table privileges"))?;
    // Only the demo tables: a database-wide ANALYZE warns about every shared catalog.
    crm.batch_execute(schema::ANALYZE_SQL)
        .await
        .map_err(sql("analysing the tables"))?;
    Ok(DemoSummary {
        database: DATABASE,
        rows,
        elapsed: started.elapsed(),
    })
}

async fn connect(superuser: &tokio_postgres::Config, database: &str) -> Result<Client, DemoError> {
    let mut config = superuser.clone();
    config.dbname(database);
    let (client, connection) =
        config
            .connect(NoTls)
            .await
            .map_err(|source| DemoError::Connect {
                database: database.to_owned(),
                source,
            })?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "demo install connection ended");
        }
    });
    Ok(client)
}

fn sql(step: &'static str) -> impl Fn(tokio_postgres::Error) -> DemoError {
    move |source| DemoError::Sql { step, source }
}
