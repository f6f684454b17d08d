//! The service connection: pgvakt's own session with the upstream, used to read the catalog
//! and the PostgreSQL groups a login user belongs to. It is supervised: when PostgreSQL
//! restarts or the connection drops, it is opened again with backoff, the catalog is reloaded,
//! and meanwhile every lookup fails — so a login whose role depends on its groups is refused
//! rather than given a role the groups would not have chosen.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::sync::Notify;
use tokio_postgres::Client;

use super::EnforceError;
use crate::catalog::Catalog;
use crate::config::{Config, UpstreamTlsMode};

/// How long a group lookup may take before the login is refused.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the supervisor looks at the connection.
const CHECK_EVERY: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub struct Service {
    config: Config,
    user: String,
    client: ArcSwapOption<Client>,
    healthy: AtomicBool,
    /// Group lookups that could not be answered (the logins were refused).
    pub lookup_failures: AtomicU64,
    /// Told after every successful (re)connection: the catalog may have changed meanwhile.
    pub reconnected: Notify,
}

impl Service {
    /// Connect now if possible, and keep the connection open from then on.
    pub async fn start(config: &Config, user: &str) -> Arc<Service> {
        let service = Arc::new(Service {
            config: config.clone(),
            user: user.to_owned(),
            client: ArcSwapOption::empty(),
            healthy: AtomicBool::new(false),
            lookup_failures: AtomicU64::new(0),
            reconnected: Notify::new(),
        });
        if let Err(e) = service.connect().await {
            tracing::warn!(error = %e, "service connection failed; retrying in the background (not ready meanwhile)");
        }
        tokio::spawn(supervise(Arc::downgrade(&service)));
        service
    }

    async fn connect(&self) -> Result<(), EnforceError> {
        let c = service_connect(&self.config, &self.user).await?;
        self.client.store(Some(Arc::new(c)));
        self.healthy.store(true, Ordering::Relaxed);
        self.reconnected.notify_one();
        Ok(())
    }

    /// The open connection, if there is one.
    pub fn client(&self) -> Option<Arc<Client>> {
        self.client.load_full().filter(|c| !c.is_closed())
    }

    /// Whether lookups can be answered now (readiness).
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.client().is_some()
    }

    /// The PostgreSQL groups `user` belongs to; an error when that cannot be known now.
    pub async fn member_groups(&self, user: &str) -> Result<Vec<String>, String> {
        let result = match self.client() {
            None => Err("the service connection is down".to_owned()),
            Some(c) => {
                match tokio::time::timeout(LOOKUP_TIMEOUT, Catalog::member_groups(&c, user)).await {
                    Ok(Ok(groups)) => Ok(groups),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("the lookup timed out".to_owned()),
                }
            }
        };
        if let Err(e) = &result {
            self.lookup_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(user = %user, error = %e, "group lookup failed: the login is refused");
        }
        result
    }

    /// The catalog, read through the service connection.
    pub async fn load_catalog(&self, database: &str) -> Result<Catalog, String> {
        let c = self
            .client()
            .ok_or_else(|| "the service connection is down".to_owned())?;
        Catalog::load(&c, database).await.map_err(|e| e.to_string())
    }
}

/// Reopen the connection whenever it is gone, backing off up to [`BACKOFF_MAX`].
async fn supervise(weak: Weak<Service>) {
    let mut backoff = CHECK_EVERY;
    loop {
        tokio::time::sleep(backoff).await;
        let Some(service) = weak.upgrade() else {
            return;
        };
        if service.client().is_some() {
            backoff = CHECK_EVERY;
            continue;
        }
        if service.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!("service connection lost; reconnecting");
        }
        match service.connect().await {
            Ok(()) => {
                tracing::info!("service connection open again");
                backoff = CHECK_EVERY;
            }
            Err(e) => {
                tracing::warn!(error = %e, "service connection still down");
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// Open the service connection as `user` (also for the operator commands that act on the shared
/// state).
pub async fn service_connect(
    config: &Config,
    user: &str,
) -> Result<tokio_postgres::Client, EnforceError> {
    let up = &config.upstream;
    let password = match &up.service_password_file {
        Some(p) => std::fs::read_to_string(p)
            .map_err(|source| EnforceError::PasswordFile {
                path: p.clone(),
                source,
            })?
            .lines()
            .next()
            .unwrap_or("")
            .to_owned(),
        None => std::env::var(&up.service_password_env).unwrap_or_default(),
    };
    let mut pg = tokio_postgres::Config::new();
    pg.host(&up.host)
        .port(up.port)
        .user(user)
        .password(password)
        .dbname(&up.service_database)
        .application_name("pgvakt-catalog")
        .connect_timeout(Duration::from_millis(up.connect_timeout_ms));
    let err = |source| EnforceError::Connect {
        user: user.to_owned(),
        source,
    };
    let client = match crate::tls::upstream_config(up)? {
        Some(tls) if up.tls != UpstreamTlsMode::Disable => {
            let (c, conn) = pg
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                    (*tls).clone(),
                ))
                .await
                .map_err(err)?;
            tokio::spawn(conn);
            c
        }
        _ => {
            let (c, conn) = pg.connect(tokio_postgres::NoTls).await.map_err(err)?;
            tokio::spawn(conn);
            c
        }
    };
    Ok(client)
}
