//! Defence in depth: PostgreSQL's RowDescription names the table OID and attribute number of
//! every plain column output. Masked columns leave the analyser as expressions (no origin), so
//! a protected column that arrives with its origin intact for a restricted role means the
//! analysis missed something. Its values are replaced with NULL before they reach the client,
//! and the event is counted and logged. Only results that trip the check have their DataRows
//! decoded.

use bytes::Bytes;

use crate::protocol::results::{
    data_row_values, encode_data_row, encode_notice, notice_fields, row_fields,
};

pub use crate::enforce::Protected;

/// The columns of a RowDescription that carry protected origins, with their names.
pub fn flagged_columns(frame: &[u8], protected: &Protected) -> Option<Vec<(usize, String)>> {
    let fields = row_fields(frame)?;
    Some(
        fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.table_oid != 0 && protected.contains(&(f.table_oid, f.attnum)))
            .map(|(i, f)| (i, String::from_utf8_lossy(f.name).into_owned()))
            .collect(),
    )
}

/// A DataRow with the given columns replaced by NULL; None if the frame is malformed.
pub fn null_columns(frame: &[u8], columns: &[usize]) -> Option<Bytes> {
    let mut values = data_row_values(frame)?;
    for &i in columns {
        if let Some(v) = values.get_mut(i) {
            *v = None;
        }
    }
    encode_data_row(&values)
}

/// An ErrorResponse or NoticeResponse for a restricted role without a DETAIL that can show
/// stored values: integrity errors (class 23) describe the failing row ("Failing row contains
/// (...)", with every column the database user may select, masked ones included) or the
/// conflicting key. None when the message is fine as it is, or malformed (relayed as is; the
/// client's parser rejects it).
pub fn withhold_row_detail(frame: &[u8]) -> Option<Bytes> {
    let mut fields = notice_fields(frame)?;
    let integrity = fields
        .iter()
        .any(|(c, v)| *c == b'C' && v.starts_with(b"23"));
    let shows_row = fields
        .iter()
        .any(|(c, v)| *c == b'D' && v.windows(20).any(|w| w == b"Failing row contains"));
    if !(fields.iter().any(|(c, _)| *c == b'D') && (integrity || shows_row)) {
        return None;
    }
    for (code, value) in fields.iter_mut() {
        if *code == b'D' {
            *value = b"pgvakt: the detail is withheld because it can show stored values";
        }
    }
    encode_notice(*frame.first()?, &fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn error(fields: &[(u8, &str)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (c, v) in fields {
            body.push(*c);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut f = vec![b'E'];
        f.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        f.extend(body);
        f
    }

    #[test]
    fn integrity_errors_lose_the_row_they_describe() {
        let f = error(&[
            (b'S', "ERROR"),
            (b'C', "23502"),
            (b'M', "null value in column \"first_name\""),
            (b'D', "Failing row contains (1, null, 1645.31.50333)."),
            (b't', "contacts"),
        ]);
        let out = withhold_row_detail(&f).expect("scrubbed");
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("1645.31.50333"), "{text}");
        assert!(text.contains("23502") && text.contains("first_name") && text.contains("contacts"));
        assert_eq!(
            u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize,
            out.len() - 1
        );
        let plain = error(&[(b'S', "ERROR"), (b'C', "42P01"), (b'M', "x"), (b'D', "y")]);
        assert_eq!(withhold_row_detail(&plain), None);
        assert_eq!(withhold_row_detail(&f[..f.len() - 3]), None);
    }

    fn row_description(fields: &[(&str, u32, i16)]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(b'T');
        b.put_i32(0);
        b.put_i16(fields.len() as i16);
        for (name, oid, att) in fields {
            b.put_slice(name.as_bytes());
            b.put_u8(0);
            b.put_u32(*oid);
            b.put_i16(*att);
            b.put_u32(25);
            b.put_i16(-1);
            b.put_i32(-1);
            b.put_i16(0);
        }
        let len = (b.len() - 1) as i32;
        b[1..5].copy_from_slice(&len.to_be_bytes());
        b.to_vec()
    }

    fn data_row(values: &[Option<&str>]) -> Vec<u8> {
        let mut b = BytesMut::new();
        b.put_u8(b'D');
        b.put_i32(0);
        b.put_i16(values.len() as i16);
        for v in values {
            match v {
                Some(s) => {
                    b.put_i32(s.len() as i32);
                    b.put_slice(s.as_bytes());
                }
                None => b.put_i32(-1),
            }
        }
        let len = (b.len() - 1) as i32;
        b[1..5].copy_from_slice(&len.to_be_bytes());
        b.to_vec()
    }

    #[test]
    fn flags_only_protected_origins() {
        let protected: Protected = [(16384, 12)].into_iter().collect();
        let t = row_description(&[("id", 16384, 1), ("bank_account", 16384, 12), ("x", 0, 0)]);
        assert_eq!(
            flagged_columns(&t, &protected),
            Some(vec![(1, "bank_account".to_owned())])
        );
        let masked = row_description(&[("bank_account", 0, 0)]);
        assert_eq!(flagged_columns(&masked, &protected), Some(vec![]));
    }

    #[test]
    fn nulls_flagged_values_and_keeps_the_rest() {
        let d = data_row(&[Some("1"), Some("SE45 5000 0000 0583 9825 7466"), None]);
        let out = null_columns(&d, &[1]).expect("well-formed");
        assert_eq!(out.as_ref(), data_row(&[Some("1"), None, None]).as_slice());
    }

    #[test]
    fn malformed_frames_are_rejected_not_panicked_on() {
        let protected: Protected = [(1, 1)].into_iter().collect();
        for cut in 0..20 {
            let t = row_description(&[("a", 1, 1)]);
            let _ = flagged_columns(&t[..cut.min(t.len())], &protected);
            let d = data_row(&[Some("abc")]);
            let _ = null_columns(&d[..cut.min(d.len())], &[0]);
        }
        assert!(null_columns(&data_row(&[Some("abc")])[..9], &[0]).is_none());
    }
}
