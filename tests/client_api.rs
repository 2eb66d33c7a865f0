//! `rowstream::client` against the real `rowstream serve` binary: rows as
//! values and typed, the summary, resuming through a dropping proxy,
//! cancel on drop, refusals.
#![cfg(all(feature = "server", feature = "client"))]

mod client_common;
mod server_common;

use std::time::{Duration, Instant};

use client_common::*;
use rowstream::client::{Client, Count, Query, RetryPolicy, Shape};
use rowstream::core::digest::prefix_hash_of;
use server_common::{make_db, post, query, row_lines, ServerProcess, TempDir};

fn serve(dir: &TempDir, rows: i64) -> ServerProcess {
    let db = dir.path("db.sqlite");
    make_db(&db, rows);
    let audit = dir.path("audit.jsonl");
    ServerProcess::start(
        [
            "serve",
            "--db",
            db.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--audit-log",
            audit.to_str().unwrap(),
            "--set",
            "stream.chunk.max_rows=50",
        ],
        false,
    )
}

#[derive(serde::Deserialize, Debug, PartialEq)]
struct Row {
    id: i64,
    name: String,
    v: f64,
}

#[tokio::test]
async fn rows_decode_as_values_or_types_and_the_summary_is_verified() {
    let dir = TempDir::new();
    let server = serve(&dir, 1_000);
    let url = format!("http://{}", server.addr);
    let lines = row_lines(&query(server.addr, "SELECT * FROM t").lines());
    let client = Client::new(&url).unwrap();

    let (rows, summary) = client
        .stream::<serde_json::Value>(Query::new("SELECT * FROM t"))
        .collect_verified()
        .await
        .unwrap();
    let expected: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["row"].clone())
        .collect();
    assert_eq!(rows, expected);
    assert!(summary.verified);
    assert_eq!(summary.row_count, 1_000);
    assert_eq!(summary.prefix_hash, prefix_hash_of(&lines));
    assert_eq!(summary.resumes, 0);
    assert_eq!(summary.resumable, Some(true));
    assert_eq!(
        summary
            .columns
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["id", "name", "v"]
    );

    // Typed rows, array shape with parameters, and a count the server does
    // not know yet (asked again without it).
    let mut s = client.stream::<(i64, String)>(
        Query::new("SELECT id, name FROM t WHERE id <= ?1")
            .params(serde_json::json!([3]))
            .shape(Shape::Array)
            .count(Count::Exact),
    );
    let mut got = Vec::new();
    while let Some(r) = s.next().await {
        got.push(r.unwrap());
    }
    assert_eq!(got, [(1, "n1".into()), (2, "n2".into()), (3, "n3".into())]);
    assert!(s.summary().verified);
    let typed: Vec<Row> = client
        .stream::<Row>(Query::new("SELECT * FROM t WHERE id = 4"))
        .collect_verified()
        .await
        .unwrap()
        .0;
    assert_eq!(
        typed,
        [Row {
            id: 4,
            name: "n4".into(),
            v: 1.0
        }]
    );

    // A row that is not the requested type is an error naming the row.
    let mut bad = client.stream::<Row>(Query::new("SELECT id FROM t WHERE id <= 2"));
    let e = bad.next().await.unwrap().unwrap_err();
    assert_eq!(e.code(), "row_decode_failed");
    assert!(e.to_string().contains("row 0"), "{e}");

    // Refusals carry the server's code.
    let e = client
        .stream::<serde_json::Value>(Query::new("SELEC 1"))
        .collect_verified()
        .await
        .unwrap_err();
    assert_eq!(e.code(), "query_error");
    assert!(matches!(
        e,
        rowstream::client::Error::Refused { status: 400, .. }
    ));
}

#[tokio::test]
async fn a_dropped_connection_is_resumed_by_itself() {
    let dir = TempDir::new();
    let server = serve(&dir, 20_000);
    let lines = row_lines(&query(server.addr, "SELECT * FROM t").lines());
    // Identity bodies: the cuts are in row bytes (the export tests cut
    // compressed bodies too).
    let proxy = Proxy::start_identity(
        server.addr,
        ProxyMode::Cut(vec![20_000, 60_000, 3_000, 100_000]),
    );
    let client = Client::builder(proxy.url())
        .retry(RetryPolicy {
            backoff: Duration::from_millis(20),
            ..RetryPolicy::default()
        })
        .build()
        .unwrap();
    let (rows, summary) = client
        .stream::<Row>(Query::new("SELECT * FROM t"))
        .collect_verified()
        .await
        .unwrap();
    assert_eq!(rows.len(), 20_000);
    assert!(rows.iter().enumerate().all(|(i, r)| r.id == i as i64 + 1));
    assert!(summary.verified);
    assert_eq!(summary.prefix_hash, prefix_hash_of(&lines));
    assert!(summary.resumes >= 3, "{summary:?}");
    let resumed = resumed_after_rows(&dir.path("audit.jsonl"));
    for r in &summary.resumed_from {
        if *r > 0 {
            assert!(resumed.contains(r), "{r} not in {resumed:?}");
        }
    }
}

#[tokio::test]
async fn dropping_a_stream_early_cancels_its_cursor() {
    let dir = TempDir::new();
    let server = serve(&dir, 50_000);
    let client = Client::new(&format!("http://{}", server.addr)).unwrap();
    let mut s = client.stream::<serde_json::Value>(Query::new("SELECT * FROM t"));
    for _ in 0..10 {
        s.next().await.unwrap().unwrap();
    }
    let cursor = s.summary().cursor.clone().expect("a cursor");
    drop(s);
    // The cancel request goes out from a task on this runtime.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = serde_json::json!({
        "cursor": cursor,
        "after_rows": 0,
        "prefix_hash": prefix_hash_of(Vec::<&str>::new()),
    })
    .to_string();
    let t = Instant::now();
    loop {
        let r = post(server.addr, "/v1/query/stream", &body, None);
        if r.status == 409 {
            assert_eq!(r.error_code(), "cursor_cancelled");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still resumable: {}",
            r.status
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
