//! HTTP/2 (h2c, prior knowledge) over loopback: streaming and disconnects.
#![cfg(feature = "server")]

mod server_common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rowstream::core::protocol::{StreamEvent, StreamVerifier};
use server_common::*;

async fn h2_post(addr: std::net::SocketAddr, body: &str) -> hyper::Response<hyper::body::Incoming> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(format!("http://{addr}/v1/query/stream"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    send.send_request(req).await.unwrap()
}

#[test]
fn streams_over_http2_and_a_reset_stream_interrupts_the_query() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 5000);
    let ts = TestServer::start(builder_for(&db));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = h2_post(ts.addr(), r#"{"query":"SELECT * FROM t"}"#).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), hyper::Version::HTTP_2);
        assert_eq!(res.headers()["content-type"], "application/x-ndjson");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8(body.to_vec()).unwrap();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        let mut v = StreamVerifier::new();
        let events = verify_lines(&mut v, &lines);
        assert!(matches!(events.last(), Some(StreamEvent::End(e)) if e.row_count == 5000));

        // A query that produces no rows; the client drops the response
        // (RST_STREAM): the statement is interrupted, the slot released.
        let slow = serde_json::json!({"query": "SELECT * FROM t WHERE (WITH RECURSIVE c(x) AS (SELECT t.id UNION ALL SELECT x + 1 FROM c WHERE x < t.id + 300000) SELECT count(*) FROM c) < 0"}).to_string();
        let mut res = h2_post(ts.addr(), &slow).await;
        let first = res.body_mut().frame().await.unwrap().unwrap();
        assert!(first.data_ref().unwrap().starts_with(b"{\"open\""));
        assert_eq!(ts.server.stats().slots_in_use, 1);
        let t = Instant::now();
        drop(res);
        while ts.server.stats().slots_in_use != 0 {
            assert!(t.elapsed() < Duration::from_secs(3), "slot not released");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    });
    assert!(wait_events(&ts, 2000, |e| {
        e.iter().any(|e| {
            matches!(e,
        rowstream::core::audit::AuditEvent::StreamClosed { cause, .. } if cause == "disconnect")
        })
    }));
    assert_paired(&ts.events());
}
