//! What the cluster needs from the host: the server binaries, the unprivileged OS user that
//! runs them when we are root, and a free port.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::unistd::User;

use super::ClusterError;

/// The OS user that runs the server when we are root.
const SERVICE_USER: &str = "postgres";

/// The newest `/usr/lib/postgresql/<version>/bin`, else the real directory behind `initdb` on PATH
/// (on Debian, /usr/bin holds wrappers and /usr/local/bin may hold symlinks).
pub(super) fn find_bin_dir() -> Option<PathBuf> {
    let complete = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| complete(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter_map(|dir| fs::canonicalize(dir.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|dir| complete(dir))
}

/// The `postgres` OS user, created when missing.
pub(super) fn service_user() -> Result<User, ClusterError> {
    let lookup = || {
        User::from_name(SERVICE_USER).map_err(|e| ClusterError::ServiceUser {
            user: SERVICE_USER,
            detail: e.to_string(),
        })
    };
    if let Some(user) = lookup()? {
        return Ok(user);
    }
    let output = Command::new("useradd")
        .args(["--system", "--no-create-home", SERVICE_USER])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| ClusterError::ServiceUser {
            user: SERVICE_USER,
            detail: format!("running useradd: {e}"),
        })?;
    // A concurrent test may have created it first (useradd exit 9), so look again either way.
    lookup()?.ok_or_else(|| ClusterError::ServiceUser {
        user: SERVICE_USER,
        detail: format!(
            "useradd failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ),
    })
}

pub(super) fn runuser_path() -> PathBuf {
    [
        "/usr/sbin/runuser",
        "/sbin/runuser",
        "/usr/bin/runuser",
        "/bin/runuser",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .unwrap_or_else(|| PathBuf::from("runuser"))
}

/// A port that was free a moment ago. The race with other processes is handled by retrying.
pub(super) fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).map_err(ClusterError::Port)?;
    Ok(listener.local_addr().map_err(ClusterError::Port)?.port())
}
