//! Shared helpers of the server tests: temp databases, an in-process server,
//! and a tiny raw HTTP/1.1 client (raw TCP, so a test can stop reading or cut
//! the connection at an exact point).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rowstream::core::audit::{AuditEvent, MemoryAuditSink};
use rowstream::core::protocol::{StreamEvent, StreamVerifier};
use rowstream::server::{BackgroundServer, Server, ServerBuilder};
use rusqlite::Connection;

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "rowstream-test-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates `t(id INTEGER PRIMARY KEY, name TEXT, v REAL)` with `n` rows
/// (`name` = `n<id>`, `v` = id / 4) in WAL mode.
pub fn make_db(path: &Path, n: i64) -> Connection {
    let c = Connection::open(path).unwrap();
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, v REAL)")
        .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    {
        let mut ins = tx
            .prepare("INSERT INTO t(id, name, v) VALUES (?1, ?2, ?3)")
            .unwrap();
        for i in 1..=n {
            ins.execute(rusqlite::params![i, format!("n{i}"), i as f64 / 4.0])
                .unwrap();
        }
    }
    tx.commit().unwrap();
    c
}

/// A running in-process server with a memory audit sink.
pub struct TestServer {
    pub server: BackgroundServer,
    pub audit: Arc<MemoryAuditSink>,
}

impl TestServer {
    pub fn start(b: ServerBuilder) -> TestServer {
        let audit = Arc::new(MemoryAuditSink::new());
        let server = b
            .audit_sink(audit.clone())
            .connection_init(|c| {
                c.create_scalar_function(
                    "sleep_ms",
                    1,
                    rusqlite::functions::FunctionFlags::SQLITE_UTF8,
                    |ctx| {
                        let ms: i64 = ctx.get(0)?;
                        std::thread::sleep(Duration::from_millis(ms as u64));
                        Ok(ms)
                    },
                )
            })
            .build()
            .unwrap()
            .spawn("127.0.0.1:0")
            .unwrap();
        TestServer { server, audit }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    pub fn events(&self) -> Vec<AuditEvent> {
        self.audit.events()
    }

    /// Waits until `f` holds for the stats (up to `ms`); returns the time taken.
    pub fn wait_stats(
        &self,
        ms: u64,
        f: impl Fn(&rowstream::server::ServerStats) -> bool,
    ) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(ms) {
            if f(&self.server.stats()) {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }
}

pub fn builder_for(db: &Path) -> ServerBuilder {
    Server::builder().db(db)
}

/// A complete response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }

    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("")
            .to_owned()
    }
}

/// A response being read incrementally.
pub struct Streaming {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    chunked: bool,
    remaining_in_chunk: usize,
    content_left: Option<usize>,
    buf: Vec<u8>,
    eof: bool,
}

impl Streaming {
    /// Raw bytes of the next HTTP chunk (or body piece); `None` at the end.
    pub fn next_piece(&mut self) -> Option<Vec<u8>> {
        if self.eof {
            return None;
        }
        if self.chunked {
            if self.remaining_in_chunk == 0 {
                let mut line = String::new();
                if self.reader.read_line(&mut line).ok()? == 0 {
                    self.eof = true;
                    return None;
                }
                let size = usize::from_str_radix(line.trim(), 16).ok()?;
                if size == 0 {
                    let mut end = String::new();
                    let _ = self.reader.read_line(&mut end);
                    self.eof = true;
                    return None;
                }
                self.remaining_in_chunk = size;
            }
            let mut data = vec![0; self.remaining_in_chunk];
            self.reader.read_exact(&mut data).ok()?;
            self.remaining_in_chunk = 0;
            let mut crlf = [0u8; 2];
            self.reader.read_exact(&mut crlf).ok()?;
            Some(data)
        } else {
            let left = self.content_left.unwrap_or(usize::MAX);
            if left == 0 {
                self.eof = true;
                return None;
            }
            let mut data = vec![0; left.min(64 * 1024)];
            let n = self.reader.read(&mut data).ok()?;
            if n == 0 {
                self.eof = true;
                return None;
            }
            data.truncate(n);
            if let Some(l) = self.content_left.as_mut() {
                *l -= n;
            }
            Some(data)
        }
    }

    /// The next complete NDJSON line (without newline); `None` at the end.
    pub fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(String::from_utf8(line[..line.len() - 1].to_vec()).unwrap());
            }
            let piece = self.next_piece()?;
            self.buf.extend_from_slice(&piece);
        }
    }

    /// Every remaining line.
    pub fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(l) = self.next_line() {
            out.push(l);
        }
        out
    }
}

pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Streaming {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    // The server may answer (413) and close before the whole body is sent.
    let _ = s.write_all(body);
    let mut reader = BufReader::new(s);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"))
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
    let find = |n: &str| {
        headers
            .iter()
            .find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let content_left = find("content-length").and_then(|v| v.parse().ok());
    Streaming {
        status,
        headers,
        reader,
        chunked,
        remaining_in_chunk: 0,
        content_left: if chunked {
            None
        } else {
            Some(content_left.unwrap_or(0))
        },
        buf: Vec::new(),
        eof: false,
    }
}

pub fn open_stream(addr: SocketAddr, body: &str, token: Option<&str>) -> Streaming {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    request(addr, "POST", "/v1/query/stream", body.as_bytes(), &h)
}

pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Resp {
    let mut s = request(addr, method, path, body, headers);
    let mut out = Vec::new();
    while let Some(p) = s.next_piece() {
        out.extend_from_slice(&p);
    }
    Resp {
        status: s.status,
        headers: s.headers,
        body: out,
    }
}

pub fn post(addr: SocketAddr, path: &str, body: &str, token: Option<&str>) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    send(addr, "POST", path, body.as_bytes(), &h)
}

pub fn query(addr: SocketAddr, sql: &str) -> Resp {
    post(
        addr,
        "/v1/query/stream",
        &serde_json::json!({ "query": sql }).to_string(),
        None,
    )
}

/// Parses a line as JSON.
pub fn j(line: &str) -> serde_json::Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))
}

/// Feeds every line to a verifier and returns it (panics on a protocol error).
pub fn verify_lines(v: &mut StreamVerifier, lines: &[String]) -> Vec<StreamEvent> {
    lines
        .iter()
        .map(|l| v.accept(l).unwrap_or_else(|e| panic!("{e} on {l}")))
        .collect()
}

/// Row lines of a response.
pub fn row_lines(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("{\"row\":"))
        .cloned()
        .collect()
}

/// Every opened/resumed lease has exactly one `stream.closed`.
pub fn assert_paired(events: &[AuditEvent]) {
    use std::collections::HashMap;
    let mut opened: HashMap<String, usize> = HashMap::new();
    let mut closed: HashMap<String, usize> = HashMap::new();
    for e in events {
        match e {
            AuditEvent::StreamOpened { lease, .. } | AuditEvent::StreamResumed { lease, .. } => {
                *opened.entry(lease.clone()).or_default() += 1
            }
            AuditEvent::StreamClosed {
                lease: Some(lease), ..
            } => *closed.entry(lease.clone()).or_default() += 1,
            _ => {}
        }
    }
    for (lease, n) in &opened {
        assert_eq!(*n, 1, "lease {lease} opened twice");
        assert_eq!(
            closed.get(lease),
            Some(&1),
            "lease {lease} not closed exactly once: {events:#?}"
        );
    }
    for lease in closed.keys() {
        assert!(
            opened.contains_key(lease),
            "closed lease {lease} never opened"
        );
    }
}

/// The `stream.closed` event of `lease`.
pub fn closed_of(events: &[AuditEvent], lease: &str) -> Option<AuditEvent> {
    events
        .iter()
        .find(|e| matches!(e, AuditEvent::StreamClosed { lease: Some(l), .. } if l == lease))
        .cloned()
}

/// Waits until `f(events)` holds (up to `ms`).
pub fn wait_events(ts: &TestServer, ms: u64, f: impl Fn(&[AuditEvent]) -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(ms) {
        if f(&ts.events()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// splitmix64: small, seedable, good enough to pick cut points and behaviours.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when `n` is 0, without advancing).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// `ROWSTREAM_LONG=1` turns on the long runs of the reliability suites.
pub fn long_run() -> bool {
    std::env::var("ROWSTREAM_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `ROWSTREAM_SEED`, or a fresh seed from the clock (suites print it).
pub fn seed() -> u64 {
    std::env::var("ROWSTREAM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// A `rowstream serve` child process (the real binary) on the port it printed;
/// killed on drop.
pub struct ServerProcess {
    pub child: std::process::Child,
    pub addr: SocketAddr,
}

impl ServerProcess {
    /// Starts `rowstream` with `args` (which should include
    /// `--listen 127.0.0.1:0`) and reads its `listening on` line. Stderr is
    /// discarded unless `keep_stderr`.
    pub fn start<I, S>(args: I, keep_stderr: bool) -> ServerProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Self::start_with_env(args, keep_stderr, &[])
    }

    /// [`ServerProcess::start`] with extra environment variables.
    pub fn start_with_env<I, S>(args: I, keep_stderr: bool, env: &[(&str, &str)]) -> ServerProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_rowstream"))
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(if keep_stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        ServerProcess { child, addr }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
