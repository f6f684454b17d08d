//! Foreign keys, from both ends: the analysis needs them where a write's key checks or
//! referential actions reach rows a role's row rules hide.

use std::collections::HashMap;

use super::ForeignKey;

/// Per table oid: its own foreign keys, and those of other tables that reference it.
pub type ByTable = HashMap<u32, Vec<ForeignKey>>;

/// Every foreign key of the database, by referencing and by referenced table.
pub async fn load(
    client: &tokio_postgres::Client,
) -> Result<(ByTable, ByTable), tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT c.conrelid, c.confrelid, \
                    ARRAY(SELECT a.attname::pg_catalog.text FROM pg_catalog.unnest(c.conkey) WITH ORDINALITY AS k(n, i) \
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.i), \
                    ARRAY(SELECT a.attname::pg_catalog.text FROM pg_catalog.unnest(c.confkey) WITH ORDINALITY AS k(n, i) \
                          JOIN pg_catalog.pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.n ORDER BY k.i) \
             FROM pg_catalog.pg_constraint c WHERE c.contype = 'f' ORDER BY c.conrelid, c.oid",
            &[],
        )
        .await?;
    let mut from = ByTable::new();
    let mut to = ByTable::new();
    for r in rows {
        let (referencing, referenced): (u32, u32) = (r.get(0), r.get(1));
        let (columns, other_columns): (Vec<String>, Vec<String>) = (r.get(2), r.get(3));
        add(
            &mut from,
            &mut to,
            (referencing, columns),
            (referenced, other_columns),
        );
    }
    Ok((from, to))
}

/// Records one foreign key at both of its ends.
pub fn add(
    from: &mut ByTable,
    to: &mut ByTable,
    (referencing, columns): (u32, Vec<String>),
    (referenced, other_columns): (u32, Vec<String>),
) {
    to.entry(referenced).or_default().push(ForeignKey {
        columns: other_columns.clone(),
        other: referencing,
        other_columns: columns.clone(),
    });
    from.entry(referencing).or_default().push(ForeignKey {
        columns,
        other: referenced,
        other_columns,
    });
}
