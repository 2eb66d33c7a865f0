//! Compressed streams (PROTOCOL §1, 1.1): negotiation, identical decoded
//! bodies and digests, resume, and the latency cap under every coding.
#![cfg(feature = "server")]

mod server_common;

use std::io::Read;
use std::time::{Duration, Instant};

use rowstream::core::digest::prefix_hash_of;
use rowstream::core::protocol::StreamVerifier;
use rowstream::server::compress::Compression;
use server_common::*;

const CODINGS: [&str; 3] = ["zstd", "br", "gzip"];

/// Everything a streaming decoder yields from `wire` so far (an unfinished
/// body decodes up to its last flush).
fn decoded_prefix(coding: &str, wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let mut drain = |r: &mut dyn Read| loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    };
    match coding {
        "zstd" => {
            let mut d = zstd::stream::read::Decoder::new(wire).unwrap();
            // Chromium's limit: the server must never need more.
            d.window_log_max(23).unwrap();
            drain(&mut d);
        }
        "br" => drain(&mut brotli::Decompressor::new(wire, 4096)),
        "gzip" => drain(&mut flate2::read::MultiGzDecoder::new(wire)),
        other => panic!("{other}"),
    }
    out
}

/// The whole body, strictly decoded (a truncated or corrupt body fails).
fn decode_all(coding: &str, wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "zstd" => {
            let mut d = zstd::stream::read::Decoder::new(wire).unwrap();
            d.window_log_max(23).unwrap();
            d.read_to_end(&mut out).unwrap();
        }
        "br" => {
            brotli::Decompressor::new(wire, 4096)
                .read_to_end(&mut out)
                .unwrap();
        }
        "gzip" => {
            flate2::read::GzDecoder::new(wire)
                .read_to_end(&mut out)
                .unwrap();
        }
        other => panic!("{other}"),
    }
    out
}

fn stream_with(addr: std::net::SocketAddr, body: &str, accept: Option<&str>) -> Streaming {
    let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
    if let Some(a) = accept {
        h.push(("Accept-Encoding", a));
    }
    request(addr, "POST", "/v1/query/stream", body.as_bytes(), &h)
}

fn wire_of(s: &mut Streaming) -> Vec<u8> {
    let mut wire = Vec::new();
    while let Some(p) = s.next_piece() {
        wire.extend_from_slice(&p);
    }
    wire
}

fn lines_of(body: &[u8]) -> Vec<String> {
    String::from_utf8(body.to_vec())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn header<'a>(s: &'a Streaming, name: &str) -> Option<&'a str> {
    s.headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Row lines and open/end, without the per-response lease.
fn normalised(lines: &[String]) -> (Vec<String>, serde_json::Value) {
    let end = j(lines.last().unwrap());
    (row_lines(lines), end["end"]["prefix_hash"].clone())
}

#[test]
fn every_coding_decodes_to_the_identity_body_and_its_digest() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 20_000);
    let ts = TestServer::start(builder_for(&db));
    let body = r#"{"query":"SELECT * FROM t ORDER BY id"}"#;
    let mut plain = stream_with(ts.addr(), body, None);
    assert_eq!(plain.status, 200);
    assert_eq!(header(&plain, "content-encoding"), None);
    assert_eq!(header(&plain, "vary"), Some("Accept-Encoding"));
    let plain_body = wire_of(&mut plain);
    let plain_lines = lines_of(&plain_body);
    let (rows, hash) = normalised(&plain_lines);
    assert_eq!(rows.len(), 20_000);
    for (coding, accept) in [
        ("zstd", "gzip, deflate, br, zstd"),
        ("br", "gzip, deflate, br"),
        ("gzip", "gzip, deflate"),
        ("gzip", "zstd;q=0.1, gzip;q=0.9"),
    ] {
        let mut s = stream_with(ts.addr(), body, Some(accept));
        assert_eq!(s.status, 200);
        assert_eq!(header(&s, "content-encoding"), Some(coding), "{accept}");
        assert_eq!(header(&s, "vary"), Some("Accept-Encoding"));
        let wire = wire_of(&mut s);
        let decoded = decode_all(coding, &wire);
        let lines = lines_of(&decoded);
        let mut v = StreamVerifier::new();
        verify_lines(&mut v, &lines);
        assert!(v.is_complete(), "{coding}: did not verify");
        assert_eq!(normalised(&lines), (rows.clone(), hash.clone()), "{coding}");
        // end.bytes counts the body before compression.
        let end = j(lines.last().unwrap());
        let end_line = lines.last().unwrap().len() as u64 + 1;
        assert_eq!(
            end["end"]["bytes"].as_u64().unwrap() + end_line,
            decoded.len() as u64
        );
        eprintln!(
            "{coding}: {} wire bytes for {} decoded ({:.1}x)",
            wire.len(),
            decoded.len(),
            decoded.len() as f64 / wire.len() as f64
        );
        assert!(wire.len() * 3 < decoded.len(), "{coding} barely compressed");
    }
    // Codings the server does not have are ignored: identity.
    let s = stream_with(ts.addr(), body, Some("deflate, compress"));
    assert_eq!(header(&s, "content-encoding"), None);
}

#[test]
fn compression_off_always_sends_identity() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let ts = TestServer::start(builder_for(&db).compression(Compression {
        enabled: false,
        ..Compression::default()
    }));
    let mut s = stream_with(
        ts.addr(),
        r#"{"query":"SELECT * FROM t"}"#,
        Some("zstd, br, gzip"),
    );
    assert_eq!(header(&s, "content-encoding"), None);
    assert_eq!(header(&s, "vary"), Some("Accept-Encoding"));
    assert_eq!(row_lines(&lines_of(&wire_of(&mut s))).len(), 10);
}

#[test]
fn a_resume_over_each_coding_continues_under_the_same_digest() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 5_000);
    let ts = TestServer::start(builder_for(&db));
    let mut first = stream_with(ts.addr(), r#"{"query":"SELECT * FROM t"}"#, None);
    let lines = lines_of(&wire_of(&mut first));
    let cursor = j(&lines[0])["open"]["cursor"].as_str().unwrap().to_owned();
    let rows = row_lines(&lines);
    let full_hash = j(lines.last().unwrap())["end"]["prefix_hash"].clone();
    for (k, coding) in CODINGS.iter().enumerate() {
        let after = 1000 * (k + 1);
        let resume = serde_json::json!({
            "cursor": cursor,
            "after_rows": after,
            "prefix_hash": prefix_hash_of(rows[..after].iter().map(String::as_str)),
        })
        .to_string();
        let mut s = stream_with(ts.addr(), &resume, Some(coding));
        assert_eq!(s.status, 200);
        assert_eq!(header(&s, "content-encoding"), Some(*coding));
        let got = lines_of(&decode_all(coding, &wire_of(&mut s)));
        assert_eq!(row_lines(&got), rows[after..].to_vec(), "{coding}");
        assert_eq!(
            j(got.last().unwrap())["end"]["prefix_hash"],
            full_hash,
            "{coding}"
        );
    }
}

#[test]
fn the_latency_cap_holds_under_every_coding_while_the_query_stalls() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 3);
    let ts = TestServer::start(builder_for(&db).set("stream.chunk.max_latency_ms", "50"));
    let body =
        r#"{"query":"SELECT id, sleep_ms(CASE WHEN id = 1 THEN 0 ELSE 700 END) AS s FROM t"}"#;
    for coding in CODINGS {
        let mut s = stream_with(ts.addr(), body, Some(coding));
        assert_eq!(header(&s, "content-encoding"), Some(coding));
        let t = Instant::now();
        let mut wire = Vec::new();
        let mut open_at = None;
        let first_row_at = loop {
            let piece = s.next_piece().expect("the body ended before row 1");
            wire.extend_from_slice(&piece);
            let text = String::from_utf8(decoded_prefix(coding, &wire)).unwrap();
            if open_at.is_none() && text.contains('\n') {
                open_at = Some(t.elapsed());
            }
            if text.contains("{\"row\":{\"id\":1,") {
                break t.elapsed();
            }
        };
        let open_at = open_at.unwrap();
        let waited = first_row_at - open_at;
        eprintln!("{coding}: open decodable at {open_at:?}, row 1 {waited:?} later");
        assert!(
            waited < Duration::from_millis(300),
            "{coding}: row 1 took {waited:?} (latency cap 50 ms, row 2 comes after 700 ms)"
        );
        wire.extend(wire_of(&mut s));
        let lines = lines_of(&decode_all(coding, &wire));
        assert_eq!(j(lines.last().unwrap())["end"]["row_count"], 3, "{coding}");
    }
}
