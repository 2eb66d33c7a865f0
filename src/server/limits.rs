//! Resource limits of the read path, enforced by SQLite's own mechanisms.
//!
//! - **Step time** (`--query-max-step-ms`, [`QueryLimits::max_step_ms`]): the
//!   longest SQLite may compute without producing a row (the first row counts
//!   from the statement's first step). The progress handler the stream already
//!   installs (every 1000 VM steps, see `pipe::StatementWatch`) asks
//!   [`step_deadline_passed`]; time spent waiting for a slow *client* never
//!   counts, because no VM step runs then and every produced row restarts the
//!   clock. Catches recursive-CTE bombs, cartesian joins and huge sorts that
//!   burn a core without sending anything.
//! - **Value size** (`--query-max-value-bytes`, [`QueryLimits::max_value_bytes`]):
//!   `sqlite3_limit(SQLITE_LIMIT_LENGTH)` on every read connection, so
//!   `randomblob(1e9)`, `zeroblob`, `replace`/`||` doubling and
//!   `group_concat` fail inside SQLite with `SQLITE_TOOBIG` before they
//!   allocate.
//!
//! Both end the stream with an error line `resource_limit_exceeded` (then
//! `end` with reason `error`); nothing else is affected.
//!
//! Two HTTP timeouts live here too, as they bound the same kind of abuse:
//! the whole JSON body of the query/cancel routes (`408 request_timeout`) and
//! the request head (hyper's `header_read_timeout`, see `listen.rs`).
//!
//! The deadline state is thread-local: a statement is stepped on one blocking
//! thread from its first step to its reset, and the progress handler runs on
//! that thread.

use std::cell::Cell;
use std::time::{Duration, Instant};

use rusqlite::limits::Limit;
use rusqlite::Connection;

use super::sql::sql_error_text;
use crate::core::protocol::{ErrorBody, ErrorCode};

/// Default [`QueryLimits::max_step_ms`]: 30 s.
pub const DEFAULT_QUERY_MAX_STEP_MS: u64 = 30_000;

/// Default [`QueryLimits::max_value_bytes`]: 64 MiB.
pub const DEFAULT_QUERY_MAX_VALUE_BYTES: usize = 64 * 1024 * 1024;

/// Default [`QueryLimits::request_body_timeout_ms`]: 10 s.
pub const DEFAULT_REQUEST_BODY_TIMEOUT_MS: u64 = 10_000;

/// Default [`QueryLimits::header_read_timeout_ms`]: 10 s.
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 10_000;

/// Limits applied to every streamed query (and the request that carries it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// Longest time (ms) SQLite may run without producing a row; 0 = no
    /// limit (the snapshot TTL still ends the stream).
    pub max_step_ms: u64,
    /// Largest string, blob or row a query may build (`SQLITE_LIMIT_LENGTH`),
    /// clamped to `[1 KiB, 1e9]` (SQLite's own maximum).
    pub max_value_bytes: usize,
    /// Longest wait (ms) for a whole JSON request body of the query and
    /// cancel routes (`408 request_timeout`; slowloris bodies). Input
    /// streams have their own idle timeout.
    pub request_body_timeout_ms: u64,
    /// Longest time (ms) a client may take to send a request head (HTTP/1.1;
    /// hyper's `header_read_timeout`): the connection is closed past it
    /// (slowloris heads, idle keep-alive connections).
    pub header_read_timeout_ms: u64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_step_ms: DEFAULT_QUERY_MAX_STEP_MS,
            max_value_bytes: DEFAULT_QUERY_MAX_VALUE_BYTES,
            request_body_timeout_ms: DEFAULT_REQUEST_BODY_TIMEOUT_MS,
            header_read_timeout_ms: DEFAULT_HEADER_READ_TIMEOUT_MS,
        }
    }
}

impl QueryLimits {
    pub(crate) fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.request_body_timeout_ms.max(1))
    }

    pub(crate) fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms.max(1))
    }

    fn length_limit(&self) -> i32 {
        self.max_value_bytes.clamp(1024, 1_000_000_000) as i32
    }
}

/// Applies the per-connection limits (cheap; done at every checkout).
pub(crate) fn apply(conn: &Connection, limits: &QueryLimits) {
    let _ = conn.set_limit(Limit::SQLITE_LIMIT_LENGTH, limits.length_limit());
}

#[derive(Clone, Copy)]
struct Armed {
    max: Duration,
    deadline: Instant,
    seen_rows: u64,
}

thread_local! {
    static ARMED: Cell<Option<Armed>> = const { Cell::new(None) };
    static ROWS: Cell<u64> = const { Cell::new(0) };
    static TRIPPED: Cell<Option<u64>> = const { Cell::new(None) };
    static LENGTH: Cell<i32> = const { Cell::new(1_000_000_000) };
}

/// Arms the step deadline for the statement about to run on this thread;
/// disarmed when dropped.
pub(crate) struct StepDeadline(());

impl StepDeadline {
    pub(crate) fn arm(limits: &QueryLimits) -> StepDeadline {
        TRIPPED.with(|t| t.set(None));
        LENGTH.with(|l| l.set(limits.length_limit()));
        let armed = (limits.max_step_ms > 0).then(|| {
            let max = Duration::from_millis(limits.max_step_ms);
            Armed {
                max,
                deadline: Instant::now() + max,
                seen_rows: ROWS.with(Cell::get),
            }
        });
        ARMED.with(|a| a.set(armed));
        StepDeadline(())
    }
}

impl Drop for StepDeadline {
    fn drop(&mut self) {
        ARMED.with(|a| a.set(None));
    }
}

/// Called for every row the statement produced (restarts the step clock).
#[inline]
pub(crate) fn row_produced() {
    ROWS.with(|r| r.set(r.get().wrapping_add(1)));
}

/// For the progress handler: true once SQLite ran longer than the limit
/// without producing a row. Always false when no deadline is armed on this
/// thread (pooled connections, the integration adapters).
pub(crate) fn step_deadline_passed() -> bool {
    ARMED.with(|a| {
        let Some(mut armed) = a.get() else {
            return false;
        };
        let rows = ROWS.with(Cell::get);
        let now = Instant::now();
        if rows != armed.seen_rows {
            armed.seen_rows = rows;
            armed.deadline = now + armed.max;
            a.set(Some(armed));
            return false;
        }
        if now > armed.deadline {
            TRIPPED.with(|t| t.set(Some(armed.max.as_millis() as u64)));
            return true;
        }
        false
    })
}

/// The error line for a statement that failed while stepping:
/// `resource_limit_exceeded` when a limit of this module stopped it,
/// otherwise `query_error` with SQLite's message.
pub(crate) fn step_error(e: &rusqlite::Error) -> ErrorBody {
    let length = LENGTH.with(Cell::get);
    if let Some(ms) = TRIPPED.with(Cell::take) {
        return ErrorBody::new(
            ErrorCode::ResourceLimitExceeded,
            format!("the query ran more than {ms} ms without producing a row"),
        )
        .with("limit", "max_step_ms")
        .with("max_step_ms", ms);
    }
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::TooBig) => ErrorBody::new(
            ErrorCode::ResourceLimitExceeded,
            format!(
                "a value would exceed the {} bytes limit ({})",
                length,
                sql_error_text(e)
            ),
        )
        .with("limit", "max_value_bytes")
        .with("max_value_bytes", length as u64),
        Some(rusqlite::ErrorCode::OutOfMemory) => ErrorBody::new(
            ErrorCode::ResourceLimitExceeded,
            "the query ran out of memory",
        )
        .with("limit", "memory"),
        _ => ErrorBody::new(ErrorCode::QueryError, sql_error_text(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_trips_only_without_rows() {
        let limits = QueryLimits {
            max_step_ms: 20,
            ..QueryLimits::default()
        };
        assert!(!step_deadline_passed(), "nothing armed");
        let g = StepDeadline::arm(&limits);
        assert!(!step_deadline_passed());
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(8));
            row_produced();
            assert!(!step_deadline_passed(), "rows restart the clock");
        }
        std::thread::sleep(Duration::from_millis(30));
        assert!(step_deadline_passed());
        let e = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERRUPT),
            None,
        );
        assert_eq!(step_error(&e).code, "resource_limit_exceeded");
        assert_eq!(step_error(&e).code, "query_error", "reported once");
        drop(g);
        std::thread::sleep(Duration::from_millis(30));
        assert!(!step_deadline_passed(), "disarmed");
    }

    #[test]
    fn length_limit_stops_memory_bombs_inside_sqlite() {
        let c = Connection::open_in_memory().unwrap();
        let limits = QueryLimits {
            max_value_bytes: 1 << 20,
            ..QueryLimits::default()
        };
        apply(&c, &limits);
        let _g = StepDeadline::arm(&limits);
        let e = c
            .query_row("SELECT length(randomblob(1e9))", [], |r| r.get::<_, i64>(0))
            .unwrap_err();
        assert_eq!(step_error(&e).code, "resource_limit_exceeded");
        let n: i64 = c
            .query_row("SELECT length(randomblob(1000))", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1000);
    }
}
