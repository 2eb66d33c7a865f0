//! Snapshot pinning, resume correctness and cursor errors.
#![cfg(feature = "server")]

mod server_common;

use std::time::Duration;

use rowstream::core::digest::prefix_hash_of;
use server_common::*;

fn resume_body(cursor: &str, rows: &[String]) -> String {
    serde_json::json!({
        "cursor": cursor,
        "after_rows": rows.len(),
        "prefix_hash": prefix_hash_of(rows),
    })
    .to_string()
}

fn fresh(ts: &TestServer, body: &str) -> (serde_json::Value, Vec<String>, serde_json::Value) {
    let r = post(ts.addr(), "/v1/query/stream", body, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let lines = r.lines();
    (j(&lines[0]), row_lines(&lines), j(lines.last().unwrap()))
}

#[test]
fn snapshot_is_pinned_across_a_resume_with_concurrent_writes() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    let c = make_db(&db, 3000);
    let ts = TestServer::start(builder_for(&db).checkpoint_every(64));
    let body = r#"{"query":"SELECT id, name, v FROM t WHERE id % 2 = 1"}"#;
    let (_, reference, ref_end) = fresh(&ts, body);
    assert_eq!(reference.len(), 1500);

    let mut s = open_stream(ts.addr(), body, None);
    let open = j(&s.next_line().unwrap());
    let cursor = open["open"]["cursor"].as_str().unwrap().to_owned();
    let lsn = open["open"]["snapshot_lsn"].as_u64().unwrap();
    let mut got = Vec::new();
    while got.len() < 700 {
        got.push(s.next_line().unwrap());
    }
    drop(s); // the connection breaks mid-stream

    // Writers commit inserts, deletes and updates after the open.
    c.execute_batch(
        "INSERT INTO t(name, v) VALUES ('new', 1.0), ('new2', 2.0);
         DELETE FROM t WHERE id BETWEEN 1401 AND 1600;
         UPDATE t SET name = 'changed' WHERE id > 1000;
         DELETE FROM t WHERE id = 1;",
    )
    .unwrap();
    let (later_open, later, _) = fresh(&ts, body);
    assert_ne!(later, reference, "the writes are visible to new streams");
    assert!(later_open["open"]["snapshot_lsn"].as_u64().unwrap() > lsn);

    let r = post(
        ts.addr(),
        "/v1/query/stream",
        &resume_body(&cursor, &got),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let lines = r.lines();
    let ropen = j(&lines[0]);
    assert_eq!(ropen["open"]["cursor"], cursor.as_str());
    assert_eq!(ropen["open"]["after_rows"], 700);
    assert_eq!(ropen["open"]["snapshot_lsn"].as_u64(), Some(lsn));
    assert_eq!(
        ropen["open"]["expires_at_ms"], open["open"]["expires_at_ms"],
        "TTL not extended"
    );
    let rows = row_lines(&lines);
    assert_eq!(
        rows,
        reference[700..],
        "resumed rows come from the pinned snapshot"
    );
    let end = j(lines.last().unwrap());
    assert_eq!(end["end"]["row_count"], 1500);
    assert_eq!(end["end"]["prefix_hash"], ref_end["end"]["prefix_hash"]);
    assert!(wait_events(&ts, 2000, |e| {
        e.iter().filter(|e| e.name() == "stream.closed").count() >= 4
    }));
    assert_paired(&ts.events());
}

/// Streams `q` once, then resumes its cursor after each of the row counts
/// `at(n)` gives (`n`: rows in the result): every resume must send exactly
/// the rest, end with the reference digest and, when `max_replayed` is set,
/// re-read fewer rows than that (a checkpoint was used). Returns `n`.
fn resume_everywhere(
    ts: &TestServer,
    q: &str,
    at: impl Fn(usize) -> Vec<usize>,
    max_replayed: Option<u64>,
) -> usize {
    let (open, reference, ref_end) = fresh(ts, q);
    assert_eq!(open["open"]["resumable"], true, "{q}");
    let cursor = open["open"]["cursor"].as_str().unwrap();
    let n = reference.len();
    for k in at(n) {
        let replayed = ts.server.stats().resume_rows_replayed;
        let r = post(
            ts.addr(),
            "/v1/query/stream",
            &resume_body(cursor, &reference[..k]),
            None,
        );
        assert_eq!(r.status, 200, "{q} at {k}: {}", r.text());
        let lines = r.lines();
        assert_eq!(j(&lines[0])["open"]["after_rows"], k);
        assert_eq!(row_lines(&lines), reference[k..], "{q} at {k}");
        let end = j(lines.last().unwrap());
        assert_eq!(end["end"]["row_count"], n, "{q} at {k}");
        assert_eq!(end["end"]["prefix_hash"], ref_end["end"]["prefix_hash"]);
        assert_eq!(end["end"]["reason"], "ok");
        let replayed = ts.server.stats().resume_rows_replayed - replayed;
        if let Some(max) = max_replayed {
            assert!(
                replayed < max,
                "{q} at {k}: {replayed} rows replayed, checkpoints not used"
            );
        }
    }
    n
}

#[test]
fn resumes_continue_at_any_row_any_number_of_times() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 300);
    let ts = TestServer::start(builder_for(&db).checkpoint_every(7));
    let queries = [
        r#"{"query":"SELECT * FROM t"}"#,
        r#"{"query":"SELECT name, id FROM t WHERE id > ? OR name = 'n2' ORDER BY rowid","params":[40],"shape":"array"}"#,
        r#"{"query":"SELECT id FROM t WHERE id % 3 = 0 ORDER BY id LIMIT 50 OFFSET 5"}"#,
        r#"{"query":"SELECT id AS rowid, name FROM t"}"#,
    ];
    for q in queries {
        let max_replayed = (!q.contains("LIMIT")).then_some(7);
        resume_everywhere(
            &ts,
            q,
            |n| vec![0, 1, 6, 7, 8, n / 2, n - 1, n],
            max_replayed,
        );
    }
    assert_paired(&ts.events());
}

/// Long results are encoded on a second thread past their first 4096 rows,
/// which also records the resume checkpoints (with the rowid the stepping
/// thread hands over): resumes on either side of that point, and far past
/// it, continue exactly and start from a nearby checkpoint.
#[test]
fn long_results_resume_from_checkpoints_recorded_by_the_encoding_thread() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 12_000);
    let ts = TestServer::start(builder_for(&db).checkpoint_every(1000));
    let queries = [
        r#"{"query":"SELECT * FROM t"}"#,
        r#"{"query":"SELECT name, id FROM t WHERE id > ? OR name = 'n2' ORDER BY rowid","params":[40],"shape":"array"}"#,
        r#"{"query":"SELECT id AS rowid, name FROM t"}"#,
    ];
    for q in queries {
        let n = resume_everywhere(
            &ts,
            q,
            |n| vec![4095, 4096, 4097, 5000, 5001, 7777, n - 1, n],
            Some(1000),
        );
        assert!(n > 10_000, "{q}: {n}");
    }
    assert_paired(&ts.events());
}

#[test]
fn prefix_hash_mismatch_is_refused() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 40);
    let ts = TestServer::start(builder_for(&db).checkpoint_every(8));
    let (open, reference, _) = fresh(&ts, r#"{"query":"SELECT * FROM t"}"#);
    let cursor = open["open"]["cursor"].as_str().unwrap();
    let mut wrong = reference[..10].to_vec();
    wrong[3] = wrong[3].replace("n4", "n5");
    for body in [
        resume_body(cursor, &wrong),
        serde_json::json!({"cursor": cursor, "after_rows": 41, "prefix_hash": prefix_hash_of(&reference)}).to_string(),
        serde_json::json!({"cursor": cursor, "after_rows": 9, "prefix_hash": prefix_hash_of(&reference[..10])}).to_string(),
    ] {
        let r = post(ts.addr(), "/v1/query/stream", &body, None);
        assert_eq!((r.status, r.error_code().as_str()), (409, "prefix_hash_mismatch"), "{}", r.text());
    }
    // The cursor still works with the right digest.
    let r = post(
        ts.addr(),
        "/v1/query/stream",
        &resume_body(cursor, &reference[..10]),
        None,
    );
    assert_eq!(r.status, 200);
    assert!(ts.events().iter().any(|e| matches!(e,
        rowstream::core::audit::AuditEvent::CursorRejected { code, .. } if code == "prefix_hash_mismatch")));
    assert_paired(&ts.events());
}

#[test]
fn cursor_errors_mask_foreign_cursors() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 20);
    let ts = TestServer::start(
        builder_for(&db)
            .token("alice-token", "default", "alice")
            .token("bob-token", "default", "bob"),
    );
    let a = ts.addr();
    let r = post(
        a,
        "/v1/query/stream",
        r#"{"query":"SELECT * FROM t"}"#,
        Some("alice-token"),
    );
    let lines = r.lines();
    let cursor = j(&lines[0])["open"]["cursor"].as_str().unwrap().to_owned();
    let rows = row_lines(&lines);
    let resume = resume_body(&cursor, &rows[..5]);
    let unknown = resume_body(&"ab".repeat(24), &rows[..5]);

    let foreign = post(a, "/v1/query/stream", &resume, Some("bob-token"));
    let missing = post(a, "/v1/query/stream", &unknown, Some("bob-token"));
    assert_eq!(foreign.status, 404);
    assert_eq!(
        foreign.body, missing.body,
        "foreign and unknown are byte-identical"
    );
    assert_eq!(foreign.error_code(), "cursor_not_found");
    let fc = post(
        a,
        "/v1/query/stream/cancel",
        &format!(r#"{{"cursor":"{cursor}"}}"#),
        Some("bob-token"),
    );
    let uc = post(
        a,
        "/v1/query/stream/cancel",
        &format!(r#"{{"cursor":"{}"}}"#, "cd".repeat(24)),
        Some("bob-token"),
    );
    assert_eq!((fc.status, uc.status), (404, 404));
    assert_eq!(fc.body, uc.body);

    // Bob's attempts did nothing: Alice resumes.
    assert_eq!(
        post(a, "/v1/query/stream", &resume, Some("alice-token")).status,
        200
    );
    // Alice cancels (idempotent), then resumes get 409.
    for _ in 0..2 {
        let r = post(
            a,
            "/v1/query/stream/cancel",
            &format!(r#"{{"cursor":"{cursor}"}}"#),
            Some("alice-token"),
        );
        assert_eq!(
            (r.status, r.json()),
            (200, serde_json::json!({"cancelled": true}))
        );
    }
    let r = post(a, "/v1/query/stream", &resume, Some("alice-token"));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (409, "cursor_cancelled")
    );
    let r = post(a, "/v1/query/stream", &resume, Some("bob-token"));
    assert_eq!(r.body, missing.body, "still masked for others");
}

#[test]
fn expired_cursors_and_pinned_snapshots_are_released_at_ttl() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 20);
    let ts = TestServer::start(builder_for(&db).set("stream.snapshot.ttl_ms", "400"));
    let mut cursors = Vec::new();
    for _ in 0..3 {
        let (open, rows, _) = fresh(&ts, r#"{"query":"SELECT * FROM t"}"#);
        cursors.push((open["open"]["cursor"].as_str().unwrap().to_owned(), rows));
    }
    fresh(&ts, r#"{"query":"SELECT count(*) FROM t"}"#);
    assert_eq!(
        ts.server.stats().pinned_snapshots,
        3,
        "only resumable streams pin"
    );
    assert!(
        ts.wait_stats(3000, |s| s.pinned_snapshots == 0).is_some(),
        "pins released after the TTL: {:?}",
        ts.server.stats()
    );
    let (cursor, rows) = &cursors[0];
    let r = post(
        ts.addr(),
        "/v1/query/stream",
        &resume_body(cursor, &rows[..2]),
        None,
    );
    assert_eq!((r.status, r.error_code().as_str()), (410, "cursor_expired"));
    std::thread::sleep(Duration::from_millis(10));
}

#[test]
fn past_the_pin_limit_streams_have_no_cursor() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 5);
    let ts = TestServer::start(builder_for(&db).max_pinned(2));
    for i in 0..3 {
        let (open, rows, _) = fresh(&ts, r#"{"query":"SELECT * FROM t"}"#);
        assert_eq!(rows.len(), 5);
        if i < 2 {
            assert_eq!(open["open"]["resumable"], true);
        } else {
            assert_eq!(open["open"]["resumable"], false);
            assert_eq!(open["open"]["reason"], "snapshot_limit");
            assert!(open["open"]["cursor"].is_null());
        }
    }
    assert_eq!(ts.server.stats().pinned_snapshots, 2);
}

#[test]
fn resumable_results_come_in_rowid_order_even_when_an_index_is_used() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    let c = make_db(&db, 200);
    c.execute_batch("CREATE INDEX t_name ON t(name)").unwrap();
    let ts = TestServer::start(builder_for(&db).checkpoint_every(5));
    for q in [
        r#"{"query":"SELECT id, name FROM t WHERE name > 'n5'","shape":"array"}"#,
        r#"{"query":"SELECT id, name FROM t WHERE name > 'n5' LIMIT 20 OFFSET 3","shape":"array"}"#,
    ] {
        let (open, rows, end) = fresh(&ts, q);
        assert_eq!(open["open"]["resumable"], true);
        let ids: Vec<i64> = rows
            .iter()
            .map(|l| j(l)["row"][0].as_i64().unwrap())
            .collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "{q}: not in rowid order: {ids:?}"
        );
        let cursor = open["open"]["cursor"].as_str().unwrap();
        let k = rows.len() / 2 + 1;
        let r = post(
            ts.addr(),
            "/v1/query/stream",
            &resume_body(cursor, &rows[..k]),
            None,
        );
        assert_eq!(row_lines(&r.lines()), rows[k..], "{q}");
        assert_eq!(
            j(r.lines().last().unwrap())["end"]["prefix_hash"],
            end["end"]["prefix_hash"]
        );
    }
}
