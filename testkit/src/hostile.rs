//! Hostile HTTP servers on loopback for the url and image sources' tests: each path of a server is
//! a behaviour (answer, never answer, stall after the headers, trickle, lie about the length,
//! stream without end, redirect, send huge headers), written here on a raw TCP socket because no
//! well-behaved server library misbehaves on purpose. Also: running the agent with its peak RSS
//! (VmHWM, from `wait4`) and its wall time.

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use crate::http::Request;
use crate::registry::{OCI_MANIFEST, digest, image_config, image_manifest};

/// What a server does on one path: writes whatever it wants to the connection. `stop` is set
/// when the server is dropped, so handlers that stall end with the test.
pub type Handler = Arc<dyn Fn(&Request, &mut TcpStream, &AtomicBool) + Send + Sync>;

/// A server on 127.0.0.1 (a free port) whose paths are [`Handler`]s; others answer 404.
#[derive(Debug)]
pub struct Hostile {
    port: u16,
    stop: Arc<AtomicBool>,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Hostile {
    pub fn start(routes: Vec<(String, Handler)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(AtomicBool::new(false));
        let hits: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let routes: Arc<HashMap<String, Handler>> = Arc::new(routes.into_iter().collect());
        {
            let stop = stop.clone();
            let hits = hits.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (stop, hits, routes) = (stop.clone(), hits.clone(), routes.clone());
                            std::thread::spawn(move || serve(stream, &routes, &hits, &stop));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Self { port, stop, hits }
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.host())
    }

    /// How many requests `path` got.
    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("hits")
            .get(path)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    mut stream: TcpStream,
    routes: &HashMap<String, Handler>,
    hits: &Mutex<HashMap<String, usize>>,
    stop: &AtomicBool,
) {
    // One request per connection (`Connection: close` in every answer).
    let (request, whole) = crate::http::read_request(&mut stream);
    if !whole {
        return;
    }
    *hits
        .lock()
        .expect("hits")
        .entry(request.path.clone())
        .or_default() += 1;
    match routes.get(&request.path) {
        Some(handler) => handler(&request, &mut stream, stop),
        None => respond(&mut stream, 404, &[], b"not found"),
    }
    let _ = stream.flush();
}

/// Writes a whole answer with a correct `Content-Length`.
pub fn respond(stream: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// Sleeps until the server stops (at most 10 minutes).
fn hold(stop: &AtomicBool) {
    let until = Instant::now() + Duration::from_secs(600);
    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// 200 with `body`.
pub fn ok(body: Vec<u8>) -> Handler {
    typed(None, body)
}

/// 200 with `body` and a `Content-Type`.
pub fn typed(content_type: Option<&str>, body: Vec<u8>) -> Handler {
    let headers: Vec<(&'static str, String)> = content_type
        .map(|t| vec![("Content-Type", t.to_owned())])
        .unwrap_or_default();
    Arc::new(move |_, s, _| respond(s, 200, &headers, &body))
}

/// Accepts the connection, reads the request, never answers.
pub fn never_answers() -> Handler {
    Arc::new(|_, _, stop| hold(stop))
}

/// Sends the status line and headers (a body of `length` bytes announced), then nothing.
pub fn stall_after_headers(length: u64) -> Handler {
    Arc::new(move |_, s, stop| {
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
        );
        let _ = s.flush();
        hold(stop);
    })
}

/// Sends `body` (length announced) one byte every `every`.
pub fn trickle(body: Vec<u8>, every: Duration) -> Handler {
    Arc::new(move |_, s, stop| {
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        for b in &body {
            if stop.load(Ordering::Relaxed) || s.write_all(&[*b]).and_then(|()| s.flush()).is_err()
            {
                return;
            }
            std::thread::sleep(every);
        }
    })
}

/// Announces `claimed` bytes, sends `body` (shorter or longer), closes.
pub fn lying_length(body: Vec<u8>, claimed: usize) -> Handler {
    Arc::new(move |_, s, _| {
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {claimed}\r\nConnection: close\r\n\r\n"
        );
        let _ = s.write_all(&body);
        let _ = s.flush();
        let _ = s.shutdown(std::net::Shutdown::Both);
    })
}

/// Chunked, no length: `total` bytes of zeros in 64 KiB chunks (stops when the client leaves).
pub fn chunked_zeros(total: u64) -> Handler {
    Arc::new(move |_, s, stop| {
        let _ = write!(
            s,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        );
        let chunk = vec![0u8; 64 << 10];
        let mut sent = 0u64;
        while sent < total && !stop.load(Ordering::Relaxed) {
            let head = format!("{:x}\r\n", chunk.len());
            let ok = s
                .write_all(head.as_bytes())
                .and_then(|()| s.write_all(&chunk))
                .and_then(|()| s.write_all(b"\r\n"));
            if ok.is_err() {
                return;
            }
            sent += chunk.len() as u64;
        }
        let _ = s.write_all(b"0\r\n\r\n");
    })
}

/// A redirect (302) to `location`.
pub fn redirect(location: &str) -> Handler {
    let location = location.to_owned();
    Arc::new(move |_, s, _| respond(s, 302, &[("Location", location.clone())], b""))
}

/// An answer with a status and headers of our choosing.
pub fn status(code: u16, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> Handler {
    Arc::new(move |_, s, _| respond(s, code, &headers, &body))
}

/// A route.
pub fn route(path: impl Into<String>, handler: Handler) -> (String, Handler) {
    (path.into(), handler)
}

/// The routes of a bytecode image `repo:tag` on a fake registry: its manifest (by tag and by
/// digest), config and layer, each answered whole; returns them and the manifest's digest.
pub fn image_routes(
    repo: &str,
    tag: &str,
    config: &[u8],
    layer: &[u8],
) -> (Vec<(String, Handler)>, String) {
    let manifest = image_manifest(config, layer, "application/vnd.oci.image.layer.v1.tar+gzip");
    let manifest_digest = digest(&manifest);
    let routes = vec![
        route(
            format!("/v2/{repo}/manifests/{tag}"),
            typed(Some(OCI_MANIFEST), manifest.clone()),
        ),
        route(
            format!("/v2/{repo}/manifests/{manifest_digest}"),
            typed(Some(OCI_MANIFEST), manifest),
        ),
        route(
            format!("/v2/{repo}/blobs/{}", digest(config)),
            ok(config.to_vec()),
        ),
        route(
            format!("/v2/{repo}/blobs/{}", digest(layer)),
            ok(layer.to_vec()),
        ),
    ];
    (routes, manifest_digest)
}

/// The image config of a bytecode image with the counter's labels.
pub fn bytecode_config() -> Vec<u8> {
    image_config(crate::registry::counter_labels())
}

/// A finished run of the agent.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident memory (VmHWM), KiB.
    pub max_rss_kib: i64,
    pub elapsed: Duration,
}

/// Runs `cmd` to its end, with its peak RSS. The peak comes from `wait4` in a small Python
/// parent that forks and execs it: a child spawned from this test process (vfork) would inherit
/// the test's own high-water mark at its exec, which the kernel keeps in the child's `maxrss`.
pub fn run_measured(cmd: &std::process::Command) -> Run {
    const LAUNCHER: &str = "import os, sys\n\
pid = os.fork()\n\
if pid == 0:\n    os.execv(sys.argv[2], sys.argv[2:])\n\
_, status, usage = os.wait4(pid, 0)\n\
open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n\
sys.exit(os.waitstatus_to_exitcode(status) & 0xff)\n";
    let dir = tempfile::tempdir().expect("tempdir");
    let peak = dir.path().join("maxrss");
    let mut launcher = std::process::Command::new("python3");
    launcher
        .arg("-c")
        .arg(LAUNCHER)
        .arg(&peak)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => launcher.env(k, v),
            None => launcher.env_remove(k),
        };
    }
    let started = Instant::now();
    let out = launcher.output().expect("python3 runs the agent");
    let elapsed = started.elapsed();
    let max_rss_kib = std::fs::read_to_string(&peak)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak RSS: {}", String::from_utf8_lossy(&out.stderr)));
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        max_rss_kib,
        elapsed,
    }
}

/// Writes a manifest file.
pub fn write(dir: &Path, file: &str, text: &str) {
    std::fs::write(dir.join(file), text).expect("write manifest");
}

/// A gzipped tar whose one entry, `name`, announces and holds `gib` GiB of zeros, in about
/// 1 KiB of gzip per MiB: deflate segments (ended by a sync flush, so byte-aligned) that copy
/// zeros from the window are repeated, as no compressor would be asked to produce 2 GiB here.
/// Its CRC is wrong, which only a reader that reaches the end would notice.
pub fn gzip_bomb(name: &str, gib: u64) -> Vec<u8> {
    use flate2::{Compress, Compression, FlushCompress};
    let size = gib << 30;
    let mut header = tar::Header::new_gnu();
    header.set_path(name).expect("name");
    header.set_size(size);
    header.set_mode(0o644);
    header.set_cksum();
    let mut deflate = Compress::new(Compression::best(), false);
    let mut segment = |input: &[u8]| {
        let mut out = Vec::with_capacity(64 << 10);
        let mut at = 0;
        loop {
            let before = deflate.total_in();
            deflate
                .compress_vec(&input[at..], &mut out, FlushCompress::Sync)
                .expect("deflate");
            at += usize::try_from(deflate.total_in() - before).expect("usize");
            if at >= input.len() && out.len() < out.capacity() {
                return out;
            }
            out.reserve(64 << 10);
        }
    };
    let mib = vec![0u8; 1 << 20];
    let mut prime = header.as_bytes().to_vec();
    prime.extend_from_slice(&mib);
    let first = segment(&prime);
    let _settle = segment(&mib);
    let steady = segment(&mib);
    // gzip header: magic, deflate, no flags, no mtime, no extra flags, unix.
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    out.extend_from_slice(&first);
    for _ in 1..(size >> 20) {
        out.extend_from_slice(&steady);
    }
    // A final empty stored block and a (wrong) trailer.
    out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    out.extend_from_slice(&[0; 8]);
    out
}
