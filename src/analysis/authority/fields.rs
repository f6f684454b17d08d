//! PostgreSQL's parse tree as plain fields: the protobuf structs pg_query returns, serialised
//! through serde into a tree whose keys are the structs' own `&'static str` field and variant
//! names. Serde visits every field of every node type, which is what makes the walk complete;
//! this form keeps that at a fraction of the allocations of a JSON value.

use serde::ser::{self, Serialize};

/// One value of the tree.
#[derive(Debug, Clone, PartialEq)]
pub enum V {
    Null,
    Bool(bool),
    Int(i64),
    Str(String),
    Seq(Vec<V>),
    /// A struct's fields, or `{Variant: value}` for an enum (a node's kind).
    Map(Vec<(&'static str, V)>),
}

impl V {
    pub fn get(&self, key: &str) -> Option<&V> {
        match self {
            V::Map(m) => m.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            V::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_i64(&self) -> Option<i64> {
        match self {
            V::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            V::Bool(b) => Some(*b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&Vec<V>> {
        match self {
            V::Seq(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_object(&self) -> Option<&Vec<(&'static str, V)>> {
        match self {
            V::Map(m) => Some(m),
            _ => None,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, V::Null)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(String);

impl ser::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// The tree of any serialisable value (the parse result).
pub fn of<T: Serialize>(value: &T) -> Result<V, Error> {
    value.serialize(Builder)
}

struct Builder;

pub struct Seq(Vec<V>);
pub struct Fields(Vec<(&'static str, V)>);
pub struct Variant(&'static str, Vec<V>);
pub struct VariantFields(&'static str, Vec<(&'static str, V)>);
pub struct Entries(Vec<(&'static str, V)>);

impl ser::Serializer for Builder {
    type Ok = V;
    type Error = Error;
    type SerializeSeq = Seq;
    type SerializeTuple = Seq;
    type SerializeTupleStruct = Seq;
    type SerializeTupleVariant = Variant;
    type SerializeMap = Entries;
    type SerializeStruct = Fields;
    type SerializeStructVariant = VariantFields;

    fn serialize_bool(self, v: bool) -> Result<V, Error> {
        Ok(V::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<V, Error> {
        Ok(V::Int(v.into()))
    }
    fn serialize_i16(self, v: i16) -> Result<V, Error> {
        Ok(V::Int(v.into()))
    }
    fn serialize_i32(self, v: i32) -> Result<V, Error> {
        Ok(V::Int(v.into()))
    }
    fn serialize_i64(self, v: i64) -> Result<V, Error> {
        Ok(V::Int(v))
    }
    fn serialize_u8(self, v: u8) -> Result<V, Error> {
        Ok(V::Int(v.into()))
    }
    fn serialize_u16(self, v: u16) -> Result<V, Error> {
        Ok(V::Int(v.into()))
    }
    fn serialize_u32(self, v: u32) -> Result<V, Error> {
        Ok(V::Int(v.into()))
    }
    fn serialize_u64(self, v: u64) -> Result<V, Error> {
        Ok(V::Int(i64::try_from(v).unwrap_or(i64::MAX)))
    }
    fn serialize_f32(self, _: f32) -> Result<V, Error> {
        Ok(V::Null)
    }
    fn serialize_f64(self, _: f64) -> Result<V, Error> {
        Ok(V::Null)
    }
    fn serialize_char(self, v: char) -> Result<V, Error> {
        Ok(V::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<V, Error> {
        Ok(V::Str(v.to_owned()))
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<V, Error> {
        Ok(V::Null)
    }
    fn serialize_none(self) -> Result<V, Error> {
        Ok(V::Null)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<V, Error> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<V, Error> {
        Ok(V::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<V, Error> {
        Ok(V::Null)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, v: &'static str) -> Result<V, Error> {
        Ok(V::Map(vec![(v, V::Null)]))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        value: &T,
    ) -> Result<V, Error> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<V, Error> {
        Ok(V::Map(vec![(variant, value.serialize(Builder)?)]))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq, Error> {
        Ok(Seq(Vec::with_capacity(len.unwrap_or(0))))
    }
    fn serialize_tuple(self, len: usize) -> Result<Seq, Error> {
        Ok(Seq(Vec::with_capacity(len)))
    }
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq, Error> {
        Ok(Seq(Vec::with_capacity(len)))
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Variant, Error> {
        Ok(Variant(variant, Vec::with_capacity(len)))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Entries, Error> {
        Ok(Entries(Vec::new()))
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Fields, Error> {
        Ok(Fields(Vec::with_capacity(len)))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantFields, Error> {
        Ok(VariantFields(variant, Vec::with_capacity(len)))
    }
}

impl ser::SerializeSeq for Seq {
    type Ok = V;
    type Error = Error;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.0.push(value.serialize(Builder)?);
        Ok(())
    }
    fn end(self) -> Result<V, Error> {
        Ok(V::Seq(self.0))
    }
}

impl ser::SerializeTuple for Seq {
    type Ok = V;
    type Error = Error;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<V, Error> {
        Ok(V::Seq(self.0))
    }
}

impl ser::SerializeTupleStruct for Seq {
    type Ok = V;
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        ser::SerializeSeq::serialize_element(self, value)
    }
    fn end(self) -> Result<V, Error> {
        Ok(V::Seq(self.0))
    }
}

impl ser::SerializeTupleVariant for Variant {
    type Ok = V;
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.1.push(value.serialize(Builder)?);
        Ok(())
    }
    fn end(self) -> Result<V, Error> {
        Ok(V::Map(vec![(self.0, V::Seq(self.1))]))
    }
}

impl ser::SerializeMap for Entries {
    type Ok = V;
    type Error = Error;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, _: &T) -> Result<(), Error> {
        // The parse tree has no maps; keys would need owned names, so values are kept under
        // one name and still walked.
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Error> {
        self.0.push(("value", value.serialize(Builder)?));
        Ok(())
    }
    fn end(self) -> Result<V, Error> {
        Ok(V::Map(self.0))
    }
}

impl ser::SerializeStruct for Fields {
    type Ok = V;
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.0.push((key, value.serialize(Builder)?));
        Ok(())
    }
    fn end(self) -> Result<V, Error> {
        Ok(V::Map(self.0))
    }
}

impl ser::SerializeStructVariant for VariantFields {
    type Ok = V;
    type Error = Error;
    fn serialize_field<T: ?Sized + Serialize>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Error> {
        self.1.push((key, value.serialize(Builder)?));
        Ok(())
    }
    fn end(self) -> Result<V, Error> {
        Ok(V::Map(vec![(self.0, V::Map(self.1))]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_tree_keeps_its_field_and_node_names() {
        let parsed = pg_query::parse("SELECT a FROM s.t", 0).expect("parses");
        let tree = of(&parsed.protobuf).expect("serialises");
        let stmt = &tree.get("stmts").and_then(V::as_array).expect("stmts")[0];
        let select = stmt
            .get("stmt")
            .and_then(|n| n.get("node"))
            .and_then(|n| n.get("SelectStmt"))
            .expect("a SelectStmt");
        let from = &select
            .get("from_clause")
            .and_then(V::as_array)
            .expect("from")[0];
        let rv = from
            .get("node")
            .and_then(|n| n.get("RangeVar"))
            .expect("RangeVar");
        assert_eq!(rv.get("schemaname").and_then(V::as_str), Some("s"));
        assert_eq!(rv.get("relname").and_then(V::as_str), Some("t"));
    }
}
