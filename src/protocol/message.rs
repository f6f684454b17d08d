//! The few tagged messages the relay decodes or writes itself.
//!
//! Strings from peers are kept as bytes until the caller needs text; SQL text must be valid
//! UTF-8 (the proxy only supports UTF8 client encoding for restricted roles).

use super::frame::{get_cstr, get_i16, get_i32, Frame};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("malformed {0} message")]
    Malformed(&'static str),
    #[error("{0} message text is not valid UTF-8")]
    NotUtf8(&'static str),
}

fn text<'a>(b: &'a [u8], what: &'static str) -> Result<&'a str, MessageError> {
    std::str::from_utf8(b).map_err(|_| MessageError::NotUtf8(what))
}

/// Query ('Q'): the SQL text of a simple-protocol request.
pub fn decode_query(frame: &Frame) -> Result<&str, MessageError> {
    let mut b = frame.body();
    let sql = get_cstr(&mut b).ok_or(MessageError::Malformed("Query"))?;
    if !b.is_empty() {
        return Err(MessageError::Malformed("Query"));
    }
    text(sql, "Query")
}

pub fn encode_query(sql: &str) -> Frame {
    let mut body = Vec::with_capacity(sql.len() + 1);
    body.extend_from_slice(sql.as_bytes());
    body.push(0);
    Frame::build(b'Q', &body)
}

/// Parse ('P'): a statement to prepare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a [u8],
    pub sql: &'a str,
    pub param_types: Vec<u32>,
}

pub fn decode_parse(frame: &Frame) -> Result<Parse<'_>, MessageError> {
    const WHAT: &str = "Parse";
    let mut b = frame.body();
    let name = get_cstr(&mut b).ok_or(MessageError::Malformed(WHAT))?;
    let sql = get_cstr(&mut b).ok_or(MessageError::Malformed(WHAT))?;
    let n = get_i16(&mut b).ok_or(MessageError::Malformed(WHAT))?;
    if n < 0 || b.len() != n as usize * 4 {
        return Err(MessageError::Malformed(WHAT));
    }
    let param_types = b
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    Ok(Parse {
        name,
        sql: text(sql, WHAT)?,
        param_types,
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trip_and_truncation() {
        let f = encode_parse(b"s1", "SELECT $1", &[23]);
        let p = decode_parse(&f).unwrap();
        assert_eq!(p.name, b"s1");
        assert_eq!(p.sql, "SELECT $1");
        assert_eq!(p.param_types, vec![23]);
        let cut = Frame::build(b'P', &f.body()[..f.body().len() - 2]);
        assert!(decode_parse(&cut).is_err());
        let neg = Frame::build(b'P', b"\0x\0\xff\xff");
        assert!(decode_parse(&neg).is_err());
    }

    #[test]
    fn query_needs_terminator_and_utf8() {
        assert!(decode_query(&Frame::build(b'Q', b"SELECT 1")).is_err());
        assert!(decode_query(&Frame::build(b'Q', b"\xff\0")).is_err());
        assert_eq!(decode_query(&encode_query("SELECT 1")).unwrap(), "SELECT 1");
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
