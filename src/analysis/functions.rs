//! Functions and catalog relations a restricted role may not use: they run SQL text, read
//! files, or expose values and query text past the analysis; and those it may use only with a
//! policy capability.

/// Whether a relation is one of pg_catalog's statistics views or tables, readable by a
/// restricted role only with the `statistics_views` capability: they hold column values (most
/// common values, histogram bounds) or other sessions' activity and query text.
pub fn statistics_relation(schema: &str, name: &str) -> bool {
    schema == "pg_catalog" && super::authority::is_statistics_relation(name)
}

/// Built-in functions refused for restricted roles (names without schema, lower case).
pub fn is_denied_function(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "query_to_xml",
        "query_to_xml_and_xmlschema",
        "query_to_xmlschema",
        "cursor_to_xml",
        "cursor_to_xmlschema",
        "table_to_xml",
        "table_to_xml_and_xmlschema",
        "table_to_xmlschema",
        "schema_to_xml",
        "schema_to_xml_and_xmlschema",
        "schema_to_xmlschema",
        "database_to_xml",
        "database_to_xml_and_xmlschema",
        "database_to_xmlschema",
        "ts_stat",
        // The two-argument form runs its text argument as a query.
        "ts_rewrite",
        "current_query",
        "pg_read_file",
        "pg_read_binary_file",
        "pg_stat_file",
        "pg_file_write",
        "pg_stat_get_activity",
        "pg_stat_statements",
        "pg_stat_statements_info",
        "pg_prepared_statement",
        "pg_cursor",
        "pg_get_backend_memory_contexts",
        "pg_log_backend_memory_contexts",
        "pg_stat_get_backend_activity",
        "set_role",
        "dblink",
    ];
    const PREFIXES: &[&str] = &[
        "lo_",
        "pg_ls_",
        "dblink_",
        "pg_read_",
        "pg_stat_get_backend_",
    ];
    EXACT.contains(&name)
        || PREFIXES.iter().any(|p| name.starts_with(p))
        || name == "loread"
        || name == "lowrite"
}

/// Listed functions whose effect outlives the statement that calls them: a setting, a
/// session-level advisory lock, a sequence's position (and `currval`), the random seed, a
/// notification. A read that calls one changes what the session or other sessions see, so it
/// is not run before its intent record is durable (see `Analysed::reads_only`).
pub fn changes_state(name: &str) -> bool {
    matches!(
        name,
        "set_config"
            | "pg_advisory_lock"
            | "pg_advisory_lock_shared"
            | "pg_try_advisory_lock"
            | "pg_try_advisory_lock_shared"
            | "pg_advisory_unlock"
            | "pg_advisory_unlock_shared"
            | "pg_advisory_unlock_all"
            | "nextval"
            | "setval"
            | "setseed"
            | "pg_notify"
    )
}

/// Catalog relations whose rows hold column values, statistics or other sessions' SQL.
pub fn is_denied_relation(schema: &str, name: &str) -> bool {
    const DENIED: &[&str] = &[
        "pg_stats",
        "pg_stats_ext",
        "pg_stats_ext_exprs",
        "pg_statistic",
        "pg_statistic_ext_data",
        "pg_stat_activity",
        "pg_stat_statements",
        "pg_stat_statements_info",
        "pg_largeobject",
        "pg_file_settings",
        "pg_hba_file_rules",
        "pg_ident_file_mappings",
    ];
    schema == "pg_catalog" && DENIED.contains(&name)
}

/// Columns of catalog relations a restricted role reads without: the SQL text of the
/// session's own cursors and prepared statements is pgvakt's rewriting (mask expressions), not
/// what the client sent. Drivers ask these views only whether a cursor or statement exists.
pub fn is_hidden_catalog_column(schema: &str, name: &str, column: &str) -> bool {
    schema == "pg_catalog"
        && matches!(name, "pg_cursors" | "pg_prepared_statements")
        && column == "statement"
}

/// Settings a restricted role may not change with SET or set_config.
pub fn is_protected_setting(name: &str) -> bool {
    matches!(
        name,
        "role"
            | "session_authorization"
            | "standard_conforming_strings"
            | "search_path"
            | "backslash_quote"
            | "escape_string_warning"
            | "client_encoding"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statistics_relations_are_pg_catalog_statistics_only() {
        for name in [
            "pg_stats",
            "pg_stats_ext",
            "pg_stats_ext_exprs",
            "pg_statistic",
            "pg_statistic_ext_data",
            "pg_stat_activity",
            "pg_stat_user_tables",
            "pg_stat_all_indexes",
            "pg_stat_database",
            "pg_statio_user_tables",
            "pg_statio_all_sequences",
        ] {
            assert!(statistics_relation("pg_catalog", name), "{name}");
        }
        for (schema, name) in [
            ("pg_catalog", "pg_class"),
            ("pg_catalog", "pg_statistic_ext"),
            ("pg_catalog", "pg_settings"),
            ("pg_catalog", "pg_stat"),
            ("public", "pg_stats"),
            ("public", "pg_stat_statements"),
            ("information_schema", "tables"),
        ] {
            assert!(!statistics_relation(schema, name), "{schema}.{name}");
        }
    }
}
