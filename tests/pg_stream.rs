//! PostgreSQL tenants against a real PostgreSQL server (started by the test,
//! see `pg_common`): values, the read-only gate, parameters, snapshots,
//! resume, cancel and the latency cap.
#![cfg(feature = "server")]

mod pg_common;
mod server_common;

use std::time::{Duration, Instant};

use pg_common::{shared, unique};
use rowstream::core::protocol::StreamVerifier;
use rowstream::server::Server;
use server_common::*;

fn serve(url: &str) -> TestServer {
    TestServer::start(Server::builder().db(url))
}

fn rows_of(resp: &Resp) -> Vec<serde_json::Value> {
    let lines = resp.lines();
    let mut v = StreamVerifier::new();
    verify_lines(&mut v, &lines);
    assert!(v.is_complete(), "stream did not verify: {lines:?}");
    row_lines(&lines)
        .iter()
        .map(|l| j(l)["row"].clone())
        .collect()
}

#[test]
fn values_are_written_as_the_table_in_server_md_says() {
    let pg = shared();
    let db = unique("values");
    let url = pg.database(
        &db,
        "CREATE TYPE mood AS ENUM ('sad', 'happy'); \
         CREATE TABLE v (id int PRIMARY KEY, s smallint, i int, b bigint, n numeric, \
           r real, d double precision, t bool, x text, vc varchar(5), by bytea, js json, jb jsonb, \
           u uuid, dt date, ts timestamp, tz timestamptz, tm time, iv interval, ia int[], \
           ta text[][], m mood, ip inet, pt point); \
         INSERT INTO v VALUES (1, -32768, 2147483647, 9223372036854775807, \
           123456789012345678901234567890.000100, 1.5, 0.1, true, 'naïve \"日本\" \\ \n', 'abc', \
           '\\x00ff10', '{ \"a\" : [1, 2],\n \"b\": null }', '{\"b\": 1, \"a\": \"x\"}', \
           'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '2024-02-29', '2024-02-29 13:45:00.123456', \
           '2024-02-29 13:45:00+02', '23:59:59.5', '1 day 2 hours', '{1,NULL,3}', \
           '{{a,b},{c,NULL}}', 'happy', '192.168.0.1/24', '(1,2)'); \
         INSERT INTO v (id, n, r, d) VALUES (2, 'NaN', 'Infinity', '-Infinity');",
    );
    let ts = serve(&url);
    // The session's TimeZone and DateStyle never change what is written.
    pg.psql(&db, "ALTER ROLE reader SET timezone = 'America/New_York'");
    pg.psql(&db, "ALTER ROLE reader SET datestyle = 'SQL, DMY'");
    let resp = query(ts.addr(), "SELECT * FROM v ORDER BY id");
    assert_eq!(resp.status, 200, "{}", resp.text());
    let lines = resp.lines();
    let open = j(&lines[0]);
    let types: Vec<String> = open["open"]["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        types,
        [
            "integer",
            "smallint",
            "integer",
            "bigint",
            "numeric",
            "real",
            "double precision",
            "boolean",
            "text",
            "character varying",
            "bytea",
            "json",
            "jsonb",
            "uuid",
            "date",
            "timestamp without time zone",
            "timestamp with time zone",
            "time without time zone",
            "interval",
            "integer[]",
            "text[]",
            "mood",
            "inet",
            "point"
        ]
    );
    // Exact integers and numerics: compare the row line's text.
    let first = &row_lines(&lines)[0];
    assert!(first.contains("\"b\":9223372036854775807,"), "{first}");
    assert!(
        first.contains("\"n\":123456789012345678901234567890.000100,"),
        "{first}"
    );
    let rows = rows_of(&resp);
    let r = &rows[0];
    assert_eq!(r["s"], -32768);
    assert_eq!(r["r"], 1.5);
    assert_eq!(r["d"], 0.1);
    assert_eq!(r["t"], true);
    assert_eq!(r["x"], "naïve \"日本\" \\ \n");
    assert_eq!(r["vc"], "abc");
    assert_eq!(r["by"], "AP8Q");
    assert_eq!(r["js"], serde_json::json!({"a": [1, 2], "b": null}));
    assert_eq!(r["jb"], serde_json::json!({"a": "x", "b": 1}));
    assert_eq!(r["u"], "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    assert_eq!(r["dt"], "2024-02-29");
    assert_eq!(r["ts"], "2024-02-29T13:45:00.123456");
    assert_eq!(r["tz"], "2024-02-29T11:45:00Z");
    assert_eq!(r["tm"], "23:59:59.5");
    assert_eq!(r["iv"], "P1DT2H");
    assert_eq!(r["ia"], serde_json::json!([1, null, 3]));
    assert_eq!(r["ta"], serde_json::json!([["a", "b"], ["c", null]]));
    assert_eq!(r["m"], "happy");
    assert_eq!(r["ip"], "192.168.0.1/24");
    assert_eq!(r["pt"], "(1,2)");
    let r = &rows[1];
    assert_eq!(r["n"], serde_json::Value::Null);
    assert_eq!(r["r"], serde_json::Value::Null);
    assert_eq!(r["d"], serde_json::Value::Null);
    assert_eq!(r["x"], serde_json::Value::Null);
}

#[test]
fn anything_that_could_write_or_change_the_session_is_refused_before_the_200() {
    let pg = shared();
    let db = unique("readonly");
    let url = pg.database(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b'); \
         CREATE SEQUENCE s; \
         CREATE PROCEDURE p() LANGUAGE sql AS $$ SELECT 1 $$; \
         GRANT USAGE ON SEQUENCE s TO reader;",
    );
    let ts = serve(&url);
    let before = pg.psql(&db, "SELECT string_agg(id || v, ',' ORDER BY id) FROM t");
    let refused = [
        "INSERT INTO t VALUES (3, 'c')",
        "INSERT INTO t VALUES (3, 'c') RETURNING id",
        "UPDATE t SET v = 'z' RETURNING *",
        "DELETE FROM t",
        "CREATE TABLE u (x int)",
        "DROP TABLE t",
        "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
        "SELECT nextval('s')",
        "SELECT set_config('statement_timeout', '1', false)",
        "SELECT pg_terminate_backend(pg_backend_pid())",
        "SELECT pg_advisory_lock(42)",
        "COPY t TO STDOUT",
        "CALL p()",
        "DO $$ BEGIN PERFORM 1; END $$",
        "LISTEN chan",
        "NOTIFY chan",
        "SELECT pg_notify('chan', 'x')",
        "SET ROLE postgres",
        "SELECT 1; SELECT 2",
        "SELECT 1; DELETE FROM t",
    ];
    for q in refused {
        let resp = query(ts.addr(), q);
        assert_eq!(resp.status, 400, "{q}: {}", resp.text());
        assert_eq!(
            resp.error_code(),
            "stream_unsupported_statement",
            "{q}: {}",
            resp.text()
        );
    }
    // Nothing changed: the table, the sequence, advisory locks, and the
    // server still streams normally (its sessions were reset).
    assert_eq!(
        pg.psql(&db, "SELECT string_agg(id || v, ',' ORDER BY id) FROM t"),
        before
    );
    assert_eq!(
        pg.psql(&db, "SELECT last_value || ',' || is_called FROM s"),
        "1,false"
    );
    assert_eq!(
        pg.psql(
            &db,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
        ),
        "0"
    );
    let resp = query(
        ts.addr(),
        "SELECT current_setting('statement_timeout') AS st, id FROM t ORDER BY id",
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(rows_of(&resp).len(), 2);
    // Query errors are query errors.
    let resp = query(ts.addr(), "SELECT * FROM missing");
    assert_eq!(resp.error_code(), "query_error");
    let resp = query(ts.addr(), "SELEC 1");
    assert_eq!(resp.error_code(), "query_error");
}

#[test]
fn positional_parameters_bind_as_the_statement_types_them() {
    let pg = shared();
    let db = unique("params");
    let url = pg.database(
        &db,
        "CREATE TABLE t (id bigint PRIMARY KEY, name text, at timestamptz); \
         INSERT INTO t SELECT g, 'n' || g, '2024-01-01'::timestamptz + g * interval '1 day' \
         FROM generate_series(1, 50) g;",
    );
    let ts = serve(&url);
    let body = serde_json::json!({
        "query": "SELECT id, name FROM t WHERE id > $1 AND name <> $2 AND at < $3 ORDER BY id",
        "params": [40, "n45", "2024-03-01T00:00:00Z"],
        "shape": "array",
    });
    let resp = post(ts.addr(), "/v1/query/stream", &body.to_string(), None);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let rows = rows_of(&resp);
    let ids: Vec<i64> = rows.iter().map(|r| r[0].as_i64().unwrap()).collect();
    assert_eq!(ids, [41, 42, 43, 44, 46, 47, 48, 49, 50]);
    let named =
        serde_json::json!({"query": "SELECT name FROM t WHERE id = $1", "params": {"1": 7}});
    let resp = post(ts.addr(), "/v1/query/stream", &named.to_string(), None);
    assert_eq!(rows_of(&resp), [serde_json::json!({"name": "n7"})]);
    for (params, code) in [
        (serde_json::json!([1]), "query_error"),
        (serde_json::json!(["x", "y", "z"]), "query_error"),
        (serde_json::json!([[1], "y", "z"]), "bad_request"),
    ] {
        let b = serde_json::json!({"query": "SELECT 1 WHERE $1::int > 0 AND $2 = $3", "params": params});
        let resp = post(ts.addr(), "/v1/query/stream", &b.to_string(), None);
        assert_eq!(resp.error_code(), code, "{params}: {}", resp.text());
    }
}

#[test]
fn the_first_row_arrives_within_the_latency_cap_while_the_query_stalls() {
    let pg = shared();
    let db = unique("latency");
    let url = pg.database(
        &db,
        "CREATE TABLE t (g int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 4);",
    );
    let ts = serve(&url);
    // Read through a cursor (not resumable) and in keyset batches (resumable).
    for (from, resumable) in [("generate_series(1, 4) g", false), ("t", true)] {
        let q = format!(
            "SELECT g, pg_sleep(CASE WHEN g = 1 THEN 0 ELSE 0.4 END) FROM {from} ORDER BY g"
        );
        let t0 = Instant::now();
        let mut s = open_stream(
            ts.addr(),
            &serde_json::json!({ "query": q }).to_string(),
            None,
        );
        assert_eq!(s.status, 200);
        let open = j(&s.next_line().unwrap());
        assert_eq!(open["open"]["resumable"], resumable, "{q}: {open}");
        let first = s.next_line().unwrap();
        assert!(first.starts_with("{\"row\":{\"g\":1"), "{first}");
        let took = t0.elapsed();
        assert!(
            took < Duration::from_millis(300),
            "{q}: first row after {took:?}"
        );
        let rest = s.rest();
        assert_eq!(row_lines(&rest).len(), 3, "{q}");
        assert!(rest.last().unwrap().contains("\"reason\":\"ok\""));
    }
}

#[test]
fn key_ordered_streams_deliver_every_row_once_across_batches() {
    let pg = shared();
    let db = unique("keyset");
    // A composite key, a column read through its text output (an enum) and
    // enough rows for batches to grow to their largest size.
    let url = pg.database(
        &db,
        "CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy'); \
         CREATE TABLE t (a int, b int, m mood, v text, PRIMARY KEY (a, b)); \
         INSERT INTO t SELECT g / 7, g % 7, (ARRAY['sad','ok','happy']::mood[])[1 + g % 3], \
           'v' || g FROM generate_series(0, 29999) g;",
    );
    let ts = serve(&url);
    for (q, params, shape) in [
        ("SELECT * FROM t", serde_json::json!(null), "object"),
        (
            "SELECT * FROM t ORDER BY a, b; -- key order",
            serde_json::json!(null),
            "object",
        ),
        (
            "SELECT v, m FROM t WHERE a % 3 <> $1 ORDER BY a, b;",
            serde_json::json!([1]),
            "array",
        ),
    ] {
        let body = serde_json::json!({"query": q, "params": params, "shape": shape});
        let resp = post(ts.addr(), "/v1/query/stream", &body.to_string(), None);
        assert_eq!(resp.status, 200, "{q}: {}", resp.text());
        assert_eq!(j(&resp.lines()[0])["open"]["resumable"], true, "{q}");
        let rows = rows_of(&resp);
        let expected: Vec<i64> = (0..30_000)
            .filter(|g| params.is_null() || (g / 7) % 3 != 1)
            .collect();
        assert_eq!(rows.len(), expected.len(), "{q}");
        for (row, g) in rows.iter().zip(&expected) {
            let (v, m) = match shape {
                "object" => {
                    assert_eq!(
                        (row["a"].as_i64(), row["b"].as_i64()),
                        (Some(g / 7), Some(g % 7))
                    );
                    (&row["v"], &row["m"])
                }
                _ => (&row[0], &row[1]),
            };
            assert_eq!(v.as_str(), Some(format!("v{g}").as_str()), "{q}");
            assert_eq!(
                m.as_str(),
                Some(["sad", "ok", "happy"][(*g % 3) as usize]),
                "{q}"
            );
        }
    }
}

#[test]
fn cancel_stops_the_postgres_query_and_frees_the_slot() {
    let pg = shared();
    let db = unique("cancel");
    let url = pg.database(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 100);",
    );
    let ts = serve(&url);
    // Resumable (a cursor to cancel), and slow: every row sleeps.
    let mut s = open_stream(
        ts.addr(),
        r#"{"query":"SELECT id, pg_sleep(0.05) AS z FROM t ORDER BY id"}"#,
        None,
    );
    assert_eq!(s.status, 200);
    let open = j(&s.next_line().unwrap());
    let cursor = open["open"]["cursor"]
        .as_str()
        .expect("resumable")
        .to_owned();
    s.next_line().unwrap();
    let t0 = Instant::now();
    let resp = post(
        ts.addr(),
        "/v1/query/stream/cancel",
        &serde_json::json!({ "cursor": cursor }).to_string(),
        None,
    );
    assert_eq!(resp.status, 200, "{}", resp.text());
    let rest = s.rest();
    assert!(
        rest.last().unwrap().contains("\"reason\":\"cancelled\""),
        "{rest:?}"
    );
    assert!(
        ts.wait_stats(2000, |st| st.slots_in_use == 0).is_some(),
        "slot not freed"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    // No query of the reader is left running.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let active = pg.psql(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'reader' AND datname = current_database() AND state = 'active'",
        );
        if active == "0" {
            break;
        }
        assert!(Instant::now() < deadline, "a query is still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let again = post(
        ts.addr(),
        "/v1/query/stream",
        &serde_json::json!({"cursor": cursor, "after_rows": 0, "prefix_hash": "0".repeat(64)})
            .to_string(),
        None,
    );
    assert_eq!(again.error_code(), "cursor_cancelled");
}

#[test]
fn resumes_see_the_snapshot_of_the_open_also_after_writes() {
    let pg = shared();
    let db = unique("resume");
    let url = pg.database(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 3000) g;",
    );
    let ts = serve(&url);
    let full = query(ts.addr(), "SELECT * FROM t ORDER BY id");
    let full_lines = full.lines();
    let open = j(&full_lines[0]);
    let cursor = open["open"]["cursor"]
        .as_str()
        .expect("resumable")
        .to_owned();
    let lsn = open["open"]["snapshot_lsn"].as_u64().unwrap();
    // Writers commit after the open.
    pg.psql(&db, "UPDATE t SET v = 'changed'; DELETE FROM t WHERE id % 2 = 0; INSERT INTO t VALUES (5000, 'new')");
    let rows = row_lines(&full_lines);
    assert_eq!(rows.len(), 3000);
    for at in [0usize, 1, 1500, 2047, 2999, 3000] {
        let hash = rowstream::core::digest::prefix_hash_of(rows[..at].iter().map(|l| l.as_bytes()));
        let resp = post(
            ts.addr(),
            "/v1/query/stream",
            &serde_json::json!({"cursor": cursor, "after_rows": at, "prefix_hash": hash})
                .to_string(),
            None,
        );
        assert_eq!(resp.status, 200, "at {at}: {}", resp.text());
        let lines = resp.lines();
        let o = j(&lines[0]);
        assert_eq!(o["open"]["snapshot_lsn"].as_u64(), Some(lsn));
        assert_eq!(o["open"]["after_rows"].as_u64(), Some(at as u64));
        assert_eq!(row_lines(&lines), rows[at..], "rows after {at}");
        let end = j(lines.last().unwrap());
        assert_eq!(end["end"]["row_count"], 3000);
        assert_eq!(
            end["end"]["prefix_hash"],
            j(full_lines.last().unwrap())["end"]["prefix_hash"]
        );
    }
    let bad = post(
        ts.addr(),
        "/v1/query/stream",
        &serde_json::json!({"cursor": cursor, "after_rows": 10, "prefix_hash": "0".repeat(64)})
            .to_string(),
        None,
    );
    assert_eq!(bad.error_code(), "prefix_hash_mismatch");
}

#[test]
fn a_superuser_tenant_role_is_a_startup_error_unless_allowed() {
    let pg = shared();
    let db = unique("privileged");
    pg.database(&db, "");
    let err = Server::builder().db(pg.admin_url(&db)).build().unwrap_err();
    assert!(err.to_string().contains("superuser"), "{err}");
    assert!(Server::builder()
        .db(pg.admin_url(&db))
        .allow_privileged_role(true)
        .build()
        .is_ok());
}

#[test]
fn the_snapshot_ttl_ends_a_stream_and_every_lease_is_closed_once() {
    let pg = shared();
    let db = unique("ttl");
    let url = pg.database(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 50);",
    );
    let ts = TestServer::start(
        Server::builder()
            .db(&url)
            .set("stream.snapshot.ttl_ms", "700")
            .set("stream.max_global", "2"),
    );
    let resp = query(
        ts.addr(),
        "SELECT id, pg_sleep(0.1) AS z FROM t ORDER BY id",
    );
    let lines = resp.lines();
    let cursor = j(&lines[0])["open"]["cursor"].as_str().unwrap().to_owned();
    let end = j(lines.last().unwrap());
    assert_eq!(end["end"]["reason"], "snapshot_expired", "{lines:?}");
    let rows = row_lines(&lines).len();
    assert!((3..20).contains(&rows), "{rows} rows before the TTL");
    std::thread::sleep(Duration::from_millis(200));
    let again = post(
        ts.addr(),
        "/v1/query/stream",
        &serde_json::json!({"cursor": cursor, "after_rows": 0, "prefix_hash": "0".repeat(64)})
            .to_string(),
        None,
    );
    assert_eq!(again.error_code(), "cursor_expired");
    // Quotas on one instance: a third concurrent stream is refused.
    let slow = r#"{"query":"SELECT id, pg_sleep(0.2) AS z FROM t ORDER BY id"}"#;
    let mut a = open_stream(ts.addr(), slow, None);
    let mut b = open_stream(ts.addr(), slow, None);
    a.next_line().unwrap();
    b.next_line().unwrap();
    let third = query(ts.addr(), "SELECT 1");
    assert_eq!(third.status, 429);
    assert_eq!(third.header("retry-after"), Some("1"));
    drop((a, b));
    assert!(ts.wait_stats(3000, |s| s.slots_in_use == 0).is_some());
    // Every lease opened on this PostgreSQL tenant was closed exactly once
    // (end, TTL, refusal, disconnect).
    assert!(wait_events(&ts, 3000, |ev| {
        ev.iter()
            .filter(|e| {
                matches!(
                    e,
                    rowstream::AuditEvent::StreamClosed { lease: Some(_), .. }
                )
            })
            .count()
            >= 3
    }));
    assert_paired(&ts.events());
}

#[test]
fn a_stalled_reader_applies_backpressure_and_a_disconnect_stops_the_query() {
    use rowstream::core::audit::AuditEvent;
    let pg = shared();
    let db = unique("backpressure");
    let url = pg.database(&db, "SELECT 1;");
    let ts = serve(&url);
    // 100M rows of ~1 KB: far more than any buffer could hold. The series
    // is in the select list, where PostgreSQL makes it row by row (in FROM,
    // a function scan first stores all 100M values, which under load took
    // longer than the client's 20 s wait for the response).
    let body = serde_json::json!({"query": "SELECT generate_series(1, 100000000) AS x, repeat('x', 1000) AS pad"}).to_string();
    let mut s = open_stream(ts.addr(), &body, None);
    assert_eq!(s.status, 200);
    let open = j(&s.next_line().unwrap());
    let lease = open["open"]["lease"].as_str().unwrap().to_owned();
    for _ in 0..5 {
        s.next_line().unwrap();
    }
    // Stop reading: the server must stop fetching once a few chunks and the
    // socket buffers are full, instead of buffering without bound.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(ts.server.stats().running_streams, 1);
    drop(s);
    assert!(wait_events(&ts, 3000, |e| closed_of(e, &lease).is_some()));
    let Some(AuditEvent::StreamClosed {
        row_count, cause, ..
    }) = closed_of(&ts.events(), &lease)
    else {
        unreachable!()
    };
    assert_eq!(cause, "disconnect");
    assert!(
        row_count < 40_000,
        "{row_count} rows produced for a stalled reader"
    );
    // The disconnect ended the query and gave the session back idle.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let active = pg.psql(
            &db,
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'reader' AND datname = current_database() AND state <> 'idle'",
        );
        if active == "0" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reader's query is still running"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ts.server.stats().slots_in_use, 0);
}

#[test]
fn count_exact_counts_in_the_snapshot_and_estimated_asks_the_planner() {
    let pg = shared();
    let db = unique("count");
    let url = pg.database(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 4000) g; ANALYZE t;",
    );
    let ts = serve(&url);
    let ask =
        |body: serde_json::Value| post(ts.addr(), "/v1/query/stream", &body.to_string(), None);
    let r = ask(
        serde_json::json!({"query": "SELECT * FROM t WHERE id > $1", "params": [1000], "count": "exact"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let lines = r.lines();
    let open = j(&lines[0])["open"].clone();
    assert_eq!(
        (open["total_rows"].clone(), open["total_rows_exact"].clone()),
        (3000.into(), true.into())
    );
    let rows = rows_of(&r);
    assert_eq!(rows.len(), 3000);
    // Writers commit; a resume repeats the count of the open's snapshot.
    pg.psql(
        &db,
        "INSERT INTO t SELECT g, 'w' FROM generate_series(4001, 4500) g",
    );
    let lines_rows = row_lines(&lines);
    let resume = serde_json::json!({
        "cursor": open["cursor"],
        "after_rows": 10,
        "prefix_hash": rowstream::core::digest::prefix_hash_of(lines_rows[..10].iter().map(String::as_str)),
    });
    let again = ask(resume);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(j(&again.lines()[0])["open"]["total_rows"], 3000);
    assert_eq!(row_lines(&again.lines()).len(), 2990);
    // The planner's estimate: a number, not exact.
    let est = ask(serde_json::json!({"query": "SELECT * FROM t", "count": "estimated"}));
    let open = j(&est.lines()[0])["open"].clone();
    assert_eq!(open["total_rows_exact"], false);
    let n = open["total_rows"].as_u64().expect("an estimate");
    assert!((3000..=6000).contains(&n), "estimated {n} rows of 4000");
    assert_eq!(rows_of(&est).len(), 4500);
    // A failing count is the stream's refusal, and the session survives it.
    let bad = ask(serde_json::json!({"query": "SELECT 1 / (id - id) FROM t", "count": "exact"}));
    assert_eq!(
        (bad.status, bad.error_code().as_str()),
        (400, "query_error"),
        "{}",
        bad.text()
    );
    let ok = ask(serde_json::json!({"query": "SELECT * FROM t ORDER BY id", "count": "exact"}));
    assert_eq!(j(&ok.lines()[0])["open"]["total_rows"], 4500);
}
