//! Frames, value encoding, headers, CORS and bad requests over loopback.
#![cfg(feature = "server")]

mod server_common;

use rowstream::core::protocol::{StreamEvent, StreamVerifier};
use server_common::*;

#[test]
fn frames_and_value_encoding() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    let c = make_db(&db, 0);
    c.execute_batch(
        "CREATE TABLE v(k INTEGER PRIMARY KEY, i INTEGER, r REAL, s TEXT, b BLOB, n);
         INSERT INTO v(i, r, s, b, n) VALUES
           (-9223372036854775808, 0.1, 'héllo \"q\" \\ 日本 😀', x'00ff10', NULL),
           (9223372036854775807, -1.25, '', x'', NULL),
           (0, 3.0, 'tab\there
line', NULL, 7);",
    )
    .unwrap();
    let ts = TestServer::start(builder_for(&db));
    let r = query(ts.addr(), "SELECT b, s, r, i, n FROM v");
    assert_eq!(r.status, 200);
    let lines = r.lines();
    let mut v = StreamVerifier::new();
    let events = verify_lines(&mut v, &lines);
    let StreamEvent::Open(open) = &events[0] else {
        panic!("first line is not open: {}", lines[0])
    };
    assert_eq!(open.lease.len(), 32);
    assert!(open.resumable);
    assert_eq!(open.cursor.as_ref().map(String::len), Some(48));
    assert_eq!(open.after_rows, 0);
    let cols: Vec<(&str, &str)> = open
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.decl_type.as_str()))
        .collect();
    assert_eq!(
        cols,
        [
            ("b", "BLOB"),
            ("s", "TEXT"),
            ("r", "REAL"),
            ("i", "INTEGER"),
            ("n", "")
        ]
    );
    // Column order is the query's, exact bytes.
    assert_eq!(
        lines[1],
        r#"{"row":{"b":"AP8Q","s":"héllo \"q\" \\ 日本 😀","r":0.1,"i":-9223372036854775808,"n":null}}"#
    );
    assert_eq!(
        lines[2],
        r#"{"row":{"b":"","s":"","r":-1.25,"i":9223372036854775807,"n":null}}"#
    );
    assert_eq!(
        lines[3],
        r#"{"row":{"b":null,"s":"tab\there\nline","r":3.0,"i":0,"n":7}}"#
    );
    let StreamEvent::End(end) = events.last().unwrap() else {
        panic!("no end")
    };
    assert_eq!(end.row_count, 3);
    assert_eq!(end.reason.as_str(), "ok");
    assert_eq!(end.lease, open.lease);
    let before_end: usize = lines[..lines.len() - 1].iter().map(|l| l.len() + 1).sum();
    assert_eq!(end.bytes as usize, before_end);

    // Array shape, same order as columns.
    let r = post(
        ts.addr(),
        "/v1/query/stream",
        r#"{"query":"SELECT i, s FROM v WHERE k = ?","params":[2],"shape":"array"}"#,
        None,
    );
    let lines = r.lines();
    assert_eq!(lines[1], r#"{"row":[9223372036854775807,""]}"#);
    // Named parameters.
    let r = post(
        ts.addr(),
        "/v1/query/stream",
        r#"{"query":"SELECT k FROM v WHERE i = :i","params":{"i":0},"shape":"array"}"#,
        None,
    );
    assert_eq!(r.lines()[1], r#"{"row":[3]}"#);
    // A non-resumable query says why.
    let r = query(ts.addr(), "SELECT count(*) AS n FROM v");
    let open = j(&r.lines()[0]);
    assert_eq!(open["open"]["resumable"], false);
    assert_eq!(open["open"]["reason"], "aggregate");
    assert!(open["open"]["cursor"].is_null());
    assert_paired(&ts.events());
}

#[test]
fn streamed_headers_and_cors() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 3);
    let ts = TestServer::start(builder_for(&db));
    let r = query(ts.addr(), "SELECT * FROM t");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert_eq!(r.header("x-accel-buffering"), Some("no"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r.header("access-control-allow-credentials").is_none());

    let pre = send(
        ts.addr(),
        "OPTIONS",
        "/v1/query/stream",
        b"",
        &[
            ("Origin", "http://example.test"),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "authorization, content-type",
            ),
        ],
    );
    assert!(pre.status == 204 || pre.status == 200, "{}", pre.status);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    let allowed = pre
        .header("access-control-allow-headers")
        .unwrap()
        .to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("content-type"));
    assert!(pre.header("access-control-allow-credentials").is_none());

    // Refusals carry CORS too, so a browser can read them.
    let bad = query(ts.addr(), "SELEC nope");
    assert_eq!(bad.status, 400);
    assert_eq!(bad.header("access-control-allow-origin"), Some("*"));
}

#[test]
fn bad_requests_are_structured_errors() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 3);
    let ts = TestServer::start(builder_for(&db));
    let a = ts.addr();
    let cases: &[(&str, u16, &str)] = &[
        ("{not json", 400, "bad_request"),
        ("[1,2]", 400, "bad_request"),
        (r#"{"query":42}"#, 400, "bad_request"),
        (r#"{"query":"SELECT 1","extra":true}"#, 400, "bad_request"),
        (
            r#"{"query":"SELECT 1","shape":"table"}"#,
            400,
            "bad_request",
        ),
        (r#"{"query":"SELECT ?","params":[[1]]}"#, 400, "bad_request"),
        (
            r#"{"cursor":"00","after_rows":-1,"prefix_hash":"x"}"#,
            400,
            "bad_request",
        ),
        (
            r#"{"cursor":"00","after_rows":0,"prefix_hash":"zz"}"#,
            400,
            "bad_request",
        ),
        (r#"{"query":"SELEKT * FROM t"}"#, 400, "query_error"),
        (r#"{"query":"SELECT * FROM missing"}"#, 400, "query_error"),
        (r#"{"query":"SELECT ?"}"#, 400, "query_error"),
        (r#"{"query":"SELECT ?","params":[1,2]}"#, 400, "query_error"),
        (r#"{"query":""}"#, 400, "query_error"),
    ];
    for (body, status, code) in cases {
        let r = post(a, "/v1/query/stream", body, None);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (*status, *code),
            "{body}: {}",
            r.text()
        );
        let v = r.json();
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert_eq!(v.as_object().unwrap().len(), 1);
    }
    let msg = post(
        a,
        "/v1/query/stream",
        r#"{"query":"SELECT * FROM missing"}"#,
        None,
    )
    .json();
    assert!(msg["error"]["message"]
        .as_str()
        .unwrap()
        .contains("missing"));

    // Oversized body: 413, never buffered past the limit.
    let big = format!(r#"{{"query":"SELECT 1 -- {}"}}"#, "x".repeat(1_100_000));
    let r = post(a, "/v1/query/stream", &big, None);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large")
    );

    let r = send(a, "GET", "/v1/query/stream", b"", &[]);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (405, "method_not_allowed")
    );
    let r = send(a, "GET", "/nope", b"", &[]);
    assert_eq!((r.status, r.error_code().as_str()), (404, "not_found"));
    let r = post(a, "/v1/query/stream/cancel", r#"{"cursor":1}"#, None);
    assert_eq!((r.status, r.error_code().as_str()), (400, "bad_request"));
    // The server still serves after all of that.
    assert_eq!(query(a, "SELECT 1").status, 200);
}

#[test]
fn runtime_config_table_is_read_at_open_and_frozen() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    let c = make_db(&db, 50);
    c.execute_batch(
        "CREATE TABLE rowstream_config(key TEXT PRIMARY KEY, value);
         INSERT INTO rowstream_config VALUES ('stream.chunk.max_rows', 10), ('stream.snapshot.ttl_ms', '5000');",
    )
    .unwrap();
    let ts = TestServer::start(builder_for(&db).set("stream.snapshot.ttl_ms", "9000"));
    let mut s = open_stream(ts.addr(), r#"{"query":"SELECT id FROM t"}"#, None);
    let mut sizes = Vec::new();
    while let Some(p) = s.next_piece() {
        sizes.push(p.iter().filter(|&&b| b == b'\n').count());
    }
    // open line + 10 rows per chunk (row cap from the table), then the rest.
    assert!(sizes.iter().all(|&n| n <= 11), "{sizes:?}");
    assert!(sizes.len() >= 5, "{sizes:?}");
    let r = query(ts.addr(), "SELECT id FROM t");
    let open = j(&r.lines()[0]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let exp = open["open"]["expires_at_ms"].as_u64().unwrap();
    assert!(
        exp <= now + 5_100 && exp + 2_000 > now + 5_000,
        "table value wins: {exp} vs {now}"
    );
}

#[test]
fn changing_the_config_table_never_alters_a_running_stream() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    let c = make_db(&db, 60);
    c.execute_batch(
        "CREATE TABLE rowstream_config(key TEXT PRIMARY KEY, value);
         INSERT INTO rowstream_config VALUES ('stream.chunk.max_rows', 10);",
    )
    .unwrap();
    let ts = TestServer::start(builder_for(&db));
    let mut s = open_stream(
        ts.addr(),
        r#"{"query":"SELECT id, sleep_ms(4) AS s FROM t"}"#,
        None,
    );
    let first = s.next_piece().unwrap(); // the open line
    assert!(String::from_utf8_lossy(&first).starts_with("{\"open\""));
    c.execute("UPDATE rowstream_config SET value = 1000", [])
        .unwrap();
    let mut sizes = Vec::new();
    while let Some(p) = s.next_piece() {
        sizes.push(p.iter().filter(|&&b| b == b'\n').count());
    }
    assert!(
        sizes.iter().all(|&n| n <= 10 + 1),
        "running stream kept max_rows=10: {sizes:?}"
    );
    // A new stream reads the new value: 60 rows fit one chunk.
    let r = query(ts.addr(), "SELECT id FROM t");
    assert_eq!(row_lines(&r.lines()).len(), 60);
    let mut s = open_stream(ts.addr(), r#"{"query":"SELECT id FROM t"}"#, None);
    s.next_piece().unwrap();
    let body = s.next_piece().unwrap();
    assert!(body.iter().filter(|&&b| b == b'\n').count() > 11);
}
