//! Cancel keys: a client sees its upstream backend's real process id (for `pg_terminate_backend`,
//! `pg_stat_activity` and the sender of a notification) with a secret minted by the proxy. The
//! secret finds the session; the process id must match it too; the proxy then sends the
//! upstream's own key, which the client never sees.

use dashmap::DashMap;
use rand::Rng;

/// The upstream backend a client's key refers to.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub upstream_pid: i32,
    pub upstream_secret: Vec<u8>,
}

/// A registered key, for forgetting it when its session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelKey(u32);

impl CancelKey {
    /// No key (a server that sent no BackendKeyData): never issued, so forgetting it is a no-op.
    pub const NONE: CancelKey = CancelKey(0);
}

#[derive(Debug)]
struct Registered {
    secret: Vec<u8>,
    target: CancelTarget,
}

/// Keys by the first four bytes of their secret, which are random and unique among live
/// sessions (protocol 3.0 secrets are exactly four bytes; 3.2 ones are longer and compared
/// whole).
#[derive(Debug, Default)]
pub struct CancelRegistry {
    keys: DashMap<u32, Registered>,
}

/// Protocol 3.0 secrets are four bytes and 3.2 ones at most 256.
const MIN_SECRET: usize = 4;
const MAX_SECRET: usize = 256;

impl CancelRegistry {
    /// Mint a key for a session: the upstream's process id and a fresh random secret as long as
    /// the upstream's (the length the client's protocol version allows). Collisions of the
    /// secret's lookup part (and the part [`CancelKey::NONE`] stands for) are retried.
    pub fn register(&self, target: CancelTarget) -> (CancelKey, i32, Vec<u8>) {
        let len = target.upstream_secret.len().clamp(MIN_SECRET, MAX_SECRET);
        let pid = target.upstream_pid;
        let mut rng = rand::thread_rng();
        loop {
            let mut secret = vec![0u8; len];
            rng.fill(&mut secret[..]);
            let key = lookup_part(&secret);
            if key == CancelKey::NONE.0 {
                continue;
            }
            if let dashmap::Entry::Vacant(v) = self.keys.entry(key) {
                v.insert(Registered {
                    secret: secret.clone(),
                    target,
                });
                return (CancelKey(key), pid, secret);
            }
        }
    }

    /// The upstream backend a registered key refers to.
    pub fn target(&self, key: CancelKey) -> Option<CancelTarget> {
        self.keys.get(&key.0).map(|r| r.value().target.clone())
    }

    pub fn unregister(&self, key: CancelKey) {
        self.keys.remove(&key.0);
    }

    /// The target for a client-presented key: the secret must match in full (compared in
    /// constant time) and the process id must be the session's.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        if secret.len() < MIN_SECRET {
            return None;
        }
        let entry = self.keys.get(&lookup_part(secret))?;
        let r = entry.value();
        if r.secret.len() != secret.len() {
            return None;
        }
        let diff = r
            .secret
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0 && r.target.upstream_pid == pid).then(|| r.target.clone())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

fn lookup_part(secret: &[u8]) -> u32 {
    u32::from_be_bytes([secret[0], secret[1], secret[2], secret[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(pid: i32, secret: &[u8]) -> CancelTarget {
        CancelTarget {
            upstream_pid: pid,
            upstream_secret: secret.to_vec(),
        }
    }

    #[test]
    fn real_pid_and_own_secret() {
        let reg = CancelRegistry::default();
        let (key, pid, secret) = reg.register(target(7, &[1, 2, 3, 4]));
        assert_eq!(pid, 7);
        assert_eq!(secret.len(), 4);
        let found = reg.lookup(7, &secret).unwrap();
        assert_eq!(found.upstream_secret, vec![1, 2, 3, 4]);
        reg.unregister(key);
        assert!(reg.lookup(7, &secret).is_none());
        assert!(reg.is_empty());
    }

    #[test]
    fn wrong_secret_or_pid_finds_nothing() {
        let reg = CancelRegistry::default();
        let (_, _, secret) = reg.register(target(7, &[1, 2, 3, 4]));
        let (_, _, other) = reg.register(target(8, &[5, 6, 7, 8]));
        let mut bad = secret.clone();
        bad[0] ^= 1;
        assert!(reg.lookup(7, &bad).is_none());
        assert!(reg.lookup(7, &secret[..3]).is_none());
        // One session's secret with another session's process id.
        assert!(reg.lookup(8, &secret).is_none());
        assert!(reg.lookup(7, &other).is_none());
    }

    #[test]
    fn long_secrets_of_protocol_3_2_compare_whole() {
        let reg = CancelRegistry::default();
        let (_, _, secret) = reg.register(target(9, &[0u8; 32]));
        assert_eq!(secret.len(), 32);
        assert!(reg.lookup(9, &secret).is_some());
        let mut bad = secret.clone();
        bad[31] ^= 1;
        assert!(reg.lookup(9, &bad).is_none());
        assert!(reg.lookup(9, &secret[..4]).is_none());
    }
}
