//! Every lease gets exactly one `stream.closed`, whatever the exit — also when
//! the producing thread panics.
#![cfg(feature = "server")]

mod server_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rowstream::core::audit::{AuditEvent, MemoryAuditSink};
use rowstream::core::clock::{Clock, SystemClock};
use rowstream::core::close::CloseReason;
use rowstream::server::Server;
use rusqlite::functions::FunctionFlags;
use server_common::*;

/// The system clock, except that it panics once, on the thread that runs the
/// query (marked by the `mark()` SQL function), after `after` calls there.
struct FaultyClock {
    producer: Mutex<Option<std::thread::ThreadId>>,
    calls: AtomicU64,
    after: u64,
    fired: AtomicBool,
}

impl Clock for FaultyClock {
    fn now_ms(&self) -> u64 {
        let on_producer = *self.producer.lock().unwrap() == Some(std::thread::current().id());
        if on_producer
            && self.calls.fetch_add(1, Ordering::SeqCst) >= self.after
            && !self.fired.swap(true, Ordering::SeqCst)
        {
            panic!("injected clock failure");
        }
        SystemClock.now_ms()
    }
}

#[test]
fn a_panicking_producer_still_ends_the_stream_and_closes_the_lease() {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 20_000);
    let clock = Arc::new(FaultyClock {
        producer: Mutex::new(None),
        calls: AtomicU64::new(0),
        after: 5_000,
        fired: AtomicBool::new(false),
    });
    let audit = Arc::new(MemoryAuditSink::new());
    let c2 = clock.clone();
    let server = Server::builder()
        .db(&db)
        .clock(clock.clone())
        .audit_sink(audit.clone())
        .connection_init(move |conn| {
            let c = c2.clone();
            conn.create_scalar_function("mark", 0, FunctionFlags::SQLITE_UTF8, move |_| {
                *c.producer.lock().unwrap() = Some(std::thread::current().id());
                Ok(1)
            })
        })
        .build()
        .unwrap()
        .spawn("127.0.0.1:0")
        .unwrap();
    let r = query(server.addr(), "SELECT *, mark() AS m FROM t");
    assert_eq!(r.status, 200);
    let lines = r.lines();
    let end = j(lines.last().unwrap());
    assert_eq!(end["end"]["reason"], "error", "{}", lines.last().unwrap());
    assert_eq!(
        j(&lines[lines.len() - 2])["error"]["code"],
        "internal_error"
    );
    let rows = row_lines(&lines).len() as u64;
    assert_eq!(end["end"]["row_count"].as_u64(), Some(rows));
    assert!(rows > 0 && rows < 20_000);
    let events = audit.events();
    assert_paired(&events);
    assert!(events.iter().any(|e| matches!(e,
        AuditEvent::StreamClosed { reason: CloseReason::Error, cause, .. } if cause == "panic")));
    // The server goes on serving, and the slot came back.
    assert_eq!(server.stats().slots_in_use, 0);
    let r = query(server.addr(), "SELECT count(*) FROM t");
    assert_eq!(row_lines(&r.lines()), [r#"{"row":{"count(*)":20000}}"#]);
}
