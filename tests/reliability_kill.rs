//! Kill -9 of the server binary while streams run and a writer commits:
//! after a restart the database passes `PRAGMA integrity_check`, nothing of
//! the old process survives in the new one (cursors live in memory only, so
//! old cursors answer `404 cursor_not_found` to resume and cancel), and the
//! new process serves the database's current contents.
//!
//! `ROWSTREAM_LONG=1` runs 20 kill cycles (default 3).
#![cfg(feature = "server")]

mod server_common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rowstream::core::protocol::StreamVerifier;
use server_common::*;

const TOKEN: &str = "kill-test-token";

fn spawn(db: &Path, audit: &Path) -> ServerProcess {
    let token = format!("{TOKEN}=default:alice");
    let args: [&std::ffi::OsStr; 9] = [
        "serve".as_ref(),
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--db".as_ref(),
        db.as_os_str(),
        "--audit-log".as_ref(),
        audit.as_os_str(),
        "--token".as_ref(),
        token.as_ref(),
    ];
    ServerProcess::start(args, false)
}

fn count(db: &Path) -> i64 {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn kill_9_during_streams_leaves_a_sound_database_and_no_live_cursor() {
    let cycles = if long_run() { 20 } else { 3 };
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    drop(make_db(&db, 150_000));
    let audit = dir.path("audit.jsonl");
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = {
        let (db, stop, commits) = (db.clone(), stop.clone(), commits.clone());
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(db).unwrap();
            c.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut i = 0i64;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                c.execute_batch(&format!(
                    "BEGIN; INSERT INTO t(name, v) VALUES ('w{i}', {i}); \
                     UPDATE t SET v = v + 1 WHERE id = {}; \
                     DELETE FROM t WHERE id = (SELECT min(id) FROM t WHERE name LIKE 'w%'); COMMIT;",
                    1 + i % 1000
                ))
                .unwrap();
                commits.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let mut old_cursors: Vec<String> = Vec::new();
    let mut cut_streams = 0;
    let mut proc = spawn(&db, &audit);
    for cycle in 0..cycles {
        // Streams in flight: each read a little (open line + a few rows),
        // then left hanging (the server is held by backpressure).
        let mut live = Vec::new();
        for _ in 0..4 {
            let mut s = open_stream(proc.addr, r#"{"query":"SELECT * FROM t"}"#, Some(TOKEN));
            assert_eq!(s.status, 200);
            let mut v = StreamVerifier::new();
            for _ in 0..50 {
                v.accept(&s.next_line().unwrap()).unwrap();
            }
            old_cursors.push(v.cursor().unwrap().to_owned());
            live.push((s, v));
        }
        // Kill -9 (SIGKILL): no shutdown path runs.
        proc.child.kill().unwrap();
        proc.child.wait().unwrap();
        // Every cut stream ends without an `end` line: clients see an
        // interruption, never a complete result.
        for (mut s, mut v) in live {
            for l in s.rest() {
                let _ = v.accept(&l);
            }
            assert!(
                !v.is_complete(),
                "cycle {cycle}: a killed stream looked complete"
            );
            cut_streams += 1;
        }
        let c = rusqlite::Connection::open(&db).unwrap();
        c.busy_timeout(Duration::from_secs(10)).unwrap();
        let check: String = c
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok", "cycle {cycle}");
        drop(c);
        proc = spawn(&db, &audit);
        // Cursors were in memory: every old one is unknown now, for resume
        // and cancel alike, with the same body as a never-issued cursor.
        let unknown = post(
            proc.addr,
            "/v1/query/stream",
            &serde_json::json!({"cursor": "0".repeat(48), "after_rows": 0, "prefix_hash": "0".repeat(64)}).to_string(),
            Some(TOKEN),
        );
        assert_eq!(unknown.status, 404);
        for cur in &old_cursors {
            let r = post(
                proc.addr,
                "/v1/query/stream",
                &serde_json::json!({"cursor": cur, "after_rows": 50, "prefix_hash": "0".repeat(64)})
                    .to_string(),
                Some(TOKEN),
            );
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (404, "cursor_not_found")
            );
            assert_eq!(r.body, unknown.body);
            let r = post(
                proc.addr,
                "/v1/query/stream/cancel",
                &serde_json::json!({ "cursor": cur }).to_string(),
                Some(TOKEN),
            );
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (404, "cursor_not_found")
            );
        }
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    // The restarted server serves the current contents in full.
    let expected = count(&db);
    let r = post(
        proc.addr,
        "/v1/query/stream",
        r#"{"query":"SELECT * FROM t"}"#,
        Some(TOKEN),
    );
    let mut v = StreamVerifier::new();
    verify_lines(&mut v, &r.lines());
    assert!(v.is_complete());
    assert_eq!(v.rows() as i64, expected);
    eprintln!(
        "reliability_kill: {cycles} kill -9 cycles, {cut_streams} streams cut, {} old cursors \
         answered 404, {} writer commits, integrity_check ok",
        old_cursors.len(),
        commits.load(Ordering::Relaxed)
    );
}
