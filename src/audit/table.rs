//! What the table sink and the tools that read the table share: the table's name and layout,
//! the SQL that creates it with least privilege, and connecting with TLS.
//!
//! One row per record: `replica` (which pgvakt instance wrote it), `seq` and `mac` (copies of
//! the record's own, for the writer's restart and for indexes), `ts` (the record's time, for
//! range queries and retention) and `record`, the sealed line exactly as the file sink writes
//! it (text, not jsonb: the MAC covers the canonical text). Each replica has its own chain;
//! the primary key `(replica, seq)` keeps a record from being inserted twice.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::ClientConfig;
use tokio_postgres::Client;

use super::table_settings::TableTls;

/// `schema.table`, both plain lower-case SQL identifiers, so the name can be written into SQL
/// double-quoted without escaping and means the same in every tool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

fn plain_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && s.len() <= 63
}

impl TableName {
    pub fn parse(s: &str) -> Result<TableName, String> {
        match s.split_once('.') {
            Some((schema, name)) if plain_identifier(schema) && plain_identifier(name) => {
                Ok(TableName {
                    schema: schema.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!(
                "'{s}' is not schema.table with lower-case letters, digits and _ only"
            )),
        }
    }

    /// The name as SQL.
    pub fn sql(&self) -> String {
        format!("\"{}\".\"{}\"", self.schema, self.name)
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// A role name as a SQL identifier.
fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// Creates the table (if missing) and grants: `writer` may INSERT and read only the columns
/// it needs to continue its chain (`replica`, `seq`, `mac`), never UPDATE, DELETE or TRUNCATE;
/// `reader`, if given, may SELECT (for `audit search` and `audit verify`). Everybody else is
/// revoked. Run by the role that should own the table (not `writer`: an owner can change
/// rows whatever is granted).
pub fn install_sql(
    table: &TableName,
    writer: &str,
    reader: Option<&str>,
) -> Result<String, String> {
    // The schema's rights are taken from PUBLIC: on a shared schema that would break everything
    // else in the database.
    if table.schema == "public"
        || table.schema == "information_schema"
        || table.schema.starts_with("pg_")
    {
        return Err(format!(
            "{table}: give the audit table a schema of its own (e.g. pgvakt_audit.records); \
             install-table revokes PUBLIC's rights on it"
        ));
    }
    let t = table.sql();
    let schema = quote_ident(&table.schema);
    let w = quote_ident(writer);
    let mut sql = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {t} (
    replica text NOT NULL,
    seq bigint NOT NULL CHECK (seq > 0),
    ts timestamptz NOT NULL,
    mac text NOT NULL,
    record text NOT NULL,
    PRIMARY KEY (replica, seq)
);
CREATE INDEX IF NOT EXISTS {idx} ON {t} (ts);
COMMENT ON TABLE {t} IS 'pgvakt audit records: one HMAC chain per replica; verify with pgvakt audit verify --from-db';
REVOKE ALL ON SCHEMA {schema} FROM PUBLIC;
REVOKE ALL ON TABLE {t} FROM PUBLIC;
REVOKE ALL ON TABLE {t} FROM {w};
GRANT USAGE ON SCHEMA {schema} TO {w};
GRANT INSERT ON TABLE {t} TO {w};
GRANT SELECT (replica, seq, mac) ON TABLE {t} TO {w};
",
        idx = quote_ident(&format!("{}_ts", table.name)),
    );
    if let Some(r) = reader {
        let r = quote_ident(r);
        sql.push_str(&format!(
            "GRANT USAGE ON SCHEMA {schema} TO {r};\nGRANT SELECT ON TABLE {t} TO {r};\n"
        ));
    }
    Ok(sql)
}

/// The rustls client configuration for `mode` (None: plain), trusting the PEM certificates in
/// `ca_file`; `ca_field` names the setting in errors.
pub fn tls_config(
    mode: TableTls,
    ca_file: Option<&Path>,
    ca_field: &str,
) -> Result<Option<Arc<ClientConfig>>, String> {
    if mode == TableTls::Disable {
        return Ok(None);
    }
    let ca = ca_file.ok_or_else(|| format!("{ca_field}: required for verify-full"))?;
    let bad = |e: &dyn std::fmt::Display| format!("{ca_field} {}: {e}", ca.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
        roots.add(cert.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
    }
    if roots.is_empty() {
        return Err(bad(&"no CERTIFICATE block found"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Some(Arc::new(config)))
}

/// Connect with `tls` (None: plain), the connection driven on the current runtime.
pub async fn connect(
    pg: &tokio_postgres::Config,
    tls: Option<&Arc<ClientConfig>>,
    timeout: Duration,
) -> Result<Client, String> {
    let connecting = async {
        match tls {
            Some(tls) => {
                let make = tokio_postgres_rustls::MakeRustlsConnect::new((**tls).clone());
                let (client, conn) = pg.connect(make).await?;
                tokio::spawn(conn);
                Ok(client)
            }
            None => {
                let (client, conn) = pg.connect(tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                Ok(client)
            }
        }
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(db_error(&e)),
        Err(_) => Err(format!("no connection within {} ms", timeout.as_millis())),
    }
}

/// The server's message when there is one (tokio-postgres's own Display says only "db
/// error").
pub fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => crate::cause::chain(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_are_plain_identifiers() {
        let t = TableName::parse("pgvakt_audit.records").unwrap();
        assert_eq!(t.sql(), "\"pgvakt_audit\".\"records\"");
        for bad in [
            "records", "a.b.c", "A.b", "a.\"b\"", "a;drop.b", ".b", "a.", "a.1b",
        ] {
            assert!(TableName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_writer_gets_insert_and_the_chain_columns_only() {
        let t = TableName::parse("audit.records").unwrap();
        let sql = install_sql(&t, "pg\"vakt", Some("dpo")).unwrap();
        assert!(sql.contains("GRANT INSERT ON TABLE \"audit\".\"records\" TO \"pg\"\"vakt\";"));
        assert!(sql.contains(
            "GRANT SELECT (replica, seq, mac) ON TABLE \"audit\".\"records\" TO \"pg\"\"vakt\";"
        ));
        assert!(sql.contains("GRANT SELECT ON TABLE \"audit\".\"records\" TO \"dpo\";"));
        assert!(!sql.contains("UPDATE") && !sql.contains("DELETE"), "{sql}");
        for shared in [
            "public.audit",
            "pg_catalog.audit",
            "information_schema.audit",
        ] {
            let t = TableName::parse(shared).unwrap();
            assert!(install_sql(&t, "w", None).is_err(), "{shared}");
        }
    }
}
