//! The policy in force, swapped atomically on reload.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use super::{load, PolicyErrors, PolicySet};

/// Holds the current [`PolicySet`]; the session calls [`PolicyStore::current`] per statement.
pub struct PolicyStore {
    current: ArcSwap<PolicySet>,
    paths: Vec<PathBuf>,
    /// When the set in force was installed.
    loaded_at: ArcSwap<SystemTime>,
}

impl PolicyStore {
    /// Loads the policy; the proxy does not start without a valid one.
    pub fn open(paths: Vec<PathBuf>) -> Result<Self, PolicyErrors> {
        let set = load(&paths)?;
        Ok(PolicyStore {
            current: ArcSwap::from_pointee(set),
            paths,
            loaded_at: ArcSwap::from_pointee(SystemTime::now()),
        })
    }

    pub fn from_set(set: PolicySet, paths: Vec<PathBuf>) -> Self {
        PolicyStore {
            current: ArcSwap::from_pointee(set),
            paths,
            loaded_at: ArcSwap::from_pointee(SystemTime::now()),
        }
    }

    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// When the policy in force was loaded (at start or by the last successful reload).
    pub fn loaded_at(&self) -> SystemTime {
        **self.loaded_at.load()
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Reloads from `paths`; on any error the old policy stays in force and the errors are
    /// returned (the caller audits and counts them). Returns the new version.
    pub fn reload(&self, paths: &[PathBuf]) -> Result<String, PolicyErrors> {
        let set = load(paths)?;
        let version = set.version.clone();
        self.swap(set);
        Ok(version)
    }

    /// Installs an already compiled set (tests, or loaders with a custom environment).
    pub fn swap(&self, set: PolicySet) {
        self.current.store(Arc::new(set));
        self.loaded_at.store(Arc::new(SystemTime::now()));
    }
}

/// Latest modification time over the given files and directories' YAML files; `None` when
/// nothing can be read (a missing file is a change worth a reload attempt).
pub fn fingerprint(paths: &[PathBuf]) -> Option<Vec<(PathBuf, SystemTime)>> {
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).ok()?;
        out.push((p.clone(), meta.modified().ok()?));
        if meta.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for e in entries {
                if let Ok(m) = std::fs::metadata(&e).and_then(|m| m.modified()) {
                    out.push((e, m));
                }
            }
        }
    }
    Some(out)
}

/// Polls the policy files every `interval` and reloads when their modification times change.
/// `on_reload` sees each attempt's outcome (for audit events and metrics). Polling rather than
/// inotify: it works the same on every platform and on network file systems.
pub async fn watch<F>(store: Arc<PolicyStore>, interval: Duration, mut on_reload: F)
where
    F: FnMut(Result<String, PolicyErrors>) + Send,
{
    let mut last = fingerprint(store.paths());
    loop {
        tokio::time::sleep(interval).await;
        let now = fingerprint(store.paths());
        if now != last {
            last = now;
            let paths = store.paths().to_vec();
            // Reading and compiling policy files blocks: off the runtime's workers.
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.reload(&paths)).await {
                Ok(r) => on_reload(r),
                Err(e) => {
                    tracing::error!(error = %e, "policy reload did not finish; the previous policy stays in force")
                }
            }
        }
    }
}
