//! Several instances sharing one `--cluster` database act as one server:
//! resume, cancel and quotas on any instance, against a real PostgreSQL.
#![cfg(feature = "server")]

mod pg_common;
mod server_common;

use std::time::{Duration, Instant};

use pg_common::{shared, unique, PgServer};
use rowstream::core::digest::prefix_hash_of;
use rowstream::server::Server;
use server_common::*;

/// A tenant database with `n` rows in `t`, and an empty cluster database.
fn setup(pg: &PgServer, n: u32) -> (String, String, String) {
    let tdb = unique("tenant");
    let url = pg.database(
        &tdb,
        &format!(
            "CREATE TABLE t (id int PRIMARY KEY, v text); \
             INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, {n}) g;"
        ),
    );
    let cdb = unique("cluster");
    pg.psql("postgres", &format!("CREATE DATABASE {cdb}"));
    (tdb, url, pg.admin_url(&cdb))
}

fn instance(url: &str, cluster: &str, name: &str, sets: &[(&str, &str)]) -> TestServer {
    let mut b = Server::builder()
        .db(url)
        .cluster(cluster)
        .instance_id(name)
        .cluster_lease_ms(1000)
        .checkpoint_every(100);
    for (k, v) in sets {
        b = b.set(*k, *v);
    }
    TestServer::start(b)
}

fn resume(ts: &TestServer, cursor: &str, at: usize, rows: &[String]) -> Resp {
    let hash = prefix_hash_of(rows[..at].iter().map(|l| l.as_bytes()));
    post(
        ts.addr(),
        "/v1/query/stream",
        &serde_json::json!({"cursor": cursor, "after_rows": at, "prefix_hash": hash}).to_string(),
        None,
    )
}

#[test]
fn a_cursor_opened_on_one_instance_resumes_on_the_others_from_its_snapshot() {
    let pg = shared();
    let (tdb, url, cluster) = setup(pg, 2500);
    let a = instance(&url, &cluster, "a", &[]);
    let b = instance(&url, &cluster, "b", &[]);
    let c = instance(&url, &cluster, "c", &[]);
    let full = query(a.addr(), "SELECT * FROM t ORDER BY id");
    let lines = full.lines();
    let open = j(&lines[0]);
    let cursor = open["open"]["cursor"]
        .as_str()
        .expect("resumable")
        .to_owned();
    let rows = row_lines(&lines);
    pg.psql(
        &tdb,
        "UPDATE t SET v = 'changed' WHERE id > 100; DELETE FROM t WHERE id = 2000",
    );
    // Checkpoints reach the cluster while the stream runs.
    std::thread::sleep(Duration::from_millis(200));
    for (ts, at) in [(&b, 0usize), (&c, 1234), (&b, 2400), (&a, 77), (&c, 2500)] {
        let replayed = ts.server.stats().resume_rows_replayed;
        let r = resume(ts, &cursor, at, &rows);
        assert_eq!(r.status, 200, "at {at}: {}", r.text());
        let got = r.lines();
        assert_eq!(
            j(&got[0])["open"]["snapshot_lsn"],
            open["open"]["snapshot_lsn"]
        );
        assert_eq!(row_lines(&got), rows[at..], "rows after {at}");
        assert_eq!(
            j(got.last().unwrap())["end"]["prefix_hash"],
            j(lines.last().unwrap())["end"]["prefix_hash"]
        );
        // A shared checkpoint (every 400 rows here) is near: the prefix is
        // not re-read.
        let reread = ts.server.stats().resume_rows_replayed - replayed;
        assert!(reread < 400, "resume at {at} re-read {reread} rows");
    }
    // A wrong digest is refused on another instance too.
    let bad = post(
        b.addr(),
        "/v1/query/stream",
        &serde_json::json!({"cursor": cursor, "after_rows": 5, "prefix_hash": "0".repeat(64)})
            .to_string(),
        None,
    );
    assert_eq!(bad.error_code(), "prefix_hash_mismatch");
    // Only hashes of tokens are stored.
    let cdb = cluster.rsplit('/').next().unwrap();
    let stored = pg.psql(
        cdb,
        "SELECT string_agg(token_sha256 || record::text, ' ') FROM rowstream_cursors",
    );
    assert!(!stored.contains(&cursor), "a plain token is stored");
    assert!(stored.contains(&rowstream::core::digest::sha256_hex(cursor.as_bytes())));
}

#[test]
fn unknown_and_foreign_cursors_get_the_same_404_on_every_instance() {
    let pg = shared();
    let (_tdb, url, cluster) = setup(pg, 10);
    let mk = |name: &str| {
        TestServer::start(
            Server::builder()
                .db(&url)
                .cluster(&cluster)
                .instance_id(name)
                .token("ta", "default", "alice")
                .token("tb", "default", "bob"),
        )
    };
    let (a, b) = (mk("a"), mk("b"));
    let body = serde_json::json!({"query": "SELECT * FROM t ORDER BY id"}).to_string();
    let r = post(a.addr(), "/v1/query/stream", &body, Some("ta"));
    let cursor = j(&r.lines()[0])["open"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let unknown = "ab".repeat(24);
    let mut answers = Vec::new();
    for ts in [&a, &b] {
        for c in [&cursor, &unknown] {
            let body =
                serde_json::json!({"cursor": c, "after_rows": 0, "prefix_hash": "0".repeat(64)});
            let r = post(ts.addr(), "/v1/query/stream", &body.to_string(), Some("tb"));
            assert_eq!(r.status, 404);
            answers.push(r.body.clone());
            let r = post(
                ts.addr(),
                "/v1/query/stream/cancel",
                &serde_json::json!({ "cursor": c }).to_string(),
                Some("tb"),
            );
            assert_eq!(r.status, 404);
            answers.push(r.body.clone());
        }
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "answers differ");
}

#[test]
fn a_cancel_on_any_instance_stops_the_stream_running_on_another() {
    let pg = shared();
    let (tdb, url, cluster) = setup(pg, 200);
    let a = instance(&url, &cluster, "a", &[]);
    let b = instance(&url, &cluster, "b", &[]);
    let mut s = open_stream(
        a.addr(),
        r#"{"query":"SELECT id, pg_sleep(0.05) AS z FROM t ORDER BY id"}"#,
        None,
    );
    assert_eq!(s.status, 200);
    let cursor = j(&s.next_line().unwrap())["open"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    s.next_line().unwrap();
    let t0 = Instant::now();
    let r = post(
        b.addr(),
        "/v1/query/stream/cancel",
        &serde_json::json!({ "cursor": cursor }).to_string(),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let rest = s.rest();
    assert!(
        rest.last().unwrap().contains("\"reason\":\"cancelled\""),
        "{rest:?}"
    );
    assert!(
        a.wait_stats(1000, |st| st.slots_in_use == 0).is_some(),
        "the slot was not freed"
    );
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(800), "cancel took {took:?}");
    // The query is not left running in PostgreSQL.
    let until = Instant::now() + Duration::from_secs(2);
    while pg.psql(
        &tdb,
        "SELECT count(*) FROM pg_stat_activity WHERE usename = 'reader' AND datname = current_database() AND state = 'active'",
    ) != "0"
    {
        assert!(Instant::now() < until, "a query still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
    for ts in [&a, &b] {
        let body =
            serde_json::json!({"cursor": cursor, "after_rows": 0, "prefix_hash": "0".repeat(64)});
        let r = post(ts.addr(), "/v1/query/stream", &body.to_string(), None);
        assert_eq!(r.error_code(), "cursor_cancelled");
    }
}

#[test]
fn quotas_count_the_streams_of_every_instance() {
    let pg = shared();
    let (_tdb, url, cluster) = setup(pg, 100);
    let sets = [("stream.max_global", "4")];
    let a = instance(&url, &cluster, "a", &sets);
    let b = instance(&url, &cluster, "b", &sets);
    let slow = r#"{"query":"SELECT id, pg_sleep(0.2) AS z FROM t ORDER BY id"}"#;
    let mut open = Vec::new();
    for ts in [&a, &b, &a, &b] {
        let mut s = open_stream(ts.addr(), slow, None);
        assert_eq!(s.status, 200);
        s.next_line().unwrap();
        open.push(s);
    }
    for ts in [&a, &b] {
        let r = query(ts.addr(), "SELECT 1");
        assert_eq!(r.status, 429, "{}", r.text());
        assert_eq!(r.error_code(), "server_stream_capacity_exhausted");
        assert_eq!(r.json()["error"]["current"], 4);
    }
    drop(open);
    // Disconnects free the slots everywhere.
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let r = query(b.addr(), "SELECT 1");
        if r.status == 200 {
            break;
        }
        assert!(Instant::now() < until, "slots not freed: {}", r.text());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_instance_frees_its_slots_and_its_cursors_answer_snapshot_unavailable() {
    let pg = shared();
    let (_tdb, url, cluster) = setup(pg, 300);
    let spawn = |name: &str| {
        ServerProcess::start(
            [
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--db",
                &url,
                "--cluster",
                &cluster,
                "--instance-id",
                name,
                "--cluster-lease-ms",
                "1000",
                "--set",
                "stream.max_global=2",
            ],
            false,
        )
    };
    let mut a = spawn("a");
    let b = spawn("b");
    // A's cursor, fully read once; and A holds both slots with slow streams.
    let full = query(a.addr, "SELECT * FROM t ORDER BY id");
    let lines = full.lines();
    let cursor = j(&lines[0])["open"]["cursor"].as_str().unwrap().to_owned();
    let rows = row_lines(&lines);
    let slow = r#"{"query":"SELECT id, pg_sleep(0.5) AS z FROM t ORDER BY id"}"#;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = open_stream(a.addr, slow, None);
        assert_eq!(s.status, 200);
        s.next_line().unwrap();
        held.push(s);
    }
    let r = query(b.addr, "SELECT 1");
    assert_eq!(r.status, 429, "{}", r.text());
    // kill -9: no goodbye; its slots stay counted until its lease runs out.
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let killed = Instant::now();
    loop {
        let r = query(b.addr, "SELECT 1");
        if r.status == 200 {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_millis(2500),
            "slots of the killed instance still counted: {}",
            r.text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Its snapshot died with it: never rows from another snapshot.
    let hash = prefix_hash_of(rows[..10].iter().map(|l| l.as_bytes()));
    let r = post(
        b.addr,
        "/v1/query/stream",
        &serde_json::json!({"cursor": cursor, "after_rows": 10, "prefix_hash": hash}).to_string(),
        None,
    );
    assert_eq!(r.status, 410, "{}", r.text());
    assert_eq!(r.error_code(), "snapshot_unavailable");
}

#[test]
fn a_sqlite_cursor_resumes_only_on_its_instance_and_elsewhere_answers_410() {
    let pg = shared();
    let (_tdb, _url, cluster) = setup(pg, 1);
    let dir = TempDir::new();
    let db = dir.path("s.sqlite");
    make_db(&db, 100);
    let mk = |name: &str| {
        TestServer::start(
            Server::builder()
                .db(&db)
                .cluster(&cluster)
                .instance_id(name),
        )
    };
    let (a, b) = (mk("a"), mk("b"));
    let full = query(a.addr(), "SELECT * FROM t");
    let lines = full.lines();
    let cursor = j(&lines[0])["open"]["cursor"]
        .as_str()
        .expect("resumable")
        .to_owned();
    let rows = row_lines(&lines);
    let r = resume(&b, &cursor, 50, &rows);
    assert_eq!(r.status, 410, "{}", r.text());
    assert_eq!(r.error_code(), "snapshot_unavailable");
    let r = resume(&a, &cursor, 50, &rows);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(row_lines(&r.lines()), rows[50..]);
}

#[test]
fn health_readiness_metrics_and_the_instance_in_audit_events() {
    let pg = shared();
    let (tdb, url, cluster) = setup(pg, 20);
    let dir = TempDir::new();
    let audit = dir.path("audit.jsonl");
    let p = ServerProcess::start(
        [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            &url,
            "--cluster",
            &cluster,
            "--instance-id",
            "node-7",
            "--audit-log",
            audit.to_str().unwrap(),
        ],
        false,
    );
    let get = |path: &str| send(p.addr, "GET", path, b"", &[]);
    let h = get("/healthz");
    assert_eq!((h.status, h.json()["status"].clone()), (200, "ok".into()));
    let r = get("/readyz");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["checks"]["tenant:default"], "ok");
    assert_eq!(r.json()["checks"]["cluster"], "ok");
    let full = query(p.addr, "SELECT * FROM t ORDER BY id");
    assert_eq!(row_lines(&full.lines()).len(), 20);
    let bad = post(
        p.addr,
        "/v1/query/stream",
        &serde_json::json!({"cursor": "ab".repeat(24), "after_rows": 0, "prefix_hash": "0".repeat(64)}).to_string(),
        None,
    );
    assert_eq!(bad.status, 404);
    let m = get("/metrics");
    assert_eq!(m.header("content-type"), Some("text/plain; version=0.0.4"));
    let text = m.text();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line.rsplit_once(' ').expect("sample line");
        assert!(
            name.starts_with("rowstream_") && name.contains("{instance=\"node-7\""),
            "{line}"
        );
        value.parse::<f64>().unwrap_or_else(|_| panic!("{line}"));
    }
    assert!(
        text.contains("rowstream_rows_sent_total{instance=\"node-7\"} 20"),
        "{text}"
    );
    assert!(text.contains("code=\"cursor_not_found\"} 1"), "{text}");
    // The instance is named in every audit event.
    let events = std::fs::read_to_string(&audit).unwrap();
    assert!(!events.is_empty());
    for e in events.lines() {
        assert_eq!(j(e)["instance"], "node-7", "{e}");
    }
    // The tenant database goes away: not ready within 5 s.
    pg.psql("postgres", &format!("DROP DATABASE {tdb} WITH (FORCE)"));
    let t0 = Instant::now();
    loop {
        let r = get("/readyz");
        if r.status == 503 {
            assert_eq!(r.error_code(), "not_ready");
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "still ready");
        std::thread::sleep(Duration::from_millis(100));
    }
}
