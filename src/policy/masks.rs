//! Masking methods: each one a SQL expression template that PostgreSQL evaluates.
//!
//! PostgreSQL computes the masks (not the proxy) so that a masked column behaves in WHERE, JOIN,
//! GROUP BY and ORDER BY exactly as if the table held masked values, and binary-format clients
//! keep working. Every rendering is `CAST((CASE WHEN (col) IS NULL THEN NULL ELSE <mask> END) AS
//! <type>)`: the NULL guard keeps NULL as NULL for every method (including custom ones) and the
//! cast keeps the column's type, so clients see the same RowDescription as without the proxy.
//!
//! The keyed `pseudonym` mask is the one method that needs a secret; it calls the function
//! `pgvakt.pseudonym(text)` that `pgvakt install` creates upstream, so the key never appears in
//! SQL text (see `src/install.rs` for the threat model).

use std::ops::ControlFlow;

use sha2::{Digest, Sha256};
use sqlparser::ast::{visit_expressions, visit_relations, Expr, FunctionArguments};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::model::{ColumnType, MaskMethod};

/// Names of the built-in methods; custom methods may not reuse them.
pub const BUILTIN_METHODS: &[&str] = &[
    "null",
    "redact",
    "partial",
    "email",
    "phone",
    "bank_account",
    "date_year",
    "pseudonym",
];

/// Identifier substituted for `{col}` when a custom template is validated.
const PLACEHOLDER_IDENT: &str = "pgvakt_masked_column";

/// How a method masks; the template text alone cannot say which types a method supports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskKind {
    Null,
    Redact,
    Partial {
        keep_first: u32,
        keep_last: u32,
    },
    Email,
    Phone,
    BankAccount,
    DateYear,
    /// `None` when no key is configured: the method exists but every rendering fails, so
    /// statements that need it are refused instead of running with a guessable key.
    Pseudonym(Option<PseudonymKey>),
    /// A policy-defined template, validated at load by [`validate_custom_template`].
    Custom,
}

/// The function the `pseudonym` mask calls: `pgvakt install` creates it (see `src/install.rs`),
/// holding the key in a table only its owner can read, so no key material is ever part of the
/// SQL text pgvakt forwards (pg_stat_activity, server logs and EXPLAIN show the name only).
pub const PSEUDONYM_FUNCTION: &str = "pgvakt.pseudonym";

/// The text every rendering of the `pseudonym` mask contains, and nothing else pgvakt renders.
pub const PSEUDONYM_CALL: &str = "pgvakt.pseudonym(";

/// The input whose pseudonym pgvakt asks the installed function for, to check that it holds
/// the policy's key before forwarding statements that need it. Not secret.
pub const PSEUDONYM_PROBE: &str = "pgvakt pseudonym key probe";

/// The policy's HMAC-SHA256 key (RFC 2104): its (key XOR ipad) and (key XOR opad) blocks, which
/// `pgvakt install` stores upstream, and non-secret values derived from it.
#[derive(Clone)]
pub struct PseudonymKey {
    ipad: [u8; 64],
    opad: [u8; 64],
    /// Non-secret identifier of the key (for the policy version and equality).
    fingerprint: String,
    /// The pseudonym of [`PSEUDONYM_PROBE`] under this key.
    probe: String,
}

// Manual impls so that key material never ends up in logs or assertion messages.
impl std::fmt::Debug for PseudonymKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PseudonymKey({})", self.fingerprint)
    }
}

impl PartialEq for PseudonymKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint
    }
}

impl Eq for PseudonymKey {}

impl PseudonymKey {
    /// Builds the HMAC pad blocks (RFC 2104) from raw key bytes.
    pub fn new(key: &[u8]) -> Self {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let ipad = block.map(|b| b ^ 0x36);
        let opad = block.map(|b| b ^ 0x5c);
        let mut fp = Sha256::new();
        fp.update(b"pgvakt pseudonym key fingerprint\0");
        fp.update(ipad);
        let fingerprint = hex::encode(&fp.finalize()[..6]);
        let mut k = PseudonymKey {
            ipad,
            opad,
            fingerprint,
            probe: String::new(),
        };
        k.probe = k.hmac_hex(PSEUDONYM_PROBE.as_bytes());
        k
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// What `pgvakt.pseudonym` installed with this key answers for [`PSEUDONYM_PROBE`].
    pub fn probe(&self) -> &str {
        &self.probe
    }

    /// HMAC-SHA256 of `msg` as 64 lower-case hex digits: the text pseudonym of a value whose
    /// text form is `msg`, as `pgvakt.pseudonym` computes it: sha256(opad || sha256(ipad || msg)).
    pub fn hmac_hex(&self, msg: &[u8]) -> String {
        let inner = Sha256::new()
            .chain_update(self.ipad)
            .chain_update(msg)
            .finalize();
        let outer = Sha256::new()
            .chain_update(self.opad)
            .chain_update(inner)
            .finalize();
        hex::encode(outer)
    }

    /// The pad blocks, for `pgvakt install` only: they are the key.
    pub(crate) fn pads(&self) -> (&[u8; 64], &[u8; 64]) {
        (&self.ipad, &self.opad)
    }
}

impl MaskMethod {
    /// A built-in method under its own name.
    pub fn builtin(kind: MaskKind) -> Self {
        let name = match &kind {
            MaskKind::Null => "null",
            MaskKind::Redact => "redact",
            MaskKind::Partial { .. } => "partial",
            MaskKind::Email => "email",
            MaskKind::Phone => "phone",
            MaskKind::BankAccount => "bank_account",
            MaskKind::DateYear => "date_year",
            MaskKind::Pseudonym(_) => "pseudonym",
            MaskKind::Custom => "custom",
        };
        Self::named(name, kind)
    }

    /// A method (built-in kind or custom) under a policy-chosen name.
    pub fn named(name: &str, kind: MaskKind) -> Self {
        MaskMethod {
            name: name.to_owned(),
            template: documented_template(&kind),
            kind,
        }
    }

    /// A custom method; the template must have passed [`validate_custom_template`].
    pub fn custom(name: &str, template: &str) -> Self {
        MaskMethod {
            name: name.to_owned(),
            template: template.to_owned(),
            kind: MaskKind::Custom,
        }
    }
}

/// The text-column form of each built-in template, for `explain` output and documentation.
fn documented_template(kind: &MaskKind) -> String {
    let text = ty("text", 'S');
    match kind {
        MaskKind::Pseudonym(_) => format!("{PSEUDONYM_FUNCTION}(CAST({{col}} AS text))"),
        MaskKind::Null => "NULL".into(),
        other => mask_expr(other, "", "{col}", &text).unwrap_or_default(),
    }
}

fn ty(name: &str, category: char) -> ColumnType {
    ColumnType {
        sql_name: name.into(),
        category,
    }
}

/// Renders `method` for a column; see [`MaskMethod::render`].
pub(crate) fn render(
    method: &MaskMethod,
    col_sql: &str,
    ty: &ColumnType,
) -> Result<String, String> {
    check_type_name(&ty.sql_name)?;
    if method.kind == MaskKind::Null {
        return Ok(format!("CAST(NULL AS {})", ty.sql_name));
    }
    let col = format!("({col_sql})");
    let expr = mask_expr(&method.kind, &method.template, &col, ty).map_err(|why| {
        format!(
            "mask '{}' cannot mask a column of type {}: {why}",
            method.name, ty.sql_name
        )
    })?;
    Ok(format!(
        "CAST((CASE WHEN {col} IS NULL THEN NULL ELSE {expr} END) AS {})",
        ty.sql_name
    ))
}

/// Type names come from the catalog's `format_type`, but they end up inside forwarded SQL, so
/// anything beyond the characters a type name can hold is refused.
fn check_type_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || " _(),.\"[]".contains(c))
        && name.matches('"').count() % 2 == 0;
    if ok {
        Ok(())
    } else {
        Err(format!("unsupported column type name {name:?}"))
    }
}

fn is_time_of_day(sql_name: &str) -> bool {
    sql_name.starts_with("time") && !sql_name.starts_with("timestamp")
}

/// The mask expression for a non-NULL `col` (already parenthesised); its result is cast to the
/// column type by the caller.
fn mask_expr(
    kind: &MaskKind,
    template: &str,
    col: &str,
    ty: &ColumnType,
) -> Result<String, String> {
    let text = format!("CAST({col} AS text)");
    let needs_string = |what: &str| -> Result<(), String> {
        if ty.category == 'S' {
            Ok(())
        } else {
            Err(format!("{what} works on string columns only"))
        }
    };
    match kind {
        MaskKind::Null => Ok("NULL".into()),
        MaskKind::Redact => redact(ty),
        MaskKind::Partial {
            keep_first,
            keep_last,
        } => {
            needs_string("partial")?;
            let keep = u64::from(*keep_first) + u64::from(*keep_last);
            // Short values are hidden entirely: keeping first and last would reveal all of it.
            // The middle is a fixed '***' so that the mask does not reveal the length either.
            Ok(format!(
                "CASE WHEN char_length({text}) <= {keep} THEN '***' ELSE left({text}, {keep_first}) || '***' || right({text}, {keep_last}) END"
            ))
        }
        MaskKind::Email => {
            needs_string("email")?;
            // Greedy `^.*@` leaves '@domain' after the last '@'; no '@' at all shows nothing.
            Ok(format!(
                "CASE WHEN strpos({text}, '@') > 0 THEN left({text}, 1) || '***' || regexp_replace({text}, '^.*@', '@') ELSE '***' END"
            ))
        }
        MaskKind::Phone => {
            needs_string("phone")?;
            // `[+]` instead of `\+` keeps the template independent of backslash handling.
            let digits = format!("regexp_replace({text}, '[^0-9]', '', 'g')");
            Ok(format!(
                "CASE WHEN left(ltrim({text}), 1) = '+' THEN coalesce(substring(ltrim({text}) FROM '^([+][0-9]{{1,3}})[^0-9]'), left(ltrim({text}), 3)) || ' ***' || right({digits}, 2) ELSE '***' || right({digits}, 2) END"
            ))
        }
        MaskKind::BankAccount => {
            needs_string("bank_account")?;
            // Only separators and the last four digits stay: letters (IBAN bank codes) and
            // every earlier digit become '*', e.g. 1234.56.78903 -> ****.**.*8903. With four
            // digits or fewer nothing but separators stays, or the "last four" would be all.
            Ok(format!(
                "CASE WHEN length(regexp_replace({text}, '[^0-9]', '', 'g')) <= 4 \
                 THEN regexp_replace({text}, '[^ ./-]', '*', 'g') \
                 ELSE regexp_replace(regexp_replace({text}, '[^0-9 ./-]', '*', 'g'), \
                 '[0-9](?=(?:[^0-9]*[0-9]){{4}})', '*', 'g') END"
            ))
        }
        MaskKind::DateYear => date_year(col, ty),
        MaskKind::Pseudonym(key) => pseudonym(key.as_ref(), &text, ty),
        MaskKind::Custom => Ok(format!(
            "({})",
            template
                .replace("{col}", col)
                .replace("{type}", &ty.sql_name)
        )),
    }
}

/// A fixed value of the column's type rather than NULL, so applications that rely on the
/// column holding a value keep working while it shows nothing.
fn redact(ty: &ColumnType) -> Result<String, String> {
    match ty.category {
        'S' => Ok("'***'".into()),
        'N' => Ok("0".into()),
        'B' => Ok("false".into()),
        'T' => Ok("'0'".into()),
        'D' if is_time_of_day(&ty.sql_name) => Ok("'00:00:00'".into()),
        'D' => Ok("'1970-01-01'".into()),
        _ => Err("no constant of this type is defined; use 'null'".into()),
    }
}

/// January 1st of the year, in the column's own type, so comparisons and sorting by the
/// column still work at year precision.
fn date_year(col: &str, ty: &ColumnType) -> Result<String, String> {
    match ty.category {
        'D' if ty.sql_name == "date" => Ok(format!(
            "make_date(CAST(EXTRACT(YEAR FROM {col}) AS integer), 1, 1)"
        )),
        'D' if ty.sql_name.starts_with("timestamp") => Ok(format!("date_trunc('year', {col})")),
        _ => Err("date_year works on date and timestamp columns only".into()),
    }
}

/// A keyed pseudonym of the column's text, computed upstream by the installed function.
fn pseudonym(key: Option<&PseudonymKey>, text: &str, ty: &ColumnType) -> Result<String, String> {
    if key.is_none() {
        return Err(
            "no pseudonym key is configured (set the key environment variable or key file)".into(),
        );
    }
    // The key stays upstream: the enforcer checks that the installed function holds
    // the policy's key before it forwards a statement containing this call.
    let hex = format!("{PSEUDONYM_FUNCTION}({text})");
    match (ty.category, ty.sql_name.as_str()) {
        ('S', _) => Ok(hex),
        // Integer keys get an integer pseudonym so joins between id columns still work.
        ('N', "integer") => Ok(format!(
            "CAST(CAST('x' || left({hex}, 8) AS bit(32)) AS integer)"
        )),
        ('N', "bigint") => Ok(format!(
            "CAST(CAST('x' || left({hex}, 16) AS bit(64)) AS bigint)"
        )),
        _ => Err("pseudonym works on string, integer and bigint columns only".into()),
    }
}

/// Checks a custom template: it must mention `{col}`, parse as one SQL expression, and read
/// nothing but the masked column (no sub-queries, no other columns, no statement separators).
pub fn validate_custom_template(template: &str) -> Result<(), String> {
    if !template.contains("{col}") {
        return Err("template must contain the {col} placeholder".into());
    }
    if template.contains(';') {
        return Err("template must not contain ';'".into());
    }
    let sql = template
        .replace("{col}", PLACEHOLDER_IDENT)
        .replace("{type}", "text");
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(&sql)
        .map_err(|e| format!("template is not valid SQL: {e}"))?;
    let expr = parser
        .parse_expr()
        .map_err(|e| format!("template is not a SQL expression: {e}"))?;
    if parser.peek_token().token != Token::EOF {
        return Err("template must be a single SQL expression".into());
    }
    let found = visit_expressions(&expr, |e| match e {
        Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
            ControlFlow::Break("template must not contain sub-queries".to_string())
        }
        Expr::Identifier(id) if id.value != PLACEHOLDER_IDENT => ControlFlow::Break(format!(
            "template may only read {{col}}, not '{}'",
            id.value
        )),
        Expr::Function(f) if matches!(f.args, FunctionArguments::Subquery(_)) => {
            ControlFlow::Break("template must not contain sub-queries".to_string())
        }
        Expr::CompoundIdentifier(_) => {
            ControlFlow::Break("template may only read {col}, not other columns".to_string())
        }
        _ => ControlFlow::Continue(()),
    });
    if let ControlFlow::Break(msg) = found {
        return Err(msg);
    }
    // Belt and braces: any table reference at all means a query hid somewhere in the expression.
    let relation = visit_relations(&expr, |r| ControlFlow::Break(r.to_string()));
    if let ControlFlow::Break(r) = relation {
        return Err(format!("template must not read tables ('{r}')"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};
    use proptest::prelude::*;
    use sqlparser::ast::{DataType, Expr};

    const TYPES: &[(&str, char)] = &[
        ("text", 'S'),
        ("character varying(40)", 'S'),
        ("date", 'D'),
        ("timestamp with time zone", 'D'),
        ("integer", 'N'),
        ("numeric(12,2)", 'N'),
    ];

    fn methods() -> Vec<MaskMethod> {
        vec![
            MaskMethod::builtin(MaskKind::Null),
            MaskMethod::builtin(MaskKind::Redact),
            MaskMethod::builtin(MaskKind::Partial {
                keep_first: 2,
                keep_last: 1,
            }),
            MaskMethod::builtin(MaskKind::Email),
            MaskMethod::builtin(MaskKind::Phone),
            MaskMethod::builtin(MaskKind::BankAccount),
            MaskMethod::builtin(MaskKind::DateYear),
            MaskMethod::builtin(MaskKind::Pseudonym(Some(PseudonymKey::new(
                b"0123456789abcdef",
            )))),
            MaskMethod::custom("c", "left(CAST({col} AS text), 1) || '***'"),
        ]
    }

    fn parse(sql: &str) -> Expr {
        let dialect = PostgreSqlDialect {};
        let mut p = Parser::new(&dialect)
            .try_with_sql(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let e = p.parse_expr().unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(p.peek_token().token, Token::EOF, "{sql}");
        e
    }

    proptest! {
        /// Every method either refuses a type or yields SQL that parses and whose outermost
        /// node is a cast to exactly the column's type.
        #[test]
        fn masks_keep_the_column_type(m in 0usize..9, t in 0usize..6, col in "[a-z][a-z_]{0,8}") {
            let method = &methods()[m];
            let (name, cat) = TYPES[t];
            let ty = ColumnType { sql_name: name.into(), category: cat };
            let col_sql = format!("c.\"{col}\"");
            if let Ok(sql) = method.render(&col_sql, &ty) {
                prop_assert!(sql.starts_with("CAST("), "{}", sql);
                prop_assert!(sql.ends_with(&format!(" AS {name})")), "{}", sql);
                let Expr::Cast { data_type, .. } = parse(&sql) else {
                    return Err(TestCaseError::fail(format!("not a cast: {sql}")));
                };
                let target = parse(&format!("CAST(NULL AS {name})"));
                let Expr::Cast { data_type: want, .. } = target else { unreachable!() };
                prop_assert_eq!(data_type, want);
                // The NULL guard: NULL in, NULL out, for every method.
                prop_assert!(method.kind == MaskKind::Null || sql.contains(&format!("CASE WHEN ({col_sql}) IS NULL THEN NULL")), "{}", sql);
            }
        }
    }

    #[test]
    fn methods_refuse_types_they_cannot_mask() {
        let date = ColumnType {
            sql_name: "date".into(),
            category: 'D',
        };
        let int = ColumnType {
            sql_name: "integer".into(),
            category: 'N',
        };
        let text = ColumnType {
            sql_name: "text".into(),
            category: 'S',
        };
        assert!(MaskMethod::builtin(MaskKind::Email)
            .render("x", &date)
            .is_err());
        assert!(MaskMethod::builtin(MaskKind::BankAccount)
            .render("x", &int)
            .is_err());
        assert!(MaskMethod::builtin(MaskKind::DateYear)
            .render("x", &text)
            .is_err());
        assert!(MaskMethod::builtin(MaskKind::Pseudonym(None))
            .render("x", &text)
            .is_err());
        assert!(MaskMethod::builtin(MaskKind::Null)
            .render(
                "x",
                &ColumnType {
                    sql_name: "int; DROP".into(),
                    category: 'N'
                }
            )
            .is_err());
        let _ = DataType::Text;
    }

    /// `hmac_hex` (the composition sha256(opad || sha256(ipad || msg)) that the installed
    /// function computes) is HMAC-SHA256: RFC 4231 vectors (short key; a key longer than the
    /// block, which is hashed first) and the hmac crate for a key of exactly one block.
    #[test]
    fn pseudonym_is_hmac_sha256() {
        let rfc4231 = [
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
        ];
        for (key, msg, want) in rfc4231 {
            assert_eq!(PseudonymKey::new(&key).hmac_hex(&msg), want);
        }
        let key = [7u8; 64];
        let k = PseudonymKey::new(&key);
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap_or_else(|_| unreachable!());
        mac.update(b"alice@example.com");
        assert_eq!(
            k.hmac_hex(b"alice@example.com"),
            hex::encode(mac.finalize().into_bytes())
        );
        assert_eq!(k.probe(), k.hmac_hex(PSEUDONYM_PROBE.as_bytes()));
        assert!(!format!("{k:?}").contains(&hex::encode(k.pads().0)));
    }

    /// The rendering calls the installed function and carries no key material at all.
    #[test]
    fn pseudonym_rendering_holds_no_key_material() {
        let key = b"a pseudonym key that is long enough";
        let k = PseudonymKey::new(key);
        let (ipad, opad) = (hex::encode(k.pads().0), hex::encode(k.pads().1));
        let m = MaskMethod::builtin(MaskKind::Pseudonym(Some(k)));
        for (ty, cat) in [("text", 'S'), ("integer", 'N'), ("bigint", 'N')] {
            let sql = m
                .render(
                    "c.\"email\"",
                    &ColumnType {
                        sql_name: ty.into(),
                        category: cat,
                    },
                )
                .unwrap_or_else(|e| panic!("{ty}: {e}"));
            assert!(
                sql.contains("pgvakt.pseudonym(CAST((c.\"email\") AS text))"),
                "{sql}"
            );
            for secret in [&ipad, &opad, &hex::encode(key)] {
                assert!(!sql.to_lowercase().contains(&secret[..16]), "{sql}");
            }
        }
        assert_eq!(m.template, "pgvakt.pseudonym(CAST({col} AS text))");
    }

    #[test]
    fn documented_templates() {
        assert_eq!(
            MaskMethod::builtin(MaskKind::BankAccount).template,
            "CASE WHEN length(regexp_replace(CAST({col} AS text), '[^0-9]', '', 'g')) <= 4 \
             THEN regexp_replace(CAST({col} AS text), '[^ ./-]', '*', 'g') \
             ELSE regexp_replace(regexp_replace(CAST({col} AS text), '[^0-9 ./-]', '*', 'g'), \
             '[0-9](?=(?:[^0-9]*[0-9]){4})', '*', 'g') END"
        );
    }
}
