//! Every lease gets exactly one `stream.closed`, whatever the exit — also when
//! the producing thread panics.
#![cfg(feature = "server")]

mod server_common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rowstream::core::audit::{AuditEvent, MemoryAuditSink};
use rowstream::core::clock::{Clock, SystemClock};
use rowstream::core::close::CloseReason;
use rowstream::core::digest::prefix_hash_of;
use rowstream::server::Server;
use rusqlite::functions::FunctionFlags;
use server_common::*;

/// Which thread's clock read panics.
#[derive(Clone, Copy)]
enum Victim {
    /// The thread that steps the query (marked by the `mark()` SQL function).
    Stepping,
    /// The thread that encodes a long result's rows.
    Encoding,
}

/// The system clock, except that it panics once, on the victim thread, after
/// `after` calls there.
struct FaultyClock {
    victim: Victim,
    producer: Mutex<Option<std::thread::ThreadId>>,
    calls: AtomicU64,
    after: u64,
    fired: AtomicBool,
}

impl Clock for FaultyClock {
    fn now_ms(&self) -> u64 {
        let me = std::thread::current();
        let on_victim = match self.victim {
            Victim::Stepping => *self.producer.lock().unwrap() == Some(me.id()),
            Victim::Encoding => me.name() == Some("rowstream-encode"),
        };
        if on_victim
            && self.calls.fetch_add(1, Ordering::SeqCst) >= self.after
            && !self.fired.swap(true, Ordering::SeqCst)
        {
            panic!("injected clock failure");
        }
        SystemClock.now_ms()
    }
}

#[test]
fn a_panic_while_stepping_the_first_rows_still_ends_the_stream_and_closes_the_lease() {
    // The stepping thread reads the clock every 64 rows: row ~640.
    a_panic_still_ends_the_stream(Victim::Stepping, 10);
}

#[test]
fn a_panic_while_stepping_a_long_result_still_ends_the_stream_and_closes_the_lease() {
    // Row ~8000: rows are encoded on a second thread by then.
    a_panic_still_ends_the_stream(Victim::Stepping, 125);
}

#[test]
fn a_panic_while_encoding_still_ends_the_stream_and_closes_the_lease() {
    // The encoding thread reads the clock once per chunk and once per batch.
    a_panic_still_ends_the_stream(Victim::Encoding, 20);
}

fn a_panic_still_ends_the_stream(victim: Victim, after: u64) {
    let dir = TempDir::new();
    let db = dir.path("db.sqlite");
    make_db(&db, 20_000);
    let clock = Arc::new(FaultyClock {
        victim,
        producer: Mutex::new(None),
        calls: AtomicU64::new(0),
        after,
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
    assert!(clock.fired.load(Ordering::SeqCst), "the fault never fired");
    let lines = r.lines();
    let end = j(lines.last().unwrap());
    assert_eq!(end["end"]["reason"], "error", "{}", lines.last().unwrap());
    assert_eq!(
        j(&lines[lines.len() - 2])["error"]["code"],
        "internal_error"
    );
    let rows = row_lines(&lines);
    assert_eq!(end["end"]["row_count"].as_u64(), Some(rows.len() as u64));
    assert!(!rows.is_empty() && rows.len() < 20_000, "{}", rows.len());
    // What was sent is a consistent prefix: in order, under its digest.
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(j(r)["row"]["id"], i as u64 + 1);
    }
    assert_eq!(end["end"]["prefix_hash"], prefix_hash_of(&rows));
    let events = audit.events();
    assert_paired(&events);
    assert!(events.iter().any(|e| matches!(e,
        AuditEvent::StreamClosed { reason: CloseReason::Error, cause, .. } if cause == "panic")));
    // The server goes on serving, and the slot came back.
    assert_eq!(server.stats().slots_in_use, 0);
    let r = query(server.addr(), "SELECT count(*) FROM t");
    assert_eq!(row_lines(&r.lines()), [r#"{"row":{"count(*)":20000}}"#]);
}
