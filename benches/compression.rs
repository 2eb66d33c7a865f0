//! Issue 13's benchmark: `Content-Encoding` of the 1M-row benchmark stream.
//! For each encoding (`identity`, `zstd`, `br`, `gzip`): bytes on the wire,
//! server CPU per row, and rows/s end to end with a client that decodes the
//! body, (a) on plain loopback and (b) through a relay in this file that
//! limits the server→client direction to 1 Gbit/s and to 100 Mbit/s; time to
//! first row per encoding; in-process floors of the codecs on the same bytes.
//! Run by `scripts/bench.sh`; writes its section of BENCHMARKS.md
//! (`<!-- compression -->` … `<!-- /compression -->`).
//! `ROWSTREAM_BENCH_QUICK=1`: one repetition, BENCHMARKS.md left alone.
//!
//! - The server is the release `rowstream serve` as a child process (open
//!   auth, audit log to /dev/null, the default compression levels),
//!   `SELECT * FROM t`, shape `object`.
//! - The client (this process's main thread) sends `Accept-Encoding: <one
//!   coding>`, checks the response's `Content-Encoding`, undoes the chunked
//!   framing, decodes the body with the zstd / brotli / flate2 crates (a
//!   flush after every piece read, as a streaming client must), counts the
//!   decoded lines and checks the `end` line (`reason: ok`, `row_count`,
//!   `bytes`, rows read).
//! - The relay: a TCP proxy on 127.0.0.1 (two threads per connection). The
//!   request goes through unpaced; the response is read from the server in
//!   pieces of at most [`RELAY_QUANTUM`] bytes, and each piece waits for the
//!   tokens of a token bucket (rate = the link, depth [`RELAY_BURST`]) before
//!   it is written to the client. Its sockets get small kernel buffers
//!   ([`RELAY_SOCKBUF`], set before listen/connect), so the bytes queued
//!   between server and client stay bounded on the relay's side.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use rowstream::server::compress::{Coding, Compression, ZSTD_WINDOW_LOG};
use serde_json::Value;
use socket2::{Domain, Socket, Type};

use proc_util::{cpu_s, sh};

#[path = "common/proc.rs"]
mod proc_util;
#[path = "common/table.rs"]
mod table;

const ROWS: u64 = 1_000_000;
const BIN: &str = env!("CARGO_BIN_EXE_rowstream");
const QUERY: &str = r#"{"query":"SELECT * FROM t"}"#;

/// Kernel socket buffers the relay asks for on both of its sockets
/// (`SO_RCVBUF`, `SO_SNDBUF`; Linux doubles the value).
const RELAY_SOCKBUF: usize = 32 * 1024;
/// The relay's user-space buffer: one read from the server, paced as a whole.
const RELAY_QUANTUM: usize = 16 * 1024;
/// Depth of the token bucket (bytes the link may send back to back).
const RELAY_BURST: f64 = 64.0 * 1024.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Enc {
    Identity,
    Zstd,
    Br,
    Gzip,
}

/// Identity first: every ratio is against it.
const ENCODINGS: [Enc; 4] = [Enc::Identity, Enc::Zstd, Enc::Br, Enc::Gzip];

impl Enc {
    fn token(self) -> &'static str {
        match self {
            Enc::Identity => "identity",
            Enc::Zstd => "zstd",
            Enc::Br => "br",
            Enc::Gzip => "gzip",
        }
    }

    fn coding(self) -> Option<Coding> {
        match self {
            Enc::Identity => None,
            Enc::Zstd => Some(Coding::Zstd),
            Enc::Br => Some(Coding::Brotli),
            Enc::Gzip => Some(Coding::Gzip),
        }
    }
}

/// The three paths between client and server.
const LINKS: [(&str, Option<f64>); 3] = [
    ("loopback", None),
    ("1 Gbit/s relay", Some(1e9)),
    ("100 Mbit/s relay", Some(1e8)),
];

fn main() {
    let quick = std::env::var("ROWSTREAM_BENCH_QUICK").is_ok_and(|v| v == "1");
    // Loopback and 1 Gbit/s runs are short; at 100 Mbit/s identity's body
    // alone takes ~14 s per run.
    let (reps, slow_reps, ttfr_reps, floor_reps) = if quick { (1, 1, 3, 1) } else { (5, 3, 11, 3) };
    let started = Instant::now();
    let load_start = sh("cut -d' ' -f1-3 /proc/loadavg");
    let date = sh("date -u '+%Y-%m-%d %H:%M UTC'");
    let cache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("rowstream-bench");
    std::fs::create_dir_all(&cache).expect("cache dir");
    let db = table::ensure_db(&cache, ROWS);

    let server = Server::start(&db);
    let pid = server.child.id();
    // Warm-up (page cache, allocator) that also keeps the identity body and
    // the server's chunk boundaries for the in-process floors.
    let capture = fetch(server.addr, Enc::Identity, pid, Mode::Capture);
    let body = capture.body;
    let chunk_sizes = capture.chunk_sizes;
    for e in &ENCODINGS[1..] {
        fetch(server.addr, *e, pid, Mode::Full);
    }

    let relays: Vec<Option<Relay>> = LINKS
        .iter()
        .map(|(_, rate)| rate.map(|r| Relay::start(server.addr, r / 8.0)))
        .collect();
    let addr_of = |li: usize| relays[li].as_ref().map_or(server.addr, |r| r.addr);

    // runs[link][encoding]
    let mut runs: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); ENCODINGS.len()]; LINKS.len()];
    let measure = |li: usize, rep: usize, runs: &mut Vec<Vec<Vec<Run>>>| {
        for k in 0..ENCODINGS.len() {
            let ei = (k + rep) % ENCODINGS.len();
            let r = fetch(addr_of(li), ENCODINGS[ei], pid, Mode::Full).run;
            eprintln!(
                "bench: {} {}: {:.0} rows/s",
                LINKS[li].0,
                ENCODINGS[ei].token(),
                r.rows_per_s()
            );
            runs[li][ei].push(r);
        }
    };
    for rep in 0..reps {
        for li in [0, 1] {
            measure(li, rep, &mut runs);
        }
    }
    for rep in 0..slow_reps {
        measure(2, rep, &mut runs);
    }

    // Time to first row, loopback, alternating.
    let mut ttfr: Vec<Vec<f64>> = vec![Vec::new(); ENCODINGS.len()];
    for rep in 0..ttfr_reps {
        for k in 0..ENCODINGS.len() {
            let ei = (k + rep) % ENCODINGS.len();
            let r = fetch(server.addr, ENCODINGS[ei], pid, Mode::FirstRow).run;
            ttfr[ei].push(r.first_row_ms.expect("a first row"));
            // The dropped stream ends (disconnect) before the next request.
            std::thread::sleep(Duration::from_millis(30));
        }
    }
    let sockbufs = relays[1].as_ref().map(|r| r.sockbufs).unwrap_or_default();
    drop(relays);
    drop(server);

    let floors: Vec<Floor> = ENCODINGS[1..]
        .iter()
        .map(|e| Floor::measure(*e, &body, &chunk_sizes, floor_reps))
        .collect();

    let load_end = sh("cut -d' ' -f1-3 /proc/loadavg");
    let section = report(&Report {
        quick,
        date,
        load_start,
        load_end,
        total_s: started.elapsed().as_secs_f64(),
        runs,
        ttfr,
        floors,
        body_bytes: body.len() as u64,
        chunk_sizes,
        sockbufs,
        reps,
        slow_reps,
        floor_reps,
    });
    println!("{section}");
    if !quick {
        write_section(&section);
    }
}

// ───────────────────────────── client ─────────────────────────────

/// One stream as the client saw it.
#[derive(Debug, Clone, Default)]
struct Run {
    /// Request sent → body complete (end line decoded).
    elapsed_s: f64,
    first_row_ms: Option<f64>,
    /// Body bytes as sent (content-coded, without the chunked framing).
    wire: u64,
    /// Body bytes after decoding.
    decoded: u64,
    rows: u64,
    /// HTTP chunks of the body.
    chunks: u64,
    /// CPU seconds (user + system) of the server process during the run.
    server_cpu_s: f64,
    /// CPU seconds of the client thread (framing, decoding, counting).
    client_cpu_s: f64,
    /// CPU seconds of this process's other threads (the relay).
    relay_cpu_s: f64,
}

impl Run {
    fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.elapsed_s
    }
}

struct Fetched {
    run: Run,
    /// The decoded body (`Mode::Capture` only).
    body: Vec<u8>,
    /// The body's HTTP chunk sizes (`Mode::Capture` only).
    chunk_sizes: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Read and check the whole stream.
    Full,
    /// Drop the connection once the first row line is decoded.
    FirstRow,
    /// `Full`, keeping the decoded body and the chunk sizes.
    Capture,
}

/// Streams `SELECT * FROM t` from `addr` with `Accept-Encoding: enc`.
fn fetch(addr: SocketAddr, enc: Enc, server_pid: u32, mode: Mode) -> Fetched {
    let server_cpu0 = cpu_s(&server_pid.to_string());
    let (proc_cpu0, client_cpu0) = (cpu_s("self"), cpu_s("thread-self"));
    let t0 = Instant::now();
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let req = format!(
        "POST /v1/query/stream HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept-Encoding: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{QUERY}",
        enc.token(),
        QUERY.len()
    );
    s.write_all(req.as_bytes()).expect("send request");
    let mut r = BufReader::with_capacity(256 * 1024, s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    assert!(line.starts_with("HTTP/1.1 200"), "{}: {line}", enc.token());
    let (mut chunked, mut coding) = (false, None::<String>);
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        let l = line.trim_end().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if l.starts_with("transfer-encoding:") && l.contains("chunked") {
            chunked = true;
        }
        if let Some(v) = l.strip_prefix("content-encoding:") {
            coding = Some(v.trim().to_owned());
        }
    }
    assert!(chunked, "a streamed body is chunked");
    assert_eq!(
        coding.as_deref(),
        enc.coding().map(Coding::token),
        "Content-Encoding for Accept-Encoding: {}",
        enc.token()
    );
    let mut dec = Decoder::new(enc, LineSink::new(t0, mode == Mode::Capture));
    let mut run = Run::default();
    let mut chunk_sizes = Vec::new();
    'body: loop {
        line.clear();
        assert!(r.read_line(&mut line).expect("chunk size") > 0, "cut off");
        let size = usize::from_str_radix(line.trim_end(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        run.chunks += 1;
        if mode == Mode::Capture {
            chunk_sizes.push(size);
        }
        let mut left = size;
        while left > 0 {
            let buf = r.fill_buf().expect("read body");
            assert!(!buf.is_empty(), "cut off");
            let n = buf.len().min(left);
            dec.write_all(&buf[..n]);
            r.consume(n);
            left -= n;
            run.wire += n as u64;
            if mode == Mode::FirstRow && dec.sink().first_row.is_some() {
                break 'body;
            }
        }
        line.clear();
        r.read_line(&mut line).expect("chunk end");
    }
    if mode == Mode::FirstRow {
        run.first_row_ms = dec.sink().first_row.map(|d| d.as_secs_f64() * 1e3);
        return Fetched {
            run,
            body: Vec::new(),
            chunk_sizes,
        };
    }
    let sink = dec.finish();
    run.elapsed_s = t0.elapsed().as_secs_f64();
    run.client_cpu_s = cpu_s("thread-self") - client_cpu0;
    run.relay_cpu_s = (cpu_s("self") - proc_cpu0 - run.client_cpu_s).max(0.0);
    run.server_cpu_s = cpu_s(&server_pid.to_string()) - server_cpu0;
    run.first_row_ms = sink.first_row.map(|d| d.as_secs_f64() * 1e3);
    run.decoded = sink.bytes;
    run.rows = sink.check_complete(enc.token());
    Fetched {
        run,
        body: sink.keep.unwrap_or_default(),
        chunk_sizes,
    }
}

/// Counts decoded lines, stamps the first row line, keeps the tail (for the
/// `end` line) and, when asked, everything.
struct LineSink {
    t0: Instant,
    bytes: u64,
    lines: u64,
    first_row: Option<Duration>,
    tail: Vec<u8>,
    keep: Option<Vec<u8>>,
}

impl LineSink {
    fn new(t0: Instant, keep: bool) -> LineSink {
        LineSink {
            t0,
            bytes: 0,
            lines: 0,
            first_row: None,
            tail: Vec::with_capacity(16 * 1024),
            keep: keep.then(Vec::new),
        }
    }

    /// The `end` line says `ok` and counts the rows read; `bytes` is the
    /// decoded body before it. Returns the rows read.
    fn check_complete(&self, who: &str) -> u64 {
        let text = String::from_utf8_lossy(&self.tail);
        let end_line = text
            .lines()
            .next_back()
            .filter(|l| l.starts_with("{\"end\""))
            .unwrap_or_else(|| panic!("{who}: the body does not end with an end line"));
        let end: Value = serde_json::from_str::<Value>(end_line).expect("end line")["end"].clone();
        // open + rows + end; this request asks for no control lines.
        let rows = self.lines - 2;
        assert_eq!(end["reason"], "ok", "{who}: {end}");
        assert_eq!(end["row_count"].as_u64(), Some(ROWS), "{who}: {end}");
        assert_eq!(rows, ROWS, "{who}: rows read");
        assert_eq!(
            end["bytes"].as_u64(),
            Some(self.bytes - end_line.len() as u64 - 1),
            "{who}: end.bytes is the decoded body before the end line"
        );
        rows
    }
}

impl Write for LineSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.bytes += buf.len() as u64;
        self.lines += memchr::memchr_iter(b'\n', buf).count() as u64;
        if self.first_row.is_none() && self.lines >= 2 {
            self.first_row = Some(self.t0.elapsed());
        }
        if buf.len() >= 4096 {
            self.tail.clear();
            self.tail.extend_from_slice(&buf[buf.len() - 4096..]);
        } else {
            self.tail.extend_from_slice(buf);
            if self.tail.len() > 8192 {
                self.tail.drain(..self.tail.len() - 4096);
            }
        }
        if let Some(k) = self.keep.as_mut() {
            k.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The client's streaming decoder: wire bytes in, decoded bytes to a sink.
enum Decoder {
    Identity(LineSink),
    Zstd(zstd::stream::write::Decoder<'static, LineSink>),
    Br(Box<brotli::DecompressorWriter<LineSink>>),
    Gzip(flate2::write::GzDecoder<LineSink>),
}

impl Decoder {
    fn new(enc: Enc, sink: LineSink) -> Decoder {
        match enc {
            Enc::Identity => Decoder::Identity(sink),
            Enc::Zstd => {
                let mut d = zstd::stream::write::Decoder::new(sink).expect("zstd decoder");
                d.window_log_max(ZSTD_WINDOW_LOG).expect("window");
                Decoder::Zstd(d)
            }
            Enc::Br => Decoder::Br(Box::new(brotli::DecompressorWriter::new(sink, 64 * 1024))),
            Enc::Gzip => Decoder::Gzip(flate2::write::GzDecoder::new(sink)),
        }
    }

    /// Decodes `wire` and flushes: every row line whose bytes arrived is
    /// in the sink afterwards.
    fn write_all(&mut self, wire: &[u8]) {
        let r = match self {
            Decoder::Identity(s) => s.write_all(wire),
            Decoder::Zstd(d) => d.write_all(wire).and_then(|_| d.flush()),
            Decoder::Br(d) => d.write_all(wire).and_then(|_| d.flush()),
            Decoder::Gzip(d) => d.write_all(wire).and_then(|_| d.flush()),
        };
        r.expect("decode");
    }

    fn sink(&self) -> &LineSink {
        match self {
            Decoder::Identity(s) => s,
            Decoder::Zstd(d) => d.get_ref(),
            Decoder::Br(d) => d.get_ref(),
            Decoder::Gzip(d) => d.get_ref(),
        }
    }

    /// The sink, once the coded stream ended properly.
    fn finish(self) -> LineSink {
        match self {
            Decoder::Identity(s) => s,
            Decoder::Zstd(d) => d.finish().expect("complete zstd frame"),
            Decoder::Br(mut d) => {
                d.close().expect("complete brotli stream");
                d.into_inner().unwrap_or_else(|_| panic!("brotli stream"))
            }
            Decoder::Gzip(d) => d.finish().expect("complete gzip member"),
        }
    }
}

// ───────────────────────────── relay ─────────────────────────────

/// A bandwidth-limiting TCP proxy on loopback (see the module docs).
struct Relay {
    addr: SocketAddr,
    /// (SO_RCVBUF, SO_SNDBUF) the kernel granted on the relay's sockets.
    sockbufs: (usize, usize),
}

fn small_socket() -> Socket {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    s.set_recv_buffer_size(RELAY_SOCKBUF).expect("SO_RCVBUF");
    s.set_send_buffer_size(RELAY_SOCKBUF).expect("SO_SNDBUF");
    s
}

impl Relay {
    /// Listens on 127.0.0.1 and relays every connection to `upstream`,
    /// pacing upstream→client at `bytes_per_s`.
    fn start(upstream: SocketAddr, bytes_per_s: f64) -> Relay {
        let s = small_socket();
        let sockbufs = (
            s.recv_buffer_size().expect("SO_RCVBUF"),
            s.send_buffer_size().expect("SO_SNDBUF"),
        );
        let any: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        s.bind(&any.into()).expect("bind");
        s.listen(16).expect("listen");
        let listener: TcpListener = s.into();
        let addr = listener.local_addr().expect("relay addr");
        // Accepted sockets inherit the listener's buffer sizes.
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let _ = relay_connection(client, upstream, bytes_per_s);
                });
            }
        });
        Relay { addr, sockbufs }
    }
}

fn relay_connection(
    client: TcpStream,
    upstream: SocketAddr,
    bytes_per_s: f64,
) -> std::io::Result<()> {
    let up = small_socket();
    up.connect(&upstream.into())?;
    let up: TcpStream = up.into();
    up.set_nodelay(true)?;
    client.set_nodelay(true)?;
    // The request: unpaced.
    let (mut from_client, mut to_server) = (client.try_clone()?, up.try_clone()?);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(Shutdown::Write);
    });
    // The response: paced.
    let (mut from_server, mut to_client) = (up, client);
    let mut bucket = TokenBucket::new(bytes_per_s, RELAY_BURST);
    let mut buf = vec![0u8; RELAY_QUANTUM];
    loop {
        let n = match from_server.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        bucket.take(n as f64);
        to_client.write_all(&buf[..n])?;
    }
    to_client.shutdown(Shutdown::Write)
}

/// Tokens (bytes) accrue at `rate` up to `depth`; sending n bytes takes n
/// tokens, sleeping until they are there. A sleep that overshoots is paid
/// back by the tokens it accrued (up to `depth`).
struct TokenBucket {
    rate: f64,
    depth: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, depth: f64) -> TokenBucket {
        TokenBucket {
            rate,
            depth,
            tokens: depth,
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.depth);
        self.last = now;
    }

    fn take(&mut self, n: f64) {
        self.refill();
        while self.tokens < n {
            std::thread::sleep(Duration::from_secs_f64((n - self.tokens) / self.rate));
            self.refill();
        }
        self.tokens -= n;
    }
}

// ───────────────────────────── floors ─────────────────────────────

/// One codec in-process on the identity body of this run (one thread, no
/// I/O, CPU time of the thread; best of N).
struct Floor {
    enc: Enc,
    /// The server's Compressor fed the server's chunks (one flush each).
    compress_cpu_s: f64,
    compressed: u64,
    /// The same Compressor fed 1 MiB pieces (16× fewer flushes).
    compress_1mib_cpu_s: f64,
    compressed_1mib: u64,
    /// The client's decoder (64 KiB pieces, a flush after each) + line count.
    decode_cpu_s: f64,
    /// Wall time of what compression adds before the first row can be read:
    /// a new compressor, the open line and the first row chunk through it,
    /// and decoding both (median of 9).
    first_chunk_ms: f64,
}

impl Floor {
    fn measure(enc: Enc, body: &[u8], chunk_sizes: &[usize], reps: usize) -> Floor {
        let coding = enc.coding().expect("a coding");
        let compress = |sizes: &mut dyn Iterator<Item = usize>| {
            let mut c = Compression::default().compressor(coding);
            let mut wire = Vec::with_capacity(body.len() / 4);
            let t = cpu_s("thread-self");
            let mut off = 0;
            for n in sizes {
                wire.extend(c.chunk(&body[off..off + n]));
                off += n;
            }
            wire.extend(c.finish());
            (cpu_s("thread-self") - t, wire)
        };
        let mut f = Floor {
            enc,
            compress_cpu_s: f64::INFINITY,
            compressed: 0,
            compress_1mib_cpu_s: f64::INFINITY,
            compressed_1mib: 0,
            decode_cpu_s: f64::INFINITY,
            first_chunk_ms: f64::NAN,
        };
        let first = chunk_sizes[0] + chunk_sizes.get(1).copied().unwrap_or(0);
        let times: Vec<f64> = (0..9)
            .map(|_| {
                let t = Instant::now();
                let mut c = Compression::default().compressor(coding);
                let mut d = Decoder::new(enc, LineSink::new(t, false));
                d.write_all(&c.chunk(&body[..chunk_sizes[0]]));
                d.write_all(&c.chunk(&body[chunk_sizes[0]..first]));
                assert!(d.sink().first_row.is_some(), "{enc:?}: a first row");
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        f.first_chunk_ms = median(&times);
        assert_eq!(chunk_sizes.iter().sum::<usize>(), body.len());
        for _ in 0..reps {
            let (cpu, wire) = compress(&mut chunk_sizes.iter().copied());
            f.compress_cpu_s = f.compress_cpu_s.min(cpu);
            f.compressed = wire.len() as u64;
            let mib = 1 << 20;
            let (cpu, w) =
                compress(&mut (0..body.len().div_ceil(mib)).map(|i| mib.min(body.len() - i * mib)));
            f.compress_1mib_cpu_s = f.compress_1mib_cpu_s.min(cpu);
            f.compressed_1mib = w.len() as u64;
            let t = cpu_s("thread-self");
            let mut d = Decoder::new(enc, LineSink::new(Instant::now(), false));
            for piece in wire.chunks(64 * 1024) {
                d.write_all(piece);
            }
            let sink = d.finish();
            f.decode_cpu_s = f.decode_cpu_s.min(cpu_s("thread-self") - t);
            assert_eq!(sink.bytes, body.len() as u64, "{enc:?} round trip");
        }
        f
    }
}

// ───────────────────────────── report ─────────────────────────────

struct Report {
    quick: bool,
    date: String,
    load_start: String,
    load_end: String,
    total_s: f64,
    runs: Vec<Vec<Vec<Run>>>,
    ttfr: Vec<Vec<f64>>,
    floors: Vec<Floor>,
    body_bytes: u64,
    chunk_sizes: Vec<usize>,
    sockbufs: (usize, usize),
    reps: usize,
    slow_reps: usize,
    floor_reps: usize,
}

fn best_rate(runs: &[Run]) -> f64 {
    runs.iter().map(Run::rows_per_s).fold(0.0, f64::max)
}

/// µs per row over all runs.
fn per_row_us(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    let rows: u64 = runs.iter().map(|r| r.rows).sum();
    runs.iter().map(f).sum::<f64>() / rows as f64 * 1e6
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn krows(r: f64) -> String {
    format!("{:.0}k rows/s", r / 1e3)
}

fn tick(ok: bool) -> &'static str {
    if ok {
        "✅ holds"
    } else {
        "❌ missed"
    }
}

fn report(r: &Report) -> String {
    let cores: f64 = sh("nproc").parse().unwrap_or(1.0);
    let lo = &r.runs[0];
    let id_ttfr = median(&r.ttfr[0]);
    let mut table = String::from(
        "| encoding | body on the wire | ratio | server CPU/row | client CPU/row (decode + count) | loopback | 1 Gbit/s relay | 100 Mbit/s relay | first row (median) | Δ first row vs identity |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (ei, e) in ENCODINGS.iter().enumerate() {
        let wire = lo[ei][0].wire;
        let ratio = lo[ei][0].decoded as f64 / wire as f64;
        let rate = |li: usize| {
            let b = best_rate(&r.runs[li][ei]);
            let id = best_rate(&r.runs[li][0]);
            if ei == 0 {
                krows(b)
            } else {
                format!("{} ({:.2}×)", krows(b), b / id)
            }
        };
        let t = median(&r.ttfr[ei]);
        table += &format!(
            "| {} | {:.1} MB | {:.2}× | {:.3} µs | {:.3} µs | {} | {} | {} | {:.2} ms | {} |\n",
            e.token(),
            wire as f64 / 1e6,
            ratio,
            per_row_us(&lo[ei], |x| x.server_cpu_s),
            per_row_us(&lo[ei], |x| x.client_cpu_s),
            rate(0),
            rate(1),
            rate(2),
            t,
            if ei == 0 {
                "—".into()
            } else {
                format!("{:+.2} ms", t - id_ttfr)
            },
        );
    }

    // Targets.
    let best_over = |li: usize| {
        (1..ENCODINGS.len())
            .map(|ei| (best_rate(&r.runs[li][ei]), ENCODINGS[ei]))
            .fold((0.0, Enc::Identity), |a, b| if b.0 > a.0 { b } else { a })
    };
    let (b100, e100) = best_over(2);
    let (b1g, e1g) = best_over(1);
    let x100 = b100 / best_rate(&r.runs[2][0]);
    let x1g = b1g / best_rate(&r.runs[1][0]);
    let xzstd = best_rate(&lo[1]) / best_rate(&lo[0]);
    let worst_ttfr = (1..ENCODINGS.len())
        .map(|ei| (median(&r.ttfr[ei]) - id_ttfr, ENCODINGS[ei]))
        .fold((f64::NEG_INFINITY, Enc::Identity), |a, b| {
            if b.0 > a.0 {
                b
            } else {
                a
            }
        });
    let targets = [
        format!(
            "| C1 | 100 Mbit/s relay: the best encoding's rows/s ÷ identity's | {} {:.2}× ({} vs {}) | ≥ 4× {} |",
            e100.token(),
            x100,
            krows(b100),
            krows(best_rate(&r.runs[2][0])),
            tick(x100 >= 4.0)
        ),
        format!(
            "| C2 | 1 Gbit/s relay: the best encoding's rows/s ÷ identity's | {} {:.2}× ({} vs {}) | ≥ 1.5× {} |",
            e1g.token(),
            x1g,
            krows(b1g),
            krows(best_rate(&r.runs[1][0])),
            tick(x1g >= 1.5)
        ),
        format!(
            "| C3 | Plain loopback: zstd's rows/s ÷ identity's | {:.2}× ({} vs {}) | ≥ 0.6× {} |",
            xzstd,
            krows(best_rate(&lo[1])),
            krows(best_rate(&lo[0])),
            tick(xzstd >= 0.6)
        ),
        format!(
            "| C4 | Time to first row, loopback (median of {}): the largest difference to identity's {:.2} ms | {} {:+.2} ms | within 2 ms {} |",
            r.ttfr[0].len(),
            id_ttfr,
            worst_ttfr.1.token(),
            worst_ttfr.0,
            tick(worst_ttfr.0.abs() <= 2.0)
        ),
    ];

    // Details.
    let mut details = Vec::new();
    let rows = ROWS as f64;
    details.push(format!(
        "Data: {} rows, identity body {} B ({:.0} B/row) in {} HTTP chunks (mean {:.0} B, the producer's flushes); the same chunks compressed: {}",
        ROWS,
        r.body_bytes,
        r.body_bytes as f64 / rows,
        r.chunk_sizes.len(),
        r.body_bytes as f64 / r.chunk_sizes.len() as f64,
        (1..ENCODINGS.len())
            .map(|ei| {
                let x = &lo[ei][0];
                format!("{} {} chunks of {:.0} B on average", ENCODINGS[ei].token(), x.chunks, x.wire as f64 / x.chunks as f64)
            })
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let mut floor_lines = Vec::new();
    let id_server = per_row_us(&lo[0], |x| x.server_cpu_s);
    let id_client = per_row_us(&lo[0], |x| x.client_cpu_s);
    for f in &r.floors {
        let ei = ENCODINGS
            .iter()
            .position(|e| *e == f.enc)
            .expect("encoding");
        let c_us = f.compress_cpu_s / rows * 1e6;
        let d_us = f.decode_cpu_s / rows * 1e6;
        floor_lines.push(format!(
            "{}: compress {:.3} µs/row ({:.0} MB/s; {} B), with 1 MiB pieces {:.3} µs/row ({} B); decode + count {:.3} µs/row ({:.0} MB/s decoded); new compressor + open line + first row chunk compressed and decoded {:.2} ms (wall, median of 9)",
            f.enc.token(),
            c_us,
            r.body_bytes as f64 / f.compress_cpu_s / 1e6,
            f.compressed,
            f.compress_1mib_cpu_s / rows * 1e6,
            f.compressed_1mib,
            d_us,
            r.body_bytes as f64 / f.decode_cpu_s / 1e6,
            f.first_chunk_ms,
        ));
        if f.enc == Enc::Zstd {
            let s = per_row_us(&lo[ei], |x| x.server_cpu_s);
            let c = per_row_us(&lo[ei], |x| x.client_cpu_s);
            details.push(format!(
                "Loopback ceiling (one stream; server and client share the {cores} cores, so rows/s ≤ cores ÷ (server + client CPU per row)): identity {cores} ÷ ({id_server:.3} + {id_client:.3}) µs = {}, zstd {cores} ÷ ({s:.3} + {c:.3}) µs = {}, a ratio of {:.2}× (measured {xzstd:.2}×). zstd adds {:.3} µs/row to the server (its in-process floor: {c_us:.3}) and {:.3} µs/row to the client (floor {d_us:.3})",
                krows(cores / (id_server + id_client) * 1e6),
                krows(cores / (s + c) * 1e6),
                (id_server + id_client) / (s + c),
                s - id_server,
                c - id_client,
            ));
        }
    }
    details.push(format!(
        "Codec floors (in-process, one thread, the identity body of this run fed in the server's own chunks through the server's `Compressor`, thread CPU time, best of {}): {}",
        r.floor_reps,
        floor_lines.join("; ")
    ));
    for (li, (name, rate)) in LINKS.iter().enumerate() {
        let per = |f: &dyn Fn(&Run) -> f64| {
            ENCODINGS
                .iter()
                .enumerate()
                .map(|(ei, e)| format!("{} {:.3}", e.token(), per_row_us(&r.runs[li][ei], f)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut line = format!(
            "{name}: server CPU µs/row {}; client {}",
            per(&|x| x.server_cpu_s),
            per(&|x| x.client_cpu_s)
        );
        if let Some(rate) = rate {
            let id = &r.runs[li][0];
            let best = id
                .iter()
                .map(|x| x.wire as f64 / x.elapsed_s)
                .fold(0.0, f64::max);
            line += &format!(
                "; relay {}; identity's body arrived at {:.1} Mbit/s of the {:.0} Mbit/s link (best run)",
                per(&|x| x.relay_cpu_s),
                best * 8.0 / 1e6,
                rate / 1e6
            );
        }
        details.push(line);
    }
    for (li, (name, _)) in LINKS.iter().enumerate() {
        details.push(format!(
            "All runs, {name} (rows/s): {}",
            ENCODINGS
                .iter()
                .enumerate()
                .map(|(ei, e)| format!(
                    "{} {:?}",
                    e.token(),
                    r.runs[li][ei]
                        .iter()
                        .map(|x| x.rows_per_s().round() as u64)
                        .collect::<Vec<_>>()
                ))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    details.push(format!(
        "All first-row times (ms): {}",
        ENCODINGS
            .iter()
            .enumerate()
            .map(|(ei, e)| format!(
                "{} {:?}",
                e.token(),
                r.ttfr[ei]
                    .iter()
                    .map(|x| (x * 100.0).round() / 100.0)
                    .collect::<Vec<_>>()
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));

    format!(
        "<!-- compression -->\n## Compression (issue 13)\n\n\
         - Command: `scripts/bench.sh` (`cargo bench --features server --bench compression`){}\n\
         - Date: {}\n\
         - Machine: {} ({} vCPU); load average {} at start, {} at end; {:.0} s\n\n\
         | # | target | measured | verdict |\n|---|---|---|---|\n{}\n\n\
         {}\n\
         - **How measured.** The release `rowstream serve` (child process; open auth, audit log to /dev/null, default levels: zstd {}, brotli {}, gzip {}) streams `SELECT * FROM t` of the 1,000,000-row issue 7 table (shape `object`). The client, a raw HTTP/1.1 client in the bench process, sends `Accept-Encoding: <one coding>`, checks `Content-Encoding`, undoes the chunked framing and decodes the body with the zstd / brotli / flate2 crates (a flush after every piece read, as a streaming client does), counts the decoded lines and checks the `end` line (`reason: ok`, `row_count`, `bytes` = decoded bytes before it, rows read = 1,000,000). *Body on the wire*: the content-coded body bytes (without chunk framing); *ratio*: decoded ÷ wire. *Rows/s*: 1,000,000 ÷ (request sent → end line decoded), best of {} runs ({} at 100 Mbit/s), the four encodings alternating within each repetition (rotating order). *CPU/row*: user + system from `/proc/PID/stat` of the server process and `/proc/thread-self/stat` of the client thread over all loopback runs. *Relay*: a TCP proxy on 127.0.0.1 written in the bench (two threads per connection); the request passes unpaced, the response is read from the server in pieces of at most {} KiB and each piece waits for a token bucket (rate = the link, depth {} KiB) before it is written to the client; both relay sockets ask for {} KiB SO_RCVBUF/SO_SNDBUF before listen/connect (granted: {} / {} B), so the relay itself holds little; the server's own send buffer (kernel autotuning, not ours to set) still queues ahead of it, which delays nothing at a steady rate. *First row*: request sent → first row line decoded, loopback, the connection then dropped; median of {}, alternating. *Floors*: each codec in-process on this run's identity body, fed the server's own chunks through the server's `Compressor` (one flush per chunk), and the client's decoder, thread CPU time, best of N.\n\n\
         Details:\n\n{}\n\
         <!-- /compression -->\n",
        if r.quick { " (QUICK: smoke run)" } else { "" },
        r.date,
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").trim(),
        sh("nproc"),
        r.load_start,
        r.load_end,
        r.total_s,
        targets.join("\n"),
        table,
        Compression::default().zstd_level,
        Compression::default().brotli_quality,
        Compression::default().gzip_level,
        r.reps,
        r.slow_reps,
        RELAY_QUANTUM / 1024,
        RELAY_BURST as usize / 1024,
        RELAY_SOCKBUF / 1024,
        r.sockbufs.0,
        r.sockbufs.1,
        r.ttfr[0].len(),
        details.iter().map(|d| format!("- {d}\n")).collect::<String>(),
    )
}

fn write_section(section: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let (open, close) = ("<!-- compression -->", "<!-- /compression -->");
    let new = match (old.find(open), old.find(close)) {
        (Some(a), Some(b)) => format!(
            "{}{}{}",
            &old[..a],
            section.trim_end(),
            &old[b + close.len()..]
        ),
        _ => format!("{}\n\n{}", old.trim_end(), section),
    };
    std::fs::write(&path, new).expect("BENCHMARKS.md");
}

// ───────────────────────────── processes ─────────────────────────────

/// `rowstream serve` (release) as a child process.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(db: &Path) -> Server {
        let (child, addr) = proc_util::spawn_serve(BIN, db, &[]);
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
