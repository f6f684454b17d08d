//! What the audit trail reads from and changes in result messages: hidden columns stripped
//! from RowDescription and DataRow, subject keys read as text, and the tables and columns a
//! statement touched, as records list them.

use bytes::Bytes;

use crate::analysis::{ColumnUse, ResultOrigin, UseAction};
use crate::audit::{Access, Action, ColumnAccess, TableAccess};
use crate::protocol::results::{
    data_row_values, encode_data_row, encode_row_description, row_fields,
};

/// A RowDescription without its last `n` fields (None if malformed: then it passes as is and
/// the client sees a wrong column count rather than a wrong value).
pub fn strip_fields(frame: &[u8], n: usize) -> Option<Bytes> {
    let fields = row_fields(frame)?;
    let keep = fields.len().checked_sub(n)?;
    encode_row_description(fields.get(..keep)?)
}

/// A RowDescription whose fields at the given positions carry the given origins (table OID,
/// column number); None if malformed or a position is out of range (then the client gets
/// PostgreSQL's own description).
pub fn with_origins(frame: &[u8], origins: &[ResultOrigin]) -> Option<Bytes> {
    let mut fields = row_fields(frame)?;
    for o in origins {
        let f = fields.get_mut(o.index)?;
        f.table_oid = o.table_oid;
        f.attnum = o.attnum;
    }
    encode_row_description(&fields)
}

/// A DataRow without its last `n` values.
pub fn strip_values(frame: &[u8], n: usize) -> Option<Bytes> {
    let values = data_row_values(frame)?;
    let keep = values.len().checked_sub(n)?;
    encode_data_row(values.get(..keep)?)
}

pub fn tables(read: &[ColumnUse], written: &[ColumnUse]) -> Vec<TableAccess> {
    let mut out: Vec<TableAccess> = Vec::new();
    for (uses, access) in [(read, Access::Read), (written, Access::Write)] {
        for u in uses {
            let name = format!("{}.{}", u.schema, u.table);
            let col = ColumnAccess {
                column: u.column.clone(),
                category: u.category.clone(),
                action: match u.action {
                    UseAction::Allowed => Action::Allowed,
                    UseAction::Masked => Action::Masked,
                    UseAction::Blocked => Action::Blocked,
                },
            };
            match out
                .iter_mut()
                .find(|t| t.table == name && t.access == access)
            {
                Some(t) => t.columns.push(col),
                None => out.push(TableAccess {
                    table: name,
                    access,
                    columns: vec![col],
                    subject: None,
                }),
            }
        }
    }
    out
}

/// A subject key's text form, as the DPO types it for `audit search --subject`.
pub fn key_text(v: &[u8], type_oid: u32, binary: bool) -> Option<String> {
    if !binary {
        return std::str::from_utf8(v).ok().map(str::to_owned);
    }
    match (type_oid, v.len()) {
        (20, 8) => Some(i64::from_be_bytes(v.try_into().ok()?).to_string()),
        (23, 4) => Some(i32::from_be_bytes(v.try_into().ok()?).to_string()),
        (21, 2) => Some(i16::from_be_bytes(v.try_into().ok()?).to_string()),
        (2950, 16) => {
            let h = hex::encode(v);
            Some(format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            ))
        }
        // text, varchar, bpchar, name: binary is the text itself.
        (25 | 1043 | 1042 | 19, _) => std::str::from_utf8(v).ok().map(str::to_owned),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{BufMut, BytesMut};

    fn description(fields: &[(&str, u32, i16)]) -> Vec<u8> {
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

    #[test]
    fn origins_are_put_into_the_named_fields_only() {
        let t = description(&[("id", 16384, 1), ("bank_account", 0, 0), ("n", 0, 0)]);
        let o = ResultOrigin {
            index: 1,
            table_oid: 16384,
            attnum: 12,
        };
        let out = with_origins(&t, &[o]).expect("well-formed");
        assert_eq!(
            out.as_ref(),
            description(&[("id", 16384, 1), ("bank_account", 16384, 12), ("n", 0, 0)])
        );
        let beyond = ResultOrigin { index: 3, ..o };
        assert_eq!(with_origins(&t, &[beyond]), None);
        for cut in 0..t.len() {
            let _ = with_origins(&t[..cut], &[o]);
        }
    }

    #[test]
    fn binary_keys_read_as_their_text_form() {
        assert_eq!(
            key_text(&42i64.to_be_bytes(), 20, true).as_deref(),
            Some("42")
        );
        assert_eq!(
            key_text(&7i32.to_be_bytes(), 23, true).as_deref(),
            Some("7")
        );
        assert_eq!(key_text(b"42", 20, false).as_deref(), Some("42"));
        assert_eq!(key_text(&[1, 2, 3], 20, true), None);
    }
}
