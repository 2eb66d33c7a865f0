//! `POST /v1/ingest/stream` (PROTOCOL.md §4): verified, atomic NDJSON ingest,
//! in both atomicity modes. Every failure leaves the table exactly as before.
#![cfg(feature = "server")]

mod server_common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use rowstream::core::audit::AuditEvent;
use rowstream::core::close::CloseReason;
use rowstream::core::digest::PrefixHasher;
use rowstream::server::{IngestMode, Server};
use rusqlite::Connection;
use server_common::*;

const PATH: &str = "/v1/ingest/stream";
const MODES: [IngestMode; 2] = [IngestMode::Staged, IngestMode::Direct];

/// `t(id INTEGER PRIMARY KEY, name TEXT, v REAL)` row lines, ids `from..to`,
/// written the way the output stream writes them (so digests compare).
fn rows(from: i64, to: i64) -> impl Iterator<Item = String> {
    (from..to).map(|i| {
        format!(
            r#"{{"row":{{"id":{i},"name":"n{i}","v":{}}}}}"#,
            i as f64 + 0.5
        )
    })
}

/// A whole body: open, the rows, end with their digest (or `digest`).
fn body_of(open: &str, rows: impl Iterator<Item = String>, digest: Option<&str>) -> Vec<u8> {
    let mut h = PrefixHasher::new();
    let mut out = Vec::new();
    out.extend_from_slice(open.as_bytes());
    out.push(b'\n');
    for r in rows {
        h.update_line(r.as_bytes());
        out.extend_from_slice(r.as_bytes());
        out.push(b'\n');
    }
    let d = digest.map(str::to_owned).unwrap_or_else(|| h.hex_digest());
    out.extend_from_slice(format!(r#"{{"end":{{"sha256":"{d}"}}}}"#).as_bytes());
    out.push(b'\n');
    out
}

fn open_line(table: &str, columns: &[&str]) -> String {
    serde_json::json!({"open": {"table": table, "columns": columns, "verify": "sha256"}})
        .to_string()
}

fn ingest(addr: SocketAddr, body: &[u8], token: Option<&str>) -> Resp {
    ingest_with(addr, body, token, &[])
}

/// An upload with `extra` headers besides the content type and the token.
fn ingest_with(addr: SocketAddr, body: &[u8], token: Option<&str>, extra: &[(&str, &str)]) -> Resp {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/x-ndjson")];
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    h.extend_from_slice(extra);
    send(addr, "POST", PATH, body, &h)
}

fn count(db: &Path) -> i64 {
    let c = Connection::open(db).unwrap();
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

fn server(db: &Path, mode: IngestMode) -> TestServer {
    TestServer::start(builder_for(db).ingest_mode(mode))
}

/// An upload sent piece by piece with chunked transfer encoding.
struct Upload {
    s: TcpStream,
}

impl Upload {
    fn start(addr: SocketAddr, token: Option<&str>) -> Upload {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut head = format!(
            "POST {PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
        );
        if let Some(t) = token {
            head.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        Upload { s }
    }

    fn send(&mut self, data: &[u8]) {
        for piece in data.chunks(64 * 1024) {
            self.s
                .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                .unwrap();
            self.s.write_all(piece).unwrap();
            self.s.write_all(b"\r\n").unwrap();
        }
        self.s.flush().unwrap();
    }

    /// Ends the body and reads the answer.
    fn finish(mut self) -> (u16, serde_json::Value) {
        self.s.write_all(b"0\r\n\r\n").unwrap();
        read_answer(self.s)
    }
}

fn read_answer(s: TcpStream) -> (u16, serde_json::Value) {
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    let code: u16 = status.split_whitespace().nth(1).unwrap().parse().unwrap();
    let mut len = 0usize;
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        if l.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap();
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (code, serde_json::from_slice(&body).unwrap())
}

fn closed_events(events: &[AuditEvent]) -> Vec<(CloseReason, String, u64, u64)> {
    events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::StreamClosed {
                lease: Some(_),
                reason,
                cause,
                row_count,
                bytes_written,
                ..
            } => Some((*reason, cause.clone(), *row_count, *bytes_written)),
            _ => None,
        })
        .collect()
}

#[test]
fn round_trip_of_100k_rows_with_verify_in_both_modes() {
    for mode in MODES {
        let dir = TempDir::new();
        let db = dir.path("db.sqlite");
        make_db(&db, 0);
        let ts = server(&db, mode);
        let body = body_of(
            &open_line("t", &["id", "name", "v"]),
            rows(1, 100_001),
            None,
        );
        let mut h = PrefixHasher::new();
        h.update_lines(rows(1, 100_001));
        let r = ingest(ts.addr(), &body, None);
        assert_eq!(r.status, 200, "{mode:?}: {}", r.text());
        assert!(r.text().ends_with('\n'), "one JSON line");
        assert!(
            r.text()
                .starts_with(r#"{"end":{"row_count":100000,"integrity":"ok","lease":""#),
            "{}",
            r.text()
        );
        let end = &r.json()["end"];
        assert_eq!(end["row_count"], 100_000);
        assert_eq!(end["integrity"], "ok");
        let lease = end["lease"].as_str().unwrap();
        assert!(lease.len() == 32 && lease.bytes().all(|b| b.is_ascii_hexdigit()));

        // Contents, types and order, read back through the output stream:
        // the same row lines, so the same digest.
        let out = query(ts.addr(), "SELECT id, name, v FROM t");
        let lines = out.lines();
        let last = j(lines.last().unwrap());
        assert_eq!(last["end"]["row_count"], 100_000);
        assert_eq!(last["end"]["prefix_hash"], h.hex_digest(), "{mode:?}");
        let c = Connection::open(&db).unwrap();
        let types: String = c
            .query_row(
                "SELECT typeof(id)||typeof(name)||typeof(v) FROM t WHERE id = 77",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(types, "integertextreal");
        let events = ts.events();
        assert_paired(&events);
        let Some(AuditEvent::StreamClosed {
            reason,
            cause,
            row_count,
            bytes_written,
            ..
        }) = closed_of(&events, lease)
        else {
            panic!("the ingest lease was not closed: {events:#?}")
        };
        assert_eq!(
            (reason, cause.as_str(), row_count, bytes_written),
            (CloseReason::Ok, "end", 100_000, body.len() as u64)
        );
    }
}

#[test]
fn values_keep_their_json_types_and_missing_columns_are_null() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    let c = make_db(&db, 0);
    c.execute_batch("CREATE TABLE \"Odd \"\"Name\"(k INTEGER, \"a b\", j TEXT)")
        .unwrap();
    let ts = server(&db, IngestMode::Staged);
    let open = r#"{"open":{"table":"odd \"name","columns":["K","a b","j"],"verify":"none"}}"#;
    let body = format!(
        "{open}\n{}\n{}\n\n{}\n{}\n{{\"end\":{{}}}}\n",
        r#"{"row":{"K":9223372036854775807,"a b":1.5,"j":{"x":[1,2]}}}"#,
        r#"{"row":{"K":true,"a b":"text"}}"#,
        r#"{"row":{}}"#,
        r#"{"row":{"a b":null,"j":[1,"z"]}}"#,
    );
    let r = ingest(ts.addr(), body.as_bytes(), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["end"]["integrity"], "unchecked");
    assert_eq!(r.json()["end"]["row_count"], 4);
    let got: Vec<(String, String, String)> = c
        .prepare("SELECT quote(k), quote(\"a b\"), quote(j) FROM \"Odd \"\"Name\" ORDER BY rowid")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        got,
        vec![
            (
                "9223372036854775807".into(),
                "1.5".into(),
                "'{\"x\":[1,2]}'".into()
            ),
            ("1".into(), "'text'".into(), "NULL".into()),
            ("NULL".into(), "NULL".into(), "NULL".into()),
            ("NULL".into(), "NULL".into(), "'[1,\"z\"]'".into()),
        ]
    );
}

#[test]
fn digest_mismatch_writes_nothing_and_reports_both_digests() {
    for mode in MODES {
        let dir = TempDir::new();
        let db = dir.path("db.sqlite");
        make_db(&db, 10);
        let ts = server(&db, mode);
        let bad = "ab".repeat(32);
        let body = body_of(
            &open_line("t", &["id", "name", "v"]),
            rows(100, 5100),
            Some(&bad),
        );
        let r = ingest(ts.addr(), &body, None);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "integrity_failed")
        );
        let e = &r.json()["error"];
        assert_eq!(e["expected"], bad);
        let mut h = PrefixHasher::new();
        h.update_lines(rows(100, 5100));
        assert_eq!(e["actual"], h.hex_digest());
        assert_eq!(e["line"], 5002);
        assert_eq!(count(&db), 10, "{mode:?}");
        let events = ts.events();
        assert_paired(&events);
        assert_eq!(
            closed_events(&events),
            vec![(
                CloseReason::IntegrityFailed,
                "integrity_failed".into(),
                5000,
                body.len() as u64
            )]
        );

        // Missing digest under verify: sha256.
        let r = ingest(
            ts.addr(),
            format!(
                "{}\n{}\n{{\"end\":{{}}}}\n",
                open_line("t", &["id"]),
                r#"{"row":{"id":999}}"#
            )
            .as_bytes(),
            None,
        );
        assert_eq!(r.error_code(), "integrity_missing_digest");
        assert_eq!(count(&db), 10);
    }
}

#[test]
fn malformed_lines_and_bad_targets_name_their_line_and_write_nothing() {
    for mode in MODES {
        let dir = TempDir::new();
        let db = dir.path("db.sqlite");
        make_db(&db, 10);
        let ts = TestServer::start(
            builder_for(&db)
                .ingest_mode(mode)
                .ingest_max_line_bytes(4096),
        );
        let open = open_line("t", &["id", "name", "v"]);
        let with_line = |n: usize, bad: &str| {
            let mut lines: Vec<String> = std::iter::once(open.clone())
                .chain(rows(100, 3000))
                .collect();
            lines[n - 1] = bad.to_owned();
            let mut h = PrefixHasher::new();
            h.update_lines(lines[1..].iter());
            let mut b = lines.join("\n").into_bytes();
            b.extend_from_slice(
                format!("\n{{\"end\":{{\"sha256\":\"{}\"}}}}\n", h.hex_digest()).as_bytes(),
            );
            b
        };
        let cases: Vec<(Vec<u8>, &str, u64, u16)> = vec![
            (
                with_line(1500, r#"{"row":{"id":"#),
                "invalid_row",
                1500,
                400,
            ),
            (
                with_line(1500, r#"{"row":[1,2]}"#),
                "invalid_row",
                1500,
                400,
            ),
            (
                with_line(700, r#"{"row":{"id":1,"zz":2}}"#),
                "unknown_column",
                700,
                400,
            ),
            (
                with_line(
                    900,
                    &format!(r#"{{"row":{{"name":"{}"}}}}"#, "x".repeat(5000)),
                ),
                "line_too_long",
                900,
                413,
            ),
            // The table refuses the row (duplicate primary key of row 1).
            (
                with_line(2000, r#"{"row":{"id":5}}"#),
                "invalid_row",
                2000,
                400,
            ),
            (
                with_line(1, &open_line("t", &["id", "nope"])),
                "unknown_column",
                1,
                400,
            ),
            (
                with_line(1, &open_line("missing", &["id"])),
                "unknown_table",
                1,
                400,
            ),
            (
                with_line(1, &open_line("rowstream_config", &["key"])),
                "unknown_table",
                1,
                400,
            ),
            (
                with_line(1, &open_line("t\"; DROP TABLE t; --", &["id"])),
                "unknown_table",
                1,
                400,
            ),
        ];
        for (body, code, line, status) in cases {
            let r = ingest(ts.addr(), &body, None);
            assert_eq!(
                (
                    r.status,
                    r.error_code().as_str(),
                    r.json()["error"]["line"].as_u64()
                ),
                (status, code, Some(line)),
                "{mode:?}: {}",
                r.text()
            );
            assert_eq!(count(&db), 10, "{mode:?} {code}");
        }
        // Cut off before the end line.
        let mut cut = with_line(2, r#"{"row":{"id":5000}}"#);
        let end_at = cut.len()
            - 1
            - cut[..cut.len() - 1]
                .iter()
                .rev()
                .position(|&b| b == b'\n')
                .unwrap();
        cut.truncate(end_at);
        let r = ingest(ts.addr(), &cut, None);
        assert_eq!(r.error_code(), "bad_request");
        assert_eq!(count(&db), 10);
        let events = ts.events();
        assert_paired(&events);
        // Refusals before the lease opened (bad target) are not leases.
        assert_eq!(closed_events(&events).len(), 6, "{mode:?}");
        assert!(closed_events(&events)
            .iter()
            .all(|(reason, ..)| *reason == CloseReason::Error));
        assert_eq!(ts.server.stats().slots_in_use, 0);
    }
}

/// A refusal at line 3 of a 13 MB upload: the answer comes at once, and the
/// client, still sending, gets it instead of a connection reset.
#[test]
fn an_early_refusal_reaches_a_client_that_is_still_sending() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let ts = server(&db, IngestMode::Staged);
    let mut lines = vec![
        open_line("t", &["id", "name", "v"]),
        rows(100, 101).next().unwrap(),
    ];
    lines.push(r#"{"row":{"nope":1}}"#.into());
    lines.extend(rows(200, 200_000));
    let body = lines.join("\n").into_bytes();
    assert!(body.len() > 10_000_000);
    let t = Instant::now();
    let r = ingest(ts.addr(), &body, None);
    assert_eq!(
        (
            r.status,
            r.error_code().as_str(),
            r.json()["error"]["line"].as_u64()
        ),
        (400, "unknown_column", Some(3))
    );
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(count(&db), 10);
}

#[test]
fn a_disconnect_mid_body_writes_nothing() {
    for mode in MODES {
        let dir = TempDir::new();
        let db = dir.path("db.sqlite");
        make_db(&db, 10);
        let ts = server(&db, mode);
        let mut up = Upload::start(ts.addr(), None);
        let head = body_of(
            &open_line("t", &["id", "name", "v"]),
            rows(100, 20_100),
            None,
        );
        up.send(&head[..head.len() / 2]);
        assert!(ts.wait_stats(5000, |s| s.slots_in_use == 1).is_some());
        drop(up);
        assert!(wait_events(&ts, 5000, |e| closed_events(e).len() == 1));
        let (reason, cause, rows_seen, _) = closed_events(&ts.events())[0].clone();
        assert_eq!(
            (reason, cause.as_str()),
            (CloseReason::Cancelled, "disconnect")
        );
        assert!(rows_seen > 0);
        assert_eq!(count(&db), 10, "{mode:?}");
        assert!(ts
            .wait_stats(2000, |s| s.slots_in_use == 0 && s.running_streams == 0)
            .is_some());
    }
}

#[test]
fn shutdown_mid_body_rolls_back_and_answers_503() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let ts = server(&db, IngestMode::Direct);
    let body = body_of(
        &open_line("t", &["id", "name", "v"]),
        rows(100, 10_100),
        None,
    );
    let mut up = Upload::start(ts.addr(), None);
    up.send(&body[..body.len() / 2]);
    assert!(ts.wait_stats(5000, |s| s.slots_in_use == 1).is_some());
    ts.server.handle().begin_shutdown();
    let (status, answer) = read_answer(up.s.try_clone().unwrap());
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (503, Some("shutting_down"))
    );
    assert_eq!(count(&db), 10);
    let events = ts.events();
    assert_paired(&events);
    let (reason, cause, ..) = closed_events(&events)[0].clone();
    assert_eq!(
        (reason, cause.as_str()),
        (CloseReason::Cancelled, "shutdown")
    );
}

#[test]
fn a_stalled_upload_times_out_and_oversized_bodies_are_refused() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let ts = TestServer::start(
        builder_for(&db)
            .ingest_mode(IngestMode::Direct)
            .ingest_idle_timeout(Duration::from_millis(200))
            .ingest_max_body_bytes(Some(100_000)),
    );
    let mut up = Upload::start(ts.addr(), None);
    let body = body_of(&open_line("t", &["id", "name", "v"]), rows(100, 200), None);
    up.send(&body[..body.len() - 10]);
    let t = Instant::now();
    let (status, answer) = read_answer(up.s.try_clone().unwrap());
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (408, Some("request_timeout"))
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(count(&db), 10);

    let big = body_of(
        &open_line("t", &["id", "name", "v"]),
        rows(100, 10_000),
        None,
    );
    let r = ingest(ts.addr(), &big, None);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large")
    );
    let mut up = Upload::start(ts.addr(), None);
    up.send(&big);
    let (status, answer) = up.finish();
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(count(&db), 10);
    assert_paired(&ts.events());
}

/// While an ingest is in the middle of its body: readers (output streams)
/// keep streaming in both modes; in staged mode other writers keep
/// committing too, in direct mode they wait for the ingest's write lock.
#[test]
fn output_streams_keep_streaming_during_a_large_ingest() {
    for mode in MODES {
        let dir = TempDir::new();
        let db = dir.path("db.sqlite");
        make_db(&db, 50_000);
        let ts = server(&db, mode);
        let body = body_of(
            &open_line("t", &["id", "name", "v"]),
            rows(100_000, 200_000),
            None,
        );
        let mut up = Upload::start(ts.addr(), None);
        up.send(&body[..body.len() / 2]);
        assert!(ts.wait_stats(5000, |s| s.slots_in_use == 1).is_some());
        // Rows are being written (direct: inside the open write transaction).
        let other = Connection::open(&db).unwrap();
        other.busy_timeout(Duration::from_millis(0)).unwrap();
        let t = Instant::now();
        let locked = loop {
            let r = other.execute_batch("BEGIN IMMEDIATE; ROLLBACK");
            if mode == IngestMode::Staged || r.is_err() || t.elapsed() > Duration::from_secs(3) {
                break r.is_err();
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(
            locked,
            mode == IngestMode::Direct,
            "{mode:?}: write lock held during the upload"
        );

        let mut s = open_stream(ts.addr(), r#"{"query":"SELECT * FROM t"}"#, None);
        let lines = s.rest();
        assert_eq!(row_lines(&lines).len(), 50_000, "{mode:?}");
        assert_eq!(j(lines.last().unwrap())["end"]["reason"], "ok");
        assert_eq!(
            ts.server.stats().slots_in_use,
            1,
            "the ingest is still open"
        );
        if mode == IngestMode::Staged {
            // Another ingest commits while the first one is still uploading.
            let small = body_of(
                &open_line("t", &["id"]),
                (1..=3).map(|i| format!(r#"{{"row":{{"id":{}}}}}"#, 900_000 + i)),
                None,
            );
            let r = ingest(ts.addr(), &small, None);
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(count(&db), 50_003);
        }
        up.send(&body[body.len() / 2..]);
        let (status, answer) = up.finish();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["end"]["row_count"], 100_000);
        let extra = if mode == IngestMode::Staged { 3 } else { 0 };
        assert_eq!(count(&db), 150_000 + extra);
        assert_paired(&ts.events());
    }
}

#[test]
fn auth_quotas_tenants_and_audit() {
    let dir = TempDir::new();
    let (a, b) = (dir.path("a.sqlite"), dir.path("b.sqlite"));
    make_db(&a, 10);
    make_db(&b, 20);
    let ts = TestServer::start(
        Server::builder()
            .tenant("ta", &a)
            .tenant("tb", &b)
            .token("tok-a", "ta", "alice")
            .token("tok-b", "tb", "bob")
            .set("stream.max_per_principal", "1"),
    );
    let body = body_of(
        &open_line("t", &["id", "name", "v"]),
        rows(1000, 1100),
        None,
    );
    let r = ingest(ts.addr(), &body, None);
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));
    let r = ingest(ts.addr(), &body, Some("nope"));
    assert_eq!(r.status, 401);

    // Tenant isolation: the token decides the database.
    let r = ingest(ts.addr(), &body, Some("tok-b"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!((count(&a), count(&b)), (10, 120));

    // One running stream per principal: an open upload holds alice's slot,
    // for ingests and output streams alike.
    let mut up = Upload::start(ts.addr(), Some("tok-a"));
    up.send(&body[..body.len() / 2]);
    assert!(ts.wait_stats(5000, |s| s.slots_in_use == 1).is_some());
    let r = ingest(ts.addr(), &body, Some("tok-a"));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "principal_stream_quota_exhausted")
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    let q = post(
        ts.addr(),
        "/v1/query/stream",
        r#"{"query":"SELECT 1"}"#,
        Some("tok-a"),
    );
    assert_eq!(q.error_code(), "principal_stream_quota_exhausted");
    let q = post(
        ts.addr(),
        "/v1/query/stream",
        r#"{"query":"SELECT 1"}"#,
        Some("tok-b"),
    );
    assert_eq!(q.status, 200, "bob has his own quota");
    up.send(&body[body.len() / 2..]);
    let (status, answer) = up.finish();
    assert_eq!(status, 200, "{answer}");
    assert_eq!((count(&a), count(&b)), (110, 120));

    let events = ts.events();
    assert_paired(&events);
    let opened: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::StreamOpened {
                lease,
                principal,
                tenant,
                ..
            } => Some((lease.clone(), principal.clone(), tenant.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(opened.len(), 3, "two ingests and bob's query: {events:#?}");
    let alice = opened.iter().find(|o| o.1 == "alice").unwrap();
    assert_eq!(alice.0, answer["end"]["lease"].as_str().unwrap());
    assert_eq!(alice.2, "ta");
    let Some(AuditEvent::StreamClosed {
        reason,
        cause,
        row_count,
        bytes_written,
        ..
    }) = closed_of(&events, &alice.0)
    else {
        panic!("alice's ingest not closed")
    };
    assert_eq!(
        (reason, cause.as_str(), row_count, bytes_written),
        (CloseReason::Ok, "end", 100, body.len() as u64)
    );
    let refused = events
        .iter()
        .filter(|e| {
            matches!(
                e,
                AuditEvent::StreamClosed {
                    lease: None,
                    reason: CloseReason::CapacityRefused,
                    ..
                }
            )
        })
        .count();
    assert_eq!(refused, 2);
}

const BIN: &str = env!("CARGO_BIN_EXE_rowstream");

fn spawn_server(db: &Path, mode: &str) -> ServerProcess {
    let db = db.to_str().unwrap();
    ServerProcess::start(
        [
            "serve",
            "--db",
            db,
            "--listen",
            "127.0.0.1:0",
            "--ingest-mode",
            mode,
        ],
        false,
    )
}

fn integrity_ok(db: &Path) {
    let c = Connection::open(db).unwrap();
    let r: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(r, "ok");
}

#[test]
fn sigkill_mid_body_leaves_the_table_as_before() {
    for mode in ["direct", "staged"] {
        let dir = TempDir::new();
        let db = dir.path("db.sqlite");
        drop(make_db(&db, 1000));
        let mut p = spawn_server(&db, mode);
        let body = body_of(
            &open_line("t", &["id", "name", "v"]),
            rows(10_000, 110_000),
            None,
        );
        let mut up = Upload::start(p.addr, None);
        up.send(&body[..body.len() * 3 / 4]);
        if mode == "direct" {
            // Wait until the ingest holds the write lock (its transaction is open).
            let other = Connection::open(&db).unwrap();
            other.busy_timeout(Duration::from_millis(0)).unwrap();
            let t = Instant::now();
            while other.execute_batch("BEGIN IMMEDIATE; ROLLBACK").is_ok() {
                assert!(t.elapsed() < Duration::from_secs(5));
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        std::thread::sleep(Duration::from_millis(300));
        p.child.kill().unwrap(); // SIGKILL
        p.child.wait().unwrap();
        drop(up);
        integrity_ok(&db);
        assert_eq!(count(&db), 1000, "{mode}");
        // A restarted server serves the table as it was and ingests again.
        let p = spawn_server(&db, mode);
        let r = query(p.addr, "SELECT count(*) AS n FROM t");
        assert_eq!(j(&r.lines()[1])["row"]["n"], 1000);
        let r = ingest(p.addr, &body, None);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(count(&db), 101_000);
        drop(p);
        integrity_ok(&db);
    }
}

#[test]
fn sigkill_after_the_end_line_leaves_all_rows_or_none() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    drop(make_db(&db, 1000));
    let mut p = spawn_server(&db, "staged");
    let body = body_of(
        &open_line("t", &["id", "name", "v"]),
        rows(10_000, 110_000),
        None,
    );
    let mut up = Upload::start(p.addr, None);
    up.send(&body);
    up.s.write_all(b"0\r\n\r\n").unwrap();
    // Somewhere in parsing, staging or the copy.
    std::thread::sleep(Duration::from_millis(400));
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    integrity_ok(&db);
    let n = count(&db);
    assert!(n == 1000 || n == 101_000, "partial ingest: {n} rows");
}

#[test]
fn ingests_over_http2() {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let ts = server(&db, IngestMode::Staged);
    let body = body_of(&open_line("t", &["id", "name", "v"]), rows(100, 1100), None);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, answer) = rt.block_on(async {
        let tcp = tokio::net::TcpStream::connect(ts.addr()).await.unwrap();
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::post(format!("http://{}{PATH}", ts.addr()))
            .header("content-type", "application/x-ndjson")
            .body(Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let res = send.send_request(req).await.unwrap();
        assert_eq!(res.version(), hyper::Version::HTTP_2);
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
        )
    });
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["end"]["row_count"], 1000);
    assert_eq!(count(&db), 1010);
}

#[test]
fn help_lists_the_ingest_options() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "/v1/ingest/stream",
        "--ingest-mode",
        "--ingest-max-line-bytes",
        "--ingest-max-body-bytes",
        "--ingest-idle-timeout-ms",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--db", "x.sqlite", "--ingest-mode", "yolo"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

fn ingest_encoded(addr: SocketAddr, body: &[u8], coding: &str) -> Resp {
    ingest_with(addr, body, None, &[("Content-Encoding", coding)])
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn zstd_of(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).unwrap()
}

#[test]
fn gzip_and_zstd_uploads_with_several_members_or_frames_land_whole() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let ts = server(&db, IngestMode::Staged);
    let open = open_line("t", &["id", "name", "v"]);
    let mut expected = 10;
    for (coding, encode) in [("gzip", gzip as fn(&[u8]) -> Vec<u8>), ("zstd", zstd_of)] {
        let from = 1000 * expected;
        let body = body_of(&open, rows(from, from + 20_000), None);
        // Cut the body at arbitrary points and compress each part on its own:
        // a multi-member gzip file, a multi-frame zstd stream.
        let (a, b) = body.split_at(body.len() / 3);
        let (b, c) = b.split_at(b.len() / 2);
        let wire: Vec<u8> = [a, b, c].iter().flat_map(|p| encode(p)).collect();
        assert!(wire.len() * 4 < body.len());
        let r = ingest_encoded(ts.addr(), &wire, coding);
        assert_eq!(r.status, 200, "{coding}: {}", r.text());
        assert_eq!(r.json()["end"]["row_count"], 20_000);
        assert_eq!(r.json()["end"]["integrity"], "ok");
        expected += 20_000;
        assert_eq!(count(&db), expected, "{coding}");
    }
    // The audit records the decoded bytes.
    let sizes: Vec<u64> = closed_events(&ts.events())
        .iter()
        .map(|(_, _, _, bytes)| *bytes)
        .collect();
    assert!(sizes.iter().all(|&b| b > 500_000), "{sizes:?}");
    assert_paired(&ts.events());
}

#[test]
fn other_codings_get_415_and_corrupt_bodies_400_and_nothing_lands() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let ts = server(&db, IngestMode::Direct);
    let body = body_of(&open_line("t", &["id", "name", "v"]), rows(100, 200), None);
    for coding in ["br", "deflate", "gzip, zstd", "compress"] {
        let r = ingest_encoded(ts.addr(), &body, coding);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (415, "unsupported_encoding"),
            "{coding}"
        );
    }
    let r = ingest_encoded(ts.addr(), &body, "identity");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(count(&db), 110);
    // Not gzip at all; a gzip body cut short; a corrupted zstd frame.
    let next = body_of(&open_line("t", &["id", "name", "v"]), rows(200, 300), None);
    let gz = gzip(&next);
    let mut zs = zstd_of(&next);
    let mid = zs.len() / 2;
    zs[mid] ^= 0xff;
    for (coding, wire) in [
        ("gzip", next.clone()),
        ("gzip", gz[..gz.len() - 20].to_vec()),
        ("zstd", zs),
    ] {
        let r = ingest_encoded(ts.addr(), &wire, coding);
        assert_eq!(r.status, 400, "{coding}: {}", r.text());
        // A bad stream is `bad_request`; corrupt data that still decodes
        // (zstd frames carry no checksum by default) fails as the rows it
        // became: either way, a structured 400.
        assert!(!r.error_code().is_empty(), "{}", r.text());
        assert_eq!(count(&db), 110, "{coding}");
    }
    assert_paired(&ts.events());
}

#[test]
fn a_compressed_bomb_is_refused_while_it_inflates_and_nothing_lands() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let ts = TestServer::start(
        builder_for(&db)
            .ingest_mode(IngestMode::Direct)
            .ingest_max_body_bytes(Some(10_000_000)),
    );
    // ~1 MB of gzip that inflates to ~1 GB of valid rows: an open line, then
    // the same short row over and over (the table would accept every one).
    let open = open_line("t", &["name"]);
    let row = b"{\"row\":{\"name\":\"x\"}}\n";
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    use std::io::Write as _;
    e.write_all(open.as_bytes()).unwrap();
    e.write_all(b"\n").unwrap();
    let block = row.repeat(50_000);
    for _ in 0..1000 {
        e.write_all(&block).unwrap();
    }
    let bomb = e.finish().unwrap();
    eprintln!(
        "bomb: {} bytes inflating to {} bytes",
        bomb.len(),
        block.len() * 1000
    );
    assert!(bomb.len() < 5_000_000);
    let t = Instant::now();
    let r = ingest_encoded(ts.addr(), &bomb, "gzip");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large"),
        "{}",
        r.text()
    );
    eprintln!("refused after {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(20));
    assert_eq!(count(&db), 10);
    // The same bomb in zstd.
    let zbomb = {
        let mut z = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        z.write_all(open.as_bytes()).unwrap();
        z.write_all(b"\n").unwrap();
        for _ in 0..1000 {
            z.write_all(&block).unwrap();
        }
        z.finish().unwrap()
    };
    let r = ingest_encoded(ts.addr(), &zbomb, "zstd");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large")
    );
    assert_eq!(count(&db), 10);
    assert_paired(&ts.events());
}
