//! Cancel, disconnect, quotas, the latency cap and the snapshot TTL.
#![cfg(feature = "server")]

mod server_common;

use std::time::{Duration, Instant};

use rowstream::core::audit::AuditEvent;
use rowstream::core::close::CloseReason;
use rowstream::core::digest::prefix_hash_of;
use server_common::*;

/// Resumable, and produces no row for minutes: every row runs a 300k-step
/// recursive CTE that ends up filtering it out. Pure SQL, no UDF.
const SLOW_NO_ROWS: &str = "SELECT * FROM t WHERE (WITH RECURSIVE c(x) AS (SELECT t.id UNION ALL SELECT x + 1 FROM c WHERE x < t.id + 300000) SELECT count(*) FROM c) < 0";

fn slow_body() -> String {
    serde_json::json!({ "query": SLOW_NO_ROWS }).to_string()
}

fn closed(ts: &TestServer, lease: &str) -> Option<(CloseReason, String)> {
    match closed_of(&ts.events(), lease) {
        Some(AuditEvent::StreamClosed { reason, cause, .. }) => Some((reason, cause)),
        _ => None,
    }
}

#[test]
fn cancel_endpoint_interrupts_a_stalled_query_and_releases_the_slot() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 5000);
    let ts = TestServer::start(builder_for(&db));
    let mut s = open_stream(ts.addr(), &slow_body(), None);
    assert_eq!(s.status, 200);
    let open = j(&s.next_line().expect("open line arrives before any row"));
    let cursor = open["open"]["cursor"]
        .as_str()
        .expect("resumable")
        .to_owned();
    let lease = open["open"]["lease"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(150));
    assert_eq!(ts.server.stats().slots_in_use, 1);
    let t = Instant::now();
    let r = post(
        ts.addr(),
        "/v1/query/stream/cancel",
        &format!(r#"{{"cursor":"{cursor}"}}"#),
        None,
    );
    assert_eq!(r.status, 200);
    let released = ts
        .wait_stats(2000, |s| s.slots_in_use == 0 && s.running_streams == 0)
        .map(|_| t.elapsed());
    eprintln!("slot released {released:?} after the stop");
    assert!(
        released.is_some_and(|d| d < Duration::from_millis(100)),
        "slot released after {released:?}"
    );
    let rest = s.rest();
    let end = j(rest.last().unwrap());
    assert_eq!(end["end"]["reason"], "cancelled");
    assert_eq!(end["end"]["row_count"], 0);
    assert_eq!(
        closed(&ts, &lease),
        Some((CloseReason::Cancelled, "cancel".into()))
    );
    let resume = serde_json::json!({"cursor": cursor, "after_rows": 0, "prefix_hash": prefix_hash_of(Vec::<String>::new())});
    let r = post(ts.addr(), "/v1/query/stream", &resume.to_string(), None);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "cursor_cancelled")
    );
    assert_paired(&ts.events());
}

#[test]
fn disconnect_interrupts_the_query_but_keeps_the_cursor() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 5000);
    let ts = TestServer::start(builder_for(&db));
    let mut s = open_stream(ts.addr(), &slow_body(), None);
    let open = j(&s.next_line().unwrap());
    let cursor = open["open"]["cursor"].as_str().unwrap().to_owned();
    let lease = open["open"]["lease"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    drop(s);
    let released = ts
        .wait_stats(3000, |s| s.slots_in_use == 0 && s.running_streams == 0)
        .map(|_| t.elapsed());
    eprintln!("slot released {released:?} after the stop");
    assert!(
        released.is_some_and(|d| d < Duration::from_millis(100)),
        "slot released after {released:?}"
    );
    assert_eq!(
        closed(&ts, &lease),
        Some((CloseReason::Cancelled, "disconnect".into()))
    );
    // Not tombstoned: the cursor resumes (here on a fast query's cursor too).
    let resume = serde_json::json!({"cursor": cursor, "after_rows": 0, "prefix_hash": prefix_hash_of(Vec::<String>::new())});
    let mut s = open_stream(ts.addr(), &resume.to_string(), None);
    assert_eq!(s.status, 200);
    let ropen = j(&s.next_line().unwrap());
    assert_eq!(ropen["open"]["cursor"], cursor.as_str());
    drop(s);
    assert!(ts.wait_stats(3000, |s| s.running_streams == 0).is_some());
    assert_eq!(ts.server.stats().pinned_snapshots, 1);
    assert_paired(&ts.events());
}

#[test]
fn quotas_refuse_with_429_and_slots_come_back() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 5000);
    let ts = TestServer::start(
        builder_for(&db)
            .token("a", "default", "alice")
            .token("b", "default", "bob")
            .set("stream.max_global", "3")
            .set("stream.max_per_principal", "2"),
    );
    let body = slow_body();
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = open_stream(ts.addr(), &body, Some("a"));
        assert_eq!(s.status, 200);
        s.next_line().unwrap();
        held.push(s);
    }
    let r = post(ts.addr(), "/v1/query/stream", &body, Some("a"));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "principal_stream_quota_exhausted")
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        (
            r.json()["error"]["limit"].as_u64(),
            r.json()["error"]["current"].as_u64()
        ),
        (Some(2), Some(2))
    );
    let mut b1 = open_stream(ts.addr(), &body, Some("b"));
    assert_eq!(b1.status, 200);
    b1.next_line().unwrap();
    let r = post(
        ts.addr(),
        "/v1/query/stream",
        r#"{"query":"SELECT 1"}"#,
        Some("b"),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "server_stream_capacity_exhausted")
    );
    assert_eq!(
        (
            r.json()["error"]["limit"].as_u64(),
            r.json()["error"]["current"].as_u64()
        ),
        (Some(3), Some(3))
    );
    drop(held);
    drop(b1);
    assert!(ts.wait_stats(3000, |s| s.slots_in_use == 0).is_some());
    assert_eq!(
        post(
            ts.addr(),
            "/v1/query/stream",
            r#"{"query":"SELECT 1"}"#,
            Some("a")
        )
        .status,
        200
    );
    let refusals: Vec<_> = ts
        .events()
        .into_iter()
        .filter(|e| {
            matches!(
                e,
                AuditEvent::StreamClosed {
                    reason: CloseReason::CapacityRefused,
                    lease: None,
                    ..
                }
            )
        })
        .collect();
    assert_eq!(refusals.len(), 2);
    assert_paired(&ts.events());
}

#[test]
fn latency_cap_holds_while_the_query_stalls() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 3);
    let ts = TestServer::start(builder_for(&db).set("stream.chunk.max_latency_ms", "50"));
    let body =
        r#"{"query":"SELECT id, sleep_ms(CASE WHEN id = 1 THEN 0 ELSE 600 END) AS s FROM t"}"#;
    let mut s = open_stream(ts.addr(), body, None);
    s.next_line().unwrap();
    let t = Instant::now();
    let first = s.next_line().unwrap();
    let waited = t.elapsed();
    eprintln!("first row arrived {waited:?} after the open line");
    assert!(first.starts_with(r#"{"row":{"id":1"#), "{first}");
    assert!(
        waited < Duration::from_millis(300),
        "first row took {waited:?} (latency cap 50 ms, next row at 600 ms)"
    );
    let rest = s.rest();
    assert_eq!(j(rest.last().unwrap())["end"]["row_count"], 3);
}

/// At the limit, a resume must not be refused for the slot of its own
/// cursor's earlier response, still running because the server has not yet
/// noticed that its client is gone: the resume takes over.
#[test]
fn a_resume_at_the_limit_takes_over_the_slot_of_its_own_earlier_response() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 50);
    let ts = TestServer::start(builder_for(&db).set("stream.max_global", "1"));
    let mut first = open_stream(ts.addr(), &slow_body(), None);
    assert_eq!(first.status, 200);
    let open = j(&first.next_line().unwrap());
    let cursor = open["open"]["cursor"].as_str().unwrap().to_owned();
    // Another query is still refused: the limit holds.
    let r = query(ts.addr(), "SELECT 1");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "server_stream_capacity_exhausted")
    );
    let resume = serde_json::json!({
        "cursor": cursor,
        "after_rows": 0,
        "prefix_hash": prefix_hash_of(Vec::<String>::new()),
    })
    .to_string();
    let mut second = open_stream(ts.addr(), &resume, None);
    assert_eq!(second.status, 200);
    let open2 = j(&second.next_line().unwrap());
    assert_eq!(open2["open"]["cursor"], cursor.as_str());
    // The earlier response ended, cancelled, with a consistent end line.
    let rest = first.rest();
    let end = j(rest.last().unwrap());
    assert_eq!(end["end"]["reason"], "cancelled");
    assert_eq!(end["end"]["row_count"], 0);
    assert!(wait_events(&ts, 2000, |e| e.iter().any(|e| matches!(
        e,
        AuditEvent::StreamClosed { cause, .. } if cause == "superseded"
    ))));
    drop(second);
    assert!(ts.wait_stats(3000, |s| s.slots_in_use == 0).is_some());
}

/// Past its first few thousand rows a stream is encoded on a second thread;
/// rows produced just before a stall must still reach the client on time,
/// and every row must arrive, in order, under the right digest.
#[test]
fn latency_cap_holds_when_a_long_stream_stalls() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 12_000);
    let ts = TestServer::start(builder_for(&db).set("stream.chunk.max_latency_ms", "50"));
    // A short stall lets the encoder go idle; the next 99 rows are too few
    // to wake it by volume; then the long stall.
    let body = r#"{"query":"SELECT id, sleep_ms(CASE id WHEN 5000 THEN 300 WHEN 5100 THEN 1500 ELSE 0 END) AS s FROM t"}"#;
    let mut s = open_stream(ts.addr(), body, None);
    s.next_line().unwrap();
    let t = Instant::now();
    let mut lines = Vec::new();
    loop {
        let l = s.next_line().unwrap();
        let last = l.starts_with(r#"{"row":{"id":5099,"#);
        lines.push(l);
        if last {
            break;
        }
    }
    let waited = t.elapsed();
    eprintln!("row 5099 arrived {waited:?} after the open line");
    assert!(
        waited < Duration::from_millis(1200),
        "row 5099 took {waited:?} (stall of 300 ms, latency cap 50 ms, row 5100 comes after 1500 ms more)"
    );
    lines.extend(s.rest());
    let rows = row_lines(&lines);
    assert_eq!(rows.len(), 12_000);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(j(r)["row"]["id"], i as u64 + 1);
    }
    let end = j(lines.last().unwrap());
    assert_eq!(end["end"]["reason"], "ok");
    assert_eq!(end["end"]["prefix_hash"], prefix_hash_of(&rows));
}

#[test]
fn snapshot_ttl_running_out_mid_stream_ends_snapshot_expired() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 5000);
    let ts = TestServer::start(builder_for(&db).set("stream.snapshot.ttl_ms", "400"));
    // Rows keep coming, slowly.
    let r = query(ts.addr(), "SELECT id, sleep_ms(40) FROM t");
    let lines = r.lines();
    let end = j(lines.last().unwrap());
    assert_eq!(
        end["end"]["reason"],
        "snapshot_expired",
        "{}",
        lines.last().unwrap()
    );
    let n = end["end"]["row_count"].as_u64().unwrap();
    assert!(n > 0 && n < 100, "{n}");
    assert_eq!(row_lines(&lines).len() as u64, n);
    // No rows at all for a long time: the timer ends it.
    let t = Instant::now();
    let r = query(ts.addr(), SLOW_NO_ROWS);
    let end = j(r.lines().last().unwrap());
    assert_eq!(end["end"]["reason"], "snapshot_expired");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert!(wait_events(&ts, 2000, |e| e
        .iter()
        .filter(|e| matches!(
            e,
            AuditEvent::StreamClosed {
                reason: CloseReason::SnapshotExpired,
                ..
            }
        ))
        .count()
        == 2));
    assert_paired(&ts.events());
}

#[test]
fn a_slow_reader_applies_backpressure() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 1);
    let ts = TestServer::start(builder_for(&db));
    // An endless result of ~1 KB rows.
    let body = serde_json::json!({"query": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT x, printf('%01000d', x) AS pad FROM c"}).to_string();
    let mut s = open_stream(ts.addr(), &body, None);
    let open = j(&s.next_line().unwrap());
    let lease = open["open"]["lease"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        s.next_line().unwrap();
    }
    // Stop reading: the server must stop producing once a few chunks and the
    // socket buffers are full, instead of buffering without bound.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ts.server.stats().running_streams, 1);
    drop(s);
    assert!(wait_events(&ts, 3000, |e| closed_of(e, &lease).is_some()));
    let Some(AuditEvent::StreamClosed {
        row_count,
        bytes_written,
        cause,
        ..
    }) = closed_of(&ts.events(), &lease)
    else {
        unreachable!()
    };
    assert_eq!(cause, "disconnect");
    eprintln!("stalled reader: {row_count} rows, {bytes_written} bytes produced");
    assert!(
        row_count < 40_000,
        "{row_count} rows ({bytes_written} bytes) produced for a stalled reader"
    );
}

#[test]
fn a_resume_supersedes_a_response_still_running_for_the_cursor() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 5000);
    let ts = TestServer::start(builder_for(&db));
    let mut first = open_stream(ts.addr(), &slow_body(), None);
    let open = j(&first.next_line().unwrap());
    let cursor = open["open"]["cursor"].as_str().unwrap().to_owned();
    let lease = open["open"]["lease"].as_str().unwrap().to_owned();
    let resume = serde_json::json!({"cursor": cursor, "after_rows": 0, "prefix_hash": prefix_hash_of(Vec::<String>::new())});
    let mut second = open_stream(ts.addr(), &resume.to_string(), None);
    assert_eq!(second.status, 200);
    let ropen = j(&second.next_line().unwrap());
    assert_eq!(ropen["open"]["after_rows"], 0);
    let end = j(first.rest().last().unwrap());
    assert_eq!(end["end"]["reason"], "cancelled");
    assert_eq!(
        closed(&ts, &lease),
        Some((CloseReason::Cancelled, "superseded".into()))
    );
    assert_eq!(ts.server.stats().running_streams, 1);
    drop(second);
    assert!(ts.wait_stats(3000, |s| s.running_streams == 0).is_some());
    assert_paired(&ts.events());
}
