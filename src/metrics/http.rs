//! The HTTP listener for `/metrics`, `/healthz` and `/readyz`: one request per connection,
//! nothing but GET of these three paths (query strings ignored).
//!
//! `/metrics` answers in OpenMetrics when the scraper lists it in `Accept` (Prometheus does),
//! otherwise in the classic text format 0.0.4 that older scrapers, `curl` and `promtool check
//! metrics` read.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::Metrics;

/// Why `/readyz` would answer 503 now (empty: ready); the server composes it from its parts.
pub type ReadyCheck = Arc<dyn Fn() -> Vec<&'static str> + Send + Sync>;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The parts of a request line and headers the endpoint looks at.
struct Request<'a> {
    path: &'a str,
    openmetrics: bool,
}

fn parse_request(text: &str) -> Request<'_> {
    let target = text.split_whitespace().nth(1).unwrap_or("");
    let path = target.split(['?', '#']).next().unwrap_or("");
    let openmetrics = text.lines().skip(1).any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    Request { path, openmetrics }
}

/// Status, content type and body for one request.
fn answer(
    req: &Request<'_>,
    metrics: &Metrics,
    ready: &ReadyCheck,
) -> (&'static str, &'static str, String) {
    match req.path {
        "/metrics" => {
            let text = metrics.render(ready().is_empty());
            if req.openmetrics {
                ("200 OK", OPENMETRICS, text)
            } else {
                ("200 OK", CLASSIC, classic_text(&text))
            }
        }
        "/healthz" => ("200 OK", "text/plain", "ok\n".to_owned()),
        "/readyz" => {
            let not = ready();
            if not.is_empty() {
                ("200 OK", "text/plain", "ready\n".to_owned())
            } else {
                let body = format!("not ready: {}\n", not.join(", "));
                ("503 Service Unavailable", "text/plain", body)
            }
        }
        _ => ("404 Not Found", "text/plain", "not found\n".to_owned()),
    }
}

/// OpenMetrics text turned into the classic format: counter families are named after their
/// `_total` samples, `info` families become gauges named `_info`, and `# UNIT` and `# EOF`
/// lines, which the classic format does not have, are left out.
pub fn classic_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "gaugehistogram" | "stateset" | "unknown" => (name.to_owned(), "untyped"),
                other => (name.to_owned(), other),
            };
            if let Some(h) = help.take() {
                let text = h.split_once(' ').map_or("", |(_, t)| t);
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        // Exemplars (` # {...}`) are OpenMetrics only; pgvakt records none, but strip them.
        let sample = line.split_once(" # ").map_or(line, |(s, _)| s);
        out.push_str(sample);
        out.push('\n');
    }
    out
}

/// Serve `/metrics`, `/healthz` and `/readyz` until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, ready: ReadyCheck) {
    loop {
        let Ok((mut sock, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut n = 0;
            // A request line and headers fit in 4 KiB; anything else is not for us.
            while n < buf.len() {
                match tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    sock.read(&mut buf[n..]),
                )
                .await
                {
                    Ok(Ok(0)) | Err(_) | Ok(Err(_)) => break,
                    Ok(Ok(m)) => n += m,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let (status, ctype, body) = answer(&parse_request(&request), &metrics, &ready);
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(body.as_bytes()).await;
            let _ = sock.shutdown().await;
        });
    }
}

/// Bind the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_and_fragments_do_not_change_the_path() {
        for (req, path) in [
            ("GET /readyz?verbose=1 HTTP/1.1\r\n\r\n", "/readyz"),
            ("GET /metrics#x HTTP/1.1\r\n\r\n", "/metrics"),
            ("GET /healthz HTTP/1.0\r\n\r\n", "/healthz"),
            ("garbage", ""),
        ] {
            assert_eq!(parse_request(req).path, path, "{req:?}");
        }
        let om = parse_request(
            "GET /metrics HTTP/1.1\r\nACCEPT: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
        );
        assert!(om.openmetrics);
        assert!(!parse_request("GET /metrics HTTP/1.1\r\nAccept: */*\r\n\r\n").openmetrics);
    }

    #[test]
    fn readyz_names_every_reason() {
        let m = Metrics::default();
        let not: ReadyCheck = Arc::new(|| vec!["upstream", "draining"]);
        let (status, _, body) = answer(&parse_request("GET /readyz?x HTTP/1.1\r\n\r\n"), &m, &not);
        assert_eq!(
            (status, body.as_str()),
            ("503 Service Unavailable", "not ready: upstream, draining\n")
        );
        let ok: ReadyCheck = Arc::new(Vec::new);
        let (status, _, body) = answer(&parse_request("GET /readyz HTTP/1.1\r\n\r\n"), &m, &ok);
        assert_eq!((status, body.as_str()), ("200 OK", "ready\n"));
    }

    #[test]
    fn classic_text_names_counters_by_their_samples() {
        let om = "# HELP pgvakt_x Things.\n# TYPE pgvakt_x counter\npgvakt_x_total{a=\"b\"} 3\n\
                  # HELP pgvakt_d Time.\n# TYPE pgvakt_d histogram\n# UNIT pgvakt_d seconds\npgvakt_d_count 1\n# EOF\n";
        assert_eq!(
            classic_text(om),
            "# HELP pgvakt_x_total Things.\n# TYPE pgvakt_x_total counter\npgvakt_x_total{a=\"b\"} 3\n\
             # HELP pgvakt_d Time.\n# TYPE pgvakt_d histogram\npgvakt_d_count 1\n"
        );
    }
}
