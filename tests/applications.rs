//! CRM applications work through pgvakt without code changes: a screen layer written with
//! Django and one written with SQLAlchemy 2.0 (`tests/clients/apps/`) run as `secretary`,
//! `sales` and `marketing` over TLS, each operation also run directly against a reference copy
//! of the data that stores the role's masked values, and every outcome must be identical:
//! the same rows and values, or the same SQLSTATE where the policy refuses. A refusal through
//! pgvakt where the reference succeeds (a false refusal) fails the test, as does any other
//! difference. `scripts/clients-deps.sh` installs Django and SQLAlchemy.
//!
//! The reference is a schema per role in the same database, built by the owner: the tables
//! copied, the role's masks applied to the stored values (as the policy's mask methods
//! compute them), and the policy's refusals expressed in PostgreSQL's own terms: no column
//! privilege on blocked columns, no write privilege for a read-only role, and a trigger that
//! fails when a write would change a masked column (the write rule `keep`). It holds only the
//! rows of the people the role may see (row rules), and an activity may name only them.

use crate::common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Env;
use tokio::process::Command;

const CONTACTS: usize = 150;
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The role's masks as the demo policy defines them, applied to the reference's stored values.
fn masks(role: &str) -> &'static str {
    match role {
        "secretary" => {
            "UPDATE contacts SET bank_account = CASE WHEN bank_account IS NULL THEN NULL ELSE '***' END,
                date_of_birth = make_date(extract(year FROM date_of_birth)::int, 1, 1);"
        }
        "sales" => {
            r"UPDATE contacts SET bank_account = CASE
                WHEN bank_account IS NULL THEN NULL
                WHEN length(regexp_replace(bank_account, '[^0-9]', '', 'g')) <= 4
                    THEN regexp_replace(bank_account, '[^ ./-]', '*', 'g')
                ELSE regexp_replace(regexp_replace(bank_account, '[^0-9 ./-]', '*', 'g'),
                                    '[0-9](?=(?:[^0-9]*[0-9]){4})', '*', 'g') END,
                date_of_birth = make_date(extract(year FROM date_of_birth)::int, 1, 1);"
        }
        _ => {
            "UPDATE contacts SET phone = CASE WHEN phone IS NULL THEN NULL ELSE '***' END,
                street_address = CASE WHEN street_address IS NULL THEN NULL ELSE '***' END,
                postal_code = CASE WHEN postal_code IS NULL THEN NULL ELSE '***' END,
                city = CASE WHEN city IS NULL THEN NULL ELSE '***' END,
                country = '***',
                notes = CASE WHEN notes IS NULL THEN NULL ELSE '***' END;
             UPDATE activities SET subject = '***',
                body = CASE WHEN body IS NULL THEN NULL ELSE '***' END;
             UPDATE consents SET granted_by = CASE WHEN granted_by IS NULL THEN NULL ELSE '***' END;"
        }
    }
}

/// The role's privileges on the reference: those of the demo database, with blocked columns
/// left out of the column privileges.
fn grants(role: &str) -> &'static str {
    match role {
        "secretary" => {
            "GRANT SELECT ON companies, contacts, activities, consents TO secretary;
             GRANT INSERT, UPDATE ON contacts, activities TO secretary;
             GRANT USAGE ON SEQUENCE contacts_id_seq, activities_id_seq TO secretary;"
        }
        "sales" => {
            "GRANT SELECT ON companies, contacts, activities, consents TO sales;
             GRANT INSERT, UPDATE ON companies, contacts, activities TO sales;
             GRANT USAGE ON SEQUENCE companies_id_seq, contacts_id_seq, activities_id_seq TO sales;"
        }
        _ => {
            "GRANT SELECT ON companies, activities, consents TO marketing;
             GRANT SELECT (id, company_id, first_name, last_name, email, phone, street_address,
                 postal_code, city, country, notes, created_at, last_activity_at)
                 ON contacts TO marketing;"
        }
    }
}

/// The write rule `keep` of the masked columns, for roles that may write.
const KEEP: &str = "
CREATE FUNCTION keep_masked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.bank_account IS NOT NULL OR NEW.date_of_birth IS NOT NULL THEN
            RAISE EXCEPTION 'a new row''s masked column must be NULL' USING ERRCODE = '42501';
        END IF;
    ELSIF NEW.bank_account IS DISTINCT FROM OLD.bank_account
        OR NEW.date_of_birth IS DISTINCT FROM OLD.date_of_birth THEN
        RAISE EXCEPTION 'a masked column may only be written back as read' USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER keep_masked BEFORE INSERT OR UPDATE ON contacts
    FOR EACH ROW EXECUTE FUNCTION keep_masked();
";

/// The contacts the screens open by id (`get`, form saves, updates, transactions in
/// `tests/clients/apps/`).
const SCREEN_CONTACTS: &str = "7, 11, 12, 13, 14, 21, 22, 23, 24";

/// The people the screens work on are people every role may process: not restricted, active
/// within the retention period, consented to marketing. Every other person stays as the demo
/// made them, so lists, counts and searches still meet hidden people.
fn screen_subjects() -> String {
    format!(
        "DELETE FROM restrictions WHERE contact_id IN ({SCREEN_CONTACTS});
         UPDATE contacts SET last_activity_at = now() - interval '1 year'
             WHERE id IN ({SCREEN_CONTACTS}) AND last_activity_at < now() - interval '10 years';
         UPDATE consents SET withdrawn_at = NULL
             WHERE contact_id IN ({SCREEN_CONTACTS}) AND purpose = 'newsletter';
         INSERT INTO consents (contact_id, purpose, legal_basis, source)
             SELECT id, 'newsletter', 'consent', 'web_form' FROM contacts c
             WHERE id IN ({SCREEN_CONTACTS})
               AND NOT EXISTS (SELECT 1 FROM consents k WHERE k.contact_id = c.id AND k.purpose = 'newsletter');"
    )
}

/// An activity may only name a contact the role sees (the row rules' write check); a hidden
/// contact is absent from the reference, so this refuses what pgvakt refuses.
const SUBJECT_SEEN: &str = "
CREATE FUNCTION subject_seen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM contacts WHERE id = NEW.contact_id) THEN
        RAISE EXCEPTION 'the contact is not one the role sees' USING ERRCODE = '42501';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER subject_seen BEFORE INSERT OR UPDATE OF contact_id ON activities
    FOR EACH ROW EXECUTE FUNCTION subject_seen();
";

/// A copy of the CRM tables as they are now, in schema `ref_<role>`, as that role would see
/// them.
async fn reference(direct: &tokio_postgres::Client, role: &str) -> String {
    let schema = format!("ref_{role}");
    let mut sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; SET search_path = {schema};\n");
    // Only the rows of the people the role may see (its row rules: restriction, retention,
    // consent), as the policy means them.
    let visible = common::rows::visible_ids(role);
    for t in ["companies", "contacts", "activities", "consents"] {
        let rows = match t {
            "companies" => "true".to_owned(),
            "contacts" => format!("id IN ({visible})"),
            _ => format!("contact_id IN ({visible})"),
        };
        sql.push_str(&format!(
            "CREATE TABLE {t} (LIKE public.{t} INCLUDING ALL);
             INSERT INTO {t} SELECT * FROM public.{t} WHERE {rows};
             SELECT setval(pg_get_serial_sequence('{schema}.{t}', 'id'), last_value, is_called)
                 FROM public.{t}_id_seq;\n"
        ));
    }
    sql.push_str(masks(role));
    sql.push_str(SUBJECT_SEEN);
    sql.push_str(&format!("GRANT USAGE ON SCHEMA {schema} TO {role};\n"));
    sql.push_str(grants(role));
    if role != "marketing" {
        sql.push_str(KEEP);
    }
    sql.push_str("RESET search_path;");
    direct.batch_execute(&sql).await.expect("reference schema");
    schema
}

async fn run_layer(env: &Env, role: &str, schema: &str, layer: &str) -> Result<usize, String> {
    let started = Instant::now();
    let mut cmd = Command::new(root().join(".venv-clients/bin/python"));
    cmd.arg(root().join("tests/clients/apps").join(layer))
        .current_dir(root().join("tests/clients/apps"))
        .kill_on_drop(true);
    for var in [
        "PGHOST",
        "PGPORT",
        "PGUSER",
        "PGPASSWORD",
        "PGDATABASE",
        "PGSSLMODE",
        "PGOPTIONS",
        "PGSERVICE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("PGPASSFILE", "/dev/null")
        .env("PGVAKT_ROLE", role)
        .env("PGVAKT_REF_SCHEMA", schema)
        .env("PGVAKT_RUN", format!("app-{role}"))
        .env("PGVAKT_PROXY_HOST", "127.0.0.1")
        .env("PGVAKT_PROXY_PORT", env.proxy_port().to_string())
        .env("PGVAKT_DIRECT_HOST", env.cluster.host())
        .env("PGVAKT_DIRECT_PORT", env.cluster.port().to_string())
        .env("PGVAKT_DATABASE", "crm")
        .env("PGVAKT_USER", role)
        .env("PGVAKT_PASSWORD", role)
        .env("PGVAKT_ADMIN_USER", "admin")
        .env("PGVAKT_ADMIN_PASSWORD", "admin");
    let out = tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
        .await
        .map_err(|_| format!("{layer} as {role} timed out"))?
        .map_err(|e| format!("running {layer}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let shown = format!(
        "--- stdout\n{stdout}--- stderr\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let compared = stdout.lines().filter(|l| l.starts_with("ok: ")).count();
    if !out.status.success() || compared == 0 {
        return Err(format!("{layer} as {role} ({}):\n{shown}", out.status));
    }
    let summary = stdout
        .lines()
        .find(|l| l.contains(" operations, "))
        .unwrap_or_default();
    eprintln!(
        "{layer} as {role}: {compared} outcomes identical in {:.1?} ({summary})",
        started.elapsed()
    );
    Ok(compared)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn django_and_sqlalchemy_screens_see_what_a_masked_copy_shows() {
    tokio::task::spawn_blocking(crate::clients::ensure_drivers)
        .await
        .expect("driver installation");
    let env = Env::start_demo(CONTACTS).await;
    let direct = env.cluster.connect("crm").await.expect("direct");
    direct
        .batch_execute(&screen_subjects())
        .await
        .expect("screen subjects");
    let mut failures = Vec::new();
    let mut compared = 0;
    for role in ["secretary", "sales", "marketing"] {
        // Each role starts from the data as the previous one left it.
        let schema = reference(&direct, role).await;
        for layer in ["crm_django.py", "crm_sqlalchemy.py"] {
            match run_layer(&env, role, &schema, layer).await {
                Ok(n) => compared += n,
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    assert!(compared > 100, "only {compared} outcomes compared");
}
