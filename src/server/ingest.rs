//! Input streams: `POST /v1/ingest/stream` (PROTOCOL.md §4).
//!
//! The body is never buffered whole. The handler reads it frame by frame
//! (an idle timeout per frame, a byte cap) and hands the chunks through a
//! small bounded channel to a blocking thread, which frames them
//! ([`NdjsonFramer`], a line-length cap), parses them ([`IngestParser`]:
//! open/row/end, typed values, the digest) and writes the rows on its own
//! read-write connection (the read path keeps its read-only ones).
//!
//! Atomicity comes from SQLite transactions, in one of two modes
//! ([`IngestMode`], see `SERVER.md` for the measurements):
//!
//! - **staged** (default): rows go into a `TEMP` table of the ingest's own
//!   connection (a private, unlinked temp file); only after the `end` line
//!   verified is one short write transaction opened on the tenant database
//!   to copy them (`INSERT INTO main.t SELECT ... FROM temp...`). A slow or
//!   stalled upload never holds the tenant's write lock, so other writers
//!   (including other ingests) keep committing;
//! - **direct**: `BEGIN IMMEDIATE` when the `open` line validated, every row
//!   inserted into the table, `COMMIT` after `end`. Writes the data once, but
//!   holds the write lock for the whole upload (readers are never blocked:
//!   WAL).
//!
//! In both modes nothing is committed before the `end` line passed its checks;
//! every failure (a bad line, a digest mismatch, a disconnect, a timeout, a
//! shutdown, a crash of the process) leaves the table exactly as it was.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot, Notify};

use super::backend::sqlite::SqliteTenant as Tenant;
use super::pipe::{Pipe, StopCause, StreamCtl};
use super::respond::{authenticate, refusal_response};
use super::sql::{read_runtime_config, sql_error_text};
use super::stream::{capacity, Refusal};
use super::{lock, AppState, Caller, TenantDb};
use crate::core::audit::AuditEvent;
use crate::core::close::CloseReason;
use crate::core::config::StreamConfig;
use crate::core::digest::sha256_hex;
use crate::core::framer::{FramerError, NdjsonFramer};
use crate::core::ingest::{IngestError, IngestEvent, IngestOpen, IngestParser, IngestValue};
use crate::core::lease::{OpenStream, StreamLease};
use crate::core::protocol::{ErrorBody, ErrorCode};

/// Default longest line of an input stream (1 MiB).
pub const DEFAULT_INGEST_MAX_LINE_BYTES: usize = 1024 * 1024;

/// Default time the server waits for the next piece of an upload (30 s).
pub const DEFAULT_INGEST_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Body chunks queued between the HTTP side and the writing thread.
const QUEUED_CHUNKS: usize = 8;

/// After an early refusal, how much of the rest of the body is read and
/// dropped so that the client (still sending) gets the answer instead of a
/// connection reset.
const DRAIN_MAX_BYTES: u64 = 64 * 1024 * 1024;
const DRAIN_MAX_TIME: Duration = Duration::from_secs(5);

/// Name of the staging table in the ingest connection's `temp` schema.
const STAGING: &str = "temp.\"rowstream_ingest\"";

/// How an input stream is made atomic. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IngestMode {
    /// Rows are staged in a private temp table and copied in one short write
    /// transaction after the `end` line verified.
    #[default]
    Staged,
    /// One write transaction for the whole upload.
    Direct,
}

impl IngestMode {
    /// `staged` / `direct`.
    pub fn as_str(self) -> &'static str {
        match self {
            IngestMode::Staged => "staged",
            IngestMode::Direct => "direct",
        }
    }

    /// Parses `staged` / `direct`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "staged" => Some(IngestMode::Staged),
            "direct" => Some(IngestMode::Direct),
            _ => None,
        }
    }
}

/// Server-wide limits of input streams (the `stream.*` keys apply as well).
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// Atomicity mode.
    pub mode: IngestMode,
    /// Longest accepted line (`413 line_too_long` past it).
    pub max_line_bytes: usize,
    /// Largest accepted body (`413 payload_too_large`); `None`: no limit.
    pub max_body_bytes: Option<u64>,
    /// Longest wait for the next piece of the body (`408 request_timeout`).
    pub idle_timeout: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            mode: IngestMode::default(),
            max_line_bytes: DEFAULT_INGEST_MAX_LINE_BYTES,
            max_body_bytes: None,
            idle_timeout: DEFAULT_INGEST_IDLE_TIMEOUT,
        }
    }
}

/// An upload's `Content-Encoding` (PROTOCOL §1, 1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UploadCoding {
    Gzip,
    Zstd,
}

/// `None`: identity; `Err`: a coding the server cannot decode.
fn upload_coding(headers: &HeaderMap) -> Result<Option<UploadCoding>, String> {
    let mut coding = None;
    for v in headers.get_all(header::CONTENT_ENCODING) {
        let v = v
            .to_str()
            .map_err(|_| "a Content-Encoding that is not text".to_owned())?;
        for token in v.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let c = match token.to_ascii_lowercase().as_str() {
                "identity" => continue,
                "gzip" | "x-gzip" => UploadCoding::Gzip,
                "zstd" => UploadCoding::Zstd,
                _ => {
                    return Err(format!(
                        "uploads may be sent as gzip or zstd, not {token:?}"
                    ))
                }
            };
            if coding.replace(c).is_some() {
                return Err("uploads may be compressed once, with gzip or zstd".into());
            }
        }
    }
    Ok(coding)
}

/// The blocking side of the body channel, as a `Read` for the decoders: a
/// failure of the HTTP side is kept in `failed` (the decoder only sees an
/// I/O error).
struct FeedReader<'a> {
    rx: &'a mut mpsc::Receiver<Feed>,
    current: Bytes,
    failed: &'a std::cell::Cell<Option<FeedError>>,
}

impl std::io::Read for FeedReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Feed::Chunk(b)) => self.current = b,
                Some(Feed::End) => return Ok(0),
                Some(Feed::Failed(e)) => {
                    self.failed.set(Some(e));
                    return Err(std::io::Error::other("the upload failed"));
                }
                None => {
                    self.failed.set(Some(FeedError::Disconnect));
                    return Err(std::io::Error::other("the upload was cut"));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Decoded upload bytes, a bounded piece at a time: a small body that
/// inflates to gigabytes never occupies more than [`DECODED_PIECE`] here,
/// and the body limit counts these bytes.
struct Inflate<'a> {
    decoder: Box<dyn std::io::Read + 'a>,
    failed: &'a std::cell::Cell<Option<FeedError>>,
    coding: UploadCoding,
    buf: Vec<u8>,
    decoded: u64,
}

const DECODED_PIECE: usize = 64 * 1024;

/// A reader that fails with the error of a decoder that could not be made.
struct FailingRead(std::io::Error);

impl std::io::Read for FailingRead {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::new(self.0.kind(), self.0.to_string()))
    }
}

/// Where the writer reads the upload: identity bodies straight from the
/// channel, compressed ones through their decoder (on the writer's thread,
/// never a tokio worker).
enum Source<'a> {
    Plain(&'a mut mpsc::Receiver<Feed>),
    Inflate(Inflate<'a>),
}

impl Source<'_> {
    fn next(&mut self, max: Option<u64>) -> Piece {
        match self {
            Source::Plain(rx) => match rx.blocking_recv() {
                Some(Feed::Chunk(b)) => Piece::Data(b),
                Some(Feed::End) => Piece::End,
                Some(Feed::Failed(e)) => Piece::Failed(e),
                None => Piece::Failed(FeedError::Disconnect),
            },
            Source::Inflate(i) => i.next(max),
        }
    }
}

/// One step of the upload, as the writer sees it.
enum Piece {
    Data(Bytes),
    End,
    Failed(FeedError),
    Corrupt(String),
}

impl Inflate<'_> {
    fn next(&mut self, max: Option<u64>) -> Piece {
        match self.decoder.read(&mut self.buf) {
            Ok(0) => Piece::End,
            Ok(n) => {
                self.decoded += n as u64;
                match max {
                    Some(max) if self.decoded > max => Piece::Failed(FeedError::TooLarge(max)),
                    _ => Piece::Data(Bytes::copy_from_slice(&self.buf[..n])),
                }
            }
            Err(e) => match self.failed.take() {
                Some(f) => Piece::Failed(f),
                None => Piece::Corrupt(format!(
                    "the body is not valid {}: {e}",
                    match self.coding {
                        UploadCoding::Gzip => "gzip",
                        UploadCoding::Zstd => "zstd",
                    }
                )),
            },
        }
    }
}

/// What the HTTP side hands the writing thread.
enum Feed {
    Chunk(Bytes),
    End,
    Failed(FeedError),
}

#[derive(Debug, Clone, Copy)]
enum FeedError {
    Disconnect,
    Timeout,
    TooLarge(u64),
}

/// The success line.
#[derive(Debug, Clone)]
struct IngestEnd {
    row_count: u64,
    verified: bool,
    lease: String,
}

type Outcome = Result<IngestEnd, Refusal>;

/// `POST /v1/ingest/stream`.
pub(crate) async fn ingest_handler(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // A refusal before the upload is read still drains the body (in the
    // background, bounded by `drain`): a client busy sending would otherwise
    // race into a closed socket and never see the answer.
    let refuse = |body: Body, response: Response| {
        tokio::spawn(drain(body));
        response
    };
    let caller = match authenticate(&state, &headers) {
        Ok(c) => c,
        Err(r) => return refuse(body, *r),
    };
    if state.shutting_down.load(Ordering::SeqCst) {
        return refuse(
            body,
            refusal_response(Refusal::new(
                ErrorCode::ShuttingDown,
                "the server is shutting down",
            )),
        );
    }
    let tenant = match state.tenants.get(&caller.scope.tenant) {
        Some(TenantDb::Postgres(t)) if !t.accepts_ingest() => {
            return refuse(
                body,
                refusal_response(Refusal::new(
                    ErrorCode::IngestNotAllowed,
                    "this tenant accepts no uploads (no --tenant-writer role is configured)",
                )),
            )
        }
        Some(t) => t.clone(),
        None => {
            return refuse(
                body,
                refusal_response(Refusal::new(ErrorCode::Unauthorized, "unknown tenant")),
            )
        }
    };
    let coding = match upload_coding(&headers) {
        Ok(c) => c,
        Err(msg) => {
            return refuse(
                body,
                refusal_response(Refusal::new(ErrorCode::UnsupportedEncoding, msg)),
            )
        }
    };
    let settings = state.ingest.clone();
    // The declared length is of the encoded body: it bounds an identity
    // upload only (a compressed one is counted as it inflates).
    if let (Some(max), None) = (settings.max_body_bytes, coding) {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max) {
            return refuse(body, refusal_response(too_large(max)));
        }
    }

    let ctl = StreamCtl::new(&Pipe::new(state.clock.clone()));
    let stopped = Arc::new(Notify::new());
    {
        let stopped = stopped.clone();
        ctl.set_interrupt(move || stopped.notify_one());
    }
    let (tx, rx) = mpsc::channel::<Feed>(QUEUED_CHUNKS);
    let (done_tx, mut done_rx) = oneshot::channel::<Outcome>();
    {
        let (st, c, s) = (state.clone(), ctl.clone(), settings.clone());
        tokio::task::spawn_blocking(move || {
            let outcome = run_ingest(&st, &caller, &tenant, &s, coding, rx, &c);
            let _ = done_tx.send(outcome);
        });
    }
    // If this future is dropped (the connection went away), `tx` is dropped
    // without an `End`: the writer treats that as a disconnect.
    let mut body = body;
    let mut total: u64 = 0;
    let mut early: Option<Result<Outcome, oneshot::error::RecvError>> = None;
    let mut body_done = false;
    loop {
        let feed = tokio::select! {
            biased;
            r = &mut done_rx => { early = Some(r); break; }
            _ = stopped.notified() => break,
            f = tokio::time::timeout(settings.idle_timeout, body.frame()) => f,
        };
        let msg = match feed {
            Err(_) => Feed::Failed(FeedError::Timeout),
            Ok(None) => Feed::End,
            Ok(Some(Err(_))) => Feed::Failed(FeedError::Disconnect),
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    total += data.len() as u64;
                    match settings.max_body_bytes {
                        Some(max) if total > max && coding.is_none() => {
                            Feed::Failed(FeedError::TooLarge(max))
                        }
                        _ => Feed::Chunk(data),
                    }
                }
                Err(_) => continue, // trailers
            },
        };
        let last = !matches!(msg, Feed::Chunk(_));
        body_done = matches!(msg, Feed::End);
        if tx.send(msg).await.is_err() || last {
            break;
        }
    }
    drop(tx);
    let outcome = match early {
        Some(r) => r,
        None => done_rx.await,
    };
    if !body_done {
        // The answer is ready while the client may still be sending: read and
        // drop (a bounded amount of) the rest so it gets the answer.
        tokio::spawn(drain(body));
    }
    match outcome {
        Ok(Ok(end)) => {
            #[derive(serde::Serialize)]
            struct EndLine<'a> {
                row_count: u64,
                integrity: &'a str,
                lease: &'a str,
            }
            #[derive(serde::Serialize)]
            struct Answer<'a> {
                end: EndLine<'a>,
            }
            let answer = Answer {
                end: EndLine {
                    row_count: end.row_count,
                    integrity: if end.verified { "ok" } else { "unchecked" },
                    lease: &end.lease,
                },
            };
            let mut line = serde_json::to_string(&answer).unwrap_or_default();
            line.push('\n');
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                line,
            )
                .into_response()
        }
        Ok(Err(r)) => refusal_response(r),
        Err(_) => refusal_response(Refusal::new(ErrorCode::InternalError, "the ingest failed")),
    }
}

async fn drain(mut body: Body) {
    let mut seen = 0u64;
    let deadline = tokio::time::Instant::now() + DRAIN_MAX_TIME;
    while seen < DRAIN_MAX_BYTES {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => seen += f.data_ref().map_or(0, |d| d.len() as u64),
            _ => break,
        }
    }
}

fn too_large(max: u64) -> Refusal {
    Refusal::from_body(
        ErrorBody::new(
            ErrorCode::PayloadTooLarge,
            format!("input streams are limited to {max} bytes"),
        )
        .with("limit", max),
    )
}

/// Quotes an identifier for SQL (`"` doubled). Only used on names read back
/// from the database's own schema.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The tenant's real name of `table` (case-insensitive, as SQLite resolves
/// it): an ordinary table of the `main` schema. Internal tables
/// (`sqlite_*`) and the server's `rowstream_config` are not ingest targets.
fn resolve_table(conn: &Connection, table: &str) -> rusqlite::Result<Option<String>> {
    let mut stmt = conn.prepare(
        "SELECT name FROM pragma_table_list WHERE schema = 'main' AND type = 'table' \
         AND name = ?1 COLLATE NOCASE",
    )?;
    let mut rows = stmt.query([table])?;
    let Some(row) = rows.next()? else {
        return Ok(None);
    };
    let name: String = row.get(0)?;
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("sqlite_") || lower == "rowstream_config" {
        return Ok(None);
    }
    Ok(Some(name))
}

/// Insertable columns of `table` (generated and hidden columns excluded), by
/// their declared names.
fn insertable_columns(conn: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT name FROM pragma_table_xinfo(?1, 'main') WHERE hidden = 0")?;
    let cols = stmt
        .query_map([table], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(cols)
}

/// The write plan of one ingest, built from names the schema confirmed.
struct Plan {
    /// `INSERT INTO main."t"("a","b") VALUES (?1,?2)`.
    insert_main: String,
    /// Staged mode: the staging insert and the final copy.
    insert_staging: String,
    create_staging: String,
    copy: String,
    select_staged: String,
}

impl Plan {
    fn new(table: &str, columns: &[String]) -> Plan {
        let n = columns.len();
        let cols = columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(",");
        let placeholders = (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>();
        let staged = (0..n)
            .map(|i| format!("c{i}"))
            .collect::<Vec<_>>()
            .join(",");
        let t = quote_ident(table);
        Plan {
            insert_main: format!(
                "INSERT INTO main.{t}({cols}) VALUES ({})",
                placeholders.join(",")
            ),
            insert_staging: format!(
                "INSERT INTO {STAGING}(line,{staged}) VALUES (?{},{})",
                n + 1,
                placeholders.join(",")
            ),
            create_staging: format!(
                "CREATE TEMP TABLE \"rowstream_ingest\"(line INTEGER PRIMARY KEY,{staged})"
            ),
            copy: format!(
                "INSERT INTO main.{t}({cols}) SELECT {staged} FROM {STAGING} ORDER BY line"
            ),
            select_staged: format!("SELECT line,{staged} FROM {STAGING} ORDER BY line"),
        }
    }
}

/// Records exactly one `stream.closed` per opened ingest lease, also on
/// panic, and keeps the ingest registered for shutdown while it runs.
struct IngestAudit<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    id: u64,
    lease: Option<StreamLease>,
    reason: CloseReason,
    cause: String,
    row_count: u64,
    bytes: u64,
}

impl<'a> IngestAudit<'a> {
    fn new(state: &'a AppState, caller: &'a Caller, ctl: &Arc<StreamCtl>) -> Self {
        let id = state.register_running(ctl);
        IngestAudit {
            state,
            caller,
            id,
            lease: None,
            reason: CloseReason::Error,
            cause: "abandoned".into(),
            row_count: 0,
            bytes: 0,
        }
    }

    fn record(&mut self) {
        lock(&self.state.running).remove(&self.id);
        if let Some(lease) = self.lease.take() {
            self.state.record_lease_closed(
                &lease,
                &self.caller.scope,
                self.reason,
                std::mem::take(&mut self.cause),
                self.row_count,
                self.bytes,
            );
        }
    }
}

impl Drop for IngestAudit<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.reason = CloseReason::Error;
            self.cause = "panic".into();
        }
        self.record();
    }
}

/// The open ingest: its lease and slot.
struct Open {
    lease: String,
    _slot: super::state::Slot,
}

/// Where an ingest's rows go: one tenant database's writer, which keeps
/// them invisible until [`commit`](IngestTarget::commit).
pub(crate) trait IngestTarget {
    /// The tenant's runtime `stream.*` settings.
    fn runtime_config(&mut self) -> BTreeMap<String, String>;
    /// The real name of `table` if it may receive uploads.
    fn table(&mut self, table: &str) -> Result<Option<String>, Refusal>;
    /// Its insertable columns.
    fn columns(&mut self, table: &str) -> Result<Vec<String>, Refusal>;
    /// The tenant's current `snapshot_lsn` (for the audit).
    fn lsn(&mut self) -> Result<u64, Refusal>;
    /// Opens the transaction for rows of `columns` of `table`.
    fn begin(&mut self, table: &str, columns: &[String]) -> Result<(), Refusal>;
    /// Writes (or stages) one row.
    fn row(&mut self, values: &[IngestValue], line_no: u64) -> Result<(), Refusal>;
    /// Makes every row visible at once.
    fn commit(&mut self) -> Result<(), Refusal>;
    /// Drops everything written (nothing was committed).
    fn rollback(&mut self);
}

/// The writing side of one ingest.
struct Writer<'a> {
    state: &'a AppState,
    caller: &'a Caller,
    target: Box<dyn IngestTarget + 'a>,
    cfg: StreamConfig,
    parser: IngestParser,
    open: Option<Open>,
    audit: IngestAudit<'a>,
    done: Option<(u64, bool)>,
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(ErrorCode::InternalError, format!("database failure: {e}"))
}

fn ingest_refusal(e: &IngestError) -> Refusal {
    Refusal::from_body(e.to_body())
}

fn framer_refusal(e: &FramerError) -> Refusal {
    let code = ErrorCode::parse(e.code()).unwrap_or(ErrorCode::BadRequest);
    let mut body = ErrorBody::new(code, e.to_string()).with("line", e.line());
    if let FramerError::LineTooLong { limit, .. } = e {
        body = body.with("limit", *limit as u64);
    }
    Refusal::from_body(body)
}

fn bind_values(stmt: &mut rusqlite::Statement<'_>, values: &[IngestValue]) -> rusqlite::Result<()> {
    for (i, v) in values.iter().enumerate() {
        let at = i + 1;
        match v {
            IngestValue::Null => stmt.raw_bind_parameter(at, rusqlite::types::Null)?,
            IngestValue::Integer(n) => stmt.raw_bind_parameter(at, *n)?,
            IngestValue::Real(f) => stmt.raw_bind_parameter(at, *f)?,
            IngestValue::Text(s) => stmt.raw_bind_parameter(at, s.as_str())?,
        }
    }
    Ok(())
}

/// A failed row write: constraint failures are the row's fault
/// (`invalid_row` naming its line), anything else is the server's.
fn row_write_refusal(e: &rusqlite::Error, line: u64) -> Refusal {
    let constraint = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::ConstraintViolation)
    ) || matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::TypeMismatch)
    );
    if constraint {
        Refusal::from_body(
            ErrorBody::new(
                ErrorCode::InvalidRow,
                format!(
                    "line {line}: the table refused the row: {}",
                    sql_error_text(e)
                ),
            )
            .with("line", line),
        )
    } else {
        internal(sql_error_text(e))
    }
}

impl<'a> Writer<'a> {
    fn on_line(&mut self, line: &str, line_no: u64) -> Result<(), Refusal> {
        match self
            .parser
            .accept(line, line_no)
            .map_err(|e| ingest_refusal(&e))?
        {
            IngestEvent::Open(open) => self.start(open, line, line_no),
            IngestEvent::Row(values) => self.row(&values, line_no),
            IngestEvent::End {
                row_count,
                verified,
            } => {
                self.done = Some((row_count, verified));
                Ok(())
            }
        }
    }

    /// Validates the target against the real schema, takes a slot, opens the
    /// lease and the transaction.
    fn start(&mut self, open: IngestOpen, line: &str, line_no: u64) -> Result<(), Refusal> {
        let Some(table) = self.target.table(&open.table)? else {
            return Err(Refusal::from_body(
                ErrorBody::new(
                    ErrorCode::UnknownTable,
                    format!("no table {:?} to ingest into", open.table),
                )
                .with("line", line_no)
                .with("table", open.table.as_str()),
            ));
        };
        let known = self.target.columns(&table)?;
        let mut columns = Vec::with_capacity(open.columns.len());
        for c in &open.columns {
            let Some(real) = known.iter().find(|k| k.eq_ignore_ascii_case(c)) else {
                return Err(Refusal::from_body(
                    ErrorBody::new(
                        ErrorCode::UnknownColumn,
                        format!("table {table:?} has no insertable column {c:?}"),
                    )
                    .with("line", line_no)
                    .with("column", c.as_str()),
                ));
            };
            if columns.contains(real) {
                return Err(Refusal::from_body(
                    ErrorBody::new(
                        ErrorCode::BadRequest,
                        format!("column {real:?} is named twice"),
                    )
                    .with("line", line_no),
                ));
            }
            columns.push(real.clone());
        }
        let slot = capacity(self.state, self.caller, &self.cfg)?;
        let now = self.state.now_ms();
        let snapshot_lsn = self.target.lsn()?;
        let lease = self
            .state
            .leases
            .open_stream(OpenStream {
                scope: self.caller.scope.clone(),
                snapshot_lsn,
                config: self.cfg.clone(),
                in_transaction: false,
                pinned_at_ms: now,
                now_ms: now,
            })
            .map_err(|e| Refusal::new(ErrorCode::InternalError, e.to_string()))?;
        let handle = lease.handle().to_owned();
        self.state.record(AuditEvent::StreamOpened {
            at_ms: now,
            lease: handle.clone(),
            principal: self.caller.scope.principal.clone(),
            tenant: self.caller.scope.tenant.clone(),
            snapshot_lsn,
            query_hash: sha256_hex(line.as_bytes()),
        });
        self.audit.lease = Some(lease);
        self.target.begin(&table, &columns)?;
        self.open = Some(Open {
            lease: handle,
            _slot: slot,
        });
        Ok(())
    }

    fn row(&mut self, values: &[IngestValue], line_no: u64) -> Result<(), Refusal> {
        if self.open.is_none() {
            return Err(internal("row before open"));
        }
        self.target.row(values, line_no)
    }

    /// The end line verified: make the rows visible, atomically.
    fn commit(&mut self) -> Result<(), Refusal> {
        if self.open.is_none() {
            return Err(internal("end before open"));
        }
        self.target.commit()
    }
}

/// A SQLite tenant's writer: its own read-write connection, staged or
/// direct (see the module docs).
pub(crate) struct SqliteTarget<'a> {
    tenant: &'a Tenant,
    conn: Connection,
    mode: IngestMode,
    plan: Option<Plan>,
}

impl IngestTarget for SqliteTarget<'_> {
    fn runtime_config(&mut self) -> BTreeMap<String, String> {
        read_runtime_config(&self.conn)
    }

    fn table(&mut self, table: &str) -> Result<Option<String>, Refusal> {
        resolve_table(&self.conn, table).map_err(internal)
    }

    fn columns(&mut self, table: &str) -> Result<Vec<String>, Refusal> {
        insertable_columns(&self.conn, table).map_err(internal)
    }

    fn lsn(&mut self) -> Result<u64, Refusal> {
        self.tenant
            .data_version()
            .map(|dv| self.tenant.lsn_for(dv))
            .map_err(internal)
    }

    fn begin(&mut self, table: &str, columns: &[String]) -> Result<(), Refusal> {
        let plan = Plan::new(table, columns);
        match self.mode {
            IngestMode::Direct => {
                self.conn
                    .prepare_cached(&plan.insert_main)
                    .map_err(internal)?;
                self.conn
                    .execute_batch("BEGIN IMMEDIATE")
                    .map_err(|e| internal(sql_error_text(&e)))?;
            }
            IngestMode::Staged => {
                self.conn
                    .execute_batch(&plan.create_staging)
                    .map_err(internal)?;
                // Prepared before BEGIN: the transaction then only touches
                // the temp schema, never takes a read snapshot of main.
                self.conn
                    .prepare_cached(&plan.insert_staging)
                    .map_err(internal)?;
                self.conn.execute_batch("BEGIN").map_err(internal)?;
            }
        }
        self.plan = Some(plan);
        Ok(())
    }

    fn row(&mut self, values: &[IngestValue], line_no: u64) -> Result<(), Refusal> {
        let Some(plan) = &self.plan else {
            return Err(internal("row before open"));
        };
        let sql = match self.mode {
            IngestMode::Direct => &plan.insert_main,
            IngestMode::Staged => &plan.insert_staging,
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(internal)?;
        bind_values(&mut stmt, values).map_err(internal)?;
        if self.mode == IngestMode::Staged {
            stmt.raw_bind_parameter(values.len() + 1, line_no as i64)
                .map_err(internal)?;
        }
        stmt.raw_execute()
            .map_err(|e| row_write_refusal(&e, line_no))?;
        Ok(())
    }

    fn commit(&mut self) -> Result<(), Refusal> {
        let Some(plan) = &self.plan else {
            return Err(internal("end before open"));
        };
        match self.mode {
            IngestMode::Direct => self.conn.execute_batch("COMMIT").map_err(internal),
            IngestMode::Staged => {
                self.conn.execute_batch("COMMIT").map_err(internal)?;
                self.conn
                    .execute_batch("BEGIN IMMEDIATE")
                    .map_err(|e| internal(sql_error_text(&e)))?;
                if let Err(e) = self.conn.execute(&plan.copy, []) {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    return Err(self.locate_failure(&e));
                }
                self.conn.execute_batch("COMMIT").map_err(internal)
            }
        }
    }

    fn rollback(&mut self) {
        if !self.conn.is_autocommit() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
    }
}

impl SqliteTarget<'_> {
    /// The copy of the staged rows failed: replay them one by one (in a
    /// transaction that is rolled back) to name the line the table refused.
    fn locate_failure(&self, copy_error: &rusqlite::Error) -> Refusal {
        let fallback = row_write_refusal(copy_error, 0);
        let Some(plan) = &self.plan else {
            return fallback;
        };
        let found = (|| -> rusqlite::Result<Option<Refusal>> {
            self.conn.execute_batch("BEGIN IMMEDIATE")?;
            let mut select = self.conn.prepare(&plan.select_staged)?;
            let mut insert = self.conn.prepare(&plan.insert_main)?;
            let n = insert.parameter_count();
            let mut rows = select.query([])?;
            while let Some(row) = rows.next()? {
                let line: i64 = row.get(0)?;
                for i in 0..n {
                    match row.get_ref(i + 1)? {
                        ValueRef::Null => {
                            insert.raw_bind_parameter(i + 1, rusqlite::types::Null)?
                        }
                        ValueRef::Integer(v) => insert.raw_bind_parameter(i + 1, v)?,
                        ValueRef::Real(v) => insert.raw_bind_parameter(i + 1, v)?,
                        ValueRef::Text(t) => {
                            insert.raw_bind_parameter(i + 1, String::from_utf8_lossy(t).as_ref())?
                        }
                        ValueRef::Blob(b) => insert.raw_bind_parameter(i + 1, b)?,
                    }
                }
                if let Err(e) = insert.raw_execute() {
                    return Ok(Some(row_write_refusal(&e, line as u64)));
                }
            }
            Ok(None)
        })();
        let _ = self.conn.execute_batch("ROLLBACK");
        match found {
            Ok(Some(r)) => r,
            _ => fallback,
        }
    }
}

fn open_writer(tenant: &Tenant) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        &tenant.path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(10))?;
    // Staging must spill to a (private, unlinked) file, never grow in memory.
    conn.pragma_update(None, "temp_store", "FILE")?;
    conn.set_prepared_statement_cache_capacity(8);
    if let Some(init) = &tenant.init {
        init(&conn)?;
    }
    Ok(conn)
}

/// The blocking side of one ingest: frames, parses, writes; decides the
/// outcome and records the audit before the answer is sent.
/// The writer of `tenant`'s uploads.
fn target<'a>(
    tenant: &'a TenantDb,
    settings: &IngestSettings,
) -> Result<Box<dyn IngestTarget + 'a>, Refusal> {
    match tenant {
        TenantDb::Sqlite(t) => Ok(Box::new(SqliteTarget {
            tenant: t,
            conn: open_writer(t).map_err(internal)?,
            mode: settings.mode,
            plan: None,
        })),
        TenantDb::Postgres(t) => Ok(Box::new(
            super::backend::postgres::ingest::PgTarget::connect(t)?,
        )),
    }
}

fn run_ingest(
    state: &AppState,
    caller: &Caller,
    tenant: &TenantDb,
    settings: &IngestSettings,
    coding: Option<UploadCoding>,
    mut rx: mpsc::Receiver<Feed>,
    ctl: &Arc<StreamCtl>,
) -> Outcome {
    let audit = IngestAudit::new(state, caller, ctl);
    let mut target = target(tenant, settings)?;
    let runtime = target.runtime_config();
    let cfg = StreamConfig::load_over(&runtime, &state.boot);
    let mut w = Writer {
        state,
        caller,
        target,
        parser: IngestParser::new(cfg.integrity_default_verify),
        cfg,
        open: None,
        audit,
        done: None,
    };
    let mut framer = NdjsonFramer::with_max_line_bytes(settings.max_line_bytes);
    let mut failure: Option<(Refusal, CloseReason, String)> = None;
    let failed = std::cell::Cell::new(None);
    let mut source = match coding {
        None => Source::Plain(&mut rx),
        Some(coding) => {
            let reader = FeedReader {
                rx: &mut rx,
                current: Bytes::new(),
                failed: &failed,
            };
            // Both decoders read every member / frame of a concatenated body.
            let decoder: Box<dyn std::io::Read + '_> = match coding {
                UploadCoding::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
                UploadCoding::Zstd => match zstd::stream::read::Decoder::new(reader) {
                    Ok(d) => Box::new(d),
                    Err(e) => Box::new(FailingRead(e)),
                },
            };
            Source::Inflate(Inflate {
                decoder,
                failed: &failed,
                coding,
                buf: vec![0; DECODED_PIECE],
                decoded: 0,
            })
        }
    };
    let fail_with = |r: Refusal| {
        let reason = if r.code == ErrorCode::IntegrityFailed {
            CloseReason::IntegrityFailed
        } else {
            CloseReason::Error
        };
        let cause = r.code.as_str().to_owned();
        (r, reason, cause)
    };
    loop {
        if let Some(c) = ctl.cause() {
            failure = Some(stopped(c));
            break;
        }
        // Identity bodies go straight from the channel to the framer;
        // compressed ones through their decoder, on this thread.
        let piece = source.next(settings.max_body_bytes);
        if let Some(c) = ctl.cause() {
            failure = Some(stopped(c));
            break;
        }
        let mut err: Option<Refusal> = None;
        match piece {
            Piece::Data(bytes) => {
                let r = framer.push_numbered(&bytes, |line, no| {
                    if err.is_none() {
                        err = w.on_line(line, no).err();
                    }
                });
                if let (Err(e), None) = (r, &err) {
                    err = Some(framer_refusal(&e));
                }
            }
            Piece::End => {
                let r = framer.finish_numbered(|line, no| {
                    if err.is_none() {
                        err = w.on_line(line, no).err();
                    }
                });
                if let (Err(e), None) = (r, &err) {
                    err = Some(framer_refusal(&e));
                }
                if err.is_none() {
                    err = w.parser.finish().err().map(|e| ingest_refusal(&e));
                }
                if err.is_none() {
                    err = w.commit().err();
                }
                if err.is_none() {
                    break;
                }
            }
            Piece::Corrupt(msg) => err = Some(Refusal::new(ErrorCode::BadRequest, msg)),
            Piece::Failed(FeedError::TooLarge(max)) => err = Some(too_large(max)),
            Piece::Failed(FeedError::Timeout) => {
                err = Some(Refusal::new(
                    ErrorCode::RequestTimeout,
                    format!(
                        "no part of the body arrived for {} ms",
                        settings.idle_timeout.as_millis()
                    ),
                ))
            }
            Piece::Failed(FeedError::Disconnect) => {
                failure = Some(stopped(StopCause::Disconnect));
                break;
            }
        }
        if let Some(r) = err {
            failure = Some(fail_with(r));
            break;
        }
    }
    w.audit.bytes = framer.bytes_in();
    w.audit.row_count = w.parser.rows();
    match failure {
        None => {
            let (row_count, verified) = w.done.unwrap_or((w.parser.rows(), false));
            let lease = w.open.as_ref().map(|o| o.lease.clone()).unwrap_or_default();
            w.audit.reason = CloseReason::Ok;
            w.audit.cause = "end".into();
            w.audit.row_count = row_count;
            drop(w.open.take());
            w.audit.record();
            Ok(IngestEnd {
                row_count,
                verified,
                lease,
            })
        }
        Some((refusal, reason, cause)) => {
            // Nothing was committed: roll back whatever is open (a dropped
            // connection would too; this makes it explicit and immediate).
            w.target.rollback();
            w.audit.reason = reason;
            w.audit.cause = cause;
            drop(w.open.take());
            w.audit.record();
            Err(refusal)
        }
    }
}

fn stopped(c: StopCause) -> (Refusal, CloseReason, String) {
    let r = match c {
        StopCause::Shutdown => Refusal::new(ErrorCode::ShuttingDown, "the server is shutting down"),
        _ => Refusal::new(
            ErrorCode::BadRequest,
            "the upload was interrupted before its end line",
        ),
    };
    (r, c.reason(), c.cause().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_quotes_identifiers_from_the_schema() {
        let p = Plan::new("we\"ird", &["a b".into(), "c\"d".into()]);
        assert_eq!(
            p.insert_main,
            "INSERT INTO main.\"we\"\"ird\"(\"a b\",\"c\"\"d\") VALUES (?1,?2)"
        );
        assert_eq!(
            p.copy,
            "INSERT INTO main.\"we\"\"ird\"(\"a b\",\"c\"\"d\") SELECT c0,c1 FROM temp.\"rowstream_ingest\" ORDER BY line"
        );
        assert_eq!(
            p.insert_staging,
            "INSERT INTO temp.\"rowstream_ingest\"(line,c0,c1) VALUES (?3,?1,?2)"
        );
    }

    #[test]
    fn identifiers_resolve_against_the_real_schema() {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE \"My Table\"(id INTEGER PRIMARY KEY, Name TEXT, g AS (id * 2));
             CREATE VIEW v AS SELECT 1 AS x;
             CREATE TABLE rowstream_config(key TEXT PRIMARY KEY, value);",
        )
        .unwrap();
        assert_eq!(
            resolve_table(&c, "my table").unwrap().as_deref(),
            Some("My Table")
        );
        assert_eq!(
            resolve_table(&c, "v").unwrap(),
            None,
            "views are not targets"
        );
        assert_eq!(resolve_table(&c, "rowstream_config").unwrap(), None);
        assert_eq!(resolve_table(&c, "sqlite_schema").unwrap(), None);
        assert_eq!(resolve_table(&c, "t; DROP TABLE x").unwrap(), None);
        assert_eq!(
            insertable_columns(&c, "My Table").unwrap(),
            vec!["id".to_string(), "Name".to_string()],
            "generated columns cannot be inserted"
        );
    }
}
