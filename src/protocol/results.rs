//! Result messages PostgreSQL sends — RowDescription, DataRow, ErrorResponse/NoticeResponse
//! fields, CommandComplete — read as borrowed views of the frame, every length checked before
//! anything is sliced, and written back when the relay must change one. Every walk over these
//! messages is here; the relay and the audit trail only say which fields or values to keep.

use bytes::{BufMut, Bytes, BytesMut};

/// One field of a RowDescription, borrowing its name from the frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowField<'a> {
    pub name: &'a [u8],
    /// Origin: the table's OID and the column's number, 0 when the field is not a plain column.
    pub table_oid: u32,
    pub attnum: i16,
    pub type_oid: u32,
    pub type_size: i16,
    pub type_modifier: i32,
    /// 0 text, 1 binary.
    pub format: i16,
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn be_i16(b: &[u8]) -> i16 {
    i16::from_be_bytes([b[0], b[1]])
}

/// The count that opens RowDescription and DataRow bodies, and what follows it.
fn counted(frame: &[u8]) -> Option<(usize, &[u8])> {
    let body = frame.get(5..)?;
    let count = usize::try_from(be_i16(body.get(..2)?)).ok()?;
    Some((count, &body[2..]))
}

/// The fields of a RowDescription frame (tag and length included); None if malformed.
pub fn row_fields(frame: &[u8]) -> Option<Vec<RowField<'_>>> {
    let (count, mut rest) = counted(frame)?;
    // Each field takes at least 19 bytes: a claimed count beyond that is malformed, and
    // nothing is reserved for it.
    if count > rest.len() / 19 {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let nul = rest.iter().position(|b| *b == 0)?;
        let name = &rest[..nul];
        let f = rest.get(nul + 1..nul + 19)?;
        out.push(RowField {
            name,
            table_oid: be_u32(&f[0..4]),
            attnum: be_i16(&f[4..6]),
            type_oid: be_u32(&f[6..10]),
            type_size: be_i16(&f[10..12]),
            type_modifier: i32::from_be_bytes([f[12], f[13], f[14], f[15]]),
            format: be_i16(&f[16..18]),
        });
        rest = &rest[nul + 19..];
    }
    Some(out)
}

/// A RowDescription holding these fields.
pub fn encode_row_description(fields: &[RowField<'_>]) -> Option<Bytes> {
    let size: usize = fields.iter().map(|f| f.name.len() + 19).sum();
    let mut out = BytesMut::with_capacity(7 + size);
    out.put_u8(b'T');
    out.put_i32(i32::try_from(6 + size).ok()?);
    out.put_i16(i16::try_from(fields.len()).ok()?);
    for f in fields {
        out.put_slice(f.name);
        out.put_u8(0);
        out.put_u32(f.table_oid);
        out.put_i16(f.attnum);
        out.put_u32(f.type_oid);
        out.put_i16(f.type_size);
        out.put_i32(f.type_modifier);
        out.put_i16(f.format);
    }
    Some(out.freeze())
}

/// The values of a DataRow (None for NULL); None if malformed.
pub fn data_row_values(frame: &[u8]) -> Option<Vec<Option<&[u8]>>> {
    let (count, mut rest) = counted(frame)?;
    if count > rest.len() / 4 {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            out.push(None);
        } else {
            let n = usize::try_from(len).ok()?;
            out.push(Some(rest.get(..n)?));
            rest = &rest[n..];
        }
    }
    Some(out)
}

/// A DataRow holding these values.
pub fn encode_data_row(values: &[Option<&[u8]>]) -> Option<Bytes> {
    let size: usize = values.iter().map(|v| 4 + v.map_or(0, <[u8]>::len)).sum();
    let mut out = BytesMut::with_capacity(7 + size);
    out.put_u8(b'D');
    out.put_i32(i32::try_from(6 + size).ok()?);
    out.put_i16(i16::try_from(values.len()).ok()?);
    for v in values {
        match v {
            Some(v) => {
                out.put_i32(i32::try_from(v.len()).ok()?);
                out.put_slice(v);
            }
            None => out.put_i32(-1),
        }
    }
    Some(out.freeze())
}

/// The fields of an ErrorResponse or NoticeResponse (code, value), borrowed; None if
/// malformed.
pub fn notice_fields(frame: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut body = frame.get(5..)?;
    let mut out = Vec::new();
    loop {
        let (&code, rest) = body.split_first()?;
        if code == 0 {
            return Some(out);
        }
        let nul = rest.iter().position(|b| *b == 0)?;
        out.push((code, &rest[..nul]));
        body = &rest[nul + 1..];
    }
}

/// An ErrorResponse (`E`) or NoticeResponse (`N`) holding these fields.
pub fn encode_notice(tag: u8, fields: &[(u8, &[u8])]) -> Option<Bytes> {
    let size: usize = fields.iter().map(|(_, v)| v.len() + 2).sum::<usize>() + 1;
    let mut out = BytesMut::with_capacity(5 + size);
    out.put_u8(tag);
    out.put_i32(i32::try_from(4 + size).ok()?);
    for (code, value) in fields {
        out.put_u8(*code);
        out.put_slice(value);
        out.put_u8(0);
    }
    out.put_u8(0);
    Some(out.freeze())
}

/// The SQLSTATE of an ErrorResponse frame (tag and length included).
pub fn error_code(frame: &[u8]) -> Option<String> {
    let fields = notice_fields(frame)?;
    let (_, code) = fields.iter().find(|(c, _)| *c == b'C')?;
    std::str::from_utf8(code).ok().map(str::to_owned)
}

/// Rows reported by a CommandComplete tag (`SELECT 5`, `INSERT 0 3`, `COPY 7`).
pub fn command_rows(frame: &[u8]) -> u64 {
    let body = frame.get(5..).unwrap_or_default();
    let text = body.split(|b| *b == 0).next().unwrap_or_default();
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &'static str, table_oid: u32, attnum: i16) -> RowField<'static> {
        RowField {
            name: name.as_bytes(),
            table_oid,
            attnum,
            type_oid: 25,
            type_size: -1,
            type_modifier: -1,
            format: 0,
        }
    }

    #[test]
    fn row_descriptions_read_back_what_was_written() {
        let fields = vec![field("id", 16400, 1), field("bank_account", 16400, 12)];
        let frame = encode_row_description(&fields).expect("encodes");
        assert_eq!(row_fields(&frame), Some(fields));
        assert_eq!(
            row_fields(&encode_row_description(&[]).expect("empty")),
            Some(vec![])
        );
    }

    #[test]
    fn data_rows_read_back_what_was_written() {
        let values: Vec<Option<&[u8]>> = vec![Some(b"7"), None, Some(b"")];
        let frame = encode_data_row(&values).expect("encodes");
        assert_eq!(data_row_values(&frame), Some(values));
    }

    #[test]
    fn notices_read_back_what_was_written() {
        let fields: Vec<(u8, &[u8])> = vec![(b'S', b"ERROR"), (b'C', b"23505"), (b'M', b"dup")];
        let frame = encode_notice(b'E', &fields).expect("encodes");
        assert_eq!(notice_fields(&frame), Some(fields));
        assert_eq!(error_code(&frame).as_deref(), Some("23505"));
    }

    #[test]
    fn every_truncation_is_malformed_not_a_panic() {
        let t = encode_row_description(&[field("a", 1, 1), field("bb", 0, 0)]).expect("t");
        let d = encode_data_row(&[Some(b"abc"), None]).expect("d");
        let e = encode_notice(b'E', &[(b'C', b"42501"), (b'M', b"no")]).expect("e");
        for cut in 0..t.len() {
            assert_eq!(row_fields(&t[..cut]), None, "cut {cut}");
        }
        for cut in 0..d.len() {
            assert_eq!(data_row_values(&d[..cut]), None, "cut {cut}");
        }
        for cut in 0..e.len() {
            assert_eq!(notice_fields(&e[..cut]), None, "cut {cut}");
        }
    }

    #[test]
    fn claimed_counts_beyond_the_frame_allocate_nothing() {
        // 32,767 fields claimed in an 8-byte frame.
        assert_eq!(row_fields(b"T\0\0\0\x06\x7f\xff"), None);
        assert_eq!(data_row_values(b"D\0\0\0\x06\x7f\xff"), None);
        // A negative count is malformed.
        assert_eq!(data_row_values(b"D\0\0\0\x06\xff\xff"), None);
    }

    #[test]
    fn command_tags_give_row_counts() {
        let tag = |t: &str| {
            let mut f = vec![b'C', 0, 0, 0, 0];
            f.extend_from_slice(t.as_bytes());
            f.push(0);
            f
        };
        assert_eq!(command_rows(&tag("SELECT 5")), 5);
        assert_eq!(command_rows(&tag("INSERT 0 3")), 3);
        assert_eq!(command_rows(&tag("BEGIN")), 0);
        assert_eq!(command_rows(b"C"), 0);
    }
}
