//! Parameter types a client may declare for a parameter that row pushdown repeats inside a
//! row-ruled stand-in (see `row_pushdown`): the declared type chooses the comparison, and some
//! choices would convert every row's value, hidden rows included.

use std::collections::BTreeSet;

/// Types a client may declare for a parameter repeated inside a stand-in (a Parse's type
/// OIDs, `PREPARE p(type, ...)`), with 0 for one it leaves to PostgreSQL. A declared type
/// chooses the comparison: compared with a bigint column, an `oid` (or `regclass`, ...)
/// parameter makes PostgreSQL convert the column's value to oid on every row the comparison
/// meets, hidden rows included, and the conversion fails past 4294967295, so an error would
/// tell that such a row exists. With these types nothing that can fail converts the value of
/// an integer, text or uuid column (an integer becomes numeric or double precision at most;
/// otherwise the parameter is converted, once, to the column's type).
pub const SAFE_DECLARED_TYPES: &[(u32, &[&str])] = &[
    (0, &[]),
    (705, &["unknown"]),
    (21, &["smallint", "int2"]),
    (23, &["integer", "int", "int4"]),
    (20, &["bigint", "int8"]),
    (1700, &["numeric", "decimal"]),
    (700, &["real", "float4"]),
    (701, &["double precision", "float8", "float"]),
    (25, &["text"]),
    (1043, &["varchar", "character varying"]),
    (1042, &["char", "character", "bpchar"]),
    (19, &["name"]),
    (2950, &["uuid"]),
];

/// Whether a type written in `PREPARE name(type, ...)` is one of [`SAFE_DECLARED_TYPES`].
pub fn safe_declared_name(ty: &str) -> bool {
    let t = ty.trim().to_ascii_lowercase();
    let t = t.strip_prefix("pg_catalog.").unwrap_or(&t);
    let base = t.split('(').next().unwrap_or_default().trim();
    SAFE_DECLARED_TYPES
        .iter()
        .any(|(_, names)| names.contains(&base))
}

/// The first parameter repeated inside a stand-in (`pushed`) that a Parse declares with a type
/// (`oids`, PostgreSQL's type OIDs, 0 for unspecified) not among [`SAFE_DECLARED_TYPES`].
pub fn unsafe_declared(pushed: &BTreeSet<usize>, oids: &[u32]) -> Option<(usize, u32)> {
    pushed.iter().find_map(|&n| {
        let oid = *oids.get(n.checked_sub(1)?)?;
        (!SAFE_DECLARED_TYPES.iter().any(|(o, _)| *o == oid)).then_some((n, oid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_types_that_could_convert_a_column_are_told_apart() {
        for ty in [
            "bigint",
            "INT4",
            "numeric(10, 2)",
            "varchar(20)",
            "pg_catalog.text",
        ] {
            assert!(safe_declared_name(ty), "{ty}");
        }
        for ty in [
            "oid",
            "regclass",
            "\"char\"",
            "int8[]",
            "timestamp",
            "money",
        ] {
            assert!(!safe_declared_name(ty), "{ty}");
        }
        let pushed: BTreeSet<usize> = [2].into_iter().collect();
        // oid 26 for $2 is refused; for $1, which is not repeated, it does not matter.
        assert_eq!(unsafe_declared(&pushed, &[20, 26]), Some((2, 26)));
        assert_eq!(unsafe_declared(&pushed, &[26, 20]), None);
        assert_eq!(unsafe_declared(&pushed, &[20]), None);
        assert_eq!(unsafe_declared(&pushed, &[0, 0]), None);
    }
}
