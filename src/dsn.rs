//! Connection strings of the command-line tools (`policy check|explain|test|snapshot
//! --upstream`, `install --upstream`): libpq's key/value or URL form, with TLS as its
//! `sslmode` asks (managed databases require it), and errors that say what failed and why.
//!
//! tokio-postgres knows `sslmode` disable, prefer and require only, and no `sslrootcert`;
//! pgvakt reads both itself (also from `PGSSLMODE` / `PGSSLROOTCERT`, as libpq does):
//! `disable` plaintext; `allow` and `prefer` TLS when the server offers it; `require` TLS
//! without authenticating the server, unless a root certificate file is given, which is then
//! checked (as libpq does); `verify-ca` and `verify-full` TLS checked against the root
//! certificates and the host name (rustls always checks the name, so `verify-ca` is as strict
//! as `verify-full`).

use std::path::PathBuf;
use std::str::FromStr;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config};

/// A connection string split into what tokio-postgres reads and the TLS settings pgvakt reads.
#[derive(Debug)]
pub struct Dsn {
    pub config: Config,
    pub sslmode: String,
    pub sslrootcert: Option<PathBuf>,
}

fn unquote(v: &str) -> String {
    let v = v.trim();
    match v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) => inner.replace("\\'", "'").replace("\\\\", "\\"),
        None => v.to_owned(),
    }
}

/// Key/value pairs (`key = 'quoted value'`) of a libpq string, as (key, `key=value` with the
/// value's text as written).
fn kv_tokens(s: &str) -> Vec<(String, String)> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while chars.get(*i).is_some_and(|c| c.is_whitespace()) {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            return out;
        }
        let key_start = i;
        while chars
            .get(i)
            .is_some_and(|c| !c.is_whitespace() && *c != '=')
        {
            i += 1;
        }
        let key: String = chars[key_start..i].iter().collect();
        skip_ws(&mut i);
        if chars.get(i) != Some(&'=') {
            // Not key=value: left for tokio-postgres to report.
            out.push((key.clone(), key));
            continue;
        }
        i += 1;
        skip_ws(&mut i);
        let value_start = i;
        if chars.get(i) == Some(&'\'') {
            i += 1;
            while let Some(c) = chars.get(i) {
                i += 1;
                match c {
                    '\\' => i += 1,
                    '\'' => break,
                    _ => {}
                }
            }
        } else {
            while chars.get(i).is_some_and(|c| !c.is_whitespace()) {
                i += 1;
            }
        }
        let value: String = chars[value_start..i.min(chars.len())].iter().collect();
        out.push((key.clone(), format!("{key}={value}")));
    }
}

impl Dsn {
    pub fn parse(dsn: &str) -> Result<Dsn, String> {
        let mut sslmode = None;
        let mut sslrootcert = None;
        let rest = if dsn.starts_with("postgres://") || dsn.starts_with("postgresql://") {
            let (base, query) = dsn.split_once('?').unwrap_or((dsn, ""));
            let kept: Vec<&str> = query
                .split('&')
                .filter(|p| !p.is_empty())
                .filter(|p| match p.split_once('=') {
                    Some(("sslmode", v)) => {
                        sslmode = Some(v.to_owned());
                        false
                    }
                    Some(("sslrootcert", v)) => {
                        sslrootcert = Some(v.to_owned());
                        false
                    }
                    _ => true,
                })
                .collect();
            if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        } else {
            let mut kept = Vec::new();
            for (key, token) in kv_tokens(dsn) {
                let value = || unquote(token.split_once('=').map_or("", |(_, v)| v));
                match key.as_str() {
                    "sslmode" => sslmode = Some(value()),
                    "sslrootcert" => sslrootcert = Some(value()),
                    _ => kept.push(token),
                }
            }
            kept.join(" ")
        };
        let sslmode = sslmode
            .or_else(|| std::env::var("PGSSLMODE").ok())
            .unwrap_or_else(|| "prefer".into());
        let sslrootcert = sslrootcert
            .or_else(|| std::env::var("PGSSLROOTCERT").ok())
            .map(PathBuf::from);
        let mut config = Config::from_str(&rest).map_err(|e| cause_chain(&e))?;
        config.ssl_mode(match sslmode.as_str() {
            "disable" => SslMode::Disable,
            "allow" | "prefer" => SslMode::Prefer,
            "require" | "verify-ca" | "verify-full" => SslMode::Require,
            other => {
                return Err(format!(
                    "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
        });
        Ok(Dsn {
            config,
            sslmode,
            sslrootcert,
        })
    }

    /// The root certificates to verify the server against, if any.
    fn roots(&self) -> Result<Option<PathBuf>, String> {
        let verify = matches!(self.sslmode.as_str(), "verify-ca" | "verify-full");
        match &self.sslrootcert {
            Some(p) if p.as_os_str() == "system" => {
                Err("sslrootcert=system is not supported; name a file of CA certificates".into())
            }
            Some(p) if verify || p.exists() => Ok(Some(p.clone())),
            Some(_) => Ok(None),
            None if verify => {
                let home = std::env::var_os("HOME").map(PathBuf::from);
                let default = home.map(|h| h.join(".postgresql/root.crt"));
                match default.filter(|p| p.exists()) {
                    Some(p) => Ok(Some(p)),
                    None => Err(format!(
                        "sslmode={} needs the server's CA certificates: set sslrootcert=FILE",
                        self.sslmode
                    )),
                }
            }
            None => Ok(None),
        }
    }

    /// `host:port` of each host, for messages.
    pub fn addresses(&self) -> String {
        let ports = self.config.get_ports();
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match h {
                    tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                    tokio_postgres::config::Host::Unix(p) => {
                        format!("{}/.s.PGSQL.{port}", p.display())
                    }
                }
            })
            .collect();
        if hosts.is_empty() {
            format!("localhost:{}", ports.first().copied().unwrap_or(5432))
        } else {
            hosts.join(", ")
        }
    }
}

pub use crate::cause::chain as cause_chain;

/// Connects as the connection string says (`application_name` defaults to `application`); the
/// error names the address and the cause.
pub async fn connect(dsn: &str, application: &str) -> Result<Client, String> {
    let mut d = Dsn::parse(dsn)?;
    if d.config.get_application_name().is_none() {
        d.config.application_name(application);
    }
    let fail = |e: tokio_postgres::Error| format!("{}: {}", d.addresses(), cause_chain(&e));
    if d.sslmode == "disable" {
        let (client, conn) = d
            .config
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(fail)?;
        tokio::spawn(conn);
        return Ok(client);
    }
    let roots = d.roots()?;
    let tls = crate::tls::tool_client_config(roots.as_deref()).map_err(|e| e.to_string())?;
    let make = tokio_postgres_rustls::MakeRustlsConnect::new((*tls).clone());
    let (client, conn) = d.config.connect(make).await.map_err(fail)?;
    tokio::spawn(conn);
    Ok(client)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn tls_settings_are_taken_out_of_both_forms() {
        let d = Dsn::parse("host=db port=6543 user=u sslmode=verify-full sslrootcert = '/etc/ca dir/ca.pem' dbname=crm").unwrap();
        assert_eq!(d.sslmode, "verify-full");
        assert_eq!(
            d.sslrootcert.as_deref(),
            Some(Path::new("/etc/ca dir/ca.pem"))
        );
        assert_eq!(d.config.get_dbname(), Some("crm"));
        assert_eq!(d.addresses(), "db:6543");
        let u = Dsn::parse("postgres://u@db:7000/crm?sslmode=require&application_name=x").unwrap();
        assert_eq!(u.sslmode, "require");
        assert_eq!(u.config.get_application_name(), Some("x"));
        assert_eq!(u.addresses(), "db:7000");
        assert!(Dsn::parse("host=db sslmode=sometimes").is_err());
    }
}
