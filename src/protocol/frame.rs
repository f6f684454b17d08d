//! Splitting a byte stream into tagged protocol frames.

use bytes::{Buf, Bytes, BytesMut};

/// Smallest legal length field: the length counts itself.
const MIN_LEN: usize = 4;

/// One complete tagged message: `tag`, then the raw bytes including tag and length.
#[derive(Debug, Clone)]
pub struct Frame {
    pub tag: u8,
    /// The whole message as it appeared on the wire (tag + length + body).
    pub raw: Bytes,
}

impl Frame {
    /// The body after tag and length (empty for a frame too short to have one: frames are
    /// also built from slices of peer bytes).
    pub fn body(&self) -> &[u8] {
        self.raw.get(5..).unwrap_or_default()
    }

    /// Build a frame from a tag and body (for messages the proxy writes itself).
    pub fn build(tag: u8, body: &[u8]) -> Frame {
        let mut raw = BytesMut::with_capacity(body.len() + 5);
        raw.extend_from_slice(&[tag]);
        raw.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        raw.extend_from_slice(body);
        Frame {
            tag,
            raw: raw.freeze(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("invalid message length {len} for message type {tag:?}")]
    BadLength { tag: char, len: i64 },
    #[error("message of type {tag:?} is {len} bytes, over the limit of {max} bytes")]
    TooLarge { tag: char, len: usize, max: usize },
}

/// Incremental frame splitter with a maximum message size.
///
/// Returns `Ok(None)` while a frame is incomplete; the length is checked against the limit as
/// soon as the header is in, so a peer cannot make the proxy buffer an oversize message.
#[derive(Debug, Clone, Copy)]
pub struct FrameReader {
    pub max_len: usize,
}

impl FrameReader {
    pub fn new(max_len: usize) -> Self {
        FrameReader { max_len }
    }

    /// Total length (tag included) of the next frame in `buf` if its header is complete.
    pub fn peek_len(&self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let tag = buf[0];
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len < MIN_LEN as i32 {
            return Err(FrameError::BadLength {
                tag: tag as char,
                len: len as i64,
            });
        }
        let len = len as usize;
        if len > self.max_len {
            return Err(FrameError::TooLarge {
                tag: tag as char,
                len,
                max: self.max_len,
            });
        }
        Ok(Some(len + 1))
    }

    /// Take the next complete frame out of `buf`.
    pub fn next(&self, buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.peek_len(buf)? {
            Some(total) if buf.len() >= total => {
                let raw = buf.split_to(total).freeze();
                Ok(Some(Frame { tag: raw[0], raw }))
            }
            _ => Ok(None),
        }
    }
}

/// Read a big-endian i32 from the front of `b`, if present.
pub fn get_i32(b: &mut &[u8]) -> Option<i32> {
    if b.len() < 4 {
        return None;
    }
    Some(b.get_i32())
}

/// Read a big-endian i16 from the front of `b`, if present.
pub fn get_i16(b: &mut &[u8]) -> Option<i16> {
    if b.len() < 2 {
        return None;
    }
    Some(b.get_i16())
}

/// Read a NUL-terminated string (bytes, without the NUL) from the front of `b`.
pub fn get_cstr<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let pos = b.iter().position(|&c| c == 0)?;
    let (s, rest) = b.split_at(pos);
    *b = &rest[1..];
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_then_complete() {
        let r = FrameReader::new(1024);
        let mut buf = BytesMut::from(&b"Q\0\0\0\x09SEL"[..]);
        assert!(r.next(&mut buf).unwrap().is_none());
        buf.extend_from_slice(b"1\0");
        let f = r.next(&mut buf).unwrap().unwrap();
        assert_eq!(f.tag, b'Q');
        assert_eq!(f.body(), b"SEL1\0");
        assert!(buf.is_empty());
    }

    #[test]
    fn rejects_short_and_oversize_lengths_before_body_arrives() {
        let r = FrameReader::new(100);
        let mut buf = BytesMut::from(&b"Q\0\0\0\x03"[..]);
        assert!(matches!(
            r.next(&mut buf),
            Err(FrameError::BadLength { .. })
        ));
        let mut buf = BytesMut::from(&b"Q\x7f\0\0\0"[..]);
        assert!(matches!(r.next(&mut buf), Err(FrameError::TooLarge { .. })));
        let mut buf = BytesMut::from(&b"Q\xff\xff\xff\xff"[..]);
        assert!(matches!(
            r.next(&mut buf),
            Err(FrameError::BadLength { .. })
        ));
    }

    #[test]
    fn cstr_requires_terminator() {
        let mut b: &[u8] = b"abc";
        assert!(get_cstr(&mut b).is_none());
        let mut b: &[u8] = b"abc\0de\0";
        assert_eq!(get_cstr(&mut b), Some(&b"abc"[..]));
        assert_eq!(get_cstr(&mut b), Some(&b"de"[..]));
        assert!(b.is_empty());
    }
}
