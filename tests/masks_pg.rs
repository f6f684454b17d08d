//! Every masking method, rendered for every column type the policy format names, run by a real
//! PostgreSQL: the result keeps the column's type (so binary-format clients decode it), NULL
//! stays NULL, the masked value differs from the stored one where the method hides something,
//! and the pseudonym is the keyed HMAC-SHA256 that pgvakt computes itself (through the function
//! `pgvakt install` creates), with the same values as the inline formula pgvakt rendered before.

use hmac::{Hmac, Mac};
use pgvakt::cluster::{Cluster, ClusterOptions};
use pgvakt::policy::masks::{MaskKind, PseudonymKey};
use pgvakt::policy::model::{ColumnType, MaskMethod};
use sha2::Sha256;

/// (column, declared type, type category, a stored value)
const COLUMNS: &[(&str, &str, char, &str)] = &[
    ("t", "text", 'S', "'SE45 5000 0000 0583 9825 7466'"),
    ("v", "character varying(40)", 'S', "'anna.berg@example.com'"),
    ("d", "date", 'D', "'1987-06-15'"),
    (
        "ts",
        "timestamp with time zone",
        'D',
        "'2024-03-01 12:34:56+00'",
    ),
    ("i", "integer", 'N', "123456"),
    ("b", "bigint", 'N', "9876543210"),
    ("n", "numeric(12,2)", 'N', "98765.43"),
];

const KEY: &[u8] = b"a pseudonym key for the mask tests";

fn methods() -> Vec<MaskMethod> {
    vec![
        MaskMethod::builtin(MaskKind::Null),
        MaskMethod::builtin(MaskKind::Redact),
        MaskMethod::builtin(MaskKind::Partial {
            keep_first: 2,
            keep_last: 2,
        }),
        MaskMethod::builtin(MaskKind::Email),
        MaskMethod::builtin(MaskKind::Phone),
        MaskMethod::builtin(MaskKind::BankAccount),
        MaskMethod::builtin(MaskKind::DateYear),
        MaskMethod::builtin(MaskKind::Pseudonym(Some(PseudonymKey::new(KEY)))),
        MaskMethod::custom("initial", "left(CAST({col} AS text), 1) || '***'"),
    ]
}

/// The pseudonym SQL pgvakt rendered up to the key's move upstream (pads inline).
fn old_pseudonym_sql(col: &str, ty: &str, cat: char) -> String {
    let mut block = [0u8; 64];
    block[..KEY.len()].copy_from_slice(KEY);
    let ipad = hex::encode(block.map(|b| b ^ 0x36));
    let opad = hex::encode(block.map(|b| b ^ 0x5c));
    let hex = format!(
        "encode(sha256(decode('{opad}', 'hex') || sha256(decode('{ipad}', 'hex') || convert_to(CAST(({col}) AS text), 'UTF8'))), 'hex')"
    );
    let expr = match (cat, ty) {
        ('N', "integer") => format!("CAST(CAST('x' || left({hex}, 8) AS bit(32)) AS integer)"),
        ('N', "bigint") => format!("CAST(CAST('x' || left({hex}, 16) AS bit(64)) AS bigint)"),
        _ => hex,
    };
    format!("CAST((CASE WHEN ({col}) IS NULL THEN NULL ELSE {expr} END) AS {ty})")
}

#[tokio::test]
async fn every_mask_keeps_the_column_type_in_postgresql() {
    let cluster = Cluster::start_async(ClusterOptions::default())
        .await
        .expect("PostgreSQL");
    let mut c = cluster.connect("postgres").await.expect("connect");
    pgvakt::install::install(&mut c, &PseudonymKey::new(KEY))
        .await
        .expect("pgvakt install");
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|(n, t, _, _)| format!("{n} {t}"))
        .collect();
    let vals: Vec<&str> = COLUMNS.iter().map(|(_, _, _, v)| *v).collect();
    c.batch_execute(&format!(
        "CREATE TABLE m ({}); INSERT INTO m VALUES ({}); INSERT INTO m DEFAULT VALUES;",
        cols.join(", "),
        vals.join(", ")
    ))
    .await
    .expect("table");
    let mut checked = 0;
    let mut old_checked = 0;
    for method in methods() {
        for (col, ty, cat, _) in COLUMNS {
            let column = ColumnType {
                sql_name: (*ty).into(),
                category: *cat,
            };
            let Ok(sql) = method.render(&format!("m.\"{col}\""), &column) else {
                // A method that cannot mask a type refuses it; the statement is then refused.
                continue;
            };
            if method.kind == MaskKind::Custom && *cat != 'S' {
                // This template yields text; on other types its cast fails at run time, which
                // is the policy's choice to make (it is applied to text columns only).
                continue;
            }
            let rows = c
                .query(
                    &format!(
                        "SELECT format_type(pg_typeof({sql})::oid, NULL), ({sql})::text, \
                                ({sql}) IS NULL, m.\"{col}\"::text, m.\"{col}\" IS NULL \
                         FROM m ORDER BY m.\"{col}\" IS NULL"
                    ),
                    &[],
                )
                .await
                .unwrap_or_else(|e| panic!("{} on {ty}: {sql}: {e}", method.name));
            let want_type = ty.split('(').next().unwrap_or(ty);
            for r in &rows {
                let got: String = r.get(0);
                assert_eq!(got, want_type, "{} on {ty}: {sql}", method.name);
            }
            // NULL in, NULL out; a value in, a value out (except `null`).
            let (masked, masked_null, stored, stored_null): (
                Option<String>,
                bool,
                Option<String>,
                bool,
            ) = (
                rows[0].get(1),
                rows[0].get(2),
                rows[0].get(3),
                rows[0].get(4),
            );
            assert!(!stored_null);
            assert!(
                rows[1].get::<_, bool>(2),
                "{} on {ty}: NULL must stay NULL",
                method.name
            );
            if method.kind == MaskKind::Null {
                assert!(masked_null);
            } else {
                assert!(!masked_null, "{} on {ty}", method.name);
                assert_ne!(
                    masked, stored,
                    "{} on {ty} shows the stored value",
                    method.name
                );
            }
            if method.name == "pseudonym" && *cat == 'S' {
                let mut mac = Hmac::<Sha256>::new_from_slice(KEY).expect("key");
                mac.update(stored.as_deref().unwrap_or_default().as_bytes());
                let want = hex::encode(mac.finalize().into_bytes());
                let got = masked.unwrap_or_default();
                assert!(
                    want.starts_with(got.trim_end()) || got.contains(&want[..16]),
                    "pseudonym {got} is not HMAC-SHA256 {want}"
                );
            }
            if method.name == "pseudonym" {
                // The formula pgvakt rendered inline (key pads in the SQL text) before the key
                // moved upstream gives the same value for every type.
                let old = old_pseudonym_sql(&format!("m.\"{col}\""), ty, *cat);
                let same: bool = c
                    .query_one(
                        &format!(
                            "SELECT ({sql}) IS NOT DISTINCT FROM ({old}) FROM m \
                             WHERE m.\"{col}\" IS NOT NULL"
                        ),
                        &[],
                    )
                    .await
                    .unwrap_or_else(|e| panic!("old formula on {ty}: {e}"))
                    .get(0);
                assert!(same, "pseudonym on {ty} differs from the old formula");
                old_checked += 1;
            }
            checked += 1;
        }
    }
    assert!(checked >= 25, "only {checked} method/type pairs rendered");
    assert_eq!(
        old_checked, 4,
        "text, varchar, integer and bigint pseudonyms compared"
    );
}
