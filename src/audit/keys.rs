//! The two audit keys: the chain key (tamper evidence) and the subject key (pseudonyms). Each
//! comes from a file or an environment variable, never from the YAML itself, and they must
//! differ: whoever may verify the chain need not be able to test guesses of subject ids.

use std::path::{Path, PathBuf};

use crate::audit::settings::AuditConfig;

/// Shortest key accepted, in bytes: HMAC-SHA256's own output size.
pub const MIN_KEY_BYTES: usize = 32;

/// Input of a key's fingerprint. It holds no NUL byte, so it can never equal a pseudonym's
/// input (`subject type ‖ 0x00 ‖ id`): the fingerprint of the subject key is not the
/// pseudonym of any subject.
const FINGERPRINT_LABEL: &[u8] = b"pgvakt audit key fingerprint v1";

/// Hex digits of a fingerprint: 64 bits tell keys apart; they are not a security margin.
pub const FINGERPRINT_HEX_LEN: usize = 16;

/// A key's fingerprint, `hex(HMAC-SHA256(key, FINGERPRINT_LABEL))[..16]`: records carry it so
/// the tools can say "not written with this key" instead of "tampered" or "not found". Being
/// an HMAC under the key itself, it tells nothing about the key to whoever reads the log.
pub fn fingerprint(key: &[u8]) -> String {
    use hmac::Mac;
    let mut m = super::chain::keyed(key);
    m.update(FINGERPRINT_LABEL);
    let mut hex = hex::encode(m.finalize().into_bytes());
    hex.truncate(FINGERPRINT_HEX_LEN);
    hex
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{field}: cannot read {}: {source}", path.display())]
    Read {
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{field}: environment variable {var} is not set; set it, or {file_field}, to a \
         secret of at least {MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)"
    )]
    Missing {
        field: &'static str,
        file_field: &'static str,
        var: String,
    },
    #[error("{field}: the key has {len} bytes; at least {MIN_KEY_BYTES} are required")]
    Short { field: &'static str, len: usize },
    #[error("audit.subject_key: must differ from audit.chain_key")]
    Same,
}

/// Where one key comes from. The field names (e.g. `audit.chain_key_env`, or a command-line
/// option) are for messages.
#[derive(Debug, Clone)]
pub struct KeySource<'a> {
    pub env_field: &'static str,
    pub file_field: &'static str,
    pub env: &'a str,
    pub file: Option<&'a Path>,
}

impl KeySource<'_> {
    /// The file wins over the variable. A file's final line ending is not part of the key, so
    /// `echo secret > file` and `printf secret > file` give the same key.
    pub fn load(&self) -> Result<Vec<u8>, KeyError> {
        let mut key = match self.file {
            Some(path) => std::fs::read(path).map_err(|source| KeyError::Read {
                field: self.file_field,
                path: path.to_path_buf(),
                source,
            })?,
            None => match std::env::var_os(self.env) {
                Some(v) if !v.is_empty() => v.into_encoded_bytes(),
                _ => {
                    return Err(KeyError::Missing {
                        field: self.env_field,
                        file_field: self.file_field,
                        var: self.env.to_owned(),
                    })
                }
            },
        };
        if key.last() == Some(&b'\n') {
            key.pop();
            if key.last() == Some(&b'\r') {
                key.pop();
            }
        }
        if key.len() < MIN_KEY_BYTES {
            return Err(KeyError::Short {
                field: if self.file.is_some() {
                    self.file_field
                } else {
                    self.env_field
                },
                len: key.len(),
            });
        }
        Ok(key)
    }
}

/// Both keys of an audit configuration.
pub struct Keys {
    pub chain: Vec<u8>,
    pub subject: Vec<u8>,
}

impl Keys {
    pub fn load(cfg: &AuditConfig) -> Result<Keys, Vec<KeyError>> {
        let chain = chain_source(cfg).load();
        let subject = subject_source(cfg).load();
        match (chain, subject) {
            (Ok(chain), Ok(subject)) if chain == subject => Err(vec![KeyError::Same]),
            (Ok(chain), Ok(subject)) => Ok(Keys { chain, subject }),
            (c, s) => Err([c.err(), s.err()].into_iter().flatten().collect()),
        }
    }
}

pub fn chain_source(cfg: &AuditConfig) -> KeySource<'_> {
    KeySource {
        env_field: "audit.chain_key_env",
        file_field: "audit.chain_key_file",
        env: &cfg.chain_key_env,
        file: cfg.chain_key_file.as_deref(),
    }
}

pub fn subject_source(cfg: &AuditConfig) -> KeySource<'_> {
    KeySource {
        env_field: "audit.subject_key_env",
        file_field: "audit.subject_key_file",
        env: &cfg.subject_key_env,
        file: cfg.subject_key_file.as_deref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_lose_their_line_ending_and_short_keys_fail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        std::fs::write(&p, format!("{}\r\n", "k".repeat(32))).unwrap();
        let src = KeySource {
            env_field: "audit.chain_key_env",
            file_field: "audit.chain_key_file",
            env: "PGVAKT_TEST_UNSET_VARIABLE_1",
            file: Some(&p),
        };
        assert_eq!(src.load().unwrap(), "k".repeat(32).into_bytes());
        std::fs::write(&p, "short\n").unwrap();
        let err = src.load().unwrap_err().to_string();
        assert!(
            err.starts_with("audit.chain_key_file: the key has 5 bytes; at least 32"),
            "{err}"
        );
    }

    #[test]
    fn fingerprints_tell_keys_apart_and_are_not_pseudonyms() {
        let a = b"a key of thirty-two bytes or more";
        let b = b"another key of thirty-two bytes!";
        assert_eq!(fingerprint(a), fingerprint(a));
        assert_ne!(fingerprint(a), fingerprint(b));
        assert_eq!(fingerprint(a).len(), FINGERPRINT_HEX_LEN);
        let subject = crate::audit::subjects::SubjectKey::new(a);
        assert!(!subject
            .pseudonym("pgvakt audit key", "fingerprint v1")
            .starts_with(&fingerprint(a)));
    }

    #[test]
    fn a_missing_variable_is_explained() {
        let src = KeySource {
            env_field: "audit.subject_key_env",
            file_field: "audit.subject_key_file",
            env: "PGVAKT_TEST_UNSET_VARIABLE_2",
            file: None,
        };
        let err = src.load().unwrap_err().to_string();
        assert!(
            err.starts_with("audit.subject_key_env: environment variable PGVAKT_TEST_UNSET_VARIABLE_2 is not set"),
            "{err}"
        );
    }
}
