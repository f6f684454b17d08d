//! What a restricted role's SQL may call and read, as allowlists: a function, operator or
//! catalog relation that is not listed here is refused, wherever it appears in the statement.
//! Listing is deliberate work: a new entry must compute its result from its arguments, from
//! settings and clocks, or from catalog metadata — never from table rows, files, large
//! objects, other sessions or SQL text it runs.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::policy::model::Capability;

/// What a listed function may read besides its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Nothing: a value computed from its arguments (and the clock or a random source).
    Arguments,
    /// Session or server settings and identity (`current_setting`, `version`).
    Session,
    /// Catalog metadata: names, types, definitions, privileges, sizes — no row values.
    Catalog,
    /// Sequence state (`nextval` and friends): counters, not personal data.
    Sequences,
    /// Allowed only with the capability named (e.g. `pg_notify` with `notify`).
    Needs(Capability),
}

use Reads::*;

/// Built-in functions (lower case, as in `pg_catalog`), each with what it reads.
#[rustfmt::skip]
const FUNCTIONS: &[(&[&str], Reads)] = &[
    // Numbers.
    (&[
        "abs", "cbrt", "ceil", "ceiling", "degrees", "div", "exp", "factorial", "floor", "gcd",
        "lcm", "ln", "log", "log10", "min_scale", "mod", "pi", "power", "pow", "radians", "round",
        "scale", "sign", "sqrt", "trim_scale", "trunc", "width_bucket", "random", "random_normal",
        "setseed", "acos", "acosd", "asin", "asind", "atan", "atand", "atan2", "atan2d", "cos",
        "cosd", "cot", "cotd", "sin", "sind", "tan", "tand", "sinh", "cosh", "tanh", "asinh",
        "acosh", "atanh", "erf", "erfc", "gamma", "lgamma", "numeric", "int2", "int4", "int8",
        "float4", "float8", "num_nulls", "num_nonnulls",
    ], Arguments),
    // Text and bytes.
    (&[
        "ascii", "bit_length", "btrim", "char_length", "character_length", "chr", "concat",
        "concat_ws", "format", "initcap", "left", "length", "lower", "lpad", "ltrim", "md5",
        "normalize", "is_normalized", "octet_length", "overlay", "position", "quote_ident",
        "quote_literal", "quote_nullable", "regexp_count", "regexp_instr", "regexp_like",
        "regexp_match", "regexp_matches", "regexp_replace", "regexp_split_to_array",
        "regexp_split_to_table", "regexp_substr", "repeat", "replace", "reverse", "right", "rpad",
        "rtrim", "split_part", "starts_with", "string_to_array", "string_to_table", "strpos",
        "substr", "substring", "to_ascii", "to_hex", "to_bin", "to_oct", "translate", "unistr",
        "upper", "casefold", "encode", "decode", "convert", "convert_from", "convert_to",
        "sha224", "sha256", "sha384", "sha512", "get_bit", "get_byte", "set_bit", "set_byte",
        "bit_count", "similar_to_escape", "similar_escape", "like_escape", "text", "varchar",
        "bpchar", "name", "char", "bool", "textlen", "textcat", "parse_ident", "string_agg",
        "crc32", "crc32c", "hashtext", "hashtextextended",
    ], Arguments),
    // Formatting, dates and times.
    (&[
        "to_char", "to_date", "to_number", "to_timestamp", "age", "clock_timestamp", "date_add",
        "date_bin", "date_part", "date_subtract", "date_trunc", "extract", "isfinite",
        "justify_days", "justify_hours", "justify_interval", "make_date", "make_interval",
        "make_time", "make_timestamp", "make_timestamptz", "now", "statement_timestamp",
        "timeofday", "transaction_timestamp", "timezone", "overlaps", "date", "time", "timetz",
        "timestamp", "timestamptz", "interval", "pg_sleep", "pg_sleep_for", "pg_sleep_until",
    ], Arguments),
    // Enums, ranges, arrays, UUIDs, network addresses.
    (&[
        "enum_first", "enum_last", "enum_range", "lower_inc", "upper_inc", "lower_inf",
        "upper_inf", "isempty", "range_merge", "int4range", "int8range", "numrange", "tsrange",
        "tstzrange", "daterange", "int4multirange", "int8multirange", "nummultirange",
        "tsmultirange", "tstzmultirange", "datemultirange", "multirange", "array_append",
        "array_cat", "array_dims", "array_fill", "array_length", "array_lower", "array_ndims",
        "array_position", "array_positions", "array_prepend", "array_remove", "array_replace",
        "array_to_string", "array_upper", "array_sample", "array_shuffle", "cardinality",
        "trim_array", "unnest", "generate_series", "generate_subscripts", "gen_random_uuid",
        "uuidv4", "host", "hostmask", "masklen", "netmask", "network", "abbrev", "broadcast",
        "family", "inet_merge", "inet_same_family", "set_masklen",
    ], Arguments),
    // Text search (not ts_stat or ts_rewrite: they run SQL text).
    (&[
        "to_tsvector", "to_tsquery", "plainto_tsquery", "phraseto_tsquery",
        "websearch_to_tsquery", "ts_rank", "ts_rank_cd", "ts_headline", "setweight", "strip",
        "numnode", "querytree", "tsvector_to_array", "array_to_tsvector", "ts_delete",
        "ts_filter", "tsquery_phrase",
    ], Arguments),
    // XML and JSON built from values (not the *_to_xml functions: they read tables by name
    // or run SQL text).
    (&[
        "xmlcomment", "xmlconcat", "xmlagg", "xmltext", "xpath", "xpath_exists",
        "xml_is_well_formed", "xml_is_well_formed_document", "xml_is_well_formed_content",
        "to_json", "to_jsonb", "array_to_json", "row_to_json", "json_build_array",
        "jsonb_build_array", "json_build_object", "jsonb_build_object", "json_object",
        "jsonb_object", "json_agg", "jsonb_agg", "json_agg_strict", "jsonb_agg_strict",
        "json_object_agg", "jsonb_object_agg", "json_object_agg_strict",
        "jsonb_object_agg_strict", "json_object_agg_unique", "jsonb_object_agg_unique",
        "json_object_agg_unique_strict", "jsonb_object_agg_unique_strict", "json_array_length",
        "jsonb_array_length", "json_each", "jsonb_each", "json_each_text", "jsonb_each_text",
        "json_extract_path", "jsonb_extract_path", "json_extract_path_text",
        "jsonb_extract_path_text", "json_object_keys", "jsonb_object_keys",
        "json_populate_record", "jsonb_populate_record", "json_populate_recordset",
        "jsonb_populate_recordset", "json_array_elements", "jsonb_array_elements",
        "json_array_elements_text", "jsonb_array_elements_text", "json_typeof", "jsonb_typeof",
        "json_to_record", "jsonb_to_record", "json_to_recordset", "jsonb_to_recordset",
        "json_strip_nulls", "jsonb_strip_nulls", "jsonb_set", "jsonb_set_lax", "jsonb_insert",
        "jsonb_pretty", "jsonb_path_exists", "jsonb_path_match", "jsonb_path_query",
        "jsonb_path_query_array", "jsonb_path_query_first", "jsonb_path_exists_tz",
        "jsonb_path_match_tz", "jsonb_path_query_tz", "jsonb_path_query_array_tz",
        "jsonb_path_query_first_tz", "json", "jsonb", "json_scalar", "json_serialize",
    ], Arguments),
    // Aggregates and window functions.
    (&[
        "avg", "bit_and", "bit_or", "bit_xor", "bool_and", "bool_or", "count", "every", "max",
        "min", "sum", "corr", "covar_pop", "covar_samp", "regr_avgx", "regr_avgy", "regr_count",
        "regr_intercept", "regr_r2", "regr_slope", "regr_sxx", "regr_sxy", "regr_syy", "stddev",
        "stddev_pop", "stddev_samp", "variance", "var_pop", "var_samp", "mode", "percentile_cont",
        "percentile_disc", "rank", "dense_rank", "percent_rank", "cume_dist", "any_value",
        "range_agg", "range_intersect_agg", "array_agg", "row_number", "ntile", "lag", "lead",
        "first_value", "last_value", "nth_value",
    ], Arguments),
    // Session identity and settings (set_config is checked for the setting it changes).
    (&[
        "current_database", "current_schema", "current_schemas", "current_user", "session_user",
        "current_role", "user", "version", "pg_backend_pid", "inet_client_addr",
        "inet_client_port", "inet_server_addr", "inet_server_port", "pg_postmaster_start_time",
        "pg_conf_load_time", "current_setting", "set_config", "pg_export_snapshot", "txid_current",
        "txid_current_if_assigned", "pg_current_xact_id", "pg_current_xact_id_if_assigned",
        "pg_trigger_depth", "pg_client_encoding", "pg_is_in_recovery", "pg_jit_available",
        "pg_my_temp_schema", "pg_listening_channels", "pg_encoding_to_char",
        "pg_char_to_encoding", "pg_encoding_max_length", "pg_typeof", "pg_column_size",
        "pg_size_pretty", "pg_size_bytes", "pg_collation_for", "pg_input_is_valid",
        "pg_input_error_info", "pg_advisory_lock", "pg_advisory_lock_shared",
        "pg_advisory_unlock", "pg_advisory_unlock_shared", "pg_advisory_unlock_all",
        "pg_advisory_xact_lock", "pg_advisory_xact_lock_shared", "pg_try_advisory_lock",
        "pg_try_advisory_lock_shared", "pg_try_advisory_xact_lock",
        "pg_try_advisory_xact_lock_shared",
    ], Session),
    // Catalog metadata, as drivers, ORMs and psql's \d commands ask for it.
    (&[
        "format_type", "acldefault", "aclexplode", "makeaclitem", "to_regclass", "to_regtype", "to_regtypemod", "to_regproc",
        "to_regprocedure", "to_regnamespace", "to_regrole", "to_regoper", "to_regoperator",
        "to_regcollation", "pg_get_userbyid", "pg_get_constraintdef", "pg_get_indexdef",
        "pg_get_viewdef", "pg_get_expr", "pg_get_function_arguments", "pg_get_function_result",
        "pg_get_function_identity_arguments", "pg_get_triggerdef", "pg_get_ruledef",
        "pg_get_serial_sequence", "pg_get_keywords", "pg_get_partkeydef", "getdatabaseencoding", "oidvectortypes", "pg_describe_object", "pg_identify_object", "pg_identify_object_as_address", "pg_opfamily_is_visible", "pg_relation_is_publishable", "pg_statistics_obj_is_visible", "pg_tablespace_size", "pg_timezone_names", "pg_timezone_abbrevs", "pg_ts_dict_is_visible", "pg_ts_parser_is_visible", "pg_ts_template_is_visible", "ts_token_type", "ts_parse", "ts_debug", "pg_get_keywords", "pg_get_constraintdef", "pg_partition_ancestors", "pg_partition_root", "pg_partition_tree", "pg_get_statisticsobjdef_expressions", "pg_get_publication_tables", "pg_get_replica_identity_index",
        "pg_get_partition_constraintdef", "pg_get_statisticsobjdef",
        "pg_get_statisticsobjdef_columns", "pg_table_is_visible", "pg_type_is_visible",
        "pg_function_is_visible", "pg_opclass_is_visible", "pg_operator_is_visible",
        "pg_collation_is_visible", "pg_conversion_is_visible", "pg_ts_config_is_visible",
        "pg_is_other_temp_schema", "obj_description", "col_description", "shobj_description",
        "has_table_privilege", "has_column_privilege", "has_schema_privilege",
        "has_database_privilege", "has_function_privilege", "has_sequence_privilege",
        "has_any_column_privilege", "has_type_privilege", "has_language_privilege",
        "has_tablespace_privilege", "has_foreign_data_wrapper_privilege", "has_server_privilege",
        "has_parameter_privilege", "pg_has_role", "row_security_active", "pg_relation_size",
        "pg_total_relation_size", "pg_table_size", "pg_indexes_size", "pg_database_size",
        "pg_tablespace_location", "pg_index_column_has_property", "pg_indexam_has_property",
        "pg_index_has_property", "pg_options_to_table", "pg_get_function_arg_default",
        "pg_get_functiondef", "pg_get_function_sqlbody", "pg_settings_get_flags",
        "pg_relation_is_updatable", "pg_column_is_updatable", "pg_get_viewdef_wrap",
    ], Catalog),
    // Sequences: counters, not personal data (setval is left out: it changes them).
    (&[
        "nextval", "currval", "lastval",
    ], Sequences),
    // Needs a capability.
    (&[
        "pg_notify",
    ], Needs(Capability::Notify)),
];

static FUNCTION_INDEX: LazyLock<HashMap<&'static str, Reads>> = LazyLock::new(|| {
    FUNCTIONS
        .iter()
        .flat_map(|(names, reads)| names.iter().map(move |n| (*n, *reads)))
        .collect()
});

/// What a built-in function reads, or None when it is not allowed for restricted roles.
pub fn function(name: &str) -> Option<Reads> {
    FUNCTION_INDEX.get(name).copied()
}

/// Built-in operators and the operator-like names the grammar puts in expressions.
pub fn operator(name: &str) -> bool {
    const OPERATORS: &[&str] = &[
        "+",
        "-",
        "*",
        "/",
        "%",
        "^",
        "=",
        "<>",
        "!=",
        "<",
        ">",
        "<=",
        ">=",
        "||",
        "~~",
        "~~*",
        "!~~",
        "!~~*",
        "~",
        "~*",
        "!~",
        "!~*",
        "|/",
        "||/",
        "@",
        "&",
        "|",
        "#",
        "<<",
        ">>",
        "->",
        "->>",
        "#>",
        "#>>",
        "@>",
        "<@",
        "?",
        "?|",
        "?&",
        "@?",
        "@@",
        "@@@",
        "#-",
        "&&",
        "-|-",
        "&<",
        "&>",
        "<<|",
        "|>>",
        "&<|",
        "|&>",
        "<->",
        "!!",
        "<<=",
        ">>=",
        "~=",
        "<^",
        ">^",
        "?#",
        "?-",
        "?|",
        "?-|",
        "?||",
        "@-@",
        "##",
        "<#>",
        "<=>",
        "^@",
        "BETWEEN",
        "NOT BETWEEN",
        "BETWEEN SYMMETRIC",
        "NOT BETWEEN SYMMETRIC",
    ];
    OPERATORS.contains(&name)
}

/// Whether a restricted role may read a relation of a system schema.
pub fn catalog_relation(schema: &str, name: &str, statistics: bool) -> bool {
    match schema {
        // Metadata views defined by the SQL standard: names, types, constraints, privileges.
        "information_schema" => true,
        "pg_catalog" => {
            CATALOG_METADATA.contains(&name) || (statistics && is_statistics_relation(name))
        }
        _ => false,
    }
}

/// The pg_catalog relations a restricted role may read: metadata (schema, roles, settings),
/// no table data.
const CATALOG_METADATA: &[&str] = &[
    "pg_class",
    "pg_namespace",
    "pg_attribute",
    "pg_attrdef",
    "pg_type",
    "pg_proc",
    "pg_index",
    "pg_constraint",
    "pg_description",
    "pg_shdescription",
    "pg_database",
    "pg_roles",
    "pg_user",
    "pg_auth_members",
    "pg_am",
    "pg_amop",
    "pg_amproc",
    "pg_opclass",
    "pg_opfamily",
    "pg_operator",
    "pg_cast",
    "pg_collation",
    "pg_conversion",
    "pg_enum",
    "pg_range",
    "pg_extension",
    "pg_available_extensions",
    "pg_available_extension_versions",
    "pg_inherits",
    "pg_trigger",
    "pg_depend",
    "pg_tables",
    "pg_views",
    "pg_matviews",
    "pg_indexes",
    "pg_sequence",
    "pg_sequences",
    "pg_settings",
    "pg_timezone_names",
    "pg_timezone_abbrevs",
    "pg_language",
    "pg_tablespace",
    "pg_foreign_table",
    "pg_foreign_server",
    "pg_foreign_data_wrapper",
    "pg_event_trigger",
    "pg_policy",
    "pg_policies",
    "pg_rules",
    "pg_rewrite",
    "pg_aggregate",
    "pg_ts_config",
    "pg_ts_config_map",
    "pg_ts_dict",
    "pg_ts_parser",
    "pg_ts_template",
    "pg_partitioned_table",
    "pg_statistic_ext",
    "pg_init_privs",
    "pg_default_acl",
    "pg_publication",
    "pg_publication_tables",
    "pg_publication_rel",
    "pg_publication_namespace",
    "pg_subscription_rel",
    "pg_transform",
    "pg_seclabel",
    "pg_seclabels",
    "pg_shseclabel",
    "pg_largeobject_metadata",
    "pg_db_role_setting",
    "pg_parameter_acl",
    // Its connection string (subconninfo) is readable only by superusers.
    "pg_subscription",
    // PostgreSQL shows umoptions only to the mapped user and the server owner.
    "pg_user_mappings",
];

/// Catalog relations that show column statistics (values) or other sessions' activity:
/// readable only with the `statistics_views` capability.
pub fn is_statistics_relation(name: &str) -> bool {
    matches!(
        name,
        "pg_stats"
            | "pg_stats_ext"
            | "pg_stats_ext_exprs"
            | "pg_statistic"
            | "pg_statistic_ext_data"
    ) || name.starts_with("pg_stat_")
        || name.starts_with("pg_statio_")
}

/// Schemas whose relations are system catalogs, governed by [`catalog_relation`].
pub fn is_system_schema(schema: &str) -> bool {
    matches!(schema, "pg_catalog" | "information_schema") || schema.starts_with("pg_toast")
}

/// EXPLAIN options a restricted role may use: none prints the expressions that mask values
/// (VERBOSE) or the statement's parameters (GENERIC_PLAN is harmless but new; left out).
pub fn explain_option(name: &str) -> bool {
    matches!(
        name,
        "analyze" | "costs" | "buffers" | "timing" | "summary" | "format" | "wal" | "settings"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_that_run_sql_or_read_files_are_not_listed() {
        for f in [
            "query_to_xml",
            "table_to_xml",
            "cursor_to_xml",
            "database_to_xml",
            "ts_stat",
            "ts_rewrite",
            "pg_read_file",
            "pg_ls_dir",
            "lo_get",
            "lo_import",
            "dblink",
            "current_query",
            "pg_stat_get_activity",
            "pg_terminate_backend",
        ] {
            assert_eq!(function(f), None, "{f}");
        }
        assert_eq!(function("lower"), Some(Reads::Arguments));
        assert_eq!(
            function("pg_notify"),
            Some(Reads::Needs(Capability::Notify))
        );
    }

    #[test]
    fn statistics_need_the_capability() {
        assert!(!catalog_relation("pg_catalog", "pg_stats", false));
        assert!(catalog_relation("pg_catalog", "pg_stats", true));
        assert!(!catalog_relation("pg_catalog", "pg_stat_activity", false));
        assert!(catalog_relation("pg_catalog", "pg_class", false));
        assert!(!catalog_relation("pg_catalog", "pg_authid", true));
        assert!(!catalog_relation("public", "contacts", true));
    }
}
