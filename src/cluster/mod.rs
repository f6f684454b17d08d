//! A throwaway PostgreSQL server for tests, benchmarks and the demo.
//!
//! [`Cluster::start`] runs Debian's server binaries (`initdb`, `pg_ctl`) on a fresh data directory
//! in a temporary directory, listening on a free loopback port with SCRAM authentication for TCP
//! connections. Dropping the [`Cluster`] stops the server and removes the directory.
//!
//! PostgreSQL refuses to run as root. When this process is root the binaries run as the
//! unprivileged `postgres` OS user through `runuser` (sudo is not installed on the target
//! machines), and the directory is handed to that user.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{geteuid, Pid, User};
use tempfile::TempDir;
use tokio_postgres::NoTls;

use host::{find_bin_dir, free_port, runuser_path, service_user};

mod host;

/// How many times a start is retried on a fresh port when another process took ours first.
const PORT_ATTEMPTS: usize = 5;

/// Lines of the server log quoted in start errors.
const LOG_TAIL_LINES: usize = 30;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) were not found on PATH or under \
         /usr/lib/postgresql/*/bin; install Debian's `postgresql` package \
         (e.g. `apt-get install -y postgresql-15` or `apt-get install -y postgresql`)"
    )]
    BinariesNotFound,
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot use the OS user `{user}` to run PostgreSQL as root: {detail}")]
    ServiceUser { user: &'static str, detail: String },
    #[error("no free loopback port: {0}")]
    Port(#[source] io::Error),
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error(
        "PostgreSQL in {data_dir} did not start: {detail}\n--- server log (tail) ---\n{log_tail}"
    )]
    Start {
        data_dir: PathBuf,
        detail: String,
        log_tail: String,
    },
    #[error("connecting to database `{dbname}` as `{user}` on 127.0.0.1:{port}: {}", crate::cause::chain(.source))]
    Connect {
        dbname: String,
        user: String,
        port: u16,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("starting the cluster in a blocking task: {0}")]
    Join(String),
}

/// Certificate and key (PEM files) that turn on TLS in the server.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

/// How to build the cluster. `ClusterOptions::default()` gives a `postgres`/`postgres` superuser,
/// 200 connections, no TLS, a temporary directory removed on drop.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Superuser name. Default `postgres`.
    pub superuser: String,
    /// Superuser password (stored as SCRAM). Default `postgres`.
    pub password: String,
    /// `max_connections`. Default 200.
    pub max_connections: u32,
    /// Turn on TLS with this certificate and key. Default off.
    pub tls: Option<ServerTls>,
    /// Use this directory instead of a temporary one; it is created if missing and never removed.
    pub dir: Option<PathBuf>,
    /// Keep the temporary directory (data and server log) after drop, for post-mortems.
    pub keep: bool,
    /// Directory holding `initdb` and `pg_ctl`. Default: found automatically.
    pub bin_dir: Option<PathBuf>,
    /// Further `postgresql.conf` settings, e.g. `("shared_buffers", "256MB")`; values are quoted.
    pub settings: Vec<(String, String)>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            superuser: "postgres".to_owned(),
            password: "postgres".to_owned(),
            max_connections: 200,
            tls: None,
            dir: None,
            keep: false,
            bin_dir: None,
            settings: Vec::new(),
        }
    }
}

/// A running (or stopped, see [`Cluster::stop_server`]) PostgreSQL server that owns its directory.
#[derive(Debug)]
pub struct Cluster {
    opts: ClusterOptions,
    bin_dir: PathBuf,
    dir: PathBuf,
    /// `None` when the caller gave the directory or asked to keep it.
    temp: Option<TempDir>,
    /// The OS user to run binaries as; `None` when we are not root and run them directly.
    run_as: Option<User>,
    port: u16,
    running: bool,
}

impl Cluster {
    /// Creates and starts a cluster. Blocks for about a second; from async code use
    /// [`Cluster::start_async`].
    pub fn start(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        let bin_dir = match &opts.bin_dir {
            Some(dir) => dir.clone(),
            None => find_bin_dir().ok_or(ClusterError::BinariesNotFound)?,
        };
        let run_as = if geteuid().is_root() {
            Some(service_user()?)
        } else {
            None
        };
        let (dir, temp) = match &opts.dir {
            Some(dir) => {
                fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
                (dir.clone(), None)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("pgvakt-pg-")
                    .tempdir()
                    .map_err(io_err(
                        "creating a temporary directory in",
                        &std::env::temp_dir(),
                    ))?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let mut cluster = Cluster {
            opts,
            bin_dir,
            dir,
            temp,
            run_as,
            port: 0,
            running: false,
        };
        cluster.give_to_service_user(&cluster.dir)?;
        cluster.init_data_dir()?;
        cluster.start_server()?;
        Ok(cluster)
    }

    /// [`Cluster::start`] on tokio's blocking pool.
    pub async fn start_async(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        tokio::task::spawn_blocking(move || Cluster::start(opts))
            .await
            .map_err(|e| ClusterError::Join(e.to_string()))?
    }

    pub fn host(&self) -> &'static str {
        "127.0.0.1"
    }

    /// The TCP port. It may change after [`Cluster::start_server`] if the old one was taken.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn superuser(&self) -> &str {
        &self.opts.superuser
    }

    pub fn password(&self) -> &str {
        &self.opts.password
    }

    /// The cluster's directory: `data/`, `server.log` and the Unix socket live here.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    pub fn log_file(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    pub fn is_running(&self) -> bool {
        self.running
    }

    /// A libpq key=value connection string for TCP (values quoted, so any password works).
    pub fn dsn(&self, user: &str, password: &str, dbname: &str) -> String {
        format!(
            "host={} port={} user={} password={} dbname={}",
            self.host(),
            self.port,
            dsn_quote(user),
            dsn_quote(password),
            dsn_quote(dbname)
        )
    }

    /// tokio-postgres configuration for the superuser over TCP.
    pub fn superuser_config(&self, dbname: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.host())
            .port(self.port)
            .user(&self.opts.superuser)
            .password(&self.opts.password)
            .dbname(dbname);
        config
    }

    /// Connects as the superuser over TCP without TLS; the connection runs on a spawned task.
    pub async fn connect(&self, dbname: &str) -> Result<tokio_postgres::Client, ClusterError> {
        let (client, connection) =
            self.superuser_config(dbname)
                .connect(NoTls)
                .await
                .map_err(|source| ClusterError::Connect {
                    dbname: dbname.to_owned(),
                    user: self.opts.superuser.clone(),
                    port: self.port,
                    source,
                })?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "test cluster connection ended");
            }
        });
        Ok(client)
    }

    /// Starts the server on the existing data directory (again). Retries on a fresh port when
    /// another process grabbed ours between choosing it and binding it.
    pub fn start_server(&mut self) -> Result<(), ClusterError> {
        if self.running {
            return Ok(());
        }
        let mut last = None;
        for attempt in 0..PORT_ATTEMPTS {
            if self.port == 0 || attempt > 0 {
                self.port = free_port()?;
            }
            self.write_settings()?;
            let data = self.data_dir();
            let log = self.log_file();
            let started = self.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "start".as_ref(),
                ],
            );
            match started {
                Ok(_) => {
                    self.running = true;
                    return Ok(());
                }
                Err(error) => {
                    // pg_ctl may have left a postmaster behind after a timeout.
                    self.kill_postmaster();
                    let log_tail = tail(&self.log_file(), LOG_TAIL_LINES);
                    let port_taken = log_tail.contains("Address already in use");
                    last = Some(ClusterError::Start {
                        data_dir: self.data_dir(),
                        detail: error.to_string(),
                        log_tail,
                    });
                    if !port_taken {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or(ClusterError::Start {
            data_dir: self.data_dir(),
            detail: "no start attempted".to_owned(),
            log_tail: String::new(),
        }))
    }

    /// Stops the server (fast shutdown) and keeps the data directory for [`Cluster::start_server`].
    pub fn stop_server(&mut self) -> Result<(), ClusterError> {
        if !self.running {
            return Ok(());
        }
        let data = self.data_dir();
        let stopped = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "stop".as_ref(),
            ],
        );
        if stopped.is_err() {
            self.kill_postmaster();
        }
        self.running = false;
        stopped.map(|_| ())
    }

    /// Stops the server and removes the directory (unless kept); the same as dropping, with errors.
    pub fn stop(mut self) -> Result<(), ClusterError> {
        self.stop_server()
    }

    fn init_data_dir(&self) -> Result<(), ClusterError> {
        // initdb reads the password from a file so it never shows in `ps`.
        let pwfile = self.dir.join("pwfile");
        fs::write(&pwfile, format!("{}\n", self.opts.password))
            .map_err(io_err("writing", &pwfile))?;
        fs::set_permissions(&pwfile, fs::Permissions::from_mode(0o600))
            .map_err(io_err("restricting", &pwfile))?;
        self.give_to_service_user(&pwfile)?;
        let data = self.data_dir();
        let pwfile_arg = format!("--pwfile={}", pwfile.display());
        let user_arg = format!("--username={}", self.opts.superuser);
        let result = self.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                user_arg.as_ref(),
                pwfile_arg.as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "--auth-local=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
                "--no-instructions".as_ref(),
            ],
        );
        let _ = fs::remove_file(&pwfile);
        result?;
        let conf = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).map_err(io_err("reading", &conf))?;
        text.push_str("\n# Written by pgvakt's test cluster.\ninclude 'pgvakt.conf'\n");
        fs::write(&conf, text).map_err(io_err("writing", &conf))?;
        Ok(())
    }

    /// Writes `pgvakt.conf` (included from postgresql.conf) with the port and the settings.
    fn write_settings(&self) -> Result<(), ClusterError> {
        let data = self.data_dir();
        let mut settings: Vec<(String, String)> = vec![
            ("listen_addresses".into(), self.host().into()),
            ("port".into(), self.port.to_string()),
            ("unix_socket_directories".into(), path_str(&self.dir)),
            (
                "max_connections".into(),
                self.opts.max_connections.to_string(),
            ),
            // A throwaway cluster needs no durability; these make loads several times faster.
            ("fsync".into(), "off".into()),
            ("synchronous_commit".into(), "off".into()),
            ("full_page_writes".into(), "off".into()),
        ];
        if let Some(tls) = &self.opts.tls {
            // The server insists on owning a 0600 key file, so it gets private copies.
            let cert = data.join("server.crt");
            let key = data.join("server.key");
            fs::copy(&tls.cert_pem, &cert).map_err(io_err("copying", &tls.cert_pem))?;
            fs::copy(&tls.key_pem, &key).map_err(io_err("copying", &tls.key_pem))?;
            fs::set_permissions(&key, fs::Permissions::from_mode(0o600))
                .map_err(io_err("restricting", &key))?;
            self.give_to_service_user(&cert)?;
            self.give_to_service_user(&key)?;
            settings.push(("ssl".into(), "on".into()));
            settings.push(("ssl_cert_file".into(), path_str(&cert)));
            settings.push(("ssl_key_file".into(), path_str(&key)));
        }
        settings.extend(self.opts.settings.iter().cloned());
        let text: String = settings
            .iter()
            .map(|(name, value)| format!("{name} = '{}'\n", value.replace('\'', "''")))
            .collect();
        let file = data.join("pgvakt.conf");
        fs::write(&file, text).map_err(io_err("writing", &file))?;
        self.give_to_service_user(&file)
    }

    /// Runs one of the server binaries, as the service user when we are root.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<String, ClusterError> {
        let binary = self.bin_dir.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new(runuser_path());
                command.arg("-u").arg(&user.name).arg("--").arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command
            .args(args)
            .current_dir(&self.dir)
            // Inherited libpq variables would redirect pg_ctl's readiness check elsewhere.
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        let shown = format!("{} {}", program, display_args(args));
        let output = command.output().map_err(|e| ClusterError::Command {
            command: shown.clone(),
            status: "not started".to_owned(),
            stderr: e.to_string(),
        })?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        } else {
            Err(ClusterError::Command {
                command: shown,
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            })
        }
    }

    /// Last resort when pg_ctl could not stop the server: immediate shutdown by signal, so a
    /// failing test never leaves a postmaster behind.
    fn kill_postmaster(&self) {
        let pid_file = self.data_dir().join("postmaster.pid");
        let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|text| text.lines().next()?.trim().parse::<i32>().ok())
        else {
            return;
        };
        let pid = Pid::from_raw(pid);
        if kill(pid, Signal::SIGQUIT).is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while kill(pid, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if kill(pid, None).is_ok() {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }

    fn give_to_service_user(&self, path: &Path) -> Result<(), ClusterError> {
        let Some(user) = &self.run_as else {
            return Ok(());
        };
        std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
            .map_err(io_err("handing to the postgres user", path))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Err(error) = self.stop_server() {
            tracing::warn!(%error, "stopping the test cluster");
        }
        if self.opts.keep {
            if let Some(temp) = self.temp.take() {
                let kept = temp.keep();
                tracing::info!(dir = %kept.display(), "kept the test cluster's directory");
            }
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let Ok(text) = fs::read_to_string(path) else {
        return format!("(no log at {})", path.display());
    };
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn dsn_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && !value
            .chars()
            .any(|c| c.is_whitespace() || c == '\'' || c == '\\');
    if plain {
        value.to_owned()
    } else {
        format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
    }
}

fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn display_args(args: &[&std::ffi::OsStr]) -> String {
    args.iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ClusterError {
    let path = path.to_path_buf();
    move |source| ClusterError::Io {
        action,
        path,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_values_with_spaces_and_quotes_are_quoted() {
        assert_eq!(dsn_quote("sales"), "sales");
        assert_eq!(dsn_quote("a b'c"), "'a b\\'c'");
        assert_eq!(dsn_quote(""), "''");
    }
}
