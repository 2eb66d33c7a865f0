//! Streaming rowstream NDJSON from **your own** axum handlers.
//!
//! Two adapters turn a row source into a streamed [`Response`] that speaks
//! PROTOCOL.md §2: an `open` line, one `{"row":...}` line per row framed by the
//! page-aligned [`ChunkProducer`](crate::core::producer::ChunkProducer) (byte,
//! row and latency caps, the latency cap holding while your source stalls), the
//! running SHA-256 prefix digest, and an `end` line with `row_count`,
//! `prefix_hash` and `bytes`. Rows are produced on a blocking thread and handed
//! over through a bounded queue (a slow client never makes the server buffer
//! more than a few chunks). When the client disconnects, production stops: the
//! iterator is dropped, or the SQLite statement is interrupted.
//!
//! These streams are not resumable (no cursor, `open.reason` is
//! [`NOT_RESUMABLE_REASON`]): resumable streams need a pinned snapshot and a
//! cursor registry, which is what the reference server adds on top.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use rowstream::server::integration::{rows_response, StreamOptions};
//!
//! #[derive(serde::Serialize)]
//! struct Point { x: i64, y: i64 }
//!
//! async fn points() -> axum::response::Response {
//!     let rows = (0..1_000_000).map(|i| Point { x: i, y: i * i });
//!     rows_response(rows, &["x", "y"], StreamOptions::default())
//! }
//!
//! # async fn run() {
//! let app: Router = Router::new().route("/points", get(points));
//! # }
//! ```
//!
//! A runnable version with SQLite is `examples/axum_integration.rs`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::response::Response;
use rusqlite::types::Value;
use rusqlite::Connection;
use serde::Serialize;

use super::backend::sqlite::StatementWatch;
use super::pipe::{Pipe, PipeBody, SharedClock, StreamCtl};
use super::sql::{columns_of, sql_error_text, RowWriter};
use crate::core::clock::SystemClock;
use crate::core::close::CloseReason;
use crate::core::config::StreamConfig;
use crate::core::digest::PrefixHasher;
use crate::core::http::STREAM_HEADERS;
use crate::core::producer::ChunkProducer;
use crate::core::protocol::{Column, ErrorBody, ErrorCode, OpenFrame, StreamEncoder};
use crate::core::token::lease_handle;

pub use super::sql::Shape;

/// `open.reason` of integration streams.
pub const NOT_RESUMABLE_REASON: &str = "no_cursor_support";

/// How an integration stream is framed.
#[derive(Clone)]
pub struct StreamOptions {
    /// Chunking caps (`stream.chunk.*`) and the TTL reported in
    /// `open.expires_at_ms`.
    pub config: StreamConfig,
    /// Row shape for [`sqlite_response`] (iterator rows are serialized as they are).
    pub shape: Shape,
    /// The clock (default: the system clock).
    pub clock: SharedClock,
}

impl std::fmt::Debug for StreamOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamOptions")
            .field("config", &self.config)
            .field("shape", &self.shape)
            .finish_non_exhaustive()
    }
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            config: StreamConfig::default(),
            shape: Shape::Object,
            clock: Arc::new(SystemClock),
        }
    }
}

fn start(opts: &StreamOptions, columns: Vec<Column>) -> (Arc<Pipe>, Arc<StreamCtl>) {
    let pipe = Pipe::new(opts.clock.clone());
    let ctl = StreamCtl::new(&pipe);
    let lease = lease_handle().unwrap_or_else(|_| "0".repeat(32));
    // The body's timer flushes at the latency deadline (`PipeBody`).
    let producer = ChunkProducer::new(&opts.config, opts.clock.clone()).timer_driven();
    let enc = StreamEncoder::new(producer, PrefixHasher::new(), 0, lease.clone());
    let open = OpenFrame {
        lease,
        snapshot_lsn: 0,
        resumable: false,
        reason: Some(NOT_RESUMABLE_REASON.to_owned()),
        cursor: None,
        expires_at_ms: opts
            .clock
            .now_ms()
            .saturating_add(opts.config.snapshot_ttl_ms),
        columns,
        after_rows: 0,
        total: None,
    };
    pipe.start(enc, &open);
    (pipe, ctl)
}

fn response(pipe: Arc<Pipe>, ctl: Arc<StreamCtl>) -> Response {
    let mut res = Response::new(Body::new(PipeBody::new(pipe, ctl)));
    for (k, v) in STREAM_HEADERS {
        res.headers_mut().insert(k, HeaderValue::from_static(v));
    }
    res
}

fn end_reason(ctl: &StreamCtl, failed: bool) -> CloseReason {
    match ctl.cause() {
        Some(c) => c.reason(),
        None if failed => CloseReason::Error,
        None => CloseReason::Ok,
    }
}

/// Streams any iterator of serializable rows. Each row is serialized with
/// `serde_json` as the row line's value (structs become objects, tuples and
/// vectors arrays). `columns` only names the columns in the `open` line (their
/// declared type is empty). Must be called inside a tokio runtime.
pub fn rows_response<I, T>(rows: I, columns: &[&str], opts: StreamOptions) -> Response
where
    I: IntoIterator<Item = T> + Send + 'static,
    I::IntoIter: Send,
    T: Serialize,
{
    let columns = columns
        .iter()
        .map(|n| Column {
            name: (*n).to_owned(),
            decl_type: String::new(),
        })
        .collect();
    let (pipe, ctl) = start(&opts, columns);
    let (p, c) = (pipe.clone(), ctl.clone());
    tokio::task::spawn_blocking(move || {
        let mut error = None;
        for row in rows {
            let mut failed = None;
            let pushed = p.push_row(&c, |buf| {
                let start = buf.len();
                if let Err(e) = serde_json::to_writer(&mut *buf, &row) {
                    buf.truncate(start);
                    buf.extend_from_slice(b"null");
                    failed = Some(e.to_string());
                }
            });
            if pushed.is_none() {
                break;
            }
            if let Some(e) = failed {
                error = Some(ErrorBody::new(
                    ErrorCode::InternalError,
                    format!("a row could not be serialized: {e}"),
                ));
                break;
            }
        }
        let reason = end_reason(&c, error.is_some());
        p.finish(error.as_ref(), reason, |_| {});
    });
    response(pipe, ctl)
}

/// Streams the rows of `sql` run on `conn` with positional `params`, encoded
/// like the reference server does (INTEGER exact, REAL as JSON numbers with
/// non-finite values as `null`, TEXT as strings, BLOB as base64 strings, NULL
/// as `null`), in `opts.shape`. A client disconnect interrupts the statement.
/// The statement is not checked for being read-only: it is your own SQL.
///
/// Errors before the first row (the SQL does not prepare, wrong parameters)
/// still produce a `200` stream with an `error` line and `end` reason `error`;
/// check the SQL beforehand if you want a plain HTTP error instead.
pub fn sqlite_response(
    conn: Connection,
    sql: impl Into<String>,
    params: Vec<Value>,
    opts: StreamOptions,
) -> Response {
    let sql = sql.into();
    let columns = conn
        .prepare(&sql)
        .map(|s| columns_of(&s, s.column_count()))
        .unwrap_or_default();
    let (pipe, ctl) = start(&opts, columns.clone());
    let (p, c) = (pipe.clone(), ctl.clone());
    let shape = opts.shape;
    tokio::task::spawn_blocking(move || {
        let run = || -> Result<(), ErrorBody> {
            let qerr =
                |e: rusqlite::Error| ErrorBody::new(ErrorCode::QueryError, sql_error_text(&e));
            let mut stmt = conn.prepare(&sql).map_err(qerr)?;
            for (i, v) in params.into_iter().enumerate() {
                stmt.raw_bind_parameter(i + 1, v).map_err(qerr)?;
            }
            let _watch = StatementWatch::new(&c, &conn);
            let writer = RowWriter::new(&columns, shape);
            let mut rows = stmt.raw_query();
            loop {
                if c.is_stopped() {
                    return Ok(());
                }
                match rows.next() {
                    Ok(Some(row)) => {
                        if p.push_row(&c, |buf| writer.write(row, buf)).is_none() {
                            return Ok(());
                        }
                    }
                    Ok(None) => return Ok(()),
                    Err(_) if c.is_stopped() => return Ok(()),
                    Err(e) => return Err(qerr(e)),
                }
            }
        };
        let result = run();
        let reason = end_reason(&c, result.is_err());
        p.finish(result.err().as_ref(), reason, |_| {});
    });
    response(pipe, ctl)
}
