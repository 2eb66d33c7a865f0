//! The `rowstream` binary: command line, open-mode warning, audit log file,
//! graceful shutdown on SIGTERM.
#![cfg(feature = "server")]

mod server_common;

use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

use server_common::*;

const BIN: &str = env!("CARGO_BIN_EXE_rowstream");

fn spawn(args: &[&str]) -> ServerProcess {
    ServerProcess::start(args, true)
}

/// Sends the server SIGTERM (graceful shutdown).
fn sigterm(p: &ServerProcess) {
    let kill = Command::new("kill")
        .args(["-TERM", &p.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
}

/// Everything the server wrote on stderr (read to its end: call after it exited).
fn stderr_text(p: &mut ServerProcess) -> String {
    let mut stderr = String::new();
    p.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    stderr
}

#[test]
fn help_explains_the_command_line() {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--db",
        "--tenant",
        "--listen",
        "--token",
        "--jwt-secret",
        "ROWSTREAM_JWT_SECRET",
        "--set",
        "--audit-log",
        "--static-dir",
        "stream.snapshot.ttl_ms",
        "rowstream_config",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}");
    }
    let out = Command::new(BIN)
        .args(["serve", "--db", "x.sqlite", "--set", "stream.nope=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("stream.nope"));
}

#[test]
fn rust_log_chooses_what_is_logged() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 10);
    let audit = dir.path("audit.jsonl");
    let args = [
        "serve",
        "--db",
        db.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--audit-log",
        audit.to_str().unwrap(),
    ];
    let stderr_of = |env: &[(&str, &str)]| {
        let mut p = ServerProcess::start_with_env(args, true, env);
        let r = query(p.addr, "SELECT id FROM t");
        assert_eq!(row_lines(&r.lines()).len(), 10);
        assert_eq!(send(p.addr, "GET", "/nope", b"", &[]).status, 404);
        sigterm(&p);
        p.child.wait().unwrap();
        stderr_text(&mut p)
    };
    let quiet = stderr_of(&[("RUST_LOG", "warn")]);
    assert!(!quiet.contains("rowstream::http"), "{quiet}");
    assert!(!quiet.contains("rowstream::stream"), "{quiet}");
    assert!(quiet.contains("OPEN"), "warnings stay: {quiet}");
    let http_only = stderr_of(&[("RUST_LOG", "rowstream::http=info")]);
    let refused = http_only
        .lines()
        .find(|l| l.contains("path=\"/nope\""))
        .unwrap_or_else(|| panic!("{http_only}"));
    assert!(
        refused.contains("status=404") && refused.contains("code=\"not_found\""),
        "{refused}"
    );
    assert!(!http_only.contains("rowstream::stream"), "{http_only}");
    let debug = stderr_of(&[("RUST_LOG", "rowstream::stream=debug")]);
    assert!(
        debug.contains("opened") && debug.contains("closed"),
        "{debug}"
    );
}

#[test]
fn serves_warns_when_open_and_shuts_down_gracefully_on_sigterm() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 5000);
    let audit = dir.path("audit.jsonl");
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<h1>demo</h1>").unwrap();
    std::fs::write(www.join("a b.js"), "export {};").unwrap();
    let mut p = spawn(&[
        "serve",
        "--db",
        db.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--audit-log",
        audit.to_str().unwrap(),
        "--static-dir",
        www.to_str().unwrap(),
        "--set",
        "stream.chunk.max_rows=100",
    ]);
    let r = query(p.addr, "SELECT id FROM t WHERE id <= 3");
    assert_eq!(row_lines(&r.lines()).len(), 3);
    let page = send(p.addr, "GET", "/", b"", &[]);
    assert_eq!((page.status, page.text().as_str()), (200, "<h1>demo</h1>"));
    assert_eq!(send(p.addr, "GET", "/../etc/passwd", b"", &[]).status, 404);
    assert_eq!(
        send(p.addr, "GET", "/%2e%2e/etc/passwd", b"", &[]).status,
        404
    );
    let js = send(p.addr, "GET", "/a%20b.js", b"", &[]);
    assert_eq!(js.status, 200);
    assert!(js
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));

    // A long stream is running when SIGTERM arrives.
    let body = serde_json::json!({"query": "SELECT * FROM t WHERE (WITH RECURSIVE c(x) AS (SELECT t.id UNION ALL SELECT x + 1 FROM c WHERE x < t.id + 300000) SELECT count(*) FROM c) < 0"}).to_string();
    let mut s = open_stream(p.addr, &body, None);
    let open = j(&s.next_line().unwrap());
    let lease = open["open"]["lease"].as_str().unwrap().to_owned();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    sigterm(&p);
    let rest = s.rest();
    let end = j(rest.last().expect("an end line"));
    assert_eq!(end["end"]["reason"], "cancelled");
    let status = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "did not exit");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let stderr = stderr_text(&mut p);
    assert!(stderr.contains("OPEN"), "no open-server warning: {stderr}");
    // Request and lifecycle logs (`tracing`, default level info).
    assert!(
        stderr.lines().any(|l| l.contains("rowstream::http")
            && l.contains("path=\"/v1/query/stream\"")
            && l.contains("status=200")),
        "no request log: {stderr}"
    );
    assert!(
        stderr.lines().any(|l| l.contains("rowstream::stream")
            && l.contains(&format!("lease=\"{lease}\""))
            && l.contains("cause=\"shutdown\"")),
        "no lifecycle log of the stream cut by the shutdown: {stderr}"
    );
    assert!(stderr.contains("shut down"), "{stderr}");
    let log = std::fs::read_to_string(&audit).unwrap();
    let events: Vec<rowstream::core::audit::AuditEvent> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_paired(&events);
    let closed = closed_of(&events, &lease).expect("closed at shutdown");
    let rowstream::core::audit::AuditEvent::StreamClosed { cause, .. } = closed else {
        unreachable!()
    };
    assert_eq!(cause, "shutdown");
}
