//! Static tokens, HS256 JWTs, expiry and tenant isolation.
#![cfg(feature = "server")]

mod server_common;

use rowstream::core::audit::AuditEvent;
use rowstream::server::sign_hs256;
use serde_json::json;
use server_common::*;

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn static_tokens_and_tenant_isolation() {
    let dir = TempDir::new();
    let (da, db_) = (dir.path("a.sqlite"), dir.path("b.sqlite"));
    make_db(&da, 2);
    let cb = make_db(&db_, 0);
    cb.execute_batch("INSERT INTO t(name) VALUES ('only-in-b')")
        .unwrap();
    let ts = TestServer::start(
        rowstream::server::Server::builder()
            .tenant("a", &da)
            .tenant("b", &db_)
            .token("ta", "a", "alice")
            .token("tb", "b", "alice"),
    );
    let q = r#"{"query":"SELECT name FROM t ORDER BY id"}"#;
    for (token, status) in [(None, 401), (Some("nope"), 401), (Some(""), 401)] {
        let r = post(ts.addr(), "/v1/query/stream", q, token);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (status, "unauthorized")
        );
    }
    let r = send(
        ts.addr(),
        "POST",
        "/v1/query/stream",
        q.as_bytes(),
        &[("Authorization", "Basic dGE6")],
    );
    assert_eq!(r.status, 401);
    let a = post(ts.addr(), "/v1/query/stream", q, Some("ta"));
    assert_eq!(
        row_lines(&a.lines()),
        [r#"{"row":{"name":"n1"}}"#, r#"{"row":{"name":"n2"}}"#]
    );
    let b = post(ts.addr(), "/v1/query/stream", q, Some("tb"));
    assert_eq!(row_lines(&b.lines()), [r#"{"row":{"name":"only-in-b"}}"#]);
    // A tenant-choosing header is ignored.
    let r = send(
        ts.addr(),
        "POST",
        "/v1/query/stream",
        q.as_bytes(),
        &[("Authorization", "Bearer tb"), ("X-Tenant", "a")],
    );
    assert_eq!(row_lines(&r.lines()), [r#"{"row":{"name":"only-in-b"}}"#]);
    // Same principal name, other tenant: a's cursor is not found for b.
    let cursor = j(&a.lines()[0])["open"]["cursor"]
        .as_str()
        .unwrap()
        .to_owned();
    let cancel = format!(r#"{{"cursor":"{cursor}"}}"#);
    assert_eq!(
        post(ts.addr(), "/v1/query/stream/cancel", &cancel, Some("tb")).status,
        404
    );
    assert_eq!(
        post(ts.addr(), "/v1/query/stream/cancel", &cancel, Some("ta")).status,
        200
    );
    // Stats need a token too.
    assert_eq!(
        send(ts.addr(), "GET", "/v1/debug/stats", b"", &[]).status,
        401
    );
}

#[test]
fn hs256_jwts_are_verified_and_expiry_is_audited() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 3);
    let secret = b"test-secret";
    let ts = TestServer::start(
        builder_for(&db)
            .jwt_secret(secret.to_vec())
            .set("stream.snapshot.ttl_ms", "600000"),
    );
    let q = r#"{"query":"SELECT id FROM t"}"#;
    let good = sign_hs256(
        &json!({"sub":"carol","tenant":"default","exp": now_s() + 60}),
        secret,
    );
    let r = post(ts.addr(), "/v1/query/stream", q, Some(&good));
    assert_eq!(r.status, 200, "{}", r.text());
    let lease = j(&r.lines()[0])["open"]["lease"]
        .as_str()
        .unwrap()
        .to_owned();
    // exp (60 s) falls before the lease's end (600 s): audited, lease continues.
    let events = ts.events();
    assert!(events.iter().any(|e| matches!(e,
        AuditEvent::TokenExpiredDuringLease { lease: l, principal, .. } if *l == lease && principal == "carol")));
    assert!(events.iter().any(|e| matches!(e,
        AuditEvent::StreamOpened { lease: l, principal, tenant, .. } if *l == lease && principal == "carol" && tenant == "default")));

    let bad = [
        sign_hs256(
            &json!({"sub":"carol","tenant":"default","exp": now_s() - 5}),
            secret,
        ),
        sign_hs256(
            &json!({"sub":"carol","tenant":"default","exp": now_s() + 60}),
            b"other-secret",
        ),
        sign_hs256(
            &json!({"sub":"carol","tenant":"nope","exp": now_s() + 60}),
            secret,
        ),
        sign_hs256(&json!({"sub":"carol","exp": now_s() + 60}), secret),
        "not.a.jwt".to_string(),
    ];
    for t in &bad {
        let r = post(ts.addr(), "/v1/query/stream", q, Some(t));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "unauthorized"),
            "{t}"
        );
    }
    // A long-lived token: no expiry event.
    let long = sign_hs256(
        &json!({"sub":"dave","tenant":"default","exp": now_s() + 3600}),
        secret,
    );
    let r = post(ts.addr(), "/v1/query/stream", q, Some(&long));
    let lease = j(&r.lines()[0])["open"]["lease"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!ts.events().iter().any(|e| matches!(e,
        AuditEvent::TokenExpiredDuringLease { lease: l, .. } if *l == lease)));
    let stats = send(
        ts.addr(),
        "GET",
        "/v1/debug/stats",
        b"",
        &[("Authorization", &format!("Bearer {long}"))],
    );
    assert_eq!(stats.status, 200);
    assert!(stats.json()["pinned_snapshots"].as_u64().is_some());
}
