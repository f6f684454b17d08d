//! What a column's name and sample values suggest about personal data, for `policy check`
//! against a schema: e-mail addresses, IBANs and bank account numbers, national identity
//! numbers of the Nordic countries and the US, phone numbers, and words of the special
//! categories of GDPR Art. 9 (health, diagnosis, religion, ...) in names or free text.

/// Column-name parts that usually mean personal data.
const PERSONAL_NAMES: &[&str] = &[
    "email",
    "mail",
    "phone",
    "mobile",
    "iban",
    "account",
    "birth",
    "dob",
    "ssn",
    "personnummer",
    "fodselsnummer",
    "fnr",
    "cpr",
    "hetu",
    "national_id",
    "address",
    "street",
    "postal",
    "zip",
    "name",
    "passport",
    "salary",
    "ip",
];

/// Words of the special categories (GDPR Art. 9): health, genetics, biometrics, ethnicity,
/// religion and beliefs, political opinions, trade-union membership, sex life and orientation;
/// English and Scandinavian forms.
const SPECIAL_WORDS: &[&str] = &[
    "health",
    "diagnos",
    "illness",
    "disease",
    "medical",
    "medication",
    "medicine",
    "patient",
    "symptom",
    "allerg",
    "pregnan",
    "disabilit",
    "handicap",
    "therapy",
    "treatment",
    "hiv",
    "cancer",
    "diabetes",
    "depression",
    "sick",
    "genetic",
    "biometric",
    "fingerprint",
    "ethnic",
    "race",
    "religio",
    "faith",
    "church",
    "mosque",
    "political",
    "party_member",
    "trade_union",
    "union_member",
    "sexual",
    "orientation",
    "helse",
    "diagnose",
    "sykdom",
    "syk",
    "sjukdom",
    "sygdom",
    "medisin",
    "gravid",
    "funksjonshem",
    "religion",
    "etnisk",
    "fagforening",
    "legning",
];

/// Why a value looks personal, if it does.
pub fn value_hint(v: &str) -> Option<&'static str> {
    let v = v.trim();
    if looks_email(v) {
        Some("e-mail addresses")
    } else if looks_iban(v) {
        Some("IBANs")
    } else if looks_national_id(v) {
        Some("national identity numbers")
    } else if looks_account(v) {
        Some("bank account numbers")
    } else if looks_phone(v) {
        Some("phone numbers")
    } else {
        None
    }
}

/// A special-category word in a column name or a text value, if any.
pub fn special_word(text: &str) -> Option<&'static str> {
    let lower = text.to_lowercase();
    // Whole words for the short ones ("syk", "hiv", "race"), prefixes for the rest.
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    SPECIAL_WORDS.iter().copied().find(|s| {
        if s.len() <= 4 {
            words.contains(s)
        } else if s.contains('_') {
            lower.contains(s)
        } else {
            words.iter().any(|w| w.starts_with(s))
        }
    })
}

/// Whether a column name looks like personal data.
pub fn personal_name(column: &str) -> bool {
    let lower = column.to_lowercase();
    PERSONAL_NAMES.iter().any(|h| lower.contains(h))
}

fn looks_email(v: &str) -> bool {
    match v.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !v.contains(char::is_whitespace)
        }
        None => false,
    }
}

fn compact(v: &str) -> String {
    v.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.'))
        .collect()
}

/// ISO 13616: two letters, two check digits, up to 30 alphanumerics, mod 97 = 1.
fn looks_iban(v: &str) -> bool {
    let c = compact(v).to_ascii_uppercase();
    let b = c.as_bytes();
    if !(15..=34).contains(&b.len())
        || !b[..2].iter().all(u8::is_ascii_uppercase)
        || !b[2..4].iter().all(u8::is_ascii_digit)
        || !b.iter().all(u8::is_ascii_alphanumeric)
    {
        return false;
    }
    let rearranged = c[4..].chars().chain(c[..4].chars());
    let mut rem: u32 = 0;
    for ch in rearranged {
        let n = ch.to_digit(36).unwrap_or(0);
        rem = if n >= 10 {
            (rem * 100 + n) % 97
        } else {
            (rem * 10 + n) % 97
        };
    }
    rem == 1
}

fn digits_only(v: &str) -> Option<String> {
    let c = compact(v);
    (!c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit())).then_some(c)
}

/// `DDMMYY` or `YYYYMMDD` at the start of a number, as identity numbers begin.
fn starts_with_date(d: &str, century: bool) -> bool {
    let n = |s: &str| s.parse::<u32>().unwrap_or(0);
    if century {
        (1..=12).contains(&n(&d[4..6])) && (1..=31).contains(&n(&d[6..8]))
    } else {
        // D-numbers (Norway) add 40 to the day.
        let day = n(&d[0..2]) % 40;
        (1..=31).contains(&day) && (1..=12).contains(&n(&d[2..4]))
    }
}

/// Norwegian fødselsnummer and Danish CPR (DDMMYY + 5 or 4 digits), Swedish personnummer
/// (YYMMDD or YYYYMMDD, `-`/`+`, 4 digits), Finnish HETU (DDMMYY, century sign, 3 digits and
/// a check character), US SSN (AAA-GG-SSSS).
fn looks_national_id(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() == 11 && b[3] == b'-' && b[6] == b'-' {
        return v.chars().filter(char::is_ascii_digit).count() == 9;
    }
    if b.len() == 11
        && matches!(
            b[6],
            b'-' | b'+'
                | b'A'
                | b'B'
                | b'C'
                | b'D'
                | b'E'
                | b'F'
                | b'U'
                | b'V'
                | b'W'
                | b'X'
                | b'Y'
        )
        && b[..6].iter().all(u8::is_ascii_digit)
        && b[7..10].iter().all(u8::is_ascii_digit)
    {
        return starts_with_date(&v[..6], false);
    }
    let plain: String = v
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '+'))
        .collect();
    if !plain.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    match plain.len() {
        10 | 11 => starts_with_date(&plain, false),
        12 => starts_with_date(&plain, true),
        _ => false,
    }
}

/// Norwegian account numbers (4.2.5 digits) and other 10–18 digit account-like numbers with
/// separators (fewer digits would take dates for accounts).
fn looks_account(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() == 13 && b[4] == b'.' && b[7] == b'.' {
        return digits_only(v).is_some_and(|d| d.len() == 11);
    }
    v.contains(['-', ' ', '.']) && digits_only(v).is_some_and(|d| (10..=18).contains(&d.len()))
}

fn looks_phone(v: &str) -> bool {
    let rest = v.strip_prefix('+').unwrap_or(v);
    let digits = rest.chars().filter(char::is_ascii_digit).count();
    v.starts_with('+')
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')'))
        && (7..=15).contains(&digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_that_look_personal() {
        for (v, why) in [
            ("kari@example.no", "e-mail addresses"),
            ("NO93 8601 1117 947", "IBANs"),
            ("DE89370400440532013000", "IBANs"),
            ("01019012345", "national identity numbers"),
            ("19900101-1234", "national identity numbers"),
            ("010190-123A", "national identity numbers"),
            ("123-45-6789", "national identity numbers"),
            ("1234.56.78903", "bank account numbers"),
            ("+47 912 34 567", "phone numbers"),
        ] {
            assert_eq!(value_hint(v), Some(why), "{v}");
        }
        for v in [
            "hello",
            "2024-01-01",
            "NO93 8601 1117 948",
            "42",
            "a@b",
            "99999999999",
            "ACME AS",
        ] {
            assert_eq!(value_hint(v), None, "{v}");
        }
    }

    #[test]
    fn special_category_words_in_names_and_text() {
        assert_eq!(special_word("diagnosis_code"), Some("diagnos"));
        assert_eq!(special_word("Patient reports chest pain"), Some("patient"));
        assert_eq!(special_word("Kunden var syk i mai"), Some("syk"));
        assert_eq!(special_word("religion"), Some("religio"));
        assert_eq!(special_word("Meeting about the new contract"), None);
        assert_eq!(special_word("horsepower"), None);
        assert!(personal_name("contact_email") && !personal_name("created_at"));
    }
}
