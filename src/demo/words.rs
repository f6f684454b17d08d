//! Word lists behind the demo data: Norwegian (and a few Swedish and Danish) names, places,
//! companies and the free text a CRM collects.

pub const FIRST_NAMES_NO: &[&str] = &[
    "Ola",
    "Kari",
    "Per",
    "Anne",
    "Lars",
    "Ingrid",
    "Jon",
    "Marit",
    "Knut",
    "Silje",
    "Bjørn",
    "Hilde",
    "Arne",
    "Solveig",
    "Terje",
    "Ragnhild",
    "Håkon",
    "Åse",
    "Magnus",
    "Nora",
    "Jonas",
    "Emma",
    "Sindre",
    "Ida",
    "Eirik",
    "Thea",
    "Øystein",
    "Tuva",
    "Geir",
    "Liv",
    "Trond",
    "Sigrid",
    "Vegard",
    "Mari",
    "Espen",
    "Hanne",
    "Torbjørn",
    "Camilla",
    "Halvor",
    "Frida",
    "Aksel",
    "Maja",
    "Sverre",
    "Kristin",
    "Odd",
    "Gunn",
    "Jørgen",
    "Tone",
];

pub const LAST_NAMES_NO: &[&str] = &[
    "Hansen",
    "Johansen",
    "Olsen",
    "Larsen",
    "Andersen",
    "Pedersen",
    "Nilsen",
    "Kristiansen",
    "Jensen",
    "Karlsen",
    "Johnsen",
    "Pettersen",
    "Eriksen",
    "Berg",
    "Haugen",
    "Hagen",
    "Johannessen",
    "Andreassen",
    "Jacobsen",
    "Dahl",
    "Jørgensen",
    "Halvorsen",
    "Henriksen",
    "Lund",
    "Sørensen",
    "Moen",
    "Gundersen",
    "Iversen",
    "Strand",
    "Solberg",
    "Svendsen",
    "Eide",
    "Knutsen",
    "Martinsen",
    "Paulsen",
    "Bakken",
    "Kristoffersen",
    "Mathisen",
    "Lie",
    "Rønning",
    "Aas",
    "Fossum",
    "Bråten",
    "Tveit",
    "Økland",
    "Ødegård",
    "Nygård",
    "Sæther",
];

pub const FIRST_NAMES_SE: &[&str] = &[
    "Erik", "Anna", "Johan", "Karin", "Anders", "Maria", "Björn", "Linnéa", "Sven", "Elsa",
];
pub const LAST_NAMES_SE: &[&str] = &[
    "Andersson",
    "Johansson",
    "Karlsson",
    "Nilsson",
    "Lindqvist",
    "Bergström",
    "Åberg",
    "Holm",
];
pub const FIRST_NAMES_DK: &[&str] = &[
    "Mette", "Søren", "Kirsten", "Rasmus", "Lone", "Mads", "Birgitte", "Niels",
];
pub const LAST_NAMES_DK: &[&str] = &[
    "Nielsen",
    "Madsen",
    "Rasmussen",
    "Christensen",
    "Poulsen",
    "Thomsen",
    "Mortensen",
];

pub const STREETS_NO: &[&str] = &[
    "Storgata",
    "Kirkegata",
    "Kongens gate",
    "Dronningens gate",
    "Thorvald Meyers gate",
    "Møllergata",
    "Strandgaten",
    "Olav Tryggvasons gate",
    "Parkveien",
    "Skoleveien",
    "Bygdøy allé",
    "Bjørnstjerne Bjørnsons gate",
    "Sandviksveien",
    "Fjellveien",
    "Løkkeveien",
    "Solheimsgaten",
    "Elvegata",
    "Torggata",
    "Markveien",
    "Granveien",
    "Bekkeliveien",
    "Nordre gate",
];
pub const STREETS_SE: &[&str] = &["Drottninggatan", "Storgatan", "Kungsgatan", "Sveavägen"];
pub const STREETS_DK: &[&str] = &["Vesterbrogade", "Nørregade", "Strøget", "Østergade"];

/// (postal code, city)
pub const PLACES_NO: &[(&str, &str)] = &[
    ("0150", "Oslo"),
    ("0557", "Oslo"),
    ("0655", "Oslo"),
    ("5003", "Bergen"),
    ("5052", "Bergen"),
    ("7011", "Trondheim"),
    ("7030", "Trondheim"),
    ("4006", "Stavanger"),
    ("9008", "Tromsø"),
    ("3015", "Drammen"),
    ("4610", "Kristiansand"),
    ("1606", "Fredrikstad"),
    ("2317", "Hamar"),
    ("6002", "Ålesund"),
    ("8006", "Bodø"),
    ("3111", "Tønsberg"),
    ("1530", "Moss"),
    ("2815", "Gjøvik"),
    ("3717", "Skien"),
    ("1337", "Sandvika"),
    ("2000", "Lillestrøm"),
    ("5501", "Haugesund"),
];
pub const PLACES_SE: &[(&str, &str)] = &[
    ("111 22", "Stockholm"),
    ("411 01", "Göteborg"),
    ("211 20", "Malmö"),
    ("652 24", "Karlstad"),
];
pub const PLACES_DK: &[(&str, &str)] = &[
    ("1050", "København K"),
    ("8000", "Aarhus C"),
    ("5000", "Odense C"),
    ("9000", "Aalborg"),
];

pub const PERSONAL_EMAIL_DOMAINS: &[&str] = &[
    "gmail.com",
    "online.no",
    "hotmail.com",
    "outlook.com",
    "live.no",
    "icloud.com",
    "yahoo.no",
    "getmail.no",
];

/// Bank registration numbers (the first four digits of a Norwegian account number).
pub const BANK_CODES: &[u64] = &[
    1503, 1506, 1254, 1202, 1594, 1645, 1813, 1822, 2801, 3000, 3201, 3631, 4200, 4212, 6011, 9235,
    9710, 9802,
];

pub const COMPANY_PREFIXES: &[&str] = &[
    "Nord",
    "Vest",
    "Fjell",
    "Fjord",
    "Bryggen",
    "Solsiden",
    "Havblikk",
    "Skog",
    "Elve",
    "Polar",
    "Aurora",
    "Viking",
    "Tind",
    "Lyngen",
    "Sunnmøre",
    "Trønder",
    "Agder",
    "Mjøs",
    "Nordkapp",
    "Hardanger",
    "Lofoten",
    "Romsdal",
    "Glomma",
    "Dovre",
];

/// (name word, industry)
pub const COMPANY_KINDS: &[(&str, &str)] = &[
    ("Bygg", "construction"),
    ("Regnskap", "accounting"),
    ("Eiendom", "real estate"),
    ("Data", "it services"),
    ("Sjømat", "seafood"),
    ("Transport", "logistics"),
    ("Rør", "plumbing"),
    ("Elektro", "electrical"),
    ("Consulting", "consulting"),
    ("Marine", "maritime"),
    ("Helse", "health care"),
    ("Energi", "energy"),
    ("Maskin", "machinery"),
    ("Reklame", "advertising"),
    ("Advokat", "legal"),
    ("Reiser", "travel"),
];

pub const COMPANY_FORMS: &[&str] = &["AS", "AS", "AS", "ASA", "ANS", "DA"];

pub const MONTHS: &[&str] = &[
    "januar",
    "februar",
    "mars",
    "april",
    "mai",
    "juni",
    "juli",
    "august",
    "september",
    "oktober",
    "november",
    "desember",
];

/// Free-text notes as sales staff write them. `{first}` is another person's first name,
/// `{month}` a month; several lines are special-category data (health, family, beliefs, union).
pub const NOTES: &[&str] = &[
    "Foretrekker å bli kontaktet på e-post.",
    "Ønsker tilbud før sommeren, følg opp i {month}.",
    "Sykmeldt etter ryggoperasjon, tilbake i {month}.",
    "Har diabetes – unngå lange lunsjmøter.",
    "I foreldrepermisjon til {month}; kontakt {first} i mellomtiden.",
    "Kona {first} jobber også i bransjen, kan være en inngang.",
    "Gravid, termin i {month}. Ikke book møter rundt da.",
    "Sønnen {first} har autisme; fleksible møtetider er viktig.",
    "Nylig skilt, ny adresse registrert.",
    "Går gjennom kreftbehandling, ønsker minimal kontakt en periode.",
    "Tillitsvalgt i Fagforbundet.",
    "Aktiv i menigheten, ikke ring på søndager.",
    "Reiser mye i jobben; best å nå på mobil etter kl. 16.",
    "Klaget på faktura i {month}; løst med kreditnota.",
    "Mistet faren sin i {month}, vær varsom.",
    "Hørselshemmet – bruk helst e-post eller SMS.",
    "Interessert i nytt system for timeføring.",
    "Ringte sentralbordet flere ganger, vil ha fast kontaktperson.",
    "Bor alene med to barn, begrenset tid på ettermiddagen.",
    "Samboer med {first}, begge kunder hos oss.",
];

/// (kind, subjects)
pub const ACTIVITY_SUBJECTS: &[(&str, &[&str])] = &[
    (
        "call",
        &[
            "Oppfølging av tilbud",
            "Innledende samtale",
            "Spørsmål om faktura",
            "Fornyelse av avtale",
        ],
    ),
    (
        "email",
        &[
            "Tilbud sendt",
            "Svar på henvendelse",
            "Invitasjon til webinar",
            "Kontrakt til signering",
        ],
    ),
    (
        "meeting",
        &[
            "Lunsjmøte",
            "Demo av løsningen",
            "Kvartalsgjennomgang",
            "Forhandlingsmøte",
        ],
    ),
    (
        "note",
        &[
            "Intern notat",
            "Endret kontaktinfo",
            "Bytte av kontaktperson",
            "Merknad fra support",
        ],
    ),
];

pub const ACTIVITY_BODIES: &[&str] = &[
    "Kunden var positiv og ba om et skriftlig tilbud.",
    "Gikk gjennom prisene; ønsker rabatt ved tre års binding.",
    "Ingen svar, legger igjen beskjed og prøver igjen neste uke.",
    "Avtalt nytt møte med innkjøpsansvarlig.",
    "Kunden nevnte at {first} har vært syk en stund, så de er forsinket.",
    "Sendte oppdatert kontrakt; venter på signatur.",
    "Problemer med innlogging løst sammen med kunden.",
    "Ønsker ikke flere telefoner, kun e-post fremover.",
    "Diskuterte budsjett for neste år.",
    "Kunden skal ut i permisjon og ga oss kontakt til {first}.",
];

pub const CONSENT_PURPOSES: &[&str] = &["marketing", "newsletter", "profiling"];
pub const CONSENT_SOURCES: &[&str] = &["web_form", "phone", "event", "contract", "import"];
pub const STAFF: &[&str] = &["sales", "secretary", "marketing"];
