//! Hostile input: each attempt gets a structured error, nothing runs that
//! should not, and the server keeps serving everyone else.
//!
//! Cursor probing across tenants/principals (byte-identical `404`s, timing
//! distributions reported), bad bearer tokens and JWTs, SQL the read path
//! must refuse (beyond `server_readonly.rs`), query and memory bombs against
//! the limits of `server::limits`, parameter type confusion, slowloris and
//! oversized bodies, invalid UTF-8 and NUL bytes.
//!
//! `ROWSTREAM_LONG=1` makes 10,000 timing probes per class (default 500).
#![cfg(feature = "server")]

mod server_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use rowstream::server::limits::QueryLimits;
use rowstream::server::sign_hs256;
use serde_json::json;
use server_common::*;

/// A keep-alive HTTP/1.1 connection for many small requests.
struct KeepAlive {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl KeepAlive {
    fn new(addr: SocketAddr) -> KeepAlive {
        let w = TcpStream::connect(addr).unwrap();
        w.set_nodelay(true).unwrap();
        w.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        KeepAlive { w, r }
    }

    /// Sends a POST, returns (status, body, time to the whole answer).
    fn post(&mut self, path: &str, body: &str, token: &str) -> (u16, Vec<u8>, Duration) {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let t = Instant::now();
        self.w.write_all(req.as_bytes()).unwrap();
        let mut line = String::new();
        self.r.read_line(&mut line).unwrap();
        let status: u16 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            self.r.read_line(&mut h).unwrap();
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    len = v.trim().parse().unwrap();
                }
            }
        }
        let mut out = vec![0; len];
        self.r.read_exact(&mut out).unwrap();
        (status, out, t.elapsed())
    }
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let (m, p99) = (pct(&v, 0.5), pct(&v, 0.99));
    eprintln!(
        "reliability_hostile: {name:<34} n={:>5} median {:>7.1} µs  p99 {:>7.1} µs",
        v.len(),
        m.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    (m, p99)
}

fn still_serving(addr: SocketAddr, token: Option<&str>) {
    let r = post(
        addr,
        "/v1/query/stream",
        r#"{"query":"SELECT count(*) AS n FROM t"}"#,
        token,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.lines().last().unwrap().contains(r#""reason":"ok""#));
}

fn two_tenants() -> (TempDir, TestServer) {
    let dir = TempDir::new();
    let a = dir.path("a.sqlite");
    let b = dir.path("b.sqlite");
    drop(make_db(&a, 100));
    drop(make_db(&b, 7));
    let ts = TestServer::start(
        builder_for(&a)
            .tenant("other", &b)
            .token("alice", "default", "alice")
            .token("bob", "default", "bob")
            .token("carol", "other", "carol")
            .jwt_secret(b"jwt-secret".to_vec()),
    );
    (dir, ts)
}

fn resume_body(cursor: &str) -> String {
    json!({"cursor": cursor, "after_rows": 0, "prefix_hash": "0".repeat(64)}).to_string()
}

#[test]
fn foreign_cursors_are_indistinguishable_from_unknown_ones() {
    let (_dir, ts) = two_tenants();
    let addr = ts.addr();
    let mut s = open_stream(addr, r#"{"query":"SELECT * FROM t"}"#, Some("alice"));
    let open = j(&s.next_line().unwrap());
    let cursor = open["open"]["cursor"].as_str().unwrap().to_owned();
    drop(s);
    let unknown = "ab".repeat(24);
    // Byte-identical bodies, for resume and cancel, whoever asks.
    let mut bodies = Vec::new();
    for (tok, cur) in [
        ("bob", &cursor),
        ("carol", &cursor),
        ("alice", &unknown),
        ("bob", &unknown),
    ] {
        let r = post(addr, "/v1/query/stream", &resume_body(cur), Some(tok));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (404, "cursor_not_found")
        );
        bodies.push(("resume", r.body));
        let r = post(
            addr,
            "/v1/query/stream/cancel",
            &json!({ "cursor": cur }).to_string(),
            Some(tok),
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (404, "cursor_not_found")
        );
        bodies.push(("cancel", r.body));
    }
    for kind in ["resume", "cancel"] {
        let same: Vec<_> = bodies.iter().filter(|(k, _)| *k == kind).collect();
        assert!(
            same.windows(2).all(|w| w[0].1 == w[1].1),
            "{kind} bodies differ"
        );
    }
    // Malformed cursors: still the same 404, never a different code.
    for cur in ["", "zz", &"g".repeat(48), &"a".repeat(4096)] {
        let r = post(
            addr,
            "/v1/query/stream/cancel",
            &json!({ "cursor": cur }).to_string(),
            Some("bob"),
        );
        assert_eq!(r.status, 404, "{cur:?}: {}", r.text());
        assert_eq!(r.body, bodies[1].1);
    }
    // A cursor in an array is not a cancel body (serde would read it).
    let r = post(
        addr,
        "/v1/query/stream/cancel",
        &json!([cursor]).to_string(),
        Some("alice"),
    );
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_request"));
    // The foreign cancels did not touch alice's cursor.
    let r = post(
        addr,
        "/v1/query/stream",
        &resume_body(&cursor),
        Some("alice"),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "prefix_hash_mismatch")
    );

    // Timing over many probes, classes interleaved on keep-alive connections.
    let n = if long_run() { 10_000 } else { 500 };
    let mut ka_bob = KeepAlive::new(addr);
    let mut ka_carol = KeepAlive::new(addr);
    // Each class is compared with unknown-cursor probes on the same
    // connection and token (connections are scheduled differently).
    let (mut foreign_p, mut foreign_t, mut unknown_t) = (Vec::new(), Vec::new(), Vec::new());
    let mut unknown_carol = Vec::new();
    let (mut c_foreign, mut c_unknown) = (Vec::new(), Vec::new());
    let cancel_foreign = json!({ "cursor": cursor }).to_string();
    let cancel_unknown = json!({ "cursor": unknown }).to_string();
    let (rf, ru) = (resume_body(&cursor), resume_body(&unknown));
    // Warm-up.
    for _ in 0..50 {
        ka_bob.post("/v1/query/stream", &ru, "bob");
        ka_bob.post("/v1/query/stream", &rf, "bob");
    }
    for i in 0..n {
        let order = i % 2 == 0;
        for step in 0..2 {
            if (step == 0) == order {
                let (st, _, t) = ka_bob.post("/v1/query/stream", &rf, "bob");
                assert_eq!(st, 404);
                foreign_p.push(t);
                let (st, _, t) = ka_carol.post("/v1/query/stream", &rf, "carol");
                assert_eq!(st, 404);
                foreign_t.push(t);
                let (st, _, t) = ka_bob.post("/v1/query/stream/cancel", &cancel_foreign, "bob");
                assert_eq!(st, 404);
                c_foreign.push(t);
            } else {
                let (st, _, t) = ka_bob.post("/v1/query/stream", &ru, "bob");
                assert_eq!(st, 404);
                unknown_t.push(t);
                let (st, _, t) = ka_carol.post("/v1/query/stream", &ru, "carol");
                assert_eq!(st, 404);
                unknown_carol.push(t);
                let (st, _, t) = ka_bob.post("/v1/query/stream/cancel", &cancel_unknown, "bob");
                assert_eq!(st, 404);
                c_unknown.push(t);
            }
        }
    }
    let (m_fp, _) = summary("resume, other principal's cursor", foreign_p);
    let (m_ft, _) = summary("resume, other tenant's cursor", foreign_t);
    let (m_u, _) = summary("resume, unknown cursor", unknown_t);
    let (m_uc, _) = summary("resume, unknown cursor (carol's conn)", unknown_carol);
    let (m_cf, _) = summary("cancel, other principal's cursor", c_foreign);
    let (m_cu, _) = summary("cancel, unknown cursor", c_unknown);
    // Generous bound: loopback HTTP noise is far larger than a map lookup.
    let close = |a: Duration, b: Duration| {
        let (a, b) = (a.as_secs_f64(), b.as_secs_f64());
        (a - b).abs() <= 0.5 * a.max(b) + 100e-6
    };
    assert!(
        close(m_fp, m_u) && close(m_ft, m_uc),
        "resume medians differ"
    );
    assert!(close(m_cf, m_cu), "cancel medians differ");
    still_serving(addr, Some("alice"));
}

#[test]
fn bad_tokens_and_jwts_get_401_and_nothing_else() {
    let (_dir, ts) = two_tenants();
    let addr = ts.addr();
    let secret = b"jwt-secret";
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let good = sign_hs256(
        &json!({"sub":"dan","tenant":"default","exp": now_s + 60}),
        secret,
    );
    let mut tampered = good.clone().into_bytes();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let (h, rest) = good.split_once('.').unwrap();
    let (p, _sig) = rest.split_once('.').unwrap();
    let forged_tenant = {
        // Payload swapped for another tenant, signature kept.
        use base64::Engine;
        let p2 = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!({"sub":"dan","tenant":"other","exp": now_s + 60}).to_string());
        format!("{h}.{p2}.{}", good.rsplit('.').next().unwrap())
    };
    let alg_none = {
        use base64::Engine;
        let e = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!("{}.{p}.", e(r#"{"alg":"none","typ":"JWT"}"#))
    };
    let bad: Vec<(String, String)> = vec![
        ("tampered static".into(), "alicf".into()),
        ("truncated static".into(), "alic".into()),
        ("prefixed static".into(), "xalice".into()),
        ("garbage".into(), "zz!!%00\\\"'".into()),
        ("oversized static".into(), "a".repeat(16 * 1024)),
        ("tampered jwt".into(), tampered),
        ("truncated jwt".into(), good[..good.len() - 5].to_string()),
        ("jwt without signature".into(), format!("{h}.{p}")),
        ("alg none".into(), alg_none),
        ("forged tenant claim".into(), forged_tenant),
        (
            "expired jwt".into(),
            sign_hs256(
                &json!({"sub":"dan","tenant":"default","exp": now_s - 5}),
                secret,
            ),
        ),
        (
            "wrong secret".into(),
            sign_hs256(
                &json!({"sub":"dan","tenant":"default","exp": now_s + 60}),
                b"nope",
            ),
        ),
        (
            "tenant not served".into(),
            sign_hs256(
                &json!({"sub":"dan","tenant":"nobody","exp": now_s + 60}),
                secret,
            ),
        ),
        (
            "tenant names a file".into(),
            sign_hs256(
                &json!({"sub":"dan","tenant":"../b.sqlite","exp": now_s + 60}),
                secret,
            ),
        ),
        (
            "not yet valid".into(),
            sign_hs256(
                &json!({"sub":"dan","tenant":"default","nbf": now_s + 3600}),
                secret,
            ),
        ),
    ];
    for (what, tok) in &bad {
        for path in [
            "/v1/query/stream",
            "/v1/query/stream/cancel",
            "/v1/ingest/stream",
        ] {
            let r = post(addr, path, r#"{"query":"SELECT * FROM t"}"#, Some(tok));
            assert!(
                r.text().starts_with('{'),
                "{what} on {path}: {} {}",
                r.status,
                r.text()
            );
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (401, "unauthorized"),
                "{what} on {path}: {}",
                r.text()
            );
        }
    }
    // Control bytes in the header: refused by the HTTP layer (400).
    let r = send(
        addr,
        "POST",
        "/v1/query/stream",
        br#"{"query":"SELECT 1"}"#,
        &[("Authorization", "Bearer alice\u{7f}")],
    );
    assert_eq!(r.status, 400);
    // A huge header is refused by the HTTP layer before any handler.
    let huge = format!("Bearer {}", "a".repeat(2 * 1024 * 1024));
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(
        format!("POST /v1/query/stream HTTP/1.1\r\nHost: x\r\nAuthorization: {huge}\r\nContent-Length: 2\r\n\r\n{{}}")
            .as_bytes(),
    );
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || text.starts_with("HTTP/1.1 431") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    // The good JWT reads its own tenant; a JWT for `other` reads only `other`.
    let r = post(
        addr,
        "/v1/query/stream",
        r#"{"query":"SELECT count(*) AS n FROM t"}"#,
        Some(&good),
    );
    assert_eq!(row_lines(&r.lines()), [r#"{"row":{"n":100}}"#]);
    let other = sign_hs256(
        &json!({"sub":"dan","tenant":"other","exp": now_s + 60}),
        secret,
    );
    let r = post(
        addr,
        "/v1/query/stream",
        r#"{"query":"SELECT count(*) AS n FROM t"}"#,
        Some(&other),
    );
    assert_eq!(row_lines(&r.lines()), [r#"{"row":{"n":7}}"#]);
    assert_eq!(ts.server.stats().slots_in_use, 0);
    still_serving(addr, Some("bob"));
}

fn journal_and_schema(db: &std::path::Path) -> (String, i64, String) {
    let c = rusqlite::Connection::open(db).unwrap();
    let jm: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    let schema: String = c
        .query_row(
            "SELECT group_concat(sql, ';') FROM sqlite_schema",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (jm, n, schema)
}

#[test]
fn sql_beyond_the_write_forms_is_refused_and_not_run() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    drop(make_db(&db, 10));
    let before = journal_and_schema(&db);
    let ts = TestServer::start(builder_for(&db));
    let addr = ts.addr();
    let other = dir.path("x.sqlite");
    let uri = format!("file:{}?mode=rwc", other.display());
    // Refused before anything runs: 400 with a code of the protocol.
    let refused = [
        format!("ATTACH DATABASE '{uri}' AS x"),
        format!("ATTACH '{}' AS x; SELECT 1", other.display()),
        "SELECT 1; ATTACH ':memory:' AS m".to_string(),
        "SELECT LOAD_EXTENSION('/nonexistent')".to_string(),
        "SELECT \"load_extension\"('/nonexistent', 'entry')".to_string(),
        "SELECT * FROM t WHERE load_extension('x') IS NULL".to_string(),
        "SELECT 1 /* ; */ ; DELETE FROM t".to_string(),
        "SELECT 1 -- \n; DROP TABLE t".to_string(),
        "SELECT 1;;SELECT 2".to_string(),
        "PRAGMA cache_size = 1".to_string(),
        "PRAGMA temp_store_directory = '/tmp'".to_string(),
        "PRAGMA trusted_schema = 1".to_string(),
        "PRAGMA mmap_size = 1000000".to_string(),
        "PRAGMA case_sensitive_like = 1".to_string(),
        "PRAGMA query_only".to_string(),
        "PRAGMA wal_checkpoint".to_string(),
        "PRAGMA shrink_memory".to_string(),
        "PRAGMA incremental_vacuum".to_string(),
        "CREATE TEMP TRIGGER tr AFTER INSERT ON t BEGIN SELECT 1; END".to_string(),
        "SELECT 1\u{0}; DELETE FROM t".to_string(),
        "\u{0}DELETE FROM t".to_string(),
    ];
    for sql in &refused {
        let r = query(addr, sql);
        assert_eq!(r.status, 400, "{sql:?}: {}", r.text());
        let code = r.error_code();
        assert!(
            ["stream_unsupported_statement", "query_error", "bad_request"].contains(&code.as_str()),
            "{sql:?}: {code}"
        );
        assert_eq!(
            journal_and_schema(&db),
            before,
            "{sql:?} changed the database"
        );
    }
    // Table-valued pragmas take a schema, not a value; the rest do not
    // exist in this build. They may start a stream, but end in an error
    // line and change nothing.
    for sql in [
        "SELECT * FROM pragma_journal_mode('delete')",
        "SELECT * FROM pragma_user_version(7)",
        "SELECT fts3_tokenizer('simple', x'0000000000000000')",
        "SELECT * FROM sqlite_dbpage",
        "SELECT writefile('/tmp/x', 'y')",
        "SELECT readfile('/etc/passwd')",
    ] {
        let r = query(addr, sql);
        let last = r.lines().last().cloned().unwrap_or_default();
        assert!(
            r.status == 400 || (r.status == 200 && last.contains(r#""reason":"error""#)),
            "{sql}: {}",
            r.text()
        );
        assert_eq!(
            journal_and_schema(&db),
            before,
            "{sql:?} changed the database"
        );
    }
    assert!(!other.exists(), "ATTACH created a file");
    assert_eq!(ts.server.stats().slots_in_use, 0);
    still_serving(addr, None);
}

fn last_two(r: &Resp) -> (serde_json::Value, serde_json::Value) {
    let lines = r.lines();
    let n = lines.len();
    assert!(n >= 2, "{}", r.text());
    (j(&lines[n - 2]), j(&lines[n - 1]))
}

#[test]
fn query_and_memory_bombs_end_with_resource_limit_exceeded() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    drop(make_db(&db, 200));
    let ts = TestServer::start(builder_for(&db).query_limits(QueryLimits {
        max_step_ms: 300,
        max_value_bytes: 1 << 20,
        ..QueryLimits::default()
    }));
    let addr = ts.addr();
    let bombs = [
        // CPU: a recursive CTE that never yields a row.
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c",
        // CPU: a cartesian product behind an aggregate.
        "SELECT count(*) FROM t a, t b, t c, t d",
        // CPU: sorting an endless CTE.
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c ORDER BY random() LIMIT 1",
        // Memory: values past the length limit.
        "SELECT randomblob(1e9)",
        "SELECT length(zeroblob(1e9))",
        "SELECT replace(hex(zeroblob(600000)), '0', '00')",
        "WITH RECURSIVE c(s) AS (SELECT 'x' UNION ALL SELECT s || s FROM c) SELECT length(s) FROM c",
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 200000) SELECT group_concat(x || 'abcdefgh') FROM c",
    ];
    for sql in bombs {
        let t = Instant::now();
        let r = query(addr, sql);
        let took = t.elapsed();
        assert_eq!(r.status, 200, "{sql}: {}", r.text());
        let (err, end) = last_two(&r);
        assert_eq!(
            err["error"]["code"],
            "resource_limit_exceeded",
            "{sql}: {}",
            r.text()
        );
        assert_eq!(end["end"]["reason"], "error", "{sql}");
        assert!(took < Duration::from_secs(10), "{sql} took {took:?}");
        eprintln!("reliability_hostile: bomb stopped in {took:?}: {sql}");
    }
    // SQLite's printf refuses huge widths by itself (NULL, no allocation).
    let r = query(addr, "SELECT printf('%.*c', 1000000000, 'x') AS p");
    assert_eq!(row_lines(&r.lines()), [r#"{"row":{"p":null}}"#]);
    // A slow query that keeps producing rows is not a bomb.
    let r = query(addr, "SELECT sleep_ms(30) AS s FROM t LIMIT 20");
    assert_eq!(r.status, 200);
    assert_eq!(row_lines(&r.lines()).len(), 20, "{}", r.text());
    assert!(r.lines().last().unwrap().contains(r#""reason":"ok""#));
    // An endless stream is bounded by its reader: a disconnect frees it.
    let mut s = open_stream(
        addr,
        r#"{"query":"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x FROM c"}"#,
        None,
    );
    for _ in 0..1000 {
        s.next_line().unwrap();
    }
    drop(s);
    assert!(ts
        .wait_stats(5000, |s| s.slots_in_use == 0 && s.running_streams == 0)
        .is_some());
    still_serving(addr, None);
    assert_paired(&ts.events());

    // The defaults stop `randomblob(1e9)` too.
    let db2 = dir.path("db2.sqlite");
    drop(make_db(&db2, 1));
    let ts2 = TestServer::start(builder_for(&db2));
    let r = query(ts2.addr(), "SELECT randomblob(1e9)");
    let (err, _) = last_two(&r);
    assert_eq!(err["error"]["code"], "resource_limit_exceeded");
}

#[test]
fn parameter_type_confusion_is_a_structured_refusal() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    drop(make_db(&db, 10));
    let ts = TestServer::start(builder_for(&db));
    let addr = ts.addr();
    let q = |sql: &str, params: serde_json::Value| {
        post(
            addr,
            "/v1/query/stream",
            &json!({"query": sql, "params": params}).to_string(),
            None,
        )
    };
    let refused = [
        ("SELECT * FROM t WHERE id = ?1", json!([[1]])),
        ("SELECT * FROM t WHERE id = ?1", json!([{"a": 1}])),
        ("SELECT * FROM t WHERE id = ?1", json!([[[[[]]]]])),
        ("SELECT * FROM t WHERE id = :id", json!({"id": {"$gt": 0}})),
        ("SELECT * FROM t WHERE id = :id", json!({"id": [1, 2]})),
        ("SELECT * FROM t WHERE id = ?1", json!("1")),
        ("SELECT * FROM t WHERE id = ?1", json!(1)),
        ("SELECT * FROM t WHERE id = ?1", json!(true)),
        ("SELECT * FROM t WHERE id = ?1", json!([])),
        ("SELECT * FROM t WHERE id = ?1", json!([1, 2])),
        ("SELECT * FROM t WHERE id = :id", json!({"nope": 1})),
        ("SELECT * FROM t WHERE id = :id", json!([1, 2, 3])),
    ];
    for (sql, params) in &refused {
        let r = q(sql, params.clone());
        assert!(
            r.status == 400 && ["bad_request", "query_error"].contains(&r.error_code().as_str()),
            "{sql} {params}: {} {}",
            r.status,
            r.text()
        );
    }
    // Scalars of another type bind as SQLite would (no error, no surprise).
    for (params, rows) in [
        (json!(["1"]), 1),
        (json!([1.0]), 1),
        (json!([true]), 1),
        (json!([null]), 0),
        (json!(["1 OR 1=1"]), 0),
        (json!([i64::MAX]), 0),
        (json!([u64::MAX]), 0),
        (json!([18446744073709551616u128 as f64]), 0),
    ] {
        let r = q("SELECT * FROM t WHERE id = ?1", params.clone());
        assert_eq!(r.status, 200, "{params}: {}", r.text());
        assert_eq!(row_lines(&r.lines()).len(), rows, "{params}: {}", r.text());
    }
    // Big numbers in raw JSON (beyond what serde_json's `json!` writes).
    for raw in [
        r#"{"query":"SELECT ?1 AS x","params":[1e400]}"#,
        r#"{"query":"SELECT ?1 AS x","params":[-1e400]}"#,
        r#"{"query":"SELECT ?1 AS x","params":[123456789012345678901234567890]}"#,
    ] {
        let r = post(addr, "/v1/query/stream", raw, None);
        assert!(
            r.status == 400 || r.status == 200,
            "{raw}: {} {}",
            r.status,
            r.text()
        );
        if r.status == 400 {
            assert_eq!(r.error_code(), "bad_request", "{raw}");
        }
    }
    assert_eq!(ts.server.stats().slots_in_use, 0);
    still_serving(addr, None);
}

#[test]
fn slowloris_huge_and_malformed_bodies_are_refused_without_holding_slots() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    drop(make_db(&db, 10));
    let ts = TestServer::start(builder_for(&db).query_limits(QueryLimits {
        request_body_timeout_ms: 500,
        header_read_timeout_ms: 700,
        ..QueryLimits::default()
    }));
    let addr = ts.addr();

    // Slowloris on the request head: the connection is closed once the
    // header read timeout passes (hyper, before any route).
    let heads: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let t = Instant::now();
                for b in b"POST /v1/query/stream HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter() {
                    if s.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                    if t.elapsed() > Duration::from_secs(3) {
                        break;
                    }
                }
                let mut answer = Vec::new();
                let r = s.read_to_end(&mut answer);
                (t.elapsed(), r.is_ok() || answer.is_empty())
            })
        })
        .collect();

    // Slowloris: a body announced and sent one byte at a time, too slowly.
    let slow: Vec<_> = (0..8)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                let body = br#"{"query":"SELECT 1"}"#;
                s.write_all(
                    format!(
                        "POST /v1/query/stream HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .as_bytes(),
                )
                .unwrap();
                let t = Instant::now();
                for b in body.iter().take(5) {
                    if s.write_all(&[*b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                let mut answer = Vec::new();
                let _ = s.read_to_end(&mut answer);
                (t.elapsed(), String::from_utf8_lossy(&answer).into_owned())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // While they dribble, nobody holds a slot and others are served.
    assert_eq!(ts.server.stats().slots_in_use, 0);
    still_serving(addr, None);
    for h in heads {
        let (took, closed) = h.join().unwrap();
        assert!(closed);
        assert!(took < Duration::from_secs(5), "slow head kept for {took:?}");
    }
    for h in slow {
        let (took, answer) = h.join().unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""code":"request_timeout""#), "{answer}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    // 100 MB announced: 413 at once, without reading it.
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(
        b"POST /v1/query/stream HTTP/1.1\r\nHost: x\r\nContent-Length: 104857600\r\n\r\n{\"query\":",
    )
    .unwrap();
    let mut answer = [0u8; 512];
    let n = s.read(&mut answer).unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("payload_too_large"), "{text}");
    assert!(t.elapsed() < Duration::from_secs(2));

    // 100 MB chunked (no length): 413 once 1 MiB arrived.
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /v1/query/stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0usize;
    while sent < 100 * 1024 * 1024 {
        let head = format!("{:x}\r\n", chunk.len());
        if s.write_all(head.as_bytes()).is_err()
            || s.write_all(&chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break;
        }
        sent += chunk.len();
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(sent < 100 * 1024 * 1024, "the server read the whole 100 MB");
    eprintln!(
        "reliability_hostile: chunked 100 MB body refused after {} KiB sent",
        sent / 1024
    );

    // Invalid UTF-8 and NUL bytes: 400, structured.
    for body in [
        &b"{\"query\":\"SELECT '\xff\xfe'\"}"[..],
        &b"{\"query\":\"SELECT 1\"}\x00"[..],
        &b"\x00\x00\x00\x00"[..],
        &b"{\"query\":\"SELECT 1\x00\"}"[..],
        &b"{\"query\":\"SELECT \xc0\x80\"}"[..],
        &b"{\"cursor\":\"\xff\",\"after_rows\":0,\"prefix_hash\":\"\"}"[..],
    ] {
        let r = send(
            addr,
            "POST",
            "/v1/query/stream",
            body,
            &[("Content-Type", "application/json")],
        );
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "bad_request"),
            "{body:?}: {}",
            r.text()
        );
    }
    // A 10 MB single line on ingest: 413 line_too_long, nothing written.
    let mut body = br#"{"open":{"table":"t","columns":["name"]}}"#.to_vec();
    body.extend_from_slice(b"\n{\"row\":{\"name\":\"");
    body.resize(body.len() + 10 * 1024 * 1024, b'x');
    body.extend_from_slice(b"\"}}\n{\"end\":{}}\n");
    let r = send(addr, "POST", "/v1/ingest/stream", &body, &[]);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "line_too_long"),
        "{}",
        r.text()
    );
    let n: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 10);
    // NUL inside the SQL text (valid JSON escape): refused, nothing after it runs.
    let r = query(addr, "SELECT 1 AS x\u{0}");
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(ts.server.stats().slots_in_use, 0);
    still_serving(addr, None);
}
