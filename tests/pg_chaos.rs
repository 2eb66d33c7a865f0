//! Chaos across a cluster of three instances on a PostgreSQL tenant: streams
//! cut at random points and resumed on random instances while a writer
//! commits all the time. Every completed stream must be byte-identical to an
//! uninterrupted read of the same snapshot, and verify.
#![cfg(feature = "server")]

mod pg_common;
mod server_common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pg_common::{shared, unique};
use rowstream::core::digest::prefix_hash_of;
use rowstream::core::protocol::StreamVerifier;
use rowstream::server::Server;
use server_common::*;

#[test]
fn cut_streams_resumed_anywhere_equal_their_snapshot_while_writers_commit() {
    let seed = seed();
    eprintln!("ROWSTREAM_SEED={seed}");
    let mut rng = Rng(seed);
    let pg = shared();
    let tdb = unique("chaos");
    let url = pg.database(
        &tdb,
        "CREATE TABLE t (id int PRIMARY KEY, v text, n numeric, at timestamptz); \
         INSERT INTO t SELECT g, repeat('é', g % 17) || g, g / 7.0, now() FROM generate_series(1, 6000) g;",
    );
    let cdb = unique("chaos_cluster");
    pg.psql("postgres", &format!("CREATE DATABASE {cdb}"));
    let cluster = pg.admin_url(&cdb);
    let nodes: Vec<TestServer> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            TestServer::start(
                Server::builder()
                    .db(&url)
                    .cluster(&cluster)
                    .instance_id(*n)
                    .checkpoint_every(256),
            )
        })
        .collect();
    // The writer: updates, deletes and inserts, committing continuously.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, admin) = (stop.clone(), tdb.clone());
        std::thread::spawn(move || {
            let pg = shared();
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) && i < 400 {
                i += 1;
                pg.psql(
                    &admin,
                    &format!(
                        "UPDATE t SET v = 'w{i}' WHERE id % 97 = {m}; \
                         DELETE FROM t WHERE id = {d}; INSERT INTO t VALUES ({ins}, 'new', 1, now())",
                        m = i % 97,
                        d = 1 + (i * 13) % 6000,
                        ins = 10_000 + i
                    ),
                );
            }
        })
    };
    let rounds = if long_run() { 30 } else { 6 };
    for round in 0..rounds {
        let shape = if round % 2 == 0 { "object" } else { "array" };
        let q = serde_json::json!({"query": "SELECT * FROM t WHERE id > $1", "params": [0], "shape": shape});
        let first = &nodes[rng.below(3) as usize];
        let mut s = open_stream(first.addr(), &q.to_string(), None);
        assert_eq!(s.status, 200);
        let open = j(&s.next_line().unwrap());
        let cursor = open["open"]["cursor"]
            .as_str()
            .expect("resumable")
            .to_owned();
        let mut held: Vec<String> = Vec::new();
        let mut end = None;
        let mut cuts = 0;
        // Read a random number of lines, cut, resume elsewhere.
        loop {
            let budget = 1 + rng.below(2500) as usize;
            let mut n = 0;
            while n < budget {
                let Some(line) = s.next_line() else { break };
                if line.starts_with("{\"row\"") {
                    held.push(line);
                    n += 1;
                } else if line.starts_with("{\"end\"") {
                    end = Some(j(&line));
                    break;
                } else if line.starts_with("{\"error\"") {
                    panic!("round {round}: {line}");
                }
            }
            if end.is_some() {
                break;
            }
            drop(s);
            cuts += 1;
            let node = &nodes[rng.below(3) as usize];
            let hash = prefix_hash_of(held.iter().map(|l| l.as_bytes()));
            let body = serde_json::json!({"cursor": cursor, "after_rows": held.len(), "prefix_hash": hash});
            s = open_stream(node.addr(), &body.to_string(), None);
            assert_eq!(s.status, 200, "round {round}: resume after {}", held.len());
            let o = j(&s.next_line().unwrap());
            assert_eq!(o["open"]["snapshot_lsn"], open["open"]["snapshot_lsn"]);
        }
        let end = end.unwrap();
        assert_eq!(end["end"]["reason"], "ok");
        assert_eq!(end["end"]["row_count"].as_u64(), Some(held.len() as u64));
        assert_eq!(
            end["end"]["prefix_hash"].as_str().unwrap(),
            prefix_hash_of(held.iter().map(|l| l.as_bytes()))
        );
        // The same snapshot, uninterrupted, from yet another instance.
        let body = serde_json::json!({"cursor": cursor, "after_rows": 0, "prefix_hash": prefix_hash_of(std::iter::empty::<&[u8]>())});
        let whole = post(
            nodes[rng.below(3) as usize].addr(),
            "/v1/query/stream",
            &body.to_string(),
            None,
        );
        let lines = whole.lines();
        let mut v = StreamVerifier::new();
        verify_lines(&mut v, &lines);
        assert!(v.is_complete());
        assert_eq!(
            row_lines(&lines),
            held,
            "round {round} ({cuts} cuts) differs from its snapshot"
        );
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
}
