//! The untagged messages that open a connection: SSLRequest, GSSENCRequest, CancelRequest and
//! StartupMessage.

use super::frame::get_cstr;

pub const SSL_REQUEST: i32 = 80877103;
pub const GSSENC_REQUEST: i32 = 80877104;
pub const CANCEL_REQUEST: i32 = 80877102;
/// Startup packets are small; PostgreSQL itself caps them at 10000 bytes.
pub const MAX_STARTUP_LEN: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initial {
    SslRequest,
    GssEncRequest,
    Cancel { pid: i32, secret: Vec<u8> },
    Startup(StartupMessage),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartupMessage {
    pub major: u16,
    pub minor: u16,
    pub params: Vec<(String, String)>,
}

impl StartupMessage {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn user(&self) -> &str {
        self.param("user").unwrap_or("")
    }

    /// The database, defaulting to the user name as PostgreSQL does (also when it is empty).
    pub fn database(&self) -> &str {
        self.param("database")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| self.user())
    }

    /// Encode the startup packet (length included).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(128);
        body.extend_from_slice(&self.major.to_be_bytes());
        body.extend_from_slice(&self.minor.to_be_bytes());
        for (k, v) in &self.params {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = Vec::with_capacity(body.len() + 4);
        out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StartupError {
    #[error("invalid startup packet length {0}")]
    BadLength(i64),
    #[error("unsupported frontend protocol {major}.{minor}: pgvakt supports protocol 3")]
    UnsupportedProtocol { major: u16, minor: u16 },
    #[error("invalid startup packet layout")]
    Malformed,
    #[error("startup parameters are not valid UTF-8")]
    NotUtf8,
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    /// Two keys PostgreSQL could read as the same parameter: it takes the last value where
    /// pgvakt would take the first, so the session would run as someone else than policy and
    /// audit believe.
    #[error("startup parameter {second:?} repeats {first:?}; each parameter may be given once")]
    DuplicateKey { first: String, second: String },
}

/// The parameter a startup key names as PostgreSQL could read it. Keys other than `user`,
/// `database`, `options` and `replication` are settings (GUCs), whose names PostgreSQL compares
/// ASCII-case-insensitively and maps from a few obsolete names (`map_old_guc_names` in guc.c);
/// folding every key this way refuses at least everything PostgreSQL reads as one parameter.
fn parameter_name(key: &str) -> String {
    let lower = key.to_ascii_lowercase();
    let current = match lower.as_str() {
        "sort_mem" => "work_mem",
        "vacuum_mem" => "maintenance_work_mem",
        "ssl_ecdh_curve" => "ssl_groups",
        _ => return lower,
    };
    current.to_owned()
}

/// Refuse a key that repeats an earlier one (see [`StartupError::DuplicateKey`]).
fn check_unique(params: &[(String, String)]) -> Result<(), StartupError> {
    let mut seen = std::collections::HashMap::with_capacity(params.len());
    for (key, _) in params {
        if let Some(first) = seen.insert(parameter_name(key), key) {
            return Err(StartupError::DuplicateKey {
                first: first.clone(),
                second: key.clone(),
            });
        }
    }
    Ok(())
}

/// The SSLRequest packet: length 8, then the request code.
pub fn encode_ssl_request() -> [u8; 8] {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&8i32.to_be_bytes());
    p[4..].copy_from_slice(&SSL_REQUEST.to_be_bytes());
    p
}

/// A CancelRequest packet for backend `pid` with its secret key (4 bytes in protocol 3.0, up
/// to 256 in 3.2; the caller forwards a key PostgreSQL itself issued).
pub fn encode_cancel_request(pid: i32, secret: &[u8]) -> Vec<u8> {
    let len = 12 + secret.len();
    let mut p = Vec::with_capacity(len);
    p.extend_from_slice(&i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes());
    p.extend_from_slice(&CANCEL_REQUEST.to_be_bytes());
    p.extend_from_slice(&pid.to_be_bytes());
    p.extend_from_slice(secret);
    p
}

/// Whether an 8-byte initial packet is exactly an SSLRequest.
pub fn is_ssl_request(packet: &[u8; 8]) -> bool {
    packet_len([packet[0], packet[1], packet[2], packet[3]]) == Ok(8)
        && matches!(decode(&packet[4..]), Ok(Initial::SslRequest))
}

/// Length of the packet announced by the first four bytes, validated.
pub fn packet_len(header: [u8; 4]) -> Result<usize, StartupError> {
    let len = i32::from_be_bytes(header);
    if !(8..=MAX_STARTUP_LEN as i32).contains(&len) {
        return Err(StartupError::BadLength(len as i64));
    }
    Ok(len as usize)
}

/// Decode the body (after the length) of an untagged initial packet.
pub fn decode(body: &[u8]) -> Result<Initial, StartupError> {
    if body.len() < 4 {
        return Err(StartupError::Malformed);
    }
    let code = i32::from_be_bytes([body[0], body[1], body[2], body[3]]);
    let rest = &body[4..];
    match code {
        SSL_REQUEST if rest.is_empty() => Ok(Initial::SslRequest),
        GSSENC_REQUEST if rest.is_empty() => Ok(Initial::GssEncRequest),
        CANCEL_REQUEST => {
            // Protocol 3.2 allows secret keys of up to 256 bytes.
            if rest.len() < 8 || rest.len() > 4 + 256 {
                return Err(StartupError::Malformed);
            }
            let pid = i32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
            Ok(Initial::Cancel {
                pid,
                secret: rest[4..].to_vec(),
            })
        }
        _ => {
            let major = (code >> 16) as u16;
            let minor = (code & 0xffff) as u16;
            if major != 3 {
                return Err(StartupError::UnsupportedProtocol { major, minor });
            }
            let mut b = rest;
            let mut params = Vec::new();
            loop {
                // An empty key is the terminator: anything after it is refused below, so an
                // empty key with a value cannot pass.
                let key = get_cstr(&mut b).ok_or(StartupError::Malformed)?;
                if key.is_empty() {
                    break;
                }
                let value = get_cstr(&mut b).ok_or(StartupError::Malformed)?;
                let key = std::str::from_utf8(key).map_err(|_| StartupError::NotUtf8)?;
                let value = std::str::from_utf8(value).map_err(|_| StartupError::NotUtf8)?;
                params.push((key.to_owned(), value.to_owned()));
            }
            if !b.is_empty() {
                return Err(StartupError::Malformed);
            }
            check_unique(&params)?;
            let msg = StartupMessage {
                major,
                minor,
                params,
            };
            if msg.user().is_empty() {
                return Err(StartupError::NoUser);
            }
            Ok(Initial::Startup(msg))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_round_trip() {
        let msg = StartupMessage {
            major: 3,
            minor: 0,
            params: vec![
                ("user".into(), "sales".into()),
                ("database".into(), "crm".into()),
            ],
        };
        let raw = msg.encode();
        let len = packet_len([raw[0], raw[1], raw[2], raw[3]]).unwrap();
        assert_eq!(len, raw.len());
        assert_eq!(decode(&raw[4..]).unwrap(), Initial::Startup(msg));
    }

    #[test]
    fn malformed_startups_are_errors() {
        assert!(packet_len(1_000_000i32.to_be_bytes()).is_err());
        assert!(packet_len(3i32.to_be_bytes()).is_err());
        let mut body = 196608i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0x");
        assert_eq!(decode(&body), Err(StartupError::Malformed));
        let body = (2i32 << 16).to_be_bytes();
        assert!(matches!(
            decode(&body),
            Err(StartupError::UnsupportedProtocol { .. })
        ));
        let mut body = 196608i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"database\0crm\0\0");
        assert_eq!(decode(&body), Err(StartupError::NoUser));
    }

    fn startup_body(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut body = 196608i32.to_be_bytes().to_vec();
        for (k, v) in pairs {
            body.extend_from_slice(k);
            body.push(0);
            body.extend_from_slice(v);
            body.push(0);
        }
        body.push(0);
        body
    }

    #[test]
    fn repeated_keys_are_refused_whatever_their_case() {
        let dup = |first: &str, second: &str| StartupError::DuplicateKey {
            first: first.into(),
            second: second.into(),
        };
        for (pairs, expected) in [
            (
                &[(&b"user"[..], &b"admin"[..]), (b"user", b"marketing")][..],
                dup("user", "user"),
            ),
            (
                &[
                    (b"user", b"marketing"),
                    (b"database", b"a"),
                    (b"database", b"b"),
                ],
                dup("database", "database"),
            ),
            (
                &[(b"User", b"admin"), (b"user", b"marketing")],
                dup("User", "user"),
            ),
            (
                &[
                    (b"user", b"x"),
                    (b"DateStyle", b"ISO"),
                    (b"datestyle", b"SQL"),
                ],
                dup("DateStyle", "datestyle"),
            ),
            (
                &[
                    (b"user", b"x"),
                    (b"work_mem", b"1MB"),
                    (b"sort_mem", b"2MB"),
                ],
                dup("work_mem", "sort_mem"),
            ),
        ] {
            assert_eq!(decode(&startup_body(pairs)), Err(expected), "{pairs:?}");
        }
        let distinct = startup_body(&[(b"user", b"x"), (b"database", b"user")]);
        assert!(matches!(decode(&distinct), Ok(Initial::Startup(_))));
    }

    #[test]
    fn empty_keys_and_invalid_utf8_are_refused() {
        let mut body = 196608i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0x\0\0marketing\0\0");
        assert_eq!(decode(&body), Err(StartupError::Malformed));
        let body = startup_body(&[(b"user", b"x"), (b"us\xffer", b"y")]);
        assert_eq!(decode(&body), Err(StartupError::NotUtf8));
        let body = startup_body(&[(b"user", b"\xc3")]);
        assert_eq!(decode(&body), Err(StartupError::NotUtf8));
    }

    #[test]
    fn an_empty_database_means_the_user_name() {
        let body = startup_body(&[(b"user", b"sales"), (b"database", b"")]);
        let Ok(Initial::Startup(msg)) = decode(&body) else {
            panic!("valid startup");
        };
        assert_eq!(msg.database(), "sales");
    }
}
