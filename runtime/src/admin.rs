//! The admin endpoint of both binaries: `/healthz` (and `/livez`), `/readyz` and `/metrics` over
//! plain HTTP/1.1, one request per connection. Three fixed GET routes do not need an HTTP
//! framework. The server runs on the Tokio runtime: the agent's passes run on the blocking pool
//! and the operator's reconciles are async, so a stuck scrape delays neither.
//!
//! `/metrics` is the OpenMetrics text of a `prometheus-client` [`Registry`], as kube-rs's
//! controller-rs serves it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of the OpenMetrics text exposition.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const TEXT: &str = "text/plain; charset=utf-8";

/// The `reason` label of both binaries' `..._reconcile_errors_total{reason}` families.
#[derive(Debug, Clone, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReasonLabel {
    /// A `Reason` (agent) or a failed step (operator).
    pub reason: &'static str,
}

/// What the endpoints report: readiness and a metrics registry. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct Admin(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    registry: Registry,
    ready: AtomicBool,
    /// The body of `/readyz` while not ready: why, in the binary's words.
    not_ready: &'static str,
}

impl Admin {
    /// Serves `registry`; not ready until [`Admin::set_ready`], and `/readyz` says `not_ready`
    /// meanwhile.
    pub fn new(registry: Registry, not_ready: &'static str) -> Self {
        Self(Arc::new(Inner {
            registry,
            ready: AtomicBool::new(false),
            not_ready,
        }))
    }

    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.0.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether `/readyz` answers 200.
    pub fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Relaxed)
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.0.registry);
        out
    }

    /// Binds `addr` (port 0 picks a free one) and serves on the current Tokio runtime until it
    /// ends; returns the address actually bound.
    pub fn serve(&self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        let bound = listener.local_addr()?;
        tracing::info!(addr = %bound, "serving /healthz, /readyz and /metrics");
        let admin = self.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let admin = admin.clone();
                        tokio::spawn(async move {
                            if let Err(error) = serve_one(stream, &admin).await {
                                tracing::debug!(%error, "health/metrics request failed");
                            }
                        });
                    }
                    Err(error) => {
                        tracing::warn!(%error, "accepting a health/metrics connection");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(bound)
    }
}

/// A response of the admin endpoint.
#[derive(Debug, PartialEq, Eq)]
pub struct Response {
    /// Status code and reason, e.g. `200 OK`.
    pub status: &'static str,
    /// The `Content-Type` header.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

fn text(status: &'static str, body: &str) -> Response {
    Response {
        status,
        content_type: TEXT,
        body: format!("{body}\n"),
    }
}

/// Answers the request whose head (request line and headers) is `head`.
pub fn route(head: &str, admin: &Admin) -> Response {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method != "GET" && method != "HEAD" {
        return text("405 Method Not Allowed", "only GET is supported");
    }
    match target.split('?').next().unwrap_or_default() {
        "/healthz" | "/livez" => text("200 OK", "ok"),
        "/readyz" if admin.is_ready() => text("200 OK", "ok"),
        "/readyz" => text("503 Service Unavailable", admin.0.not_ready),
        "/metrics" => Response {
            status: "200 OK",
            content_type: OPENMETRICS,
            body: admin.render(),
        },
        _ => text(
            "404 Not Found",
            "not found; try /healthz, /readyz or /metrics",
        ),
    }
}

async fn serve_one(mut stream: TcpStream, admin: &Admin) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let read_head = async {
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() >= MAX_REQUEST {
                break;
            }
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(READ_TIMEOUT, read_head).await.is_err() {
        return Ok(());
    }
    let head = String::from_utf8_lossy(&buf);
    let response = route(&head, admin);
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    if !head.starts_with("HEAD ") {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    fn admin() -> Admin {
        let mut registry = Registry::default();
        registry.register("x_runs", "Runs.", Counter::<u64>::default());
        Admin::new(registry, "not ready: caches not synced yet")
    }

    #[test]
    fn routes() {
        let a = admin();
        assert_eq!(route("GET /healthz HTTP/1.1\r\n\r\n", &a).status, "200 OK");
        assert_eq!(route("GET /livez HTTP/1.1\r\n\r\n", &a).status, "200 OK");
        let unready = route("GET /readyz HTTP/1.1\r\n\r\n", &a);
        assert_eq!(unready.status, "503 Service Unavailable");
        assert_eq!(unready.body, "not ready: caches not synced yet\n");
        a.set_ready(true);
        assert_eq!(
            route("GET /readyz?verbose HTTP/1.1\r\n\r\n", &a).status,
            "200 OK"
        );
        let m = route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &a);
        assert_eq!(m.status, "200 OK");
        assert!(m.content_type.contains("openmetrics-text"));
        assert!(m.body.contains("x_runs_total 0\n"), "{}", m.body);
        assert_eq!(
            route("GET /nope HTTP/1.1\r\n\r\n", &a).status,
            "404 Not Found"
        );
        assert_eq!(
            route("POST /healthz HTTP/1.1\r\n\r\n", &a).status,
            "405 Method Not Allowed"
        );
        assert_eq!(route("", &a).status, "405 Method Not Allowed");
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let addr = admin()
            .serve("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await.expect("read");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nok\n"), "{reply}");
    }
}
