//! The pseudonym mask's function upstream, `pgvakt.pseudonym(text)`, as the catalog finds it:
//! whether it is exactly what `pgvakt install` writes, owned by a trusted role, with a private
//! key table, and what it answers for the probe that ties it to the policy's key.

use tokio_postgres::Client;

use crate::policy::masks::{PseudonymKey, PSEUDONYM_FUNCTION, PSEUDONYM_PROBE};

/// The function's body: HMAC-SHA256 with the stored pads, as 64 hex digits; the inline SQL the
/// mask rendered before, with the pads read from the table. [`inspect`] compares it verbatim.
pub const FUNCTION_BODY: &str = "SELECT encode(sha256(k.opad || sha256(k.ipad || convert_to($1, 'UTF8'))), 'hex') FROM pgvakt.pseudonym_key AS k";

/// The function's settings as `pg_proc.proconfig` shows them.
pub(crate) const FUNCTION_CONFIG: &str = "search_path=pg_catalog, pg_temp";

/// What the proxy found upstream for the pseudonym mask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// The function as `pgvakt install` writes it; its answer for [`PSEUDONYM_PROBE`].
    Ready { probe: String },
    /// No `pgvakt.pseudonym(text)`.
    Missing,
    /// There, but not usable (why).
    Unusable(String),
}

impl Installed {
    /// Whether masks may call the function with the policy's `key`; otherwise why not.
    pub fn check(&self, key: Option<&PseudonymKey>) -> Result<(), String> {
        match (self, key) {
            (_, None) => Err("no pseudonym key is configured in the policy".into()),
            (Installed::Ready { probe }, Some(k)) if probe == k.probe() => Ok(()),
            (Installed::Ready { .. }, Some(k)) => Err(format!(
                "{PSEUDONYM_FUNCTION} holds a different key than the policy's (key {})",
                k.fingerprint()
            )),
            (Installed::Missing, _) => Err(format!("{PSEUDONYM_FUNCTION}(text) does not exist")),
            (Installed::Unusable(why), _) => Err(format!("{PSEUDONYM_FUNCTION}(text) {why}")),
        }
    }
}

/// Looks at `pgvakt.pseudonym(text)` through `client` (pgvakt's service connection): whether it
/// is what `pgvakt install` writes, owned by a trusted role, with a private key table, and what it
/// answers for the probe. Never fails: a check that cannot be made makes the function unusable.
pub async fn inspect(client: &Client) -> Installed {
    let row = match client
        .query_opt(
            "SELECT p.prosrc, p.prosecdef, coalesce(p.proconfig, '{}'::text[]), \
                    p.prorettype = 'pg_catalog.text'::pg_catalog.regtype, \
                    pg_catalog.pg_get_userbyid(p.proowner)::text, \
                    (o.rolsuper OR o.rolname = current_user OR o.oid = d.datdba), \
                    (k.oid IS NOT NULL AND k.relowner = p.proowner AND n.nspowner = p.proowner), \
                    NOT EXISTS (SELECT 1 FROM pg_catalog.aclexplode(k.relacl) a \
                                WHERE a.grantee <> k.relowner) \
             FROM pg_catalog.pg_proc p \
             JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
             JOIN pg_catalog.pg_roles o ON o.oid = p.proowner \
             JOIN pg_catalog.pg_database d ON d.datname = current_database() \
             LEFT JOIN pg_catalog.pg_class k ON k.relnamespace = n.oid \
                  AND k.relname = 'pseudonym_key' AND k.relkind = 'r' \
             WHERE n.nspname = 'pgvakt' AND p.proname = 'pseudonym' AND p.pronargs = 1 \
               AND p.proargtypes[0] = 'pg_catalog.text'::pg_catalog.regtype",
            &[],
        )
        .await
    {
        Ok(Some(row)) => row,
        Ok(None) => return Installed::Missing,
        Err(e) => return Installed::Unusable(format!("could not be checked: {e}")),
    };
    let body: String = row.get(0);
    let secdef: bool = row.get(1);
    let config: Vec<String> = row.get(2);
    let returns_text: bool = row.get(3);
    let owner: String = row.get(4);
    let trusted: bool = row.get(5);
    let same_owner: bool = row.get(6);
    let private: bool = row.get(7);
    let problem = if body != FUNCTION_BODY
        || !secdef
        || config != [FUNCTION_CONFIG]
        || !returns_text
    {
        Some("is not the function this version of pgvakt installs".to_owned())
    } else if !trusted {
        Some(format!(
            "is owned by {owner}, who is neither a superuser, the database owner nor pgvakt's service user"
        ))
    } else if !same_owner {
        Some("and its schema and key table pgvakt.pseudonym_key do not have the same owner".into())
    } else if !private {
        Some("has a key table that roles other than its owner may access".into())
    } else {
        None
    };
    if let Some(p) = problem {
        return Installed::Unusable(p);
    }
    match client
        .query_one("SELECT pgvakt.pseudonym($1::text)", &[&PSEUDONYM_PROBE])
        .await
    {
        Ok(r) => match r.get::<_, Option<String>>(0) {
            Some(probe) => Installed::Ready { probe },
            None => Installed::Unusable("has no key in pgvakt.pseudonym_key".into()),
        },
        Err(e) => Installed::Unusable(format!("could not be called: {e}")),
    }
}
