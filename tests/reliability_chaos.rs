//! Chaos: streams cut at a random byte and resumed (sometimes several times)
//! while another thread commits inserts, updates and deletes to the same
//! table. Every completed stream must equal, row for row and digest for
//! digest, an uninterrupted stream of the same snapshot.
//!
//! The reference is a second stream opened while the writer is held off
//! (both pin the same commit: equal `snapshot_lsn`) and read without a cut.
//!
//! `ROWSTREAM_LONG=1` runs 1,000 cycles (default 100);
//! `ROWSTREAM_SEED=N` replays a run (the seed is printed).
#![cfg(feature = "server")]

mod server_common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rowstream::core::protocol::{StreamEvent, StreamVerifier};
use server_common::*;

/// Reads a response to its end; returns every line.
fn read_all(s: &mut Streaming) -> Vec<String> {
    s.rest()
}

/// Reads the open line, then `cut` more body bytes (or to the end of the
/// body), and drops the connection. Returns the complete lines and whether
/// the body ended before the cut.
fn read_cut(mut s: Streaming, cut: usize) -> (Vec<String>, bool) {
    let mut buf: Vec<u8> = Vec::new();
    let mut ended = true;
    while let Some(piece) = s.next_piece() {
        buf.extend_from_slice(&piece);
        if let Some(open_end) = buf.iter().position(|&b| b == b'\n') {
            let target = open_end + 1 + cut;
            if buf.len() >= target {
                buf.truncate(target);
                ended = false;
                break;
            }
        }
    }
    drop(s);
    let mut lines = Vec::new();
    let mut rest = buf.as_slice();
    while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
        lines.push(String::from_utf8(rest[..pos].to_vec()).unwrap());
        rest = &rest[pos + 1..];
    }
    (lines, ended)
}

const QUERIES: &[(&str, Option<&str>)] = &[
    ("SELECT * FROM t", None),
    ("SELECT id, name FROM t WHERE v > 10 ORDER BY id", None),
    ("SELECT * FROM t ORDER BY rowid LIMIT 900 OFFSET 3", None),
    ("SELECT name, v, id FROM t WHERE name LIKE '%1%'", None),
    ("SELECT * FROM t WHERE id > ?1", Some("[5]")),
];

fn body_for(rng: &mut Rng) -> String {
    let (q, params) = QUERIES[rng.below(QUERIES.len() as u64) as usize];
    let shape = if rng.below(3) == 0 { "array" } else { "object" };
    match params {
        Some(p) => format!(
            r#"{{"query":{},"params":{p},"shape":"{shape}"}}"#,
            serde_json::to_string(q).unwrap()
        ),
        None => format!(
            r#"{{"query":{},"shape":"{shape}"}}"#,
            serde_json::to_string(q).unwrap()
        ),
    }
}

/// A writer committing small random transactions until told to stop; holds
/// `gate` for each transaction.
fn writer(
    db: std::path::PathBuf,
    gate: Arc<Mutex<()>>,
    stop: Arc<AtomicBool>,
    seed: u64,
    commits: Arc<AtomicU64>,
) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let mut rng = Rng(seed);
    while !stop.load(Ordering::SeqCst) {
        {
            let _g = gate.lock().unwrap();
            let tx = c.unchecked_transaction().unwrap();
            for _ in 0..1 + rng.below(5) {
                let max: i64 = tx
                    .query_row("SELECT coalesce(max(id), 0) FROM t", [], |r| r.get(0))
                    .unwrap();
                let id = 1 + rng.below(max.max(1) as u64) as i64;
                match rng.below(4) {
                    0 => {
                        tx.execute(
                            "INSERT INTO t(name, v) VALUES (?1, ?2)",
                            rusqlite::params![
                                format!("ins\"{}\\é{}", rng.below(1000), rng.below(7)),
                                rng.below(1000) as f64 / 8.0
                            ],
                        )
                        .unwrap();
                    }
                    1 => {
                        tx.execute(
                            "UPDATE t SET name = name || 'u', v = v + 1.5 WHERE id BETWEEN ?1 AND ?1 + 20",
                            [id],
                        )
                        .unwrap();
                    }
                    2 => {
                        tx.execute("DELETE FROM t WHERE id BETWEEN ?1 AND ?1 + 3", [id])
                            .unwrap();
                    }
                    _ => {
                        // Re-use a deleted rowid (lower than the max).
                        tx.execute(
                            "INSERT OR REPLACE INTO t(id, name, v) VALUES (?1, 're', 0.25)",
                            [id],
                        )
                        .unwrap();
                    }
                }
            }
            tx.commit().unwrap();
        }
        commits.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_micros(200 + rng.below(800)));
    }
}

#[derive(Default, Debug)]
struct Figures {
    cycles: u64,
    cuts: u64,
    resumes: u64,
    rows_compared: u64,
    divergent_rows: u64,
    digest_mismatches: u64,
    non_resumable: u64,
}

fn cancel(addr: SocketAddr, cursor: &str) {
    let r = post(
        addr,
        "/v1/query/stream/cancel",
        &serde_json::json!({ "cursor": cursor }).to_string(),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn cut_and_resumed_streams_equal_their_snapshot_under_concurrent_writes() {
    let seed = seed();
    let cycles = if long_run() { 1000 } else { 100 };
    eprintln!("reliability_chaos: seed {seed} (ROWSTREAM_SEED={seed} replays), {cycles} cycles");
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    drop(make_db(&db, 1200));
    let ts = TestServer::start(
        builder_for(&db)
            .checkpoint_every(64)
            .set("stream.snapshot.ttl_ms", "30000"),
    );
    let addr = ts.addr();
    let gate = Arc::new(Mutex::new(()));
    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let w = {
        let (db, gate, stop, commits) = (db.clone(), gate.clone(), stop.clone(), commits.clone());
        std::thread::spawn(move || writer(db, gate, stop, seed ^ 0x5555, commits))
    };
    let mut rng = Rng(seed);
    let mut f = Figures::default();
    let started = Instant::now();
    for cycle in 0..cycles {
        let body = body_for(&mut rng);
        // Pin both snapshots with the writer held off: same commit.
        let (a, mut b) = {
            let _g = gate.lock().unwrap();
            let a = open_stream(addr, &body, None);
            let b = open_stream(addr, &body, None);
            (a, b)
        };
        assert_eq!((a.status, b.status), (200, 200), "{body}");
        // The reference: one uninterrupted read (the writer runs meanwhile).
        let reference = read_all(&mut b);
        let mut rv = StreamVerifier::new();
        verify_lines(&mut rv, &reference);
        assert!(rv.is_complete(), "reference incomplete: {body}");
        let ref_rows = row_lines(&reference);
        let ref_open = rv.open().cloned().unwrap();
        // Body bytes after the open line: every first cut lands inside.
        let ref_bytes: usize = reference.iter().skip(1).map(|l| l.len() + 1).sum();

        // The chaos stream: cut, resume, cut again...
        let mut v = StreamVerifier::new();
        let mut rows: Vec<String> = Vec::new();
        let mut resp = a;
        let mut cuts_left = 1 + rng.below(4);
        let mut first = true;
        loop {
            let (lines, ended) = if cuts_left > 0 {
                cuts_left -= 1;
                let cut = rng.below(ref_bytes as u64) as usize;
                f.cuts += 1;
                read_cut(resp, cut)
            } else {
                let mut r = resp;
                (r.rest(), true)
            };
            for l in &lines {
                match v.accept(l) {
                    Ok(StreamEvent::Row) => rows.push(l.clone()),
                    Ok(StreamEvent::Open(o)) => {
                        if first {
                            assert_eq!(
                                o.snapshot_lsn, ref_open.snapshot_lsn,
                                "cycle {cycle}: both streams were pinned with the writer held off"
                            );
                            if !o.resumable {
                                f.non_resumable += 1;
                            }
                            first = false;
                        }
                    }
                    Ok(StreamEvent::Error(e)) => panic!("cycle {cycle}: error line {e:?}"),
                    Ok(_) => {}
                    Err(e) => panic!("cycle {cycle} ({body}): {e}"),
                }
            }
            if v.is_complete() {
                break;
            }
            assert!(!ended, "cycle {cycle}: the body ended without an end line");
            let Some(req) = v.begin_resume() else {
                panic!("cycle {cycle}: cut stream has no cursor ({body})");
            };
            f.resumes += 1;
            resp = open_stream(addr, &serde_json::to_string(&req).unwrap(), None);
            assert_eq!(resp.status, 200, "cycle {cycle}: resume refused");
        }
        f.cycles += 1;
        f.rows_compared += ref_rows.len() as u64;
        let n = rows.len().max(ref_rows.len());
        for i in 0..n {
            if rows.get(i) != ref_rows.get(i) {
                f.divergent_rows += 1;
            }
        }
        let end = v.end().unwrap();
        if end.prefix_hash != rv.end().unwrap().prefix_hash || v.prefix_hash() != rv.prefix_hash() {
            f.digest_mismatches += 1;
        }
        // Free both pinned snapshots now rather than at the TTL.
        for c in [v.cursor(), rv.cursor()].into_iter().flatten() {
            cancel(addr, c);
        }
    }
    stop.store(true, Ordering::SeqCst);
    w.join().unwrap();
    let elapsed = started.elapsed();
    eprintln!(
        "reliability_chaos: seed {seed}: {} cycles, {} cuts, {} resumes, {} rows compared, \
         {} divergent rows, {} digest mismatches, {} writer commits, {:.1}s",
        f.cycles,
        f.cuts,
        f.resumes,
        f.rows_compared,
        f.divergent_rows,
        f.digest_mismatches,
        commits.load(Ordering::Relaxed),
        elapsed.as_secs_f64()
    );
    assert_eq!(f.divergent_rows, 0, "seed {seed}: {f:?}");
    assert_eq!(f.digest_mismatches, 0, "seed {seed}: {f:?}");
    assert_eq!(
        f.non_resumable, 0,
        "seed {seed}: every query here is resumable"
    );
    assert!(f.resumes >= f.cycles, "every cycle resumed at least once");
    assert!(
        commits.load(Ordering::Relaxed) > 0,
        "the writer committed while streams ran"
    );
    // Nothing leaked: no slot, no running stream, no pinned snapshot.
    assert!(
        ts.wait_stats(5000, |s| s.slots_in_use == 0
            && s.running_streams == 0
            && s.pinned_snapshots == 0)
            .is_some(),
        "{:?}",
        ts.server.stats()
    );
    assert_paired(&ts.events());
}
