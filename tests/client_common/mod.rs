//! Shared helpers of the client tests: the real `rowstream` binary as server
//! and as exporter, a richer test table, and a TCP proxy between them that
//! cuts connections or tampers with a byte.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_rowstream");

/// `r(id INTEGER PRIMARY KEY, name TEXT, note TEXT, score REAL, data BLOB,
/// doc TEXT)` with `n` rows: text with commas, quotes, newlines and
/// formula-like values, NULLs, empty strings, blobs, JSON text.
pub fn make_rich_db(path: &Path, n: i64) {
    let c = rusqlite::Connection::open(path).unwrap();
    c.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    c.execute_batch(
        "CREATE TABLE r(id INTEGER PRIMARY KEY, name TEXT, note TEXT, score REAL, data BLOB, doc TEXT)",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    {
        let mut ins = tx
            .prepare("INSERT INTO r VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .unwrap();
        for i in 1..=n {
            let note: Option<String> = match i % 6 {
                0 => None,
                1 => Some(String::new()),
                2 => Some(format!("line one\nline \"two\", {i}")),
                3 => Some(format!("=SUM(A{i}:A9)")),
                4 => Some(format!("ünïcödé ✓ {i}\r\n")),
                _ => Some(format!("plain {i}")),
            };
            let data: Option<Vec<u8>> = (i % 4 != 0).then(|| vec![(i % 256) as u8, 0, 255, 7]);
            let doc = format!("{{\"k\":{i},\"a\":[1,\"x,y\"]}}");
            ins.execute(rusqlite::params![
                i,
                format!("name {i}"),
                note,
                i as f64 / 8.0,
                data,
                doc
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Runs `rowstream export` with `args` to the end.
pub fn export(args: &[&str]) -> Output {
    Command::new(BIN)
        .arg("export")
        .args(args)
        .env_remove("ROWSTREAM_TOKEN")
        .output()
        .unwrap()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code of a finished exporter.
pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// `stream.resumed` events of an audit log: their `after_rows`.
pub fn resumed_after_rows(audit: &Path) -> Vec<u64> {
    std::fs::read_to_string(audit)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "stream.resumed")
        .filter_map(|e| e["after_rows"].as_u64())
        .collect()
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the proxy does to the server → client bytes.
#[derive(Clone, Debug)]
pub enum ProxyMode {
    /// Forwards everything.
    Pass,
    /// Connection `i` is cut after `cuts[i]` response bytes (both sides
    /// closed); later connections pass.
    Cut(Vec<u64>),
    /// In every response, the first byte after the first `pattern` found
    /// after the headers is XORed with 1.
    Tamper(Vec<u8>),
}

/// A TCP proxy on loopback in front of `upstream`.
pub struct Proxy {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub connections: Arc<AtomicUsize>,
    /// Connections cut.
    pub cuts: Arc<AtomicUsize>,
    /// Bytes tampered with.
    pub tampered: Arc<AtomicUsize>,
    /// The first bytes of every request (headers).
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

/// Replaces a request's `Accept-Encoding` value with `identity` (so the
/// server sends the body uncompressed and byte offsets mean rows).
fn force_identity(data: &[u8]) -> Vec<u8> {
    let lower = data.to_ascii_lowercase();
    let Some(at) = find(&lower, b"\r\naccept-encoding:") else {
        return data.to_vec();
    };
    let end = find(&lower[at + 2..], b"\r\n").map_or(data.len(), |e| at + 2 + e);
    let mut out = data[..at].to_vec();
    out.extend_from_slice(b"\r\naccept-encoding: identity");
    out.extend_from_slice(&data[end..]);
    out
}

impl Proxy {
    pub fn start(upstream: SocketAddr, mode: ProxyMode) -> Proxy {
        Self::start_with(upstream, mode, false)
    }

    /// [`Proxy::start`] that also makes every request ask for identity.
    pub fn start_identity(upstream: SocketAddr, mode: ProxyMode) -> Proxy {
        Self::start_with(upstream, mode, true)
    }

    fn start_with(upstream: SocketAddr, mode: ProxyMode, identity: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let p = Proxy {
            addr,
            connections: Arc::default(),
            cuts: Arc::default(),
            tampered: Arc::default(),
            requests: Arc::default(),
            stop: Arc::default(),
        };
        let (connections, cuts, tampered, requests, stop) = (
            p.connections.clone(),
            p.cuts.clone(),
            p.tampered.clone(),
            p.requests.clone(),
            p.stop.clone(),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let i = connections.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let limit = match &mode {
                    ProxyMode::Cut(c) => c.get(i).copied(),
                    _ => None,
                };
                let pattern = match &mode {
                    ProxyMode::Tamper(p) => Some(p.clone()),
                    _ => None,
                };
                let (cuts, tampered, requests) = (cuts.clone(), tampered.clone(), requests.clone());
                std::thread::spawn(move || {
                    let plan = ConnPlan {
                        limit,
                        pattern,
                        identity,
                    };
                    pipe_connection(client, server, plan, &cuts, &tampered, &requests)
                });
            }
        });
        p
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

/// What the proxy does to one connection.
struct ConnPlan {
    limit: Option<u64>,
    pattern: Option<Vec<u8>>,
    identity: bool,
}

fn pipe_connection(
    client: TcpStream,
    server: TcpStream,
    plan: ConnPlan,
    cuts: &AtomicUsize,
    tampered: &AtomicUsize,
    requests: &Mutex<Vec<String>>,
) {
    let ConnPlan {
        limit,
        pattern,
        identity,
    } = plan;
    let (mut c_read, mut s_write) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let (c_close, s_close) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    let reqs = Arc::new(Mutex::new(Vec::<u8>::new()));
    let reqs2 = reqs.clone();
    let up = std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match c_read.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    {
                        let mut r = reqs2.lock().unwrap();
                        if r.len() < 64 * 1024 {
                            r.extend_from_slice(&buf[..n]);
                        }
                    }
                    let data = if identity {
                        force_identity(&buf[..n])
                    } else {
                        buf[..n].to_vec()
                    };
                    if s_write.write_all(&data).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent = 0u64;
    // Response bytes kept to find the pattern after the headers (per response).
    let mut window: Vec<u8> = Vec::new();
    let mut done_tamper = false;
    loop {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut data = buf[..n].to_vec();
        if let (Some(p), false) = (&pattern, done_tamper) {
            let base = window.len();
            window.extend_from_slice(&data);
            if let Some(h) = find(&window, b"\r\n\r\n") {
                if let Some(at) = find(&window[h..], p) {
                    let pos = h + at + p.len();
                    if pos >= base && pos < base + data.len() {
                        data[pos - base] ^= 1;
                        done_tamper = true;
                        tampered.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
        if let Some(l) = limit {
            if sent + data.len() as u64 >= l {
                let keep = (l - sent) as usize;
                let _ = c_write.write_all(&data[..keep]);
                cuts.fetch_add(1, Ordering::SeqCst);
                let _ = c_close.shutdown(Shutdown::Both);
                let _ = s_close.shutdown(Shutdown::Both);
                break;
            }
        }
        sent += data.len() as u64;
        if c_write.write_all(&data).is_err() {
            break;
        }
    }
    let _ = c_close.shutdown(Shutdown::Both);
    let _ = s_close.shutdown(Shutdown::Both);
    let _ = up.join();
    let text = String::from_utf8_lossy(&reqs.lock().unwrap()).into_owned();
    requests.lock().unwrap().push(text);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `path` read whole.
pub fn read(path: &PathBuf) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn wait_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}
