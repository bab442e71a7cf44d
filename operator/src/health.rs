//! The health and metrics endpoint: `/healthz`, `/readyz`, `/metrics` over plain HTTP/1.1 on
//! `--metrics-addr`. Three fixed GET routes do not need an HTTP framework; each connection
//! answers one request and closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::metrics::Metrics;

/// Longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// A client that sends nothing for this long is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoints report.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
    /// Metrics rendered on `/metrics`.
    pub metrics: Arc<Metrics>,
}

impl Health {
    /// Reports `metrics` and starts not ready.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            ready: AtomicBool::new(false),
            metrics,
        }
    }

    /// Sets readiness: a leader is ready once its caches are synced, a standby once started.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

/// A response.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
}

fn text(status: &'static str, body: &str) -> Response {
    Response {
        status,
        content_type: "text/plain; charset=utf-8",
        body: format!("{body}\n"),
    }
}

/// Answers the request whose head is `head`.
fn route(head: &str, health: &Health) -> Response {
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    if method != "GET" && method != "HEAD" {
        return text("405 Method Not Allowed", "only GET is supported");
    }
    let path = target.split('?').next().unwrap_or_default();
    match path {
        "/healthz" => text("200 OK", "ok"),
        "/readyz" if health.is_ready() => text("200 OK", "ok"),
        "/readyz" => text(
            "503 Service Unavailable",
            "not ready: caches not synced yet",
        ),
        "/metrics" => Response {
            status: "200 OK",
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body: health.metrics.render(),
        },
        _ => text(
            "404 Not Found",
            "not found; try /healthz, /readyz or /metrics",
        ),
    }
}

async fn serve_one(mut stream: TcpStream, health: Arc<Health>) -> std::io::Result<()> {
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
    let response = route(&head, &health);
    let is_head = head.starts_with("HEAD ");
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    if !is_head {
        out.push_str(&response.body);
    }
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// Binds `addr`; the returned future serves until dropped.
pub async fn bind(
    addr: SocketAddr,
    health: Arc<Health>,
) -> std::io::Result<impl Future<Output = ()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /healthz, /readyz and /metrics");
    Ok(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let health = health.clone();
                    tokio::spawn(async move {
                        if let Err(error) = serve_one(stream, health).await {
                            tracing::debug!(%error, "health endpoint connection");
                        }
                    });
                }
                Err(error) => {
                    tracing::warn!(%error, "accepting a health endpoint connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let h = Health::default();
        assert_eq!(route("GET /healthz HTTP/1.1\r\n\r\n", &h).status, "200 OK");
        assert_eq!(
            route("GET /readyz HTTP/1.1\r\n\r\n", &h).status,
            "503 Service Unavailable"
        );
        h.set_ready(true);
        assert_eq!(
            route("GET /readyz?verbose HTTP/1.1\r\n\r\n", &h).status,
            "200 OK"
        );
        let m = route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &h);
        assert!(m.content_type.contains("version=0.0.4"));
        assert!(m.body.contains("bpfpin_operator_reconciles_total 0"));
        assert_eq!(
            route("GET /nope HTTP/1.1\r\n\r\n", &h).status,
            "404 Not Found"
        );
        assert_eq!(
            route("POST /healthz HTTP/1.1\r\n\r\n", &h).status,
            "405 Method Not Allowed"
        );
        assert_eq!(route("", &h).status, "405 Method Not Allowed");
    }

    #[tokio::test]
    async fn serves_over_tcp() {
        let health = Arc::new(Health::default());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let server = bind(addr, health).await.expect("bind server");
        let task = tokio::spawn(server);
        let mut conn = TcpStream::connect(addr).await.expect("connect");
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let mut reply = String::new();
        conn.read_to_string(&mut reply).await.expect("read");
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nok\n"), "{reply}");
        task.abort();
    }
}
