//! `/healthz`, `/readyz` and `/metrics` on a tiny HTTP/1.1 server: one thread, one request per
//! connection, short timeouts. Kept off the async runtime so a stuck scrape never delays a pass.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use super::metrics::Metrics;

/// Binds `addr` (port 0 picks a free one) and serves in a background thread; returns the address
/// actually bound.
pub fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("bpfpin-http".into())
        .spawn(move || {
            let _span = span.enter();
            for conn in listener.incoming() {
                match conn {
                    Ok(stream) => {
                        if let Err(e) = handle(stream, &metrics) {
                            tracing::debug!(error = %e, "health/metrics request failed");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "accepting a health/metrics connection"),
                }
            }
        })?;
    Ok(bound)
}

fn handle(mut stream: TcpStream, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut buf = [0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        let n = stream.read(&mut buf[len..])?;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let (code, content_type, body) = route(request.lines().next().unwrap_or_default(), metrics);
    let reason = match code {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    write!(
        stream,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

/// The response to a request line: status code, content type, body.
pub fn route(request_line: &str, metrics: &Metrics) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let mut parts = request_line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or("/"),
    );
    if method != "GET" {
        return (405, TEXT, "only GET\n".into());
    }
    match target.split('?').next().unwrap_or_default() {
        "/healthz" | "/livez" => (200, TEXT, "ok\n".into()),
        "/readyz" if metrics.is_ready() => (200, TEXT, "ok\n".into()),
        "/readyz" => (
            503,
            TEXT,
            "the first reconcile pass has not run yet\n".into(),
        ),
        "/metrics" => (
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        _ => (
            404,
            TEXT,
            "not found: try /healthz, /readyz or /metrics\n".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let m = Metrics::default();
        assert_eq!(route("GET /healthz HTTP/1.1", &m).0, 200);
        assert_eq!(route("GET /readyz HTTP/1.1", &m).0, 503);
        m.set_ready();
        assert_eq!(route("GET /readyz HTTP/1.1", &m).0, 200);
        let (code, _, body) = route("GET /metrics HTTP/1.1", &m);
        assert_eq!(code, 200);
        assert!(body.contains("bpfpin_agent_reconcile_passes_total 0"));
        assert_eq!(route("POST /metrics HTTP/1.1", &m).0, 405);
        assert_eq!(route("GET /nope HTTP/1.1", &m).0, 404);
    }

    #[test]
    fn serves_over_tcp() {
        let m = Arc::new(Metrics::default());
        let addr = serve("127.0.0.1:0".parse().expect("addr"), m).expect("bind");
        let mut conn = TcpStream::connect(addr).expect("connect");
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("send");
        let mut response = String::new();
        conn.read_to_string(&mut response).expect("read");
        assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
        assert!(response.ends_with("\r\n\r\nok\n"), "{response}");
    }
}
