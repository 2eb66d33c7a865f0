//! Issue 12's PostgreSQL benchmark, side by side in one run: rowstream
//! serving a PostgreSQL tenant against a hand-written tokio-postgres +
//! serde_json + SHA-256 handler and against `psql` writing
//! `COPY (SELECT row_to_json(t) FROM t) TO STDOUT`; peak RSS flat in the
//! result size; a resume at row 999,000 on another instance against one at
//! row 1,000; 32 concurrent streams over two instances. Writes its section
//! of BENCHMARKS.md (`<!-- postgres -->` … `<!-- /postgres -->`).
//!
//! Run by `scripts/bench.sh` (after the SQLite benchmark), or alone:
//! `cargo bench --features server --bench postgres`.
//! `ROWSTREAM_BENCH_QUICK=1` runs fewer repetitions and no 10M-row table.

#[path = "common/proc.rs"]
mod proc_util;
use proc_util::sh;

#[path = "../tests/pg_common/mod.rs"]
mod pg_common;

use std::process::{Child, Command, Stdio};
use std::time::Instant;

const QUERY: &str = "SELECT * FROM t1m ORDER BY id";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--serve-baseline") {
        baseline::serve(&args[i + 1]);
        return;
    }
    let quick = std::env::var("ROWSTREAM_BENCH_QUICK").as_deref() == Ok("1");
    let reps = if quick { 2 } else { 5 };
    let started = Instant::now();
    let load_start = sh("cut -d' ' -f1-3 /proc/loadavg");
    let pg = pg_common::PgServer::start();
    let big = if quick { 2_000_000 } else { 10_000_000 };
    let url = pg.database(
        "bench",
        &format!(
            "CREATE TABLE t1m (id bigint PRIMARY KEY, name text NOT NULL, email text, \
               score double precision, n integer, flag boolean); \
             INSERT INTO t1m SELECT g, 'name ' || g, 'user' || g || '@example.com', g / 7.0, \
               g % 1000, g % 3 = 0 FROM generate_series(1, 1000000) g; \
             CREATE TABLE t100k AS SELECT * FROM t1m WHERE id <= 100000; \
             ALTER TABLE t100k ADD PRIMARY KEY (id); \
             CREATE TABLE tbig (LIKE t1m INCLUDING ALL); \
             INSERT INTO tbig SELECT g, 'name ' || g, 'user' || g || '@example.com', g / 7.0, \
               g % 1000, g % 3 = 0 FROM generate_series(1, {big}) g;"
        ),
    );
    pg.psql("bench", "VACUUM ANALYZE");
    let cluster_db = "bench_cluster";
    pg.psql("postgres", &format!("CREATE DATABASE {cluster_db}"));
    let cluster = pg.admin_url(cluster_db);
    let mut md = Vec::<String>::new();
    let mut notes = Vec::<String>::new();

    // 1. Throughput, 1M rows with the digest, alternating.
    let rs = Server::rowstream(&url, None, "a");
    let base = Server::baseline(&url);
    let body = serde_json::json!({ "query": QUERY }).to_string();
    let (mut t_rs, mut t_base, mut t_copy) = (Vec::new(), Vec::new(), Vec::new());
    let (cpu_rs0, cpu_base0) = (rs.cpu_s(), base.cpu_s());
    // PostgreSQL's own CPU while each client reads: the backend producing
    // the rows is the floor both are bound by.
    let (mut pg_rs, mut pg_base) = (0.0, 0.0);
    for _ in 0..reps {
        let c0 = postgres_cpu_s();
        t_rs.push(curl_time(&rs.url("/v1/query/stream"), &body, 1_000_000));
        let c1 = postgres_cpu_s();
        t_base.push(curl_time(&base.url("/q"), &body, 1_000_000));
        pg_rs += c1 - c0;
        pg_base += postgres_cpu_s() - c1;
        let t = Instant::now();
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                &pg.port.to_string(),
                "-U",
                "reader",
                "-d",
                "bench",
            ])
            .args([
                "-c",
                "COPY (SELECT row_to_json(t) FROM (SELECT * FROM t1m ORDER BY id) t) TO STDOUT",
            ])
            .stdout(Stdio::null())
            .status()
            .expect("psql");
        assert!(out.success());
        t_copy.push(t.elapsed().as_secs_f64());
    }
    let cpu_rs = (rs.cpu_s() - cpu_rs0) / (reps as f64 * 1e6) * 1e6;
    let cpu_base = (base.cpu_s() - cpu_base0) / (reps as f64 * 1e6) * 1e6;
    let best = |v: &[f64]| v.iter().cloned().fold(f64::INFINITY, f64::min);
    let (r_rs, r_base, r_copy) = (1e6 / best(&t_rs), 1e6 / best(&t_base), 1e6 / best(&t_copy));
    md.push(format!(
        "| P1 | 1 stream, 1M rows + SHA-256 | {:.0}k rows/s | handler {:.0}k rows/s · psql COPY {:.0}k rows/s | **{:.2}×** handler | ≥ 1.2× {} |",
        r_rs / 1e3,
        r_base / 1e3,
        r_copy / 1e3,
        r_rs / r_base,
        tick(r_rs / r_base >= 1.2)
    ));
    let (pg_rs, pg_base) = (pg_rs / reps as f64, pg_base / reps as f64);
    notes.push(format!(
        "P1: server CPU per row {cpu_rs:.3} µs (rowstream) vs {cpu_base:.3} µs (handler), over {reps} runs each; times (s) rowstream {t_rs:.3?}, handler {t_base:.3?}, COPY {t_copy:.3?}"
    ));
    notes.push(format!(
        "P1: PostgreSQL's own CPU per row while serving them: {pg_rs:.3} µs (to rowstream) vs {pg_base:.3} µs (to the handler), i.e. one backend at 100% of a core delivers at most {:.0}k / {:.0}k rows/s: the ceiling of any client that reads one query over one connection",
        1e3 / pg_rs.max(1e-9),
        1e3 / pg_base.max(1e-9)
    ));
    drop(base);
    drop(rs);

    // 2. Peak RSS, 100k vs the big table, each a fresh process.
    let rss = |table: &str, rows: u64| {
        let s = Server::rowstream(&url, None, "r");
        let b = serde_json::json!({ "query": format!("SELECT * FROM {table} ORDER BY id") })
            .to_string();
        curl_time(&s.url("/v1/query/stream"), &b, rows);
        s.status_kib("VmHWM")
    };
    let (small, large) = (rss("t100k", 100_000), rss("tbig", big));
    let apart = (large as f64 - small as f64) / 1024.0;
    md.push(format!(
        "| P2 | peak RSS, {}M vs 100k rows | {:.1} vs {:.1} MiB ({apart:+.1} MiB) | — | — | < 8 MiB apart {} |",
        big / 1_000_000,
        large as f64 / 1024.0,
        small as f64 / 1024.0,
        tick(apart.abs() < 8.0)
    ));

    // 3. Resume on another instance: at 999,000 vs at 1,000.
    let a = Server::rowstream(&url, Some(&cluster), "a");
    let b = Server::rowstream(&url, Some(&cluster), "b");
    let (cursor, digests) = full_with_digests(&a.url("/v1/query/stream"), &body, &[1_000, 999_000]);
    let (mut early, mut late) = (Vec::new(), Vec::new());
    for _ in 0..reps.max(5) {
        for (at, v) in [(1_000u64, &mut early), (999_000, &mut late)] {
            let resume = serde_json::json!({"cursor": cursor, "after_rows": at, "prefix_hash": digests[&at]}).to_string();
            v.push(curl_first_byte(&b.url("/v1/query/stream"), &resume));
        }
    }
    let med = |v: &mut Vec<f64>| {
        v.sort_by(|x, y| x.partial_cmp(y).unwrap());
        v[v.len() / 2]
    };
    let (e, l) = (med(&mut early), med(&mut late));
    md.push(format!(
        "| P3 | resume on another instance at 999,000 vs at 1,000 (first byte) | {:.2} ms | {:.2} ms | {:.2}× | ≤ 2× {} |",
        l * 1e3,
        e * 1e3,
        l / e,
        tick(l / e <= 2.0)
    ));
    drop(a);
    drop(b);

    // 4. 32 concurrent streams over two instances.
    let a = Server::rowstream(&url, Some(&cluster), "a");
    let b = Server::rowstream(&url, Some(&cluster), "b");
    let t = Instant::now();
    let kids: Vec<Child> = (0..32)
        .map(|i| {
            let s = if i % 2 == 0 { &a } else { &b };
            curl_spawn(&s.url("/v1/query/stream"), &body)
        })
        .collect();
    for mut k in kids {
        assert!(k.wait().expect("curl").success());
    }
    let secs = t.elapsed().as_secs_f64();
    let (ra, rb) = (a.status_kib("VmHWM"), b.status_kib("VmHWM"));
    let worst = ra.max(rb) as f64 / 1024.0;
    md.push(format!(
        "| P4 | 32 streams over 2 instances, peak RSS each | {:.1} / {:.1} MiB | — | {:.0}k rows/s aggregate | ≤ 64 MiB {} |",
        ra as f64 / 1024.0,
        rb as f64 / 1024.0,
        32e6 / secs / 1e3,
        tick(worst <= 64.0)
    ));
    drop(a);
    drop(b);

    let section = format!(
        "<!-- postgres -->\n## PostgreSQL (issue 12)\n\n\
         - Command: `scripts/bench.sh` (`cargo bench --features server --bench postgres`){}\n\
         - Machine: {} ({} vCPU); PostgreSQL {} on loopback (fsync off), started by the bench\n\
         - Load average: {} at start, {} at end; {:.0} s\n\n\
         | # | item | rowstream | alternatives | ratio | target |\n|---|---|---|---|---|---|\n{}\n\n\
         - Data: `t1m(id bigint PRIMARY KEY, name text, email text, score double precision, n integer, flag boolean)`, 1,000,000 rows; the query `{QUERY}`. Streams are read by `curl -N` into /dev/null.\n\
         - Handler: axum + tokio-postgres (`query_raw`, rows as they arrive) + serde_json (one `Map` per row) + SHA-256 per row line, 64 KiB chunks (`benches/postgres.rs`, `mod baseline`).\n\
         - P3: a full stream from instance a records the digests at 1,000 and 999,000 rows; resumes alternate on instance b (median time to the first byte, which the server sends after verifying the prefix).\n\
         {}\n<!-- /postgres -->\n",
        if quick { " (QUICK: smoke run)" } else { "" },
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").trim(),
        sh("nproc"),
        pg.psql("postgres", "SHOW server_version"),
        load_start,
        sh("cut -d' ' -f1-3 /proc/loadavg"),
        started.elapsed().as_secs_f64(),
        md.join("\n"),
        notes.iter().map(|n| format!("- {n}")).collect::<Vec<_>>().join("\n"),
    );
    println!("{section}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let new = match (
        old.find("<!-- postgres -->"),
        old.find("<!-- /postgres -->"),
    ) {
        (Some(a), Some(b)) => format!("{}{}{}", &old[..a], section.trim_end(), &old[b + 18..]),
        _ => format!("{}\n{}", old.trim_end(), section),
    };
    if !quick {
        std::fs::write(&path, new).expect("BENCHMARKS.md");
    }
}

fn tick(ok: bool) -> &'static str {
    if ok {
        "✅"
    } else {
        "❌"
    }
}

/// CPU seconds (user + system, with reaped children) of every `postgres`
/// process: the postmaster and its backends.
fn postgres_cpu_s() -> f64 {
    let mut ticks = 0.0;
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if !head.ends_with("(postgres") {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        ticks += f.get(11..15).map_or(0.0, |f| {
            f.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
        });
    }
    ticks / 100.0
}

fn curl_spawn(url: &str, body: &str) -> Child {
    Command::new("curl")
        .args([
            "-s",
            "-N",
            "-o",
            "/dev/null",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            url,
        ])
        .spawn()
        .expect("curl")
}

/// Seconds to read the whole stream; checks its `end` line.
fn curl_time(url: &str, body: &str, rows: u64) -> f64 {
    let t = Instant::now();
    let out = Command::new("sh")
        .args([
            "-c",
            &format!(
                "curl -s -N -H 'Content-Type: application/json' -d '{body}' {url} | tail -c 400"
            ),
        ])
        .output()
        .expect("curl");
    let secs = t.elapsed().as_secs_f64();
    let tail = String::from_utf8_lossy(&out.stdout);
    assert!(
        tail.contains(&format!("\"row_count\":{rows}")),
        "incomplete stream from {url}: {tail}"
    );
    secs
}

/// Seconds to the first byte of the body.
fn curl_first_byte(url: &str, body: &str) -> f64 {
    let out = Command::new("curl")
        .args([
            "-s",
            "-N",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_starttransfer}",
        ])
        .args(["-H", "Content-Type: application/json", "-d", body, url])
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (code, t) = text.split_once(' ').expect("curl -w");
    assert_eq!(code, "200", "resume refused");
    t.trim().parse().expect("time")
}

/// Reads a whole stream; returns its cursor and the prefix digests at `at`.
fn full_with_digests(
    url: &str,
    body: &str,
    at: &[u64],
) -> (String, std::collections::HashMap<u64, String>) {
    use rowstream::PrefixHasher;
    use std::io::BufRead;
    let mut child = Command::new("curl")
        .args([
            "-s",
            "-N",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            url,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("curl");
    let reader = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut hasher = PrefixHasher::new();
    let mut cursor = String::new();
    let mut out = std::collections::HashMap::new();
    for line in reader.lines() {
        let line = line.expect("line");
        if line.starts_with("{\"row\"") {
            hasher.update_line(line.as_bytes());
            if at.contains(&hasher.rows()) {
                out.insert(hasher.rows(), hasher.hex_digest());
            }
        } else if line.starts_with("{\"open\"") {
            let v: serde_json::Value = serde_json::from_str(&line).expect("open");
            cursor = v["open"]["cursor"].as_str().expect("resumable").to_owned();
        }
    }
    child.wait().expect("curl");
    (cursor, out)
}

/// A server child process on the port it printed; killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(mut cmd: Command) -> Server {
        use std::io::BufRead;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("server");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("listening line");
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected {line:?}"))
            .to_owned();
        Server { child, addr }
    }

    fn rowstream(url: &str, cluster: Option<&str>, id: &str) -> Server {
        let mut c = Command::new(env!("CARGO_BIN_EXE_rowstream"));
        c.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            url,
            "--audit-log",
            "/dev/null",
        ])
        .args([
            "--instance-id",
            id,
            "--set",
            "stream.snapshot.ttl_ms=600000",
        ]);
        if let Some(cl) = cluster {
            c.args(["--cluster", cl]);
        }
        Server::start(c)
    }

    fn baseline(url: &str) -> Server {
        let mut c = Command::new(std::env::current_exe().expect("exe"));
        c.args(["--serve-baseline", url]);
        Server::start(c)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn status_kib(&self, key: &str) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default()
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    }

    fn cpu_s(&self) -> f64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
            f.iter().filter_map(|x| x.parse::<f64>().ok()).sum()
        });
        ticks / 100.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hand-written handler users would write: axum + tokio-postgres +
/// serde_json + SHA-256, rows streamed as they arrive.
mod baseline {
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use axum::extract::State;
    use axum::response::Response;
    use axum::routing::post;
    use axum::Router;
    use bytes::Bytes;
    use http_body::Frame;
    use sha2::{Digest, Sha256};
    use tokio_postgres::{Client, NoTls};

    struct ChanBody(tokio::sync::mpsc::Receiver<Bytes>);

    impl http_body::Body for ChanBody {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
        }
    }

    pub fn serve(url: &str) {
        let url = url.to_owned();
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                println!("listening on http://{}", listener.local_addr().unwrap());
                let app = Router::new()
                    .route("/q", post(handler))
                    .with_state(Arc::new(url));
                axum::serve(listener, app).await.expect("serve");
            });
    }

    async fn handler(State(url): State<Arc<String>>, body: Bytes) -> Response {
        let req: serde_json::Value = serde_json::from_slice(&body).expect("json");
        let sql = req["query"].as_str().expect("query").to_owned();
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        tokio::spawn(async move {
            let (client, conn) = tokio_postgres::connect(&url, NoTls).await.expect("connect");
            tokio::spawn(conn);
            let _ = produce(&client, &sql, &tx).await;
        });
        Response::builder()
            .header("content-type", "application/x-ndjson")
            .body(axum::body::Body::new(ChanBody(rx)))
            .unwrap()
    }

    async fn produce(
        client: &Client,
        sql: &str,
        tx: &tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<(), tokio_postgres::Error> {
        use futures_util::StreamExt;
        let rows = client.query_raw(sql, std::iter::empty::<i32>()).await?;
        futures_util::pin_mut!(rows);
        let mut hasher = Sha256::new();
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut n = 0u64;
        buf.extend_from_slice(b"{\"open\":{}}\n");
        while let Some(row) = rows.next().await {
            let row = row?;
            let mut m = serde_json::Map::new();
            m.insert("id".into(), row.get::<_, i64>(0).into());
            m.insert("name".into(), row.get::<_, String>(1).into());
            m.insert("email".into(), row.get::<_, Option<String>>(2).into());
            m.insert("score".into(), row.get::<_, Option<f64>>(3).into());
            m.insert("n".into(), row.get::<_, Option<i32>>(4).into());
            m.insert("flag".into(), row.get::<_, Option<bool>>(5).into());
            let start = buf.len();
            buf.extend_from_slice(b"{\"row\":");
            serde_json::to_writer(&mut buf, &m).expect("json");
            buf.push(b'}');
            hasher.update(&buf[start..]);
            buf.push(b'\n');
            n += 1;
            if buf.len() >= 64 * 1024 {
                if tx
                    .send(Bytes::from(std::mem::take(&mut buf)))
                    .await
                    .is_err()
                {
                    return Ok(());
                }
                buf.reserve(64 * 1024);
            }
        }
        let hash: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        buf.extend_from_slice(
            format!(
                "{{\"end\":{{\"reason\":\"ok\",\"row_count\":{n},\"prefix_hash\":\"{hash}\"}}}}\n"
            )
            .as_bytes(),
        );
        let _ = tx.send(Bytes::from(buf)).await;
        Ok(())
    }
}
