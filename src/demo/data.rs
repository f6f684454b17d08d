//! Deterministic generation of the demo rows. Every row is a pure function of the seed and its id,
//! except for the two uniqueness guarantees (emails, bank accounts, org numbers), which a
//! generator tracks in compact sets while the rows stream out in id order.

use std::collections::{HashMap, HashSet};

use super::rng::{Rng, Stream};
use super::words::*;

/// The seed of the demo data set. Changing it changes every row.
pub const SEED: u64 = 0x7067_7661_6b74_2021;

/// Days from 1970-01-01 to the given civil date (Howard Hinnant's algorithm).
pub const fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// PostgreSQL counts dates and timestamps from 2000-01-01.
const PG_EPOCH_DAYS: i64 = days_from_civil(2000, 1, 1);
const DAY_MICROS: i64 = 86_400 * 1_000_000;

/// A `date` as days since 2000-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgDate(pub i32);

/// A `timestamptz` as microseconds since 2000-01-01 00:00 UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PgTimestamp(pub i64);

impl PgDate {
    pub const fn civil(y: i64, m: i64, d: i64) -> PgDate {
        PgDate((days_from_civil(y, m, d) - PG_EPOCH_DAYS) as i32)
    }
}

impl PgTimestamp {
    pub const fn civil(y: i64, m: i64, d: i64) -> PgTimestamp {
        PgTimestamp((days_from_civil(y, m, d) - PG_EPOCH_DAYS) * DAY_MICROS)
    }
}

const BIRTH_FIRST: PgDate = PgDate::civil(1940, 1, 1);
const BIRTH_LAST: PgDate = PgDate::civil(2005, 12, 31);
const COMPANIES_FROM: PgTimestamp = PgTimestamp::civil(2005, 1, 1);
const CONTACTS_FROM: PgTimestamp = PgTimestamp::civil(2015, 1, 1);
/// The data set's "now": nothing happens after it, so the rows never depend on the clock.
const DATA_END: PgTimestamp = PgTimestamp::civil(2024, 12, 31);

#[derive(Debug, Clone, PartialEq)]
pub struct Company {
    pub id: i64,
    pub name: String,
    pub org_number: String,
    pub industry: &'static str,
    pub city: &'static str,
    pub website: String,
    pub created_at: PgTimestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Contact {
    pub id: i64,
    pub company_id: Option<i64>,
    pub first_name: &'static str,
    pub last_name: &'static str,
    pub email: String,
    pub phone: String,
    pub street_address: String,
    pub postal_code: &'static str,
    pub city: &'static str,
    pub country: &'static str,
    pub date_of_birth: PgDate,
    pub bank_account: String,
    pub notes: Option<String>,
    pub created_at: PgTimestamp,
    pub last_activity_at: Option<PgTimestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub id: i64,
    pub contact_id: i64,
    pub kind: &'static str,
    pub subject: &'static str,
    pub body: String,
    pub happened_at: PgTimestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Consent {
    pub id: i64,
    pub contact_id: i64,
    pub purpose: &'static str,
    pub legal_basis: &'static str,
    pub source: &'static str,
    pub granted_at: PgTimestamp,
    pub granted_by: &'static str,
    pub withdrawn_at: Option<PgTimestamp>,
}

/// A restriction of processing (GDPR Art. 18) a contact asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Restriction {
    pub id: i64,
    pub contact_id: i64,
    pub reason: &'static str,
    pub requested_at: PgTimestamp,
    pub lifted_at: Option<PgTimestamp>,
}

/// Why people ask for restriction (Art. 18(1)(a)-(d)).
const RESTRICTION_REASONS: &[&str] = &[
    "contests the accuracy of the data",
    "processing is unlawful; asked for restriction instead of erasure",
    "needs the data for a legal claim",
    "objected to processing; verification pending",
];

/// One company per 20 contacts, at least one.
pub fn company_count(contacts: usize) -> usize {
    (contacts / 20).max(1)
}

/// The check digit of a Norwegian account number's first ten digits, `None` when the MOD-11
/// remainder makes the number unusable.
pub fn account_check_digit(first_ten: u64) -> Option<u64> {
    mod11_check(first_ten, &[5, 4, 3, 2, 7, 6, 5, 4, 3, 2])
}

/// True for `1234.56.78903` or `12345678903` with a valid MOD-11 check digit.
pub fn is_valid_norwegian_account(s: &str) -> bool {
    let bytes = s.as_bytes();
    let digits: String = match bytes.len() {
        13 if bytes[4] == b'.' && bytes[7] == b'.' => [&s[0..4], &s[5..7], &s[8..13]].concat(),
        11 => s.to_owned(),
        _ => return false,
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(number) = digits.parse::<u64>() else {
        return false;
    };
    account_check_digit(number / 10) == Some(number % 10)
}

fn mod11_check(number: u64, weights: &[u64]) -> Option<u64> {
    let mut rest = number;
    let mut sum = 0;
    for weight in weights.iter().rev() {
        sum += (rest % 10) * weight;
        rest /= 10;
    }
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        check => Some(check),
    }
}

/// Generates each table's rows in id order; the uniqueness sets live here.
#[derive(Debug)]
pub struct Generator {
    seed: u64,
    contacts: usize,
    companies: usize,
    org_numbers: HashSet<u64>,
    accounts: HashSet<u64>,
    /// Next free suffix per (first name, last name, domain) so emails stay unique.
    emails: HashMap<(usize, usize, u64), u32>,
}

impl Generator {
    pub fn new(contacts: usize) -> Generator {
        Generator::with_seed(SEED, contacts)
    }

    pub fn with_seed(seed: u64, contacts: usize) -> Generator {
        Generator {
            seed,
            contacts,
            companies: company_count(contacts),
            org_numbers: HashSet::new(),
            accounts: HashSet::new(),
            emails: HashMap::new(),
        }
    }

    pub fn companies(&self) -> usize {
        self.companies
    }

    pub fn contacts(&self) -> usize {
        self.contacts
    }

    /// Company `id` (1-based). Org numbers are unique across calls made in id order.
    pub fn company(&mut self, id: i64) -> Company {
        let (name, industry, domain) = company_identity(self.seed, id);
        let mut rng = Rng::for_row(self.seed, Stream::Company, id as u64);
        let (_, city) = *rng.pick(PLACES_NO);
        let created_at = rng.between(COMPANIES_FROM.0, CONTACTS_FROM.0);
        let mut orgs = Rng::for_row(self.seed, Stream::OrgNumber, id as u64);
        let org_number = loop {
            // Organisation numbers start with 8 or 9 and end in a MOD-11 check digit.
            let base = orgs.between(80_000_000, 99_999_999) as u64;
            if let Some(check) = mod11_check(base, &[3, 2, 7, 6, 5, 4, 3, 2]) {
                let number = base * 10 + check;
                if self.org_numbers.insert(number) {
                    break number;
                }
            }
        };
        Company {
            id,
            name,
            org_number: org_number.to_string(),
            industry,
            city,
            website: format!("https://www.{domain}"),
            created_at: PgTimestamp(created_at),
        }
    }

    /// Contact `id` (1-based). Emails and bank accounts are unique across calls made in id order.
    pub fn contact(&mut self, id: i64) -> Contact {
        let mut rng = Rng::for_row(self.seed, Stream::Contact, id as u64);
        let (created_at, last_activity_at) = timeline(self.seed, id);
        let country_roll = rng.below(100);
        let (country, firsts, lasts, streets, places) = match country_roll {
            0..=84 => ("NO", FIRST_NAMES_NO, LAST_NAMES_NO, STREETS_NO, PLACES_NO),
            85..=94 => ("SE", FIRST_NAMES_SE, LAST_NAMES_SE, STREETS_SE, PLACES_SE),
            _ => ("DK", FIRST_NAMES_DK, LAST_NAMES_DK, STREETS_DK, PLACES_DK),
        };
        let first = rng.index(firsts.len());
        let last = rng.index(lasts.len());
        let company_id = rng
            .percent(90)
            .then(|| 1 + rng.below(self.companies as u64) as i64);

        // Work addresses at the company's domain, otherwise a consumer mailbox.
        let (domain_key, domain) = match company_id {
            Some(company) if rng.percent(60) => {
                (company as u64, company_identity(self.seed, company).2)
            }
            _ => {
                let i = rng.index(PERSONAL_EMAIL_DOMAINS.len());
                (u64::MAX - i as u64, PERSONAL_EMAIL_DOMAINS[i].to_owned())
            }
        };
        let local = format!("{}.{}", ascii_slug(firsts[first]), ascii_slug(lasts[last]));
        let taken = self.emails.entry((first, last, domain_key)).or_insert(0);
        *taken += 1;
        let email = match *taken {
            1 => format!("{local}@{domain}"),
            n => format!("{local}{n}@{domain}"),
        };

        let phone = format!(
            "+47 9{:02} {:02} {:03}",
            rng.below(100),
            rng.below(100),
            rng.below(1000)
        );
        let mut street_address = format!("{} {}", rng.pick(streets), rng.between(1, 120));
        if rng.percent(10) {
            street_address.push(' ');
            street_address.push(*rng.pick(&['A', 'B', 'C']));
        }
        let (postal_code, city) = *rng.pick(places);
        let date_of_birth = PgDate(rng.between(BIRTH_FIRST.0.into(), BIRTH_LAST.0.into()) as i32);
        let notes = rng.percent(65).then(|| fill(&mut rng, NOTES));
        let bank_account = self.bank_account(id);
        Contact {
            id,
            company_id,
            first_name: firsts[first],
            last_name: lasts[last],
            email,
            phone,
            street_address,
            postal_code,
            city,
            country,
            date_of_birth,
            bank_account,
            notes,
            created_at,
            last_activity_at,
        }
    }

    fn bank_account(&mut self, contact: i64) -> String {
        let mut rng = Rng::for_row(self.seed, Stream::Account, contact as u64);
        loop {
            let first_ten = rng.pick(BANK_CODES) * 1_000_000 + rng.digits(6);
            let Some(check) = account_check_digit(first_ten) else {
                continue;
            };
            let number = first_ten * 10 + check;
            if self.accounts.insert(number) {
                let digits = format!("{number:011}");
                return format!("{}.{}.{}", &digits[0..4], &digits[4..6], &digits[6..11]);
            }
        }
    }

    /// The activities of one contact (0 to 6, about 3 on average); ids are assigned by the caller.
    pub fn activities(&self, contact_id: i64) -> Vec<Activity> {
        let mut rng = Rng::for_row(self.seed, Stream::Activity, contact_id as u64);
        let (created_at, last) = timeline(self.seed, contact_id);
        let until = last.unwrap_or(DATA_END);
        let count = rng.below(7);
        let mut activities: Vec<Activity> = (0..count)
            .map(|_| {
                let (kind, subjects) = *rng.pick(ACTIVITY_SUBJECTS);
                Activity {
                    id: 0,
                    contact_id,
                    kind,
                    subject: subjects[rng.index(subjects.len())],
                    body: fill(&mut rng, ACTIVITY_BODIES),
                    happened_at: PgTimestamp(rng.between(created_at.0, until.0)),
                }
            })
            .collect();
        activities.sort_by_key(|a| a.happened_at);
        activities
    }

    /// The consents of one contact, at most one per purpose; ids are assigned by the caller.
    pub fn consents(&self, contact_id: i64) -> Vec<Consent> {
        let mut rng = Rng::for_row(self.seed, Stream::Consent, contact_id as u64);
        let (created_at, _) = timeline(self.seed, contact_id);
        let mut consents = Vec::new();
        for (purpose, chance) in CONSENT_PURPOSES.iter().zip([50, 40, 25]) {
            if !rng.percent(chance) {
                continue;
            }
            let source = *rng.pick(CONSENT_SOURCES);
            let legal_basis = match (*purpose, source) {
                (_, "contract") => "contract",
                ("newsletter", _) => "consent",
                _ if rng.percent(30) => "legitimate_interest",
                _ => "consent",
            };
            let granted_by = if source == "web_form" {
                "web"
            } else {
                rng.pick(STAFF)
            };
            let granted_at = rng.between(created_at.0, DATA_END.0);
            let withdrawn_at = rng
                .percent(15)
                .then(|| PgTimestamp(rng.between(granted_at, DATA_END.0)));
            consents.push(Consent {
                id: 0,
                contact_id,
                purpose,
                legal_basis,
                source,
                granted_at: PgTimestamp(granted_at),
                granted_by,
                withdrawn_at,
            });
        }
        consents
    }
}

impl Generator {
    /// The restriction of one contact, if any: about 2 in 100 contacts asked for one, and a
    /// quarter of those were lifted again; ids are assigned by the caller.
    pub fn restrictions(&self, contact_id: i64) -> Vec<Restriction> {
        let mut rng = Rng::for_row(self.seed, Stream::Restriction, contact_id as u64);
        if !rng.percent(2) {
            return Vec::new();
        }
        let (created_at, _) = timeline(self.seed, contact_id);
        let requested_at = rng.between(created_at.0, DATA_END.0);
        let lifted_at = rng
            .percent(25)
            .then(|| PgTimestamp(rng.between(requested_at, DATA_END.0)));
        vec![Restriction {
            id: 0,
            contact_id,
            reason: RESTRICTION_REASONS[rng.index(RESTRICTION_REASONS.len())],
            requested_at: PgTimestamp(requested_at),
            lifted_at,
        }]
    }
}

/// Name, industry and web domain of a company: pure, so contacts can use it for work emails.
fn company_identity(seed: u64, id: i64) -> (String, &'static str, String) {
    let mut rng = Rng::for_row(seed, Stream::Company, u64::MAX - id as u64);
    let prefix = rng.pick(COMPANY_PREFIXES);
    let (word, industry) = *rng.pick(COMPANY_KINDS);
    let form = rng.pick(COMPANY_FORMS);
    let domain = format!("{}{}.no", ascii_slug(prefix), ascii_slug(word));
    (format!("{prefix} {word} {form}"), industry, domain)
}

/// When a contact was created and last active; shared by the contact and its activities.
fn timeline(seed: u64, contact_id: i64) -> (PgTimestamp, Option<PgTimestamp>) {
    let mut rng = Rng::for_row(seed, Stream::Timeline, contact_id as u64);
    let created = rng.between(CONTACTS_FROM.0, DATA_END.0 - 30 * DAY_MICROS);
    let last = rng
        .percent(90)
        .then(|| PgTimestamp(rng.between(created, DATA_END.0)));
    (PgTimestamp(created), last)
}

/// A template with `{first}` and `{month}` filled in.
fn fill(rng: &mut Rng, templates: &[&str]) -> String {
    rng.pick(templates)
        .replace("{first}", FIRST_NAMES_NO[rng.index(FIRST_NAMES_NO.len())])
        .replace("{month}", MONTHS[rng.index(MONTHS.len())])
}

/// Lower-case ASCII for email local parts and domains: `Bjørn Sæther` → `bjorn.saether`.
fn ascii_slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars().flat_map(char::to_lowercase) {
        match c {
            'æ' | 'ä' => out.push_str("ae"),
            'ø' | 'ö' => out.push('o'),
            'å' => out.push('a'),
            'é' => out.push('e'),
            'a'..='z' | '0'..='9' => out.push(c),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norwegian_account_numbers_are_checked_with_mod11() {
        assert!(is_valid_norwegian_account("1234.56.78903"));
        assert!(is_valid_norwegian_account("12345678903"));
        assert!(!is_valid_norwegian_account("1234.56.78904"));
        assert!(!is_valid_norwegian_account("1234.5.678903"));
        assert!(!is_valid_norwegian_account("1234.56.7890a"));
        assert!(!is_valid_norwegian_account("+234.56.78903"));
        assert!(!is_valid_norwegian_account(""));
        // Remainder 1 gives check 10: no valid account has these first ten digits.
        assert_eq!(account_check_digit(1_000_000_009), None);
        // Remainder 0 gives check 0.
        assert_eq!(account_check_digit(1_000_000_003), Some(0));
    }

    #[test]
    fn civil_dates_match_postgres_epoch() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(PgDate::civil(2000, 1, 1), PgDate(0));
        assert_eq!(PgDate::civil(1999, 12, 31), PgDate(-1));
        assert_eq!(
            PgDate::civil(2024, 3, 1).0 - PgDate::civil(2024, 2, 28).0,
            2
        );
    }

    #[test]
    fn generated_contacts_are_valid_unique_and_repeatable() {
        let mut first = Generator::new(2_000);
        let mut second = Generator::new(2_000);
        let mut emails = HashSet::new();
        let mut accounts = HashSet::new();
        for id in 1..=2_000 {
            let contact = first.contact(id);
            assert_eq!(contact, second.contact(id));
            assert!(is_valid_norwegian_account(&contact.bank_account));
            assert!(accounts.insert(contact.bank_account.clone()));
            assert!(emails.insert(contact.email.clone()), "{}", contact.email);
            assert!(contact.email.is_ascii());
            assert!((BIRTH_FIRST..=BIRTH_LAST).contains(&contact.date_of_birth));
            for activity in first.activities(id) {
                assert!(activity.happened_at >= contact.created_at);
            }
        }
    }

    #[test]
    fn slugs_drop_norwegian_letters() {
        assert_eq!(ascii_slug("Bjørn"), "bjorn");
        assert_eq!(ascii_slug("Sæther"), "saether");
        assert_eq!(ascii_slug("Bråten"), "braten");
        assert_eq!(ascii_slug("Bygdøy allé"), "bygdoyalle");
    }
}
