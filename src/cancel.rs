//! Cancel keys: clients get keys minted by the proxy, which map to the upstream backend's own.

use dashmap::DashMap;
use rand::Rng;

/// The upstream backend a client's key refers to.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub upstream_pid: i32,
    pub upstream_secret: Vec<u8>,
}

#[derive(Debug, Default)]
pub struct CancelRegistry {
    keys: DashMap<i32, ([u8; 4], CancelTarget)>,
}

impl CancelRegistry {
    /// Mint a fresh key for a session. Process ids are random so they reveal nothing about the
    /// upstream's backends; collisions are retried.
    pub fn register(&self, target: CancelTarget) -> (i32, [u8; 4]) {
        let mut rng = rand::thread_rng();
        loop {
            let pid: i32 = rng.gen_range(1..i32::MAX);
            let secret: [u8; 4] = rng.gen();
            if let dashmap::Entry::Vacant(v) = self.keys.entry(pid) {
                v.insert((secret, target));
                return (pid, secret);
            }
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.keys.remove(&pid);
    }

    /// The target for a client-presented key; secrets are compared in constant time.
    pub fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let entry = self.keys.get(&pid)?;
        let (expected, target) = entry.value();
        if secret.len() != expected.len() {
            return None;
        }
        let diff = expected
            .iter()
            .zip(secret)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        (diff == 0).then(|| target.clone())
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_secret_finds_nothing() {
        let reg = CancelRegistry::default();
        let (pid, secret) = reg.register(CancelTarget {
            upstream_pid: 7,
            upstream_secret: vec![1, 2, 3, 4],
        });
        assert_eq!(reg.lookup(pid, &secret).unwrap().upstream_pid, 7);
        let mut bad = secret;
        bad[0] ^= 1;
        assert!(reg.lookup(pid, &bad).is_none());
        assert!(reg.lookup(pid, &secret[..3]).is_none());
        reg.unregister(pid);
        assert!(reg.lookup(pid, &secret).is_none());
    }
}
