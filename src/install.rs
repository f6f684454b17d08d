//! `pgvakt install`: puts the pseudonym key where only its owner can read it, next to the
//! function the `pseudonym` mask calls, and tells the proxy whether that install is usable.
//!
//! # Threat model
//!
//! The `pseudonym` mask replaces a value by HMAC-SHA256(key, value). Whoever holds the key can
//! re-identify pseudonyms by hashing guesses (e-mail addresses, customer numbers and the like
//! are easy to enumerate), so the key is as sensitive as the values it hides. pgvakt used to
//! render the key's HMAC pads into every masked statement, where they were visible to anyone who
//! can read what the server executes: `pg_stat_activity.query` (the session's own user,
//! `pg_read_all_stats` members, monitoring), server logs (`log_statement`,
//! `log_min_duration_statement`, the `STATEMENT:` line of any error), `auto_explain`, and
//! `EXPLAIN` output (a plain `EXPLAIN` of a statement that filters on a masked column prints
//! the filter with its constants, so a restricted role could read the pads through pgvakt
//! itself), and log pipelines copy statements to places with wider access than the database.
//!
//! Design: the key never travels inside SQL text.
//! - `pgvakt install` (run by the database owner, or by the role that should own pgvakt's
//!   objects) creates schema `pgvakt` holding the table `pgvakt.pseudonym_key` (the pads, one
//!   row; `REVOKE ALL FROM PUBLIC`, any other grant revoked too, so only the owner and superusers
//!   read it) and `pgvakt.pseudonym(text) RETURNS text`, a `SECURITY DEFINER` SQL function with
//!   `SET search_path = pg_catalog, pg_temp` (no object of another schema can be slipped in) that
//!   computes the same HMAC-SHA256 the mask used to compute inline. `EXECUTE` is granted to
//!   `PUBLIC`: every role whose reads are masked must be able to call it.
//! - The pads reach the table through `COPY ... FROM STDIN` (binary): COPY data is neither
//!   statement text (`pg_stat_activity`, `log_statement`) nor bind parameters (which
//!   `log_statement = all` logs). No constraint on the table can fail on the key's values, so no
//!   error DETAIL can echo them.
//! - Masked SQL calls `pgvakt.pseudonym(CAST(col AS text))`. A `SECURITY DEFINER` function with a
//!   `SET` clause is never inlined, so plans show the call, not the body; the body reads the key
//!   from the table, so `pg_proc.prosrc` (readable by everyone) holds no key either.
//! - The proxy trusts the function only when [`inspect`] finds it exactly as written here:
//!   same body and settings, `SECURITY DEFINER`, function, schema and key table owned by one
//!   role that is a superuser, the database owner or pgvakt's own service user (a role that could
//!   redefine the function could make it return the raw value), the key table readable by its
//!   owner only, and its answer for [`PSEUDONYM_PROBE`] equal to the policy key's. Otherwise
//!   statements that need the mask are refused (fail closed) with a hint to run `pgvakt install`.
//! - Restricted roles cannot call `pgvakt.pseudonym` themselves through pgvakt: it is not a
//!   built-in function. That must stay so: calling it on guesses would be an oracle that
//!   re-identifies pseudonyms. Only the masks pgvakt renders may call it.
//!
//! Out of scope: superusers and the owning role read the key table (as they read the data); the
//! row is in WAL, replicas and backups of the database (which hold the personal data itself);
//! the proxy process holds the key too (from the policy's `pseudonym` source), to install it and
//! to check the installed one. Without TLS towards the server the key crosses the network in the
//! clear during install: run it over a Unix socket or loopback, or give `--ca-file`.
//!
//! Re-running install is idempotent and rotates the key atomically (one transaction); until the
//! proxy has the same key in its policy, its probe no longer matches and pseudonym statements
//! are refused. Rotate by installing the new key and reloading the policy right after.

use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;

use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, Transaction};

pub use crate::catalog::pseudonym::{inspect, Installed, FUNCTION_BODY};
use crate::policy::masks::{PseudonymKey, PSEUDONYM_FUNCTION, PSEUDONYM_PROBE};

/// Serialises concurrent installs into one database (an arbitrary constant: "pgvakt" in ASCII).
const INSTALL_LOCK: i64 = 0x7067_7661_6b74;

/// Everything but the key: created or brought up to date on every run.
const SCHEMA_SQL: &str = "\
CREATE TABLE IF NOT EXISTS pgvakt.pseudonym_key (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    ipad bytea NOT NULL,
    opad bytea NOT NULL,
    key_id text NOT NULL,
    installed_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON SCHEMA pgvakt IS 'Written by pgvakt install: the pseudonym mask function and its key.';
COMMENT ON TABLE pgvakt.pseudonym_key IS 'The pseudonym HMAC key pads: readable by the owner only.';
REVOKE ALL ON SCHEMA pgvakt FROM PUBLIC;
GRANT USAGE ON SCHEMA pgvakt TO PUBLIC;
REVOKE ALL ON TABLE pgvakt.pseudonym_key FROM PUBLIC;
DO $pgvakt$
DECLARE r record;
BEGIN
    FOR r IN SELECT DISTINCT a.grantee FROM pg_catalog.pg_class c,
                    pg_catalog.aclexplode(c.relacl) a
             WHERE c.oid = 'pgvakt.pseudonym_key'::regclass
               AND a.grantee <> c.relowner AND a.grantee <> 0
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON TABLE pgvakt.pseudonym_key FROM %I',
                                  pg_catalog.pg_get_userbyid(r.grantee));
    END LOOP;
END
$pgvakt$;";

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("loading the policy: {0}")]
    Policy(String),
    #[error("{path}: cannot read the CA certificates: {reason}")]
    Ca { path: PathBuf, reason: String },
    #[error("connecting to the database: {0}")]
    Connect(String),
    #[error(
        "schema pgvakt exists and is owned by {owner}, not by {user}: run pgvakt install as {owner}"
    )]
    NotOwner { owner: String, user: String },
    #[error("{step}: {message}")]
    Sql {
        step: &'static str,
        /// The server's message (tokio-postgres's own Display says only "db error").
        message: String,
    },
    #[error("the installed function answers {got} for the probe, not the key's {want}")]
    Probe { got: String, want: String },
}

/// What [`install`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallReport {
    pub database: String,
    /// The role that owns the schema, table and function.
    pub owner: String,
    /// Fingerprint of the installed key, and of the one it replaced (None on a first install).
    pub key_id: String,
    pub previous_key_id: Option<String>,
    /// Whether the proxy trusts `owner` whatever its service user is (superuser or database
    /// owner); otherwise only when the service user is `owner`.
    pub owner_trusted: bool,
}

impl std::fmt::Display for InstallReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "installed {PSEUDONYM_FUNCTION}(text) in database {} (owner {}), key {}",
            self.database, self.owner, self.key_id
        )?;
        match &self.previous_key_id {
            None => writeln!(f)?,
            Some(p) if *p == self.key_id => writeln!(f, " (unchanged)")?,
            Some(p) => writeln!(
                f,
                " (rotated from {p}: reload pgvakt's policy with the new key now)"
            )?,
        }
        if !self.owner_trusted {
            writeln!(
                f,
                "note: {} is neither a superuser nor the database owner; pgvakt uses the function \
                 only if its upstream.service_user is {}",
                self.owner, self.owner
            )?;
        }
        Ok(())
    }
}

/// Creates or updates pgvakt's schema, key table and function in the connected database and
/// stores `key` (replacing any previous key) in one transaction, as the connected user.
pub async fn install(
    client: &mut Client,
    key: &PseudonymKey,
) -> Result<InstallReport, InstallError> {
    let tx = client
        .transaction()
        .await
        .map_err(sql("starting the transaction"))?;
    lock_schema(&tx).await?;
    let (owner, database, owner_trusted) = own_schema(&tx).await?;
    tx.batch_execute(SCHEMA_SQL)
        .await
        .map_err(sql("creating the key table"))?;
    let previous_key_id = replace_key(&tx, key).await?;
    let key_id = key.fingerprint().to_owned();
    create_function(&tx, key).await?;
    tx.commit().await.map_err(sql("committing"))?;
    Ok(InstallReport {
        database,
        owner,
        key_id,
        previous_key_id,
        owner_trusted,
    })
}

/// A failed statement of an install, named by the step it served so the operator knows what
/// was being done when PostgreSQL refused.
fn sql(step: &'static str) -> impl Fn(tokio_postgres::Error) -> InstallError {
    move |e: tokio_postgres::Error| InstallError::Sql {
        step,
        message: pg_message(&e),
    }
}

/// The start of every install transaction: a search_path nothing can shadow a built-in in,
/// one install at a time, and schema `pgvakt` present.
async fn lock_schema(tx: &Transaction<'_>) -> Result<(), InstallError> {
    // Nothing the installing session's search_path holds can stand in for a built-in.
    tx.batch_execute("SET LOCAL search_path = pg_catalog, pg_temp")
        .await
        .map_err(sql("pinning the search_path"))?;
    tx.execute(
        "SELECT pg_catalog.pg_advisory_xact_lock($1)",
        &[&INSTALL_LOCK],
    )
    .await
    .map_err(sql("waiting for other installs"))?;
    tx.batch_execute("CREATE SCHEMA IF NOT EXISTS pgvakt")
        .await
        .map_err(sql("creating schema pgvakt"))?;
    Ok(())
}

/// The owner of schema `pgvakt`, the database, and whether the proxy trusts that owner. Only
/// the schema's owner may install: the function and key table must share one owner for the
/// proxy to trust them.
async fn own_schema(tx: &Transaction<'_>) -> Result<(String, String, bool), InstallError> {
    let row = tx
        .query_one(
            "SELECT pg_catalog.pg_get_userbyid(n.nspowner)::text, current_user::text, \
                    current_database()::text, \
                    (SELECT r.rolsuper OR r.oid = d.datdba FROM pg_catalog.pg_roles r \
                     WHERE r.rolname = current_user) \
             FROM pg_catalog.pg_namespace n, pg_catalog.pg_database d \
             WHERE n.nspname = 'pgvakt' AND d.datname = current_database()",
            &[],
        )
        .await
        .map_err(sql("reading the owner of schema pgvakt"))?;
    let (owner, user, database): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    let owner_trusted: bool = row.get::<_, Option<bool>>(3).unwrap_or(false);
    if owner != user {
        return Err(InstallError::NotOwner { owner, user });
    }
    Ok((owner, database, owner_trusted))
}

/// Replaces the stored key with `key`; the previous key's id, so the report can say whether
/// the key was rotated.
async fn replace_key(
    tx: &Transaction<'_>,
    key: &PseudonymKey,
) -> Result<Option<String>, InstallError> {
    let previous_key_id = tx
        .query_opt("SELECT key_id FROM pgvakt.pseudonym_key", &[])
        .await
        .map_err(sql("reading the previous key id"))?
        .map(|r| r.get::<_, String>(0));
    tx.batch_execute("DELETE FROM pgvakt.pseudonym_key")
        .await
        .map_err(sql("removing the previous key"))?;
    // COPY data: neither statement text nor logged bind parameters.
    let sink = tx
        .copy_in("COPY pgvakt.pseudonym_key (ipad, opad, key_id) FROM STDIN (FORMAT binary)")
        .await
        .map_err(sql("storing the key"))?;
    let mut writer = pin!(BinaryCopyInWriter::new(
        sink,
        &[Type::BYTEA, Type::BYTEA, Type::TEXT]
    ));
    let (ipad, opad) = key.pads();
    let (ipad, opad, key_id) = (ipad.to_vec(), opad.to_vec(), key.fingerprint().to_owned());
    writer
        .as_mut()
        .write(&[&ipad, &opad, &key_id])
        .await
        .map_err(sql("storing the key"))?;
    writer.finish().await.map_err(sql("storing the key"))?;
    Ok(previous_key_id)
}

/// Creates the function and checks, before committing, that it answers the probe as `key`
/// does: an install whose function computes something else would leave every pseudonym
/// statement refused.
async fn create_function(tx: &Transaction<'_>, key: &PseudonymKey) -> Result<(), InstallError> {
    tx.batch_execute(&function_sql())
        .await
        .map_err(sql("creating the function"))?;
    let got: Option<String> = tx
        .query_one("SELECT pgvakt.pseudonym($1::text)", &[&PSEUDONYM_PROBE])
        .await
        .map_err(sql("checking the function"))?
        .get(0);
    let got = got.unwrap_or_default();
    if got != key.probe() {
        return Err(InstallError::Probe {
            got,
            want: key.probe().to_owned(),
        });
    }
    Ok(())
}

/// What [`install_state`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateReport {
    pub database: String,
    /// The role that owns the state tables: pgvakt's service user.
    pub owner: String,
}

impl std::fmt::Display for StateReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "installed the shared state ({}) in database {} (owner {}); give pgvakt \
             upstream.service_user {} and upstream.service_database {}",
            crate::access::shared::STATE_TABLES.join(", "),
            self.database,
            self.owner,
            self.owner,
            self.database
        )
    }
}

/// Creates or brings up to date the state replicas share (lockout counts) in schema `pgvakt`,
/// owned by `service_user` (default: the connected user), readable by nobody else.
pub async fn install_state(
    client: &mut Client,
    service_user: Option<&str>,
) -> Result<StateReport, InstallError> {
    let tx = client
        .transaction()
        .await
        .map_err(sql("starting the transaction"))?;
    lock_schema(&tx).await?;
    let row = tx
        .query_one(
            "SELECT pg_catalog.pg_get_userbyid(n.nspowner)::text, current_user::text, \
                    current_database()::text \
             FROM pg_catalog.pg_namespace n WHERE n.nspname = 'pgvakt'",
            &[],
        )
        .await
        .map_err(sql("reading the owner of schema pgvakt"))?;
    let (owner, user, database): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    if owner != user {
        return Err(InstallError::NotOwner { owner, user });
    }
    tx.batch_execute(crate::access::shared::STATE_SQL)
        .await
        .map_err(sql("creating the shared state tables"))?;
    tx.batch_execute(crate::access::reads_shared::READS_SQL)
        .await
        .map_err(sql("creating the shared read counts"))?;
    let state_owner = service_user.unwrap_or(&user).to_owned();
    if state_owner != user {
        // The service user reads and writes the state; nobody else may (a user who could
        // would lift their own lock).
        for table in crate::access::shared::STATE_TABLES {
            tx.batch_execute(&format!(
                "ALTER TABLE {table} OWNER TO {}",
                quote_ident(&state_owner)
            ))
            .await
            .map_err(sql("giving the shared state to the service user"))?;
        }
        tx.batch_execute(&format!(
            "GRANT USAGE ON SCHEMA pgvakt TO {}",
            quote_ident(&state_owner)
        ))
        .await
        .map_err(sql("letting the service user use schema pgvakt"))?;
    }
    tx.commit().await.map_err(sql("committing"))?;
    Ok(StateReport {
        database,
        owner: state_owner,
    })
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The server's message and SQLSTATE, or the client error (tokio-postgres's Display of a server
/// error says only "db error").
fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => format!("{} ({})", d.message(), d.code().code()),
        None => crate::cause::chain(e),
    }
}

/// `CREATE OR REPLACE FUNCTION pgvakt.pseudonym(text)` with its grants.
fn function_sql() -> String {
    format!(
        "CREATE OR REPLACE FUNCTION {PSEUDONYM_FUNCTION}(text) RETURNS text \
         LANGUAGE sql STABLE STRICT PARALLEL SAFE SECURITY DEFINER \
         SET search_path = pg_catalog, pg_temp \
         AS $pgvakt${FUNCTION_BODY}$pgvakt$;\n\
         COMMENT ON FUNCTION {PSEUDONYM_FUNCTION}(text) IS \
         'pgvakt pseudonym mask: HMAC-SHA256 with the key in pgvakt.pseudonym_key, as hex';\n\
         REVOKE ALL ON FUNCTION {PSEUDONYM_FUNCTION}(text) FROM PUBLIC;\n\
         GRANT EXECUTE ON FUNCTION {PSEUDONYM_FUNCTION}(text) TO PUBLIC;"
    )
}

/// `pgvakt install --upstream DSN`: the key from the policy files, installed through `dsn` (TLS
/// verified against `ca_file` when given, otherwise a plain connection).
/// Then the shared state (lockout counts), owned by `service_user` when given. Without a key in
/// the policy only the shared state is installed. Returns what was done, as text.
pub async fn run(
    dsn: &str,
    policy: &[PathBuf],
    ca_file: Option<&Path>,
    service_user: Option<&str>,
) -> Result<String, InstallError> {
    let set = crate::policy::load(policy).map_err(|e| InstallError::Policy(e.to_string()))?;
    let mut client = match ca_file {
        Some(ca) => {
            let mut config: tokio_postgres::Config = crate::dsn::Dsn::parse(dsn)
                .map_err(InstallError::Connect)?
                .config;
            if config.get_application_name().is_none() {
                config.application_name("pgvakt install");
            }
            connect(&config, Some(ca)).await?
        }
        // TLS as the connection string's sslmode asks.
        None => crate::dsn::connect(dsn, "pgvakt install")
            .await
            .map_err(InstallError::Connect)?,
    };
    let mut out = match set.pseudonym_key() {
        Some(key) => install(&mut client, key).await?.to_string(),
        None => format!(
            "the policy ({}) configures no pseudonym key: the pseudonym function is not installed\n",
            policy
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    out.push_str(&install_state(&mut client, service_user).await?.to_string());
    Ok(out)
}

/// Connects with `config`, over verified TLS when `ca_file` is given.
pub async fn connect(
    config: &tokio_postgres::Config,
    ca_file: Option<&Path>,
) -> Result<Client, InstallError> {
    let client = match ca_file {
        Some(ca) => {
            let mut config = config.clone();
            config.ssl_mode(tokio_postgres::config::SslMode::Require);
            let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(ca)?);
            let (client, conn) = config
                .connect(tls)
                .await
                .map_err(|e| InstallError::Connect(pg_message(&e)))?;
            tokio::spawn(conn);
            client
        }
        None => {
            let (client, conn) = config
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| InstallError::Connect(pg_message(&e)))?;
            tokio::spawn(conn);
            client
        }
    };
    Ok(client)
}

fn tls_config(ca: &Path) -> Result<rustls::ClientConfig, InstallError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let err = |reason: String| InstallError::Ca {
        path: ca.to_path_buf(),
        reason,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| err(e.to_string()))? {
        roots
            .add(cert.map_err(|e| err(e.to_string()))?)
            .map_err(|e| err(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(err("no certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_sql_names_the_body_and_settings_inspect_expects() {
        let sql = function_sql();
        assert!(sql.contains(&format!("$pgvakt${FUNCTION_BODY}$pgvakt$")));
        assert!(sql.contains("SECURITY DEFINER SET search_path = pg_catalog, pg_temp"));
        assert!(!FUNCTION_BODY.contains("$pgvakt$"));
    }

    #[test]
    fn installed_checks_the_key() {
        let k = PseudonymKey::new(b"a pseudonym key that is long enough");
        let other = PseudonymKey::new(b"another pseudonym key, long enough");
        let ready = Installed::Ready {
            probe: k.probe().to_owned(),
        };
        assert_eq!(ready.check(Some(&k)), Ok(()));
        assert!(ready.check(Some(&other)).is_err());
        assert!(ready.check(None).is_err());
        assert!(Installed::Missing.check(Some(&k)).is_err());
        assert!(Installed::Unusable("x".into()).check(Some(&k)).is_err());
    }
}
