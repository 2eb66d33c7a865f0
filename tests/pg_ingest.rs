//! Uploads into PostgreSQL tenants: every row or none, through the writer
//! role only.
#![cfg(feature = "server")]

mod pg_common;
mod server_common;

use pg_common::{shared, unique};
use rowstream::core::digest::prefix_hash_of;
use rowstream::server::Server;
use server_common::*;

fn upload(ts: &TestServer, lines: &[String]) -> Resp {
    let mut body = lines.join("\n");
    body.push('\n');
    send(
        ts.addr(),
        "POST",
        "/v1/ingest/stream",
        body.as_bytes(),
        &[("Content-Type", "application/x-ndjson")],
    )
}

fn rows(n: usize, bad_at: Option<usize>) -> Vec<String> {
    (1..=n)
        .map(|i| {
            if Some(i) == bad_at {
                // Violates the primary key (a duplicate of row 1).
                serde_json::json!({"row": {"id": 1, "name": "dup", "at": "2024-01-01T00:00:00Z"}})
                    .to_string()
            } else {
                serde_json::json!({"row": {"id": i, "name": format!("n{i} é"), "at": "2024-01-01T00:00:00Z"}})
                    .to_string()
            }
        })
        .collect()
}

fn framed(rows: Vec<String>, digest: Option<String>) -> Vec<String> {
    let hash = digest.unwrap_or_else(|| prefix_hash_of(rows.iter().map(|l| l.as_bytes())));
    let mut lines = vec![serde_json::json!({"open": {"table": "t", "columns": ["id", "name", "at"], "verify": "sha256"}}).to_string()];
    lines.extend(rows);
    lines.push(serde_json::json!({"end": {"sha256": hash}}).to_string());
    lines
}

#[test]
fn uploads_land_whole_or_not_at_all() {
    let pg = shared();
    let db = unique("ingest");
    let url = pg.database(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, name text NOT NULL, at timestamptz); \
         CREATE ROLE writer_ingest LOGIN; GRANT SELECT, INSERT ON t TO writer_ingest;",
    );
    let writer = pg.url("writer_ingest", &db);
    let ts = TestServer::start(Server::builder().db(&url).tenant_writer("default", &writer));
    let count = || pg.psql(&db, "SELECT count(*) FROM t");

    let ok = upload(&ts, &framed(rows(2500, None), None));
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["end"]["row_count"], 2500);
    assert_eq!(count(), "2500");
    assert_eq!(pg.psql(&db, "SELECT name FROM t WHERE id = 7"), "n7 é");
    pg.psql(&db, "TRUNCATE t");

    // A digest mismatch, a constraint violation past the first batch, a
    // malformed line: nothing lands.
    let r = upload(&ts, &framed(rows(1500, None), Some("0".repeat(64))));
    assert_eq!(r.error_code(), "integrity_failed", "{}", r.text());
    assert_eq!(count(), "0");
    let r = upload(&ts, &framed(rows(1500, Some(1200)), None));
    assert_eq!(r.error_code(), "invalid_row", "{}", r.text());
    assert_eq!(r.json()["error"]["line"], 1201);
    assert_eq!(count(), "0");
    let mut broken = framed(rows(10, None), None);
    broken[5] = "{\"row\":".into();
    let r = upload(&ts, &broken);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(count(), "0");
    // A disconnect mid-upload: the open transaction dies with it.
    {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(ts.addr()).unwrap();
        let lines = framed(rows(3000, None), None);
        let body = lines[..2000].join("\n");
        write!(
            s,
            "POST /v1/ingest/stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{}\r\n",
            body.len(),
            body
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(count(), "0");
    // The stream path never writes: the reader role cannot insert.
    let r = query(ts.addr(), "SELECT count(*) AS n FROM t");
    assert_eq!(r.status, 200);
}

#[test]
fn without_a_writer_role_uploads_are_not_allowed() {
    let pg = shared();
    let db = unique("nowriter");
    let url = pg.database(
        &db,
        "CREATE TABLE t (id int PRIMARY KEY, name text, at timestamptz);",
    );
    let ts = TestServer::start(Server::builder().db(&url));
    let r = upload(&ts, &framed(rows(3, None), None));
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.error_code(), "ingest_not_allowed");
    assert_eq!(pg.psql(&db, "SELECT count(*) FROM t"), "0");
}
