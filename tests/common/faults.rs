//! Faults that take more than a signal to inject: an audit disk that fills up.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the audit trail (and its keys) live during a soak run. As root it is a tmpfs of its
/// own, filled for real by another file until writes fail with ENOSPC; otherwise a plain
/// directory, and "full" is simulated by putting a regular file where the audit directory was
/// (writes then fail for root too), which exercises the same failure path in pgvakt but not
/// the kernel's ENOSPC.
pub struct AuditDisk {
    root: PathBuf,
    mounted: bool,
    _dir: tempfile::TempDir,
}

/// What `fill` did, for `free` to undo.
pub enum Filled {
    Filler(PathBuf),
    Blocked(PathBuf),
}

impl AuditDisk {
    pub fn new(size_mib: u64) -> AuditDisk {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().join("disk");
        std::fs::create_dir(&root).expect("mount point");
        let mounted = nix::unistd::geteuid().is_root()
            && Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={size_mib}m,mode=0700"))
                .arg("pgvakt-soak")
                .arg(&root)
                .status()
                .is_ok_and(|s| s.success());
        AuditDisk {
            root,
            mounted,
            _dir: dir,
        }
    }

    /// The directory for `common::audit_yaml`: keys here, the trail in `audit/` below.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.root.join("audit")
    }

    pub fn describe(&self) -> &'static str {
        if self.mounted {
            "a tmpfs filled until ENOSPC"
        } else {
            "simulated: the audit directory replaced by a file (not root, no tmpfs)"
        }
    }

    /// Make audit writes fail: fill the tmpfs to the last byte, or block the directory.
    pub fn fill(&self) -> Filled {
        if !self.mounted {
            let moved = self.root.join("audit.moved");
            std::fs::rename(self.audit_dir(), &moved).expect("move audit dir");
            std::fs::write(self.audit_dir(), "not a directory").expect("block the path");
            return Filled::Blocked(moved);
        }
        let path = self.root.join("filler");
        let mut f = std::fs::File::create(&path).expect("filler");
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        Filled::Filler(path)
    }

    pub fn free(&self, filled: Filled) {
        match filled {
            Filled::Filler(path) => std::fs::remove_file(path).expect("remove filler"),
            Filled::Blocked(moved) => {
                std::fs::remove_file(self.audit_dir()).expect("unblock");
                std::fs::rename(moved, self.audit_dir()).expect("restore audit dir");
            }
        }
    }
}

impl Drop for AuditDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg("-l").arg(&self.root).status();
        }
    }
}
