//! The head of one HTTP/1.1 request read from a raw socket: the loopback servers of this crate
//! ([`crate::hostile`] and the token realm of [`crate::registry`]) answer one request a connection.

use std::io::Read as _;
use std::net::TcpStream;
use std::time::Duration;

/// The request line and headers of a request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request target as sent: path and query.
    pub target: String,
    /// The path, without the query.
    pub path: String,
    /// The query, without `?`.
    pub query: String,
    /// Header names (lowercase) and values.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The value of header `name` (lowercase), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads a request's head (up to 64 KiB) in blocking mode with a 5 s timeout. The flag is false
/// when the connection ended or failed before the blank line that ends the head.
pub fn read_request(stream: &mut TcpStream) -> (Request, bool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let mut whole = true;
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                whole = false;
                break;
            }
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let target = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_owned();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let request = Request {
        path: path.to_owned(),
        query: query.to_owned(),
        headers: lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect(),
        target,
    };
    (request, whole)
}
