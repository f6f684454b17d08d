//! `pgvakt run` and `pgvakt demo`: logging, the proxy's life cycle and its signals.

use pgvakt::config::{Config, LogFormat};
#[cfg(feature = "demo")]
use pgvakt::demo::run::{self as demo, DemoOptions};
use pgvakt::enforce::Enforcer;
use pgvakt::listener::Server;

pub fn init_logging(level: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colour codes only for a person at a terminal: journald, files and log shippers get plain
    // text (NO_COLOR, https://no-color.org, turns them off at a terminal too).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let enforcer = Enforcer::load(&cfg).await?;
    let server = Server::start(cfg, enforcer).await?;
    wait_for_signals(&server).await?;
    server.shutdown().await;
    tracing::info!("pgvakt stopped");
    Ok(())
}

#[cfg(feature = "demo")]
pub async fn run_demo(opts: DemoOptions) -> anyhow::Result<()> {
    let kept = opts.dir.is_some();
    let demo = demo::start(opts).await?;
    print!("{}", demo.instructions());
    println!("press Ctrl-C to stop");
    wait_for_signals(demo.server()).await?;
    let dir = demo.dir().to_path_buf();
    demo.shutdown().await?;
    if kept {
        println!("stopped; kept {}", dir.display());
    } else {
        println!("stopped; removed the demo's PostgreSQL and files");
    }
    Ok(())
}

/// SIGHUP reloads certificates, policy and catalog; SIGTERM/SIGINT start a graceful shutdown.
async fn wait_for_signals(server: &Server) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                // File reads and policy compilation block: off the runtime's workers (the
                // runtime is multi-threaded), so sessions on this worker are not stalled.
                tokio::task::block_in_place(|| {
                    match server.reload_tls() {
                        Ok(()) => tracing::info!("TLS certificates reloaded"),
                        Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the previous certificates"),
                    }
                    // Logged, counted and recorded by whoever listens to the enforcer's reloads.
                    let _ = server.proxy.enforcer.reload_policy();
                    // DDL made directly upstream is seen now rather than at the next refresh.
                    server.proxy.enforcer.refresh_catalog();
                });
            }
        }
    }
}
