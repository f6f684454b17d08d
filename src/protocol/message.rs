//! The few tagged messages the relay decodes or writes itself.
//!
//! Strings from peers are kept as bytes until the caller needs text. SQL text the proxy analyses
//! must be valid UTF-8 (restricted roles only use the UTF8 client encoding); what PostgreSQL
//! would refuse to read is reported as the error PostgreSQL answers it with ([`TextError`]).

use super::frame::{get_cstr, get_i16, get_i32, Frame};
use super::PgError;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("malformed {0} message")]
    Malformed(&'static str),
}

/// Why PostgreSQL would not read the text of a Query or Parse. It answers each with an ERROR
/// and keeps the session (checked against PostgreSQL 15), and so does the proxy.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum TextError {
    /// No NUL terminator.
    #[error("invalid string in message")]
    Unterminated,
    /// Bytes after the terminator, as when the text holds a NUL.
    #[error("invalid message format")]
    Trailing,
    /// A Parse whose parameter types are cut short.
    #[error("insufficient data left in message")]
    Short,
    /// Not UTF-8: PostgreSQL names the offending bytes.
    #[error("invalid byte sequence for encoding \"UTF8\": {0}")]
    NotUtf8(String),
}

impl TextError {
    /// The ErrorResponse PostgreSQL sends for it.
    pub fn to_pg_error(&self) -> PgError {
        let code = match self {
            TextError::NotUtf8(_) => "22021",
            _ => "08P01",
        };
        PgError::error(code, self.to_string())
    }
}

/// `b` as UTF-8, or the error PostgreSQL gives for its first invalid sequence (the bytes of one
/// character as its lead byte announces it, as `report_invalid_encoding` prints them).
pub fn utf8_text(b: &[u8]) -> Result<&str, TextError> {
    std::str::from_utf8(b).map_err(|e| {
        let bad = &b[e.valid_up_to()..];
        let lead = bad.first().copied().unwrap_or(0);
        let len = match lead {
            l if l & 0xe0 == 0xc0 => 2,
            l if l & 0xf0 == 0xe0 => 3,
            l if l & 0xf8 == 0xf0 => 4,
            _ => 1,
        };
        let shown: Vec<String> = bad
            .iter()
            .take(len.min(bad.len()))
            .map(|b| format!("0x{b:02x}"))
            .collect();
        TextError::NotUtf8(shown.join(" "))
    })
}

/// Query ('Q'): the SQL text of a simple-protocol request, as bytes.
pub fn query_bytes(frame: &Frame) -> Result<&[u8], TextError> {
    let mut b = frame.body();
    let sql = get_cstr(&mut b).ok_or(TextError::Unterminated)?;
    if !b.is_empty() {
        return Err(TextError::Trailing);
    }
    Ok(sql)
}

/// Query ('Q'): the SQL text of a simple-protocol request.
pub fn decode_query(frame: &Frame) -> Result<&str, TextError> {
    utf8_text(query_bytes(frame)?)
}

pub fn encode_query(sql: &str) -> Frame {
    let mut body = Vec::with_capacity(sql.len() + 1);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    Frame::build(b'Q', &body)
}

/// Parse ('P'): a statement to prepare, its text still bytes (see [`utf8_text`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a [u8],
    pub sql: &'a [u8],
    pub param_types: Vec<u32>,
}

pub fn decode_parse(frame: &Frame) -> Result<Parse<'_>, TextError> {
    let mut b = frame.body();
    let name = get_cstr(&mut b).ok_or(TextError::Unterminated)?;
    let sql = get_cstr(&mut b).ok_or(TextError::Unterminated)?;
    let n = get_i16(&mut b).ok_or(TextError::Short)?;
    if n < 0 || b.len() < n as usize * 4 {
        return Err(TextError::Short);
    }
    if b.len() != n as usize * 4 {
        return Err(TextError::Trailing);
    }
    let param_types = b
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Parse {
        name,
        sql,
        param_types,
    })
}

/// The statement name of a Parse, when it can be read at all.
pub fn parse_name(frame: &Frame) -> Option<&[u8]> {
    let mut b = frame.body();
    get_cstr(&mut b)
}

pub fn encode_parse(name: &[u8], sql: &str, param_types: &[u32]) -> Frame {
    let mut body = Vec::with_capacity(name.len() + sql.len() + 4 + param_types.len() * 4);
    body.extend_from_slice(name);
    body.push(0);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    body.extend_from_slice(&(param_types.len() as i16).to_be_bytes());
    for t in param_types {
        body.extend_from_slice(&t.to_be_bytes());
    }
    Frame::build(b'P', &body)
}

/// Fields of an ErrorResponse or NoticeResponse, as (code, value) pairs.
pub fn decode_fields(frame: &Frame) -> Result<Vec<(u8, String)>, MessageError> {
    let mut b = frame.body();
    let mut out = Vec::new();
    loop {
        let Some((&code, rest)) = b.split_first() else {
            return Err(MessageError::Malformed("ErrorResponse"));
        };
        b = rest;
        if code == 0 {
            return Ok(out);
        }
        let v = get_cstr(&mut b).ok_or(MessageError::Malformed("ErrorResponse"))?;
        out.push((code, String::from_utf8_lossy(v).into_owned()));
    }
}

/// Authentication request ('R') from the upstream: its code and the bytes after it.
pub fn decode_auth(frame: &Frame) -> Result<(i32, &[u8]), MessageError> {
    let mut b = frame.body();
    let code = get_i32(&mut b).ok_or(MessageError::Malformed("Authentication"))?;
    Ok((code, b))
}

pub fn encode_auth(code: i32, data: &[u8]) -> Frame {
    let mut body = Vec::with_capacity(4 + data.len());
    body.extend_from_slice(&code.to_be_bytes());
    body.extend_from_slice(data);
    Frame::build(b'R', &body)
}

/// BackendKeyData ('K'): process id and secret key (4 bytes in protocol 3.0, up to 256 in 3.2).
pub fn decode_backend_key(frame: &Frame) -> Result<(i32, Vec<u8>), MessageError> {
    let mut b = frame.body();
    let pid = get_i32(&mut b).ok_or(MessageError::Malformed("BackendKeyData"))?;
    if b.len() < 4 || b.len() > 256 {
        return Err(MessageError::Malformed("BackendKeyData"));
    }
    Ok((pid, b.to_vec()))
}

pub fn encode_backend_key(pid: i32, secret: &[u8]) -> Frame {
    let mut body = Vec::with_capacity(4 + secret.len());
    body.extend_from_slice(&pid.to_be_bytes());
    body.extend_from_slice(secret);
    Frame::build(b'K', &body)
}

/// ParameterStatus ('S'): name and value.
pub fn decode_parameter_status(frame: &Frame) -> Result<(String, String), MessageError> {
    let mut b = frame.body();
    let k = get_cstr(&mut b).ok_or(MessageError::Malformed("ParameterStatus"))?;
    let v = get_cstr(&mut b).ok_or(MessageError::Malformed("ParameterStatus"))?;
    Ok((
        String::from_utf8_lossy(k).into_owned(),
        String::from_utf8_lossy(v).into_owned(),
    ))
}

/// Mechanism names of an AuthenticationSASL request.
pub fn decode_sasl_mechanisms(data: &[u8]) -> Result<Vec<&[u8]>, MessageError> {
    let mut b = data;
    let mut out = Vec::new();
    loop {
        let m = get_cstr(&mut b).ok_or(MessageError::Malformed("AuthenticationSASL"))?;
        if m.is_empty() {
            return Ok(out);
        }
        out.push(m);
    }
}

/// The parts of a Bind the audit trail needs: portal, statement and result format codes.
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    pub result_formats: Vec<i16>,
}

pub fn decode_bind(frame: &Frame) -> Result<Bind<'_>, MessageError> {
    const WHAT: &str = "Bind";
    let bad = MessageError::Malformed(WHAT);
    let mut b = frame.body();
    let portal = get_cstr(&mut b).ok_or(MessageError::Malformed(WHAT))?;
    let statement = get_cstr(&mut b).ok_or(MessageError::Malformed(WHAT))?;
    let nformats = get_i16(&mut b).ok_or(MessageError::Malformed(WHAT))?;
    let skip = usize::try_from(nformats).map_err(|_| MessageError::Malformed(WHAT))? * 2;
    b = b.get(skip..).ok_or(MessageError::Malformed(WHAT))?;
    let nparams = get_i16(&mut b).ok_or(MessageError::Malformed(WHAT))?;
    for _ in 0..nparams {
        let len = b
            .get(..4)
            .map(|l| i32::from_be_bytes([l[0], l[1], l[2], l[3]]))
            .ok_or(MessageError::Malformed(WHAT))?;
        b = &b[4..];
        if len > 0 {
            b = b.get(len as usize..).ok_or(MessageError::Malformed(WHAT))?;
        }
    }
    let nresults = get_i16(&mut b).ok_or(bad)?;
    let mut result_formats = Vec::new();
    for _ in 0..nresults {
        result_formats.push(get_i16(&mut b).ok_or(MessageError::Malformed(WHAT))?);
    }
    Ok(Bind {
        portal,
        statement,
        result_formats,
    })
}

/// Describe or Close: the kind (`S` statement, `P` portal) and the name.
pub fn decode_target(frame: &Frame) -> Result<(u8, &[u8]), MessageError> {
    let mut b = frame.body();
    let (&kind, rest) = b
        .split_first()
        .ok_or(MessageError::Malformed("Describe/Close"))?;
    b = rest;
    let name = get_cstr(&mut b).ok_or(MessageError::Malformed("Describe/Close"))?;
    Ok((kind, name))
}

/// The portal an Execute runs.
pub fn decode_execute(frame: &Frame) -> Result<&[u8], MessageError> {
    let mut b = frame.body();
    get_cstr(&mut b).ok_or(MessageError::Malformed("Execute"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip_and_truncation() {
        let f = encode_parse(b"s1", "SELECT $1", &[23]);
        let p = decode_parse(&f).unwrap();
        assert_eq!(p.name, b"s1");
        assert_eq!(p.sql, b"SELECT $1");
        assert_eq!(p.param_types, vec![23]);
        let cut = Frame::build(b'P', &f.body()[..f.body().len() - 2]);
        assert!(decode_parse(&cut).is_err());
        let neg = Frame::build(b'P', b"\0x\0\xff\xff");
        assert!(decode_parse(&neg).is_err());
    }

    #[test]
    fn query_needs_terminator_and_utf8() {
        let q = |b: &[u8]| decode_query(&Frame::build(b'Q', b)).map(str::to_owned);
        assert_eq!(q(b"SELECT 1"), Err(TextError::Unterminated));
        assert_eq!(q(b"SELECT 1\0x\0"), Err(TextError::Trailing));
        assert_eq!(q(b"\xff\0"), Err(TextError::NotUtf8("0xff".into())));
        assert_eq!(
            q(b"SELECT '\xc3\x28'\0"),
            Err(TextError::NotUtf8("0xc3 0x28".into()))
        );
        assert_eq!(
            q(b"SELECT '\xe2\x82'\0"),
            Err(TextError::NotUtf8("0xe2 0x82 0x27".into()))
        );
        assert_eq!(decode_query(&encode_query("SELECT 1")).unwrap(), "SELECT 1");
        let e = TextError::NotUtf8("0xff".into()).to_pg_error();
        assert_eq!((e.severity, e.code), ("ERROR", "22021"));
        assert_eq!(
            e.message,
            "invalid byte sequence for encoding \"UTF8\": 0xff"
        );
        assert_eq!(TextError::Trailing.to_pg_error().code, "08P01");
    }

    #[test]
    fn error_fields() {
        let f = Frame::build(b'E', b"SERROR\0C42501\0Mno\0\0");
        let fields = decode_fields(&f).unwrap();
        assert_eq!(fields[1], (b'C', "42501".into()));
        assert!(decode_fields(&Frame::build(b'E', b"SERROR")).is_err());
    }

    #[test]
    fn sasl_mechanisms() {
        let m = decode_sasl_mechanisms(b"SCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0").unwrap();
        assert_eq!(m, vec![&b"SCRAM-SHA-256-PLUS"[..], &b"SCRAM-SHA-256"[..]]);
    }
}
