//! The integration adapters inside a user's own axum app.
#![cfg(feature = "server")]

mod server_common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use rowstream::core::protocol::{StreamEvent, StreamVerifier};
use rowstream::server::integration::{rows_response, sqlite_response, Shape, StreamOptions};
use server_common::*;

fn serve(app: Router) -> (std::net::SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move { axum::serve(listener, app).await });
    (addr, rt)
}

#[test]
fn iterator_and_sqlite_sources_stream_verified_ndjson() {
    let produced = Arc::new(AtomicU64::new(0));
    let p = produced.clone();
    let app = Router::new()
        .route(
            "/iter",
            get(|| async {
                rows_response((0..5000i64).map(|i| (i, format!("r{i}"))), &["i", "s"], StreamOptions::default())
            }),
        )
        .route(
            "/endless",
            get(move || {
                let p = p.clone();
                async move {
                    let rows = (0u64..).map(move |i| {
                        p.fetch_add(1, Ordering::SeqCst);
                        serde_json::json!({ "i": i, "pad": "x".repeat(200) })
                    });
                    rows_response(rows, &["i", "pad"], StreamOptions::default())
                }
            }),
        )
        .route(
            "/sql",
            get(|| async {
                let c = rusqlite::Connection::open_in_memory().unwrap();
                c.execute_batch("CREATE TABLE t(a INTEGER, b TEXT, c BLOB); INSERT INTO t VALUES (9007199254740993, 'é', x'01'), (NULL, NULL, NULL);").unwrap();
                let opts = StreamOptions { shape: Shape::Array, ..StreamOptions::default() };
                sqlite_response(c, "SELECT a, b, c FROM t WHERE rowid >= ?1", vec![1.into()], opts)
            }),
        );
    let (addr, _rt) = serve(app);

    let r = send(addr, "GET", "/iter", b"", &[]);
    assert_eq!(r.header("content-type"), Some("application/x-ndjson"));
    let lines = r.lines();
    let mut v = StreamVerifier::new();
    let events = verify_lines(&mut v, &lines);
    assert!(matches!(&events[0], StreamEvent::Open(o) if !o.resumable && o.cursor.is_none()));
    assert_eq!(lines[1], r#"{"row":[0,"r0"]}"#);
    assert!(matches!(events.last(), Some(StreamEvent::End(e)) if e.row_count == 5000));

    let r = send(addr, "GET", "/sql", b"", &[]);
    let lines = r.lines();
    let mut v = StreamVerifier::new();
    verify_lines(&mut v, &lines);
    assert_eq!(lines[1], r#"{"row":[9007199254740993,"é","AQ=="]}"#);
    assert_eq!(lines[2], r#"{"row":[null,null,null]}"#);
    assert!(v.is_complete());

    // An endless source: the client reads a little and hangs up; production
    // stops (bounded queue + disconnect), it does not run on forever.
    let mut s = send_streaming(addr, "/endless");
    for _ in 0..10 {
        s.next_line().unwrap();
    }
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    let a = produced.load(Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(300));
    let b = produced.load(Ordering::SeqCst);
    assert_eq!(a, b, "the iterator kept running after the disconnect");
    assert!(a < 2_000_000, "{a} rows produced for a client that read 10");
}

fn send_streaming(addr: std::net::SocketAddr, path: &str) -> Streaming {
    request(addr, "GET", path, b"", &[])
}
