//! PROTOCOL 1.1 control lines and totals on SQLite tenants: `count`,
//! `progress_ms` and heartbeats.
#![cfg(feature = "server")]

mod server_common;

use std::time::{Duration, Instant};

use rowstream::core::digest::prefix_hash_of;
use rowstream::core::protocol::StreamVerifier;
use server_common::*;

fn control_lines<'a>(lines: &'a [String], key: &str) -> Vec<&'a String> {
    let prefix = format!("{{\"{key}\":");
    lines.iter().filter(|l| l.starts_with(&prefix)).collect()
}

fn verified(lines: &[String]) {
    let mut v = StreamVerifier::new();
    verify_lines(&mut v, lines);
    assert!(v.is_complete(), "did not verify: {lines:?}");
}

#[test]
fn count_exact_is_the_rows_streamed_and_resumes_repeat_it_after_writes() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    let conn = make_db(&db, 2_500);
    let ts = TestServer::start(builder_for(&db));
    let r = post(
        ts.addr(),
        "/v1/query/stream",
        r#"{"query":"SELECT * FROM t WHERE id % 2 = 0","count":"exact"}"#,
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let lines = r.lines();
    let open = j(&lines[0])["open"].clone();
    assert_eq!(open["total_rows"], 1250);
    assert_eq!(open["total_rows_exact"], true);
    let rows = row_lines(&lines);
    assert_eq!(rows.len(), 1250);
    verified(&lines);
    // Writers commit; a resume still answers the first count.
    conn.execute_batch("INSERT INTO t (name, v) SELECT name, v FROM t LIMIT 500")
        .unwrap();
    let resume = serde_json::json!({
        "cursor": open["cursor"],
        "after_rows": 100,
        "prefix_hash": prefix_hash_of(rows[..100].iter().map(String::as_str)),
    });
    let again = post(ts.addr(), "/v1/query/stream", &resume.to_string(), None);
    assert_eq!(again.status, 200, "{}", again.text());
    let ropen = j(&again.lines()[0])["open"].clone();
    assert_eq!(ropen["total_rows"], 1250);
    assert_eq!(ropen["total_rows_exact"], true);
    assert_eq!(row_lines(&again.lines()).len(), 1150);
    // A fresh count sees the writes.
    let fresh = post(
        ts.addr(),
        "/v1/query/stream",
        r#"{"query":"SELECT * FROM t WHERE id % 2 = 0","count":"exact"}"#,
        None,
    );
    assert_eq!(j(&fresh.lines()[0])["open"]["total_rows"], 1500);
}

#[test]
fn count_estimated_on_sqlite_is_honestly_unknown_and_none_adds_nothing() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let ts = TestServer::start(builder_for(&db));
    let r = post(
        ts.addr(),
        "/v1/query/stream",
        r#"{"query":"SELECT * FROM t","count":"estimated"}"#,
        None,
    );
    let open = j(&r.lines()[0])["open"].clone();
    assert!(open["total_rows"].is_null());
    assert_eq!(open["total_rows_exact"], false);
    assert!(open.as_object().unwrap().contains_key("total_rows"));
    for body in [
        r#"{"query":"SELECT * FROM t","count":"none"}"#,
        r#"{"query":"SELECT * FROM t"}"#,
    ] {
        let r = post(ts.addr(), "/v1/query/stream", body, None);
        let open = j(&r.lines()[0])["open"].clone();
        assert!(
            !open.as_object().unwrap().contains_key("total_rows"),
            "{open}"
        );
        assert!(!open.as_object().unwrap().contains_key("total_rows_exact"));
    }
}

#[test]
fn bad_count_and_progress_values_are_bad_requests() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let ts = TestServer::start(builder_for(&db));
    for body in [
        r#"{"query":"SELECT * FROM t","count":"all"}"#,
        r#"{"query":"SELECT * FROM t","count":true}"#,
        r#"{"query":"SELECT * FROM t","progress_ms":0}"#,
        r#"{"query":"SELECT * FROM t","progress_ms":-5}"#,
        r#"{"query":"SELECT * FROM t","progress_ms":1.5}"#,
        r#"{"query":"SELECT * FROM t","progress_ms":"100"}"#,
    ] {
        let r = post(ts.addr(), "/v1/query/stream", body, None);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (400, "bad_request"),
            "{body}"
        );
    }
}

#[test]
fn progress_lines_come_at_most_every_progress_ms_and_are_neither_hashed_nor_counted() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 300);
    // Rows flow for ~1.5 s (5 ms each), in chunks of 10 rows.
    let ts = TestServer::start(builder_for(&db).set("stream.chunk.max_rows", "10"));
    let body = r#"{"query":"SELECT id, sleep_ms(5) AS s FROM t","progress_ms":200}"#;
    let t = Instant::now();
    let r = post(ts.addr(), "/v1/query/stream", body, None);
    let took = t.elapsed();
    let lines = r.lines();
    verified(&lines);
    assert_eq!(row_lines(&lines).len(), 300);
    let progress: Vec<serde_json::Value> = control_lines(&lines, "progress")
        .iter()
        .map(|l| j(l)["progress"].clone())
        .collect();
    eprintln!("{} progress lines in {took:?}", progress.len());
    assert!(progress.len() >= 3, "{progress:?}");
    assert!(
        (progress.len() as u128) <= took.as_millis() / 200 + 1,
        "{progress:?}"
    );
    let mut rows_before = 0;
    for (i, p) in progress.iter().enumerate() {
        let rows = p["rows"].as_u64().unwrap();
        assert!(rows > rows_before, "{progress:?}");
        rows_before = rows;
        if i > 0 {
            let gap =
                p["elapsed_ms"].as_u64().unwrap() - progress[i - 1]["elapsed_ms"].as_u64().unwrap();
            assert!(gap >= 200, "progress lines {gap} ms apart: {progress:?}");
        }
        // `rows` is the rows written before the line.
        let at = lines
            .iter()
            .position(|l| j(l).get("progress") == Some(p))
            .unwrap();
        assert_eq!(row_lines(&lines[..at]).len() as u64, rows);
        // `bytes`: the body up to the line.
        let before: usize = lines[..at].iter().map(|l| l.len() + 1).sum();
        assert_eq!(p["bytes"].as_u64().unwrap(), before as u64, "{p}");
    }
    // No progress line right before the end line.
    assert!(!lines[lines.len() - 2].starts_with("{\"progress\""));
    // Without progress_ms: none.
    let plain = post(
        ts.addr(),
        "/v1/query/stream",
        r#"{"query":"SELECT id, sleep_ms(5) AS s FROM t"}"#,
        None,
    );
    assert!(control_lines(&plain.lines(), "progress").is_empty());
    // progress_ms below stream.progress.min_ms (100) is raised to it.
    let fast = post(
        ts.addr(),
        "/v1/query/stream",
        r#"{"query":"SELECT id, sleep_ms(5) AS s FROM t","progress_ms":1}"#,
        None,
    );
    let fast = fast.lines();
    let fp: Vec<u64> = control_lines(&fast, "progress")
        .iter()
        .map(|l| j(l)["progress"]["elapsed_ms"].as_u64().unwrap())
        .collect();
    assert!(fp.windows(2).all(|w| w[1] - w[0] >= 100), "{fp:?}");
}

#[test]
fn heartbeats_keep_a_20_s_computation_before_the_first_row_alive() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 3);
    let ts = TestServer::start(builder_for(&db).set("stream.heartbeat_ms", "1000"));
    let body =
        r#"{"query":"SELECT id, sleep_ms(CASE WHEN id = 1 THEN 20000 ELSE 0 END) AS s FROM t"}"#;
    let mut s = open_stream(ts.addr(), body, None);
    let open_line = s.next_line().unwrap();
    let t = Instant::now();
    let mut beats = Vec::new();
    let first_row = loop {
        let l = s
            .next_line()
            .expect("the stream ended before its first row");
        if l.starts_with("{\"heartbeat\"") {
            assert_eq!(l, "{\"heartbeat\":{}}");
            beats.push(t.elapsed());
            continue;
        }
        break l;
    };
    eprintln!(
        "{} heartbeats before the first row, at {beats:?}",
        beats.len()
    );
    assert!(first_row.starts_with("{\"row\":{\"id\":1"), "{first_row}");
    assert!(beats.len() >= 17, "{} heartbeats in 20 s", beats.len());
    assert!(beats[0] < Duration::from_millis(1500), "{beats:?}");
    for w in beats.windows(2) {
        let gap = w[1] - w[0];
        assert!(
            gap >= Duration::from_millis(900) && gap < Duration::from_millis(1600),
            "{beats:?}"
        );
    }
    let mut lines = vec![open_line];
    lines.extend(beats.iter().map(|_| "{\"heartbeat\":{}}".to_owned()));
    lines.push(first_row);
    lines.extend(s.rest());
    verified(&lines);
    let end = j(lines.last().unwrap());
    assert_eq!(end["end"]["row_count"], 3);
    // end.bytes counts the heartbeats (they are body bytes).
    let body_len: usize = lines[..lines.len() - 1].iter().map(|l| l.len() + 1).sum();
    assert_eq!(end["end"]["bytes"].as_u64().unwrap(), body_len as u64);
}

#[test]
fn heartbeats_go_through_the_compressor_while_the_query_computes() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 2);
    let ts = TestServer::start(builder_for(&db).set("stream.heartbeat_ms", "300"));
    let body =
        r#"{"query":"SELECT id, sleep_ms(CASE WHEN id = 1 THEN 1500 ELSE 0 END) AS s FROM t"}"#;
    let mut s = request(
        ts.addr(),
        "POST",
        "/v1/query/stream",
        body.as_bytes(),
        &[
            ("Content-Type", "application/json"),
            ("Accept-Encoding", "zstd"),
        ],
    );
    let t = Instant::now();
    let mut wire = Vec::new();
    let beat_seen = loop {
        let piece = s.next_piece().expect("ended early");
        wire.extend_from_slice(&piece);
        let mut out = Vec::new();
        let mut d = zstd::stream::read::Decoder::new(&wire[..]).unwrap();
        let _ = std::io::Read::read_to_end(&mut d, &mut out);
        if String::from_utf8_lossy(&out).contains("{\"heartbeat\":{}}") {
            break t.elapsed();
        }
    };
    assert!(
        beat_seen < Duration::from_millis(1000),
        "first heartbeat decoded after {beat_seen:?}"
    );
    while let Some(p) = s.next_piece() {
        wire.extend_from_slice(&p);
    }
    let decoded = zstd::stream::decode_all(&wire[..]).unwrap();
    let lines: Vec<String> = String::from_utf8(decoded)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    verified(&lines);
    assert!(control_lines(&lines, "heartbeat").len() >= 3);
}
