//! Tamper evidence: every line carries `seq` and
//! `mac = HMAC-SHA256(chain_key, seq as 8 bytes big-endian ‖ previous mac (32 bytes) ‖
//! canonical JSON of the record without "mac")`. The first record (seq 1) chains from 32 zero
//! bytes. Editing, removing or reordering a record breaks the chain at that record.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::record::{canonical, Record};

pub(crate) type HmacSha256 = Hmac<Sha256>;

pub const MAC_LEN: usize = 32;
pub type MacBytes = [u8; MAC_LEN];

/// The MAC before seq 1.
pub const GENESIS: MacBytes = [0; MAC_LEN];

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("not JSON: {0}")]
    Json(String),
    #[error("not a JSON object")]
    NotObject,
    #[error("no numeric \"seq\"")]
    NoSeq,
    #[error("no \"mac\" of {} hex digits", MAC_LEN * 2)]
    NoMac,
}

/// The chain key, prepared once (HMAC state keyed, cloned per record), with its fingerprint.
#[derive(Clone)]
pub struct ChainKey(HmacSha256, String);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    pub fn new(key: &[u8]) -> ChainKey {
        // HMAC accepts keys of any length; length rules are enforced where keys are loaded.
        ChainKey(keyed(key), super::keys::fingerprint(key))
    }

    /// The fingerprint sealed records carry in `chain_key_id`.
    pub fn id(&self) -> &str {
        &self.1
    }

    pub fn mac(&self, seq: u64, prev: &MacBytes, canonical_record: &str) -> MacBytes {
        let mut m = self.0.clone();
        m.update(&seq.to_be_bytes());
        m.update(prev);
        m.update(canonical_record.as_bytes());
        m.finalize().into_bytes().into()
    }
}

/// HMAC-SHA256 keyed with `key`. `new_from_slice` fails only for MACs with a fixed key size;
/// HMAC takes keys of any length.
pub(crate) fn keyed(key: &[u8]) -> HmacSha256 {
    match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// The writer's position in the chain.
#[derive(Debug, Clone)]
pub struct Chain {
    key: ChainKey,
    /// Sequence number the next record gets.
    pub next_seq: u64,
    /// MAC of the last record written (GENESIS before the first).
    pub prev: MacBytes,
}

impl Chain {
    pub fn genesis(key: ChainKey) -> Chain {
        Chain {
            key,
            next_seq: 1,
            prev: GENESIS,
        }
    }

    /// Continue after a record found on disk.
    pub fn resume(key: ChainKey, last_seq: u64, last_mac: MacBytes) -> Chain {
        Chain {
            key,
            next_seq: last_seq.saturating_add(1),
            prev: last_mac,
        }
    }

    /// Assign the next `seq`, compute the MAC and return the line to write (with `\n`).
    pub fn seal(&mut self, rec: &mut Record) -> Result<String, serde_json::Error> {
        rec.seq = self.next_seq;
        rec.chain_key_id = Some(self.key.id().to_owned());
        rec.mac = None;
        let body = serde_json::to_string(&*rec)?;
        debug_assert_eq!(body, canonical(&serde_json::to_value(&*rec)?));
        let mac = self.key.mac(rec.seq, &self.prev, &body);
        rec.mac = Some(hex::encode(mac));
        let mut line = serde_json::to_string(&*rec)?;
        debug_assert_eq!(line, canonical(&serde_json::to_value(&*rec)?));
        line.push('\n');
        self.prev = mac;
        self.next_seq += 1;
        Ok(line)
    }
}

/// A line as read back: its sequence number, the MAC it carries and the canonical text the MAC
/// must cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedLine {
    pub seq: u64,
    pub mac: MacBytes,
    pub body: String,
    /// The chain key fingerprint the record names; None in records written before pgvakt
    /// recorded one.
    pub key_id: Option<String>,
}

pub fn open_line(line: &str) -> Result<SealedLine, LineError> {
    let mut value: Value =
        serde_json::from_str(line).map_err(|e| LineError::Json(e.to_string()))?;
    let map = value.as_object_mut().ok_or(LineError::NotObject)?;
    let mac = map
        .remove("mac")
        .and_then(|m| m.as_str().and_then(|s| hex::decode(s).ok()))
        .and_then(|b| MacBytes::try_from(b.as_slice()).ok())
        .ok_or(LineError::NoMac)?;
    let seq = map
        .get("seq")
        .and_then(Value::as_u64)
        .ok_or(LineError::NoSeq)?;
    let key_id = map
        .get("chain_key_id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(SealedLine {
        seq,
        mac,
        body: canonical(&value),
        key_id,
    })
}

impl SealedLine {
    /// Whether this line's MAC is the one the chain gives after `prev`.
    pub fn chains_from(&self, key: &ChainKey, prev: &MacBytes) -> bool {
        // Without an early exit, so timing reveals nothing about how much of a forged MAC was
        // right.
        use subtle::ConstantTimeEq;
        bool::from(key.mac(self.seq, prev, &self.body)[..].ct_eq(&self.mac[..]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{EventType, Outcome};

    #[test]
    fn sealed_lines_chain_and_reopen() {
        let key = ChainKey::new(b"0123456789abcdef0123456789abcdef");
        let mut chain = Chain::genesis(key.clone());
        let mut prev = GENESIS;
        for expected in 1..=3 {
            let mut r = Record::new(EventType::Login, Outcome::Ok);
            let line = chain.seal(&mut r).unwrap();
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            let sealed = open_line(line.trim_end()).unwrap();
            assert_eq!(sealed.seq, expected);
            assert!(sealed.chains_from(&key, &prev));
            assert!(!sealed.chains_from(&ChainKey::new(b"another key, also long enough!!!"), &prev));
            prev = sealed.mac;
        }
        assert_eq!(chain.prev, prev);
        assert_eq!(chain.next_seq, 4);
    }

    #[test]
    fn lines_without_mac_or_seq_are_rejected() {
        assert!(matches!(open_line("{\"seq\":1}"), Err(LineError::NoMac)));
        let mac = "00".repeat(32);
        assert!(matches!(
            open_line(&format!("{{\"mac\":\"{mac}\"}}")),
            Err(LineError::NoSeq)
        ));
        assert!(matches!(open_line("[1]"), Err(LineError::NotObject)));
        assert!(matches!(open_line("{\"seq\":"), Err(LineError::Json(_))));
    }
}
