//! Console answers as PostgreSQL sends results: RowDescription (every column `text`), DataRows,
//! CommandComplete; so psql and drivers show them as tables.

use bytes::{BufMut, BytesMut};

use crate::protocol::results::{encode_data_row, encode_row_description, RowField};

/// `text`'s type OID.
const TEXT_OID: u32 = 25;

/// A result: column names and rows of text values (None: NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl Table {
    pub fn new(columns: &[&'static str]) -> Table {
        Table {
            columns: columns.to_vec(),
            rows: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Vec<Option<String>>) {
        self.rows.push(row);
    }

    /// RowDescription, the DataRows and CommandComplete `tag`, appended to `out`.
    pub fn encode(&self, tag: &str, out: &mut BytesMut) {
        let fields: Vec<RowField<'_>> = self
            .columns
            .iter()
            .map(|c| RowField {
                name: c.as_bytes(),
                table_oid: 0,
                attnum: 0,
                type_oid: TEXT_OID,
                type_size: -1,
                type_modifier: -1,
                format: 0,
            })
            .collect();
        // Console results are a few columns and rows of short text: far below the limits the
        // encoders check.
        if let Some(d) = encode_row_description(&fields) {
            out.extend_from_slice(&d);
        }
        for row in &self.rows {
            let values: Vec<Option<&[u8]>> = row
                .iter()
                .map(|v| v.as_deref().map(str::as_bytes))
                .collect();
            if let Some(r) = encode_data_row(&values) {
                out.extend_from_slice(&r);
            }
        }
        command_complete(tag, out);
    }
}

/// CommandComplete with `tag`.
pub fn command_complete(tag: &str, out: &mut BytesMut) {
    out.put_u8(b'C');
    out.put_i32(i32::try_from(tag.len() + 5).unwrap_or(i32::MAX));
    out.put_slice(tag.as_bytes());
    out.put_u8(0);
}

/// ReadyForQuery: the console has no transactions, so always idle.
pub fn ready(out: &mut BytesMut) {
    out.put_slice(&[b'Z', 0, 0, 0, 5, b'I']);
}

/// EmptyQueryResponse, for a Query holding no command.
pub fn empty_query(out: &mut BytesMut) {
    out.put_slice(&[b'I', 0, 0, 0, 4]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::results::{data_row_values, row_fields};

    #[test]
    fn a_table_is_a_row_description_rows_and_a_tag() {
        let mut t = Table::new(&["id", "user"]);
        t.push(vec![Some("7".into()), None]);
        let mut out = BytesMut::new();
        t.encode("SHOW", &mut out);
        assert_eq!(out[0], b'T');
        let t_len = 1 + u32::from_be_bytes([out[1], out[2], out[3], out[4]]) as usize;
        let fields = row_fields(&out[..t_len]).expect("row description");
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[1].name, b"user");
        assert_eq!(fields[1].type_oid, TEXT_OID);
        let rest = &out[t_len..];
        assert_eq!(rest[0], b'D');
        let d_len = 1 + u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let values = data_row_values(&rest[..d_len]).expect("data row");
        assert_eq!(values, vec![Some(&b"7"[..]), None]);
        assert_eq!(&rest[d_len..], b"C\0\0\0\x09SHOW\0");
    }
}
