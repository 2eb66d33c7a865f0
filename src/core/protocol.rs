//! The wire contract of PROTOCOL.md: error codes, control frames, the server's
//! [`StreamEncoder`] and the client's [`StreamVerifier`].

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::clock::Clock;
use super::close::CloseReason;
use super::digest::{hex_digests_equal, is_hex_of_len, strip_newline, PrefixHasher};
use super::framer::memchr;
use super::producer::{ChunkProducer, ChunkSink, ProducerTotals};

/// Protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// Media type of streamed bodies.
pub const NDJSON_CONTENT_TYPE: &str = "application/x-ndjson";

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = ($code:literal, $status:literal),)*) => {
        /// Every error code the server sends, with its HTTP status. The code
        /// strings live here and nowhere else.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The snake_case wire code.
            pub fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// The HTTP status of a refusal with this code.
            pub fn http_status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// Parses a wire code.
            pub fn parse(s: &str) -> Option<ErrorCode> {
                match s { $($code => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    /// The body is not the JSON the route expects.
    BadRequest = ("bad_request", 400),
    /// The SQL does not parse or prepare.
    QueryError = ("query_error", 400),
    /// Anything but a read-only query on the read path.
    StreamUnsupportedStatement = ("stream_unsupported_statement", 400),
    /// Streaming inside an open transaction.
    StreamInTransactionUnsupported = ("stream_in_transaction_unsupported", 409),
    /// Global stream cap reached.
    ServerStreamCapacityExhausted = ("server_stream_capacity_exhausted", 429),
    /// The caller's stream cap reached.
    PrincipalStreamQuotaExhausted = ("principal_stream_quota_exhausted", 429),
    /// Unknown or foreign cursor.
    CursorNotFound = ("cursor_not_found", 404),
    /// Cursor cancelled by its owner.
    CursorCancelled = ("cursor_cancelled", 409),
    /// Cursor past its TTL.
    CursorExpired = ("cursor_expired", 410),
    /// The resume digest does not match the pinned snapshot.
    PrefixHashMismatch = ("prefix_hash_mismatch", 409),
    /// (1.1) The cursor is live but its pinned snapshot is gone (the server
    /// instance holding it stopped, or it lives in another instance's
    /// process): the query must be started again.
    SnapshotUnavailable = ("snapshot_unavailable", 410),
    /// The tenant accepts no uploads (no writer role configured).
    IngestNotAllowed = ("ingest_not_allowed", 403),
    /// (1.1) An upload's `Content-Encoding` is not `gzip`, `zstd` or identity.
    UnsupportedEncoding = ("unsupported_encoding", 415),
    /// Missing or invalid bearer token.
    Unauthorized = ("unauthorized", 401),
    /// Request body over the limit.
    PayloadTooLarge = ("payload_too_large", 413),
    /// The request body arrived too slowly.
    RequestTimeout = ("request_timeout", 408),
    /// No such route.
    NotFound = ("not_found", 404),
    /// Wrong method for the route.
    MethodNotAllowed = ("method_not_allowed", 405),
    /// The query hit a configured resource limit (memory, time, row size).
    ResourceLimitExceeded = ("resource_limit_exceeded", 400),
    /// An ingest row is malformed.
    InvalidRow = ("invalid_row", 400),
    /// An ingest names a column the table lacks.
    UnknownColumn = ("unknown_column", 400),
    /// An ingest names a table the tenant lacks.
    UnknownTable = ("unknown_table", 400),
    /// `verify: sha256` without `end.sha256`.
    IntegrityMissingDigest = ("integrity_missing_digest", 400),
    /// The ingest digest does not match.
    IntegrityFailed = ("integrity_failed", 400),
    /// A line exceeds the line-length limit.
    LineTooLong = ("line_too_long", 413),
    /// A line is not UTF-8.
    InvalidUtf8 = ("invalid_utf8", 400),
    /// The server failed; nothing the client did.
    InternalError = ("internal_error", 500),
    /// The server is shutting down.
    ShuttingDown = ("shutting_down", 503),
    /// A database the server needs does not answer (`GET /readyz`).
    NotReady = ("not_ready", 503),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body of every refusal, `{"error":{"code":..,"message":..,...}}`, and
/// of an in-band error line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// snake_case code.
    pub code: String,
    /// Human text.
    pub message: String,
    /// Extra fields (`limit`, `current`, `line`, `expected`, ...).
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl ErrorBody {
    /// A body with no extra fields.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code.as_str().to_owned(),
            message: message.into(),
            extra: Default::default(),
        }
    }

    /// Adds an extra field.
    pub fn with(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// `{"error":{...}}` as a string.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&ErrorEnvelope {
            error: self.clone(),
        })
        .unwrap_or_default()
    }
}

#[derive(Serialize, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

/// A result column: name and declared type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    /// Column name as the query reports it.
    pub name: String,
    /// Declared type (`INTEGER`, `TEXT`, ... or empty for expressions).
    #[serde(rename = "type")]
    pub decl_type: String,
}

/// The first line of every stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenFrame {
    /// 32-hex lease handle of this response.
    pub lease: String,
    /// Pinned snapshot.
    pub snapshot_lsn: u64,
    /// Whether a cursor was issued.
    pub resumable: bool,
    /// Why not resumable (a stable code), when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// 48-hex cursor, or null.
    pub cursor: Option<String>,
    /// When the snapshot and cursor expire (ms since epoch).
    pub expires_at_ms: u64,
    /// Result columns.
    pub columns: Vec<Column>,
    /// Rows skipped by a resume (0 on a fresh stream).
    pub after_rows: u64,
    /// (1.1) `total_rows` and `total_rows_exact`, when the request asked for
    /// a count (absent otherwise).
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub total: Option<RowTotal>,
}

/// (1.1) The size of a result, as an open line reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowTotal {
    /// Rows of the whole result from row 0; `None` (JSON `null`) when the
    /// server cannot tell.
    pub total_rows: Option<u64>,
    /// True for a count made in the stream's snapshot; false for an estimate.
    pub total_rows_exact: bool,
}

/// (1.1) What a fresh request asks about the result's size (`count`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CountMode {
    /// No total (the default).
    #[default]
    None,
    /// The planner's estimate.
    Estimated,
    /// Counted in the stream's own snapshot before the first row.
    Exact,
}

/// (1.1) A `{"progress":{…}}` line: never hashed, never counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgressFrame {
    /// Rows from row 0 of the result (a resume's skipped rows included).
    pub rows: u64,
    /// This response's body bytes so far, before compression.
    pub bytes: u64,
    /// Since the request arrived.
    pub elapsed_ms: u64,
}

/// The last line of every complete stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndFrame {
    /// Why it ended.
    pub reason: CloseReason,
    /// Rows from row 0, including rows a resume skipped.
    pub row_count: u64,
    /// Digest of rows `0..row_count`.
    pub prefix_hash: String,
    /// Lease of this response.
    pub lease: String,
    /// Bytes of this response's body before the `end` line.
    pub bytes: u64,
}

/// One control line as sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlLine {
    /// `{"open":{...}}`
    Open(OpenFrame),
    /// `{"error":{...}}`
    Error(ErrorBody),
    /// `{"end":{...}}`
    End(EndFrame),
    /// (1.1) `{"progress":{...}}`
    Progress(ProgressFrame),
    /// (1.1) `{"heartbeat":{}}`
    Heartbeat(Heartbeat),
}

/// The empty body of a heartbeat line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Heartbeat {}

impl ControlLine {
    /// The line's JSON, without newline.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Prefix every row line starts with, as the server writes it.
pub const ROW_PREFIX: &[u8] = b"{\"row\":";

/// The server side of one response: frames rows, hashes them and feeds the
/// chunk producer. Rows are written straight into one reused line buffer.
pub struct StreamEncoder<C: Clock> {
    producer: ChunkProducer<C>,
    hasher: PrefixHasher,
    row_count: u64,
    line: Vec<u8>,
    lease: String,
    errored: bool,
}

impl<C: Clock> StreamEncoder<C> {
    /// An encoder for a fresh stream (`hasher` empty, `row_count` 0) or a
    /// resume (`hasher` holding the digest of the first `row_count` rows).
    pub fn new(
        producer: ChunkProducer<C>,
        hasher: PrefixHasher,
        row_count: u64,
        lease: impl Into<String>,
    ) -> Self {
        Self {
            producer,
            hasher,
            row_count,
            line: Vec::with_capacity(256),
            lease: lease.into(),
            errored: false,
        }
    }

    /// Writes the `open` line.
    pub fn open<S: ChunkSink>(&mut self, open: &OpenFrame, sink: &mut S) -> Result<(), S::Error> {
        let line = ControlLine::Open(open.clone()).to_json();
        self.producer.push_control(line.as_bytes(), sink)
    }

    /// Writes one row; `write_value` appends the row's JSON value (an object
    /// or array) to the buffer it is given.
    pub fn row_with<S, F>(&mut self, write_value: F, sink: &mut S) -> Result<(), S::Error>
    where
        S: ChunkSink,
        F: FnOnce(&mut Vec<u8>),
    {
        self.line.clear();
        self.line.extend_from_slice(ROW_PREFIX);
        write_value(&mut self.line);
        self.line.push(b'}');
        self.hasher.update_line(&self.line);
        self.row_count += 1;
        self.producer.push_row(&self.line, sink)
    }

    /// Writes one complete row line (`{"row":…}`, without its newline) that
    /// was built elsewhere, e.g. on another thread, as part of a batch: hashes
    /// it and feeds the producer like [`StreamEncoder::row_with`], without the
    /// copy and without the latency check, which the caller makes once after
    /// the batch ([`ChunkProducer::flush_if_due`] on
    /// [`StreamEncoder::producer`]).
    pub fn batch_row_line<S: ChunkSink>(
        &mut self,
        line: &[u8],
        sink: &mut S,
    ) -> Result<(), S::Error> {
        debug_assert!(line.starts_with(ROW_PREFIX) && line.ends_with(b"}"));
        self.hasher.update_line(line);
        self.row_count += 1;
        self.producer.push_row_in_batch(line, sink)
    }

    /// Like [`StreamEncoder::batch_row_line`] for each of the complete row
    /// lines at the start of `block` (`{"row":…}\n` lines), taken as one
    /// run up to where the chunk being built fills: hashes and counts each
    /// line, calls `on_row` after each (it sees the hasher and row count
    /// after that row; the lines reach the producer at the end of the run),
    /// then copies the run into the producer at once. Flushes at most twice
    /// (the rows buffered before, then the full chunk), so a caller that
    /// waits for room in its chunk queue between calls keeps it bounded.
    /// Returns the bytes taken: whole lines, 0 when `block` holds none.
    /// The chunks, digest and counts are the same as line by line.
    pub fn batch_row_lines<S: ChunkSink>(
        &mut self,
        block: &[u8],
        sink: &mut S,
        mut on_row: impl FnMut(&Self),
    ) -> Result<usize, S::Error> {
        let Some(first) = memchr(b'\n', block) else {
            return Ok(0);
        };
        self.producer.make_room_for(first, sink)?;
        let limits = self.producer.limits();
        let base = self.producer.buffered_bytes();
        let rows_room = limits
            .max_rows
            .saturating_sub(self.producer.buffered_rows())
            .max(1);
        let mut taken = 0;
        let mut rows = 0u32;
        let mut next = Some(first);
        while let Some(i) = next {
            let end = taken + i;
            if rows > 0 && base + end + 1 > limits.buffer_bytes {
                break;
            }
            let line = &block[taken..end];
            debug_assert!(line.starts_with(ROW_PREFIX) && line.ends_with(b"}"));
            self.hasher.update_line(line);
            self.row_count += 1;
            rows += 1;
            taken = end + 1;
            on_row(self);
            if rows >= rows_room || base + taken >= limits.buffer_bytes {
                break;
            }
            next = memchr(b'\n', &block[taken..]);
        }
        self.producer
            .push_rows_in_batch(&block[..taken], rows, sink)?;
        Ok(taken)
    }

    /// Writes one row from raw JSON bytes of its value.
    pub fn row_raw<S: ChunkSink>(
        &mut self,
        value_json: &[u8],
        sink: &mut S,
    ) -> Result<(), S::Error> {
        self.row_with(|b| b.extend_from_slice(value_json), sink)
    }

    /// (1.1) Writes a progress or heartbeat line and flushes it with whatever
    /// rows are buffered: not hashed, not counted as a row, counted in the
    /// body's bytes.
    pub fn control<S: ChunkSink>(
        &mut self,
        line: &ControlLine,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        self.producer
            .push_control(line.to_json().as_bytes(), sink)?;
        self.producer.flush(sink)
    }

    /// Bytes of the body so far, buffered ones included.
    pub fn body_bytes(&self) -> u64 {
        self.producer.totals().bytes + self.producer.buffered_bytes() as u64
    }

    /// Writes the in-band error line (at most one per stream; later calls are ignored).
    pub fn error<S: ChunkSink>(&mut self, body: &ErrorBody, sink: &mut S) -> Result<(), S::Error> {
        if self.errored {
            return Ok(());
        }
        self.errored = true;
        let line = ControlLine::Error(body.clone()).to_json();
        self.producer.push_control(line.as_bytes(), sink)
    }

    /// Writes the `end` line and the terminal flush. Returns the frame sent.
    pub fn end<S: ChunkSink>(
        &mut self,
        reason: CloseReason,
        sink: &mut S,
    ) -> Result<EndFrame, S::Error> {
        let end = EndFrame {
            reason,
            row_count: self.row_count,
            prefix_hash: self.hasher.hex_digest(),
            lease: self.lease.clone(),
            bytes: self.body_bytes(),
        };
        let line = ControlLine::End(end.clone()).to_json();
        self.producer.push_control(line.as_bytes(), sink)?;
        self.producer.finish(sink)?;
        Ok(end)
    }

    /// Rows from row 0.
    pub fn row_count(&self) -> u64 {
        self.row_count
    }

    /// The running digest.
    pub fn hasher(&self) -> &PrefixHasher {
        &self.hasher
    }

    /// The producer (deadline queries, latency flushes).
    pub fn producer(&mut self) -> &mut ChunkProducer<C> {
        &mut self.producer
    }

    /// Producer totals.
    pub fn totals(&self) -> ProducerTotals {
        self.producer.totals()
    }
}

/// How a client stream went wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClientError {
    /// The rows received do not hash to the server's `end.prefix_hash`, or the
    /// counts differ.
    #[error("digest mismatch: {0}")]
    DigestMismatch(String),
    /// The body broke the protocol (no `open` first, rows after `end`, ...).
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A line is not JSON.
    #[error("malformed line {line}: {message}")]
    MalformedLine {
        /// Line number in this response (1-based).
        line: u64,
        /// What is wrong.
        message: String,
    },
}

impl ClientError {
    /// Stable code for JS `RowstreamError.code`.
    pub fn code(&self) -> &'static str {
        match self {
            ClientError::DigestMismatch(_) => "digest_mismatch",
            ClientError::Protocol(_) => "protocol_error",
            ClientError::MalformedLine { .. } => "malformed_line",
        }
    }
}

/// What one line was.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// The `open` line.
    Open(OpenFrame),
    /// A row line (the caller parses it; it is hashed already, or with
    /// external hashing part of [`StreamVerifier::hash_input`]).
    Row,
    /// The in-band error line.
    Error(ErrorBody),
    /// The `end` line, verified (with external hashing: its row count is;
    /// its digest is checked by [`StreamVerifier::input_hashed`]).
    End(EndFrame),
    /// A control line this client does not know (ignored, as the protocol says).
    Ignored,
}

/// Row lines are hashed in batches of about this many bytes: SHA-256 fed
/// one ~170-byte line at a time is markedly slower (about 1.5× in wasm) than
/// fed the same bytes in one piece.
const HASH_BATCH_BYTES: usize = 64 * 1024;

/// Client-side state across one logical stream and all its resumes: hashes
/// row lines, checks `open`/`end`, and knows what to resume from.
///
/// With [`StreamVerifier::with_external_hashing`] the caller does the
/// SHA-256 (e.g. with a platform's native implementation): the verifier
/// frames, counts and checks exactly as otherwise, collects the digest's
/// input bytes for the caller ([`StreamVerifier::hash_input`]) and takes the
/// caller's running digest back ([`StreamVerifier::input_hashed`]), which is
/// where the `end` line's digest is checked.
#[derive(Debug, Clone, Default)]
pub struct StreamVerifier {
    hasher: PrefixHasher,
    /// Row lines not yet fed to `hasher` (external hashing: not yet handed
    /// to the caller), concatenated: the exact input of the digest (§2.1).
    /// Lines ending with `}` are appended whole, so hashing the batch as one
    /// line strips no newline from the last one.
    pending: Vec<u8>,
    /// `Some` with external hashing: what the caller reported.
    external: Option<ExternalDigest>,
    rows: u64,
    open: Option<OpenFrame>,
    cursor: Option<String>,
    end: Option<EndFrame>,
    lines_in_response: u64,
    resumes: u32,
}

/// The caller's side of external hashing.
#[derive(Debug, Clone, Default)]
struct ExternalDigest {
    /// The last running digest the caller reported (`None`: none yet).
    digest: Option<String>,
    /// The `end` line met, waiting for the digest of the rows before it.
    unconfirmed_end: Option<EndFrame>,
}

/// Checks the server's `end.prefix_hash` against the digest of the rows received.
fn check_end_digest(end: &EndFrame, received_hex: &str) -> Result<(), ClientError> {
    if !is_hex_of_len(&end.prefix_hash, 64) || !hex_digests_equal(&end.prefix_hash, received_hex) {
        return Err(ClientError::DigestMismatch(format!(
            "server digest {} differs from received {}",
            end.prefix_hash, received_hex
        )));
    }
    Ok(())
}

/// Body of a resume request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRequest {
    /// The cursor.
    pub cursor: String,
    /// Rows held.
    pub after_rows: u64,
    /// Their digest.
    pub prefix_hash: String,
}

impl StreamVerifier {
    /// A verifier holding no rows.
    pub fn new() -> Self {
        Self::default()
    }

    /// A verifier holding no rows that leaves the hashing to its caller:
    /// after each batch of lines the caller feeds [`StreamVerifier::hash_input`]
    /// to its own incremental SHA-256 and reports the running digest with
    /// [`StreamVerifier::input_hashed`]. Everything else (row counts, the
    /// `open`/`end` checks, resume requests) is as with [`StreamVerifier::new`].
    pub fn with_external_hashing() -> Self {
        Self {
            external: Some(ExternalDigest::default()),
            ..Self::default()
        }
    }

    /// True when the caller does the hashing.
    pub fn hashes_externally(&self) -> bool {
        self.external.is_some()
    }

    /// External hashing: the digest input of the row lines accepted since the
    /// last [`StreamVerifier::input_hashed`], concatenated in order, exactly
    /// the bytes [`PrefixHasher::update_line`] would hash for each. Empty when
    /// the verifier hashes itself.
    pub fn hash_input(&self) -> &[u8] {
        if self.external.is_some() {
            &self.pending
        } else {
            &[]
        }
    }

    /// External hashing: the caller has fed [`StreamVerifier::hash_input`] to
    /// its SHA-256, whose running digest (of every row from row 0) is
    /// `digest_hex`. Clears the input; when an `end` line was met, checks its
    /// digest now (`DigestMismatch`, as [`StreamVerifier::accept`] does
    /// otherwise) and only then is the stream complete.
    pub fn input_hashed(&mut self, digest_hex: &str) -> Result<(), ClientError> {
        let Some(ext) = self.external.as_mut() else {
            return Err(ClientError::Protocol(
                "this verifier hashes the rows itself".into(),
            ));
        };
        if !is_hex_of_len(digest_hex, 64) {
            return Err(ClientError::Protocol(format!(
                "the reported digest {digest_hex:?} is not 64 hex characters"
            )));
        }
        self.pending.clear();
        ext.digest = Some(digest_hex.to_ascii_lowercase());
        if let Some(end) = ext.unconfirmed_end.take() {
            check_end_digest(&end, digest_hex)?;
            self.end = Some(end);
        }
        Ok(())
    }

    /// Takes one line of a response (as framed, without newline).
    pub fn accept(&mut self, line: &str) -> Result<StreamEvent, ClientError> {
        self.lines_in_response += 1;
        let n = self.lines_in_response;
        if self.end.is_some() || self.end_awaits_digest() {
            return Err(ClientError::Protocol(format!("line {n} arrived after end")));
        }
        let bytes = line.as_bytes();
        if bytes.starts_with(ROW_PREFIX) && bytes.ends_with(b"}") {
            return self.row(line, n);
        }
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| ClientError::MalformedLine {
                line: n,
                message: e.to_string(),
            })?;
        let Some(obj) = value.as_object().filter(|o| o.len() == 1) else {
            return Err(ClientError::MalformedLine {
                line: n,
                message: "not a single-key object".into(),
            });
        };
        let (key, inner) = obj.iter().next().expect("one key");
        match key.as_str() {
            "row" => self.row(line, n),
            "open" => {
                let open: OpenFrame = serde_json::from_value(inner.clone()).map_err(|e| {
                    ClientError::MalformedLine {
                        line: n,
                        message: format!("bad open: {e}"),
                    }
                })?;
                if self.open.is_some() {
                    return Err(ClientError::Protocol(
                        "second open line in one response".into(),
                    ));
                }
                if open.after_rows != self.rows {
                    return Err(ClientError::Protocol(format!(
                        "open.after_rows is {} but {} rows are held",
                        open.after_rows, self.rows
                    )));
                }
                if let Some(c) = &open.cursor {
                    self.cursor = Some(c.clone());
                }
                self.open = Some(open.clone());
                Ok(StreamEvent::Open(open))
            }
            "error" => {
                self.require_open(n)?;
                let body: ErrorBody = serde_json::from_value(inner.clone()).map_err(|e| {
                    ClientError::MalformedLine {
                        line: n,
                        message: format!("bad error: {e}"),
                    }
                })?;
                Ok(StreamEvent::Error(body))
            }
            "end" => {
                self.require_open(n)?;
                let end: EndFrame = serde_json::from_value(inner.clone()).map_err(|e| {
                    ClientError::MalformedLine {
                        line: n,
                        message: format!("bad end: {e}"),
                    }
                })?;
                if end.row_count != self.rows {
                    return Err(ClientError::DigestMismatch(format!(
                        "server counted {} rows, {} were received",
                        end.row_count, self.rows
                    )));
                }
                if let Some(ext) = self.external.as_mut() {
                    // The caller's digest of these rows comes with `input_hashed`.
                    ext.unconfirmed_end = Some(end.clone());
                    return Ok(StreamEvent::End(end));
                }
                self.hash_pending();
                check_end_digest(&end, &self.hasher.hex_digest())?;
                self.end = Some(end.clone());
                Ok(StreamEvent::End(end))
            }
            _ => {
                self.require_open(n)?;
                Ok(StreamEvent::Ignored)
            }
        }
    }

    /// External hashing: an `end` line was met, its digest not checked yet.
    fn end_awaits_digest(&self) -> bool {
        self.external
            .as_ref()
            .is_some_and(|e| e.unconfirmed_end.is_some())
    }

    fn require_open(&self, n: u64) -> Result<(), ClientError> {
        if self.open.is_none() {
            return Err(ClientError::Protocol(format!(
                "line {n} came before the open line"
            )));
        }
        Ok(())
    }

    fn row(&mut self, line: &str, n: u64) -> Result<StreamEvent, ClientError> {
        self.require_open(n)?;
        let bytes = line.as_bytes();
        if self.external.is_some() {
            // The bytes `PrefixHasher::update_line` would hash.
            self.pending.extend_from_slice(strip_newline(bytes));
        } else if bytes.ends_with(b"}") {
            self.pending.extend_from_slice(bytes);
            if self.pending.len() >= HASH_BATCH_BYTES {
                self.hash_pending();
            }
        } else {
            // A line that could end in a newline the hasher strips: alone.
            self.hash_pending();
            self.hasher.update_line(bytes);
        }
        self.rows += 1;
        Ok(StreamEvent::Row)
    }

    /// Hashes the row lines buffered so far now (they are hashed in
    /// batches), so that [`StreamVerifier::prefix_hash`] costs one
    /// finalisation. A caller reading the digest after every network chunk
    /// calls this at the end of each chunk. (Nothing to do with external
    /// hashing.)
    pub fn hash_pending(&mut self) {
        if self.external.is_none() && !self.pending.is_empty() {
            self.hasher.update_line(&self.pending);
            self.pending.clear();
        }
    }

    /// Prepares for the next response of the same stream (a resume): rows and
    /// digest are kept, the open line is expected again. Returns the request
    /// body, or `None` when the stream has no cursor (not resumable). With
    /// external hashing, call it once the last input was reported hashed
    /// (the request carries that digest); `None` until then.
    pub fn begin_resume(&mut self) -> Option<ResumeRequest> {
        let cursor = self.cursor.clone()?;
        if self.end.is_some() || self.end_awaits_digest() {
            return None;
        }
        if self.external.is_some() && !self.pending.is_empty() {
            return None;
        }
        self.hash_pending();
        let prefix_hash = self.prefix_hash();
        self.open = None;
        self.lines_in_response = 0;
        self.resumes += 1;
        Some(ResumeRequest {
            cursor,
            after_rows: self.rows,
            prefix_hash,
        })
    }

    /// Rows received and verified-so-far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Running digest. With external hashing: the caller's last reported
    /// digest (rows in [`StreamVerifier::hash_input`] not included).
    pub fn prefix_hash(&self) -> String {
        if let Some(ext) = &self.external {
            return match &ext.digest {
                Some(d) => d.clone(),
                None => self.hasher.hex_digest(),
            };
        }
        if self.pending.is_empty() {
            return self.hasher.hex_digest();
        }
        let mut h = self.hasher.clone();
        h.update_line(&self.pending);
        h.hex_digest()
    }

    /// The cursor, once an open line carried one.
    pub fn cursor(&self) -> Option<&str> {
        self.cursor.as_deref()
    }

    /// The verified end, once seen.
    pub fn end(&self) -> Option<&EndFrame> {
        self.end.as_ref()
    }

    /// The open line of the current response.
    pub fn open(&self) -> Option<&OpenFrame> {
        self.open.as_ref()
    }

    /// Resumes so far.
    pub fn resumes(&self) -> u32 {
        self.resumes
    }

    /// True once a verified `end` was seen.
    pub fn is_complete(&self) -> bool {
        self.end.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::FakeClock;
    use crate::core::config::StreamConfig;
    use crate::core::framer::NdjsonFramer;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    /// `body` without its line `n` (0-based).
    fn without_line(body: &[u8], n: usize) -> String {
        std::str::from_utf8(body)
            .unwrap()
            .lines()
            .enumerate()
            .filter(|(i, _)| *i != n)
            .map(|(_, l)| format!("{l}\n"))
            .collect()
    }

    fn open(after_rows: u64, cursor: Option<&str>) -> OpenFrame {
        OpenFrame {
            lease: "1".repeat(32),
            snapshot_lsn: 3,
            resumable: cursor.is_some(),
            reason: cursor.is_none().then(|| "aggregate".to_string()),
            cursor: cursor.map(str::to_owned),
            expires_at_ms: 99,
            columns: vec![Column {
                name: "id".into(),
                decl_type: "INTEGER".into(),
            }],
            after_rows,
            total: None,
        }
    }

    fn encode(
        rows: std::ops::Range<u64>,
        hasher: PrefixHasher,
        cursor: Option<&str>,
    ) -> (Vec<u8>, EndFrame) {
        let producer = ChunkProducer::new(&StreamConfig::default(), FakeClock::new(0));
        let mut enc = StreamEncoder::new(producer, hasher, rows.start, "1".repeat(32));
        let mut out: Vec<Vec<u8>> = Vec::new();
        enc.open(&open(rows.start, cursor), &mut out).unwrap();
        for i in rows {
            enc.row_with(
                |b| b.extend_from_slice(format!("{{\"id\":{i}}}").as_bytes()),
                &mut out,
            )
            .unwrap();
        }
        let end = enc.end(CloseReason::Ok, &mut out).unwrap();
        (out.concat(), end)
    }

    fn verify(v: &mut StreamVerifier, body: &[u8]) -> Result<Vec<StreamEvent>, ClientError> {
        let mut framer = NdjsonFramer::new();
        let lines = framer.push_collect(body).unwrap();
        lines.iter().map(|l| v.accept(l)).collect()
    }

    #[test]
    fn error_codes_are_unique_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for &c in ErrorCode::ALL {
            assert!(seen.insert(c.as_str()), "duplicate {c}");
            assert_eq!(ErrorCode::parse(c.as_str()), Some(c));
            assert!((400..600).contains(&c.http_status()));
        }
        assert_eq!(ErrorCode::CursorNotFound.http_status(), 404);
        assert_eq!(ErrorCode::CursorExpired.http_status(), 410);
        assert_eq!(ErrorCode::PrincipalStreamQuotaExhausted.http_status(), 429);
    }

    #[test]
    fn error_body_shape() {
        let b = ErrorBody::new(ErrorCode::ServerStreamCapacityExhausted, "full")
            .with("limit", 3)
            .with("current", 3);
        let v: serde_json::Value = serde_json::from_str(&b.to_json()).unwrap();
        assert_eq!(v["error"]["code"], "server_stream_capacity_exhausted");
        assert_eq!(v["error"]["limit"], 3);
        assert_eq!(v.as_object().unwrap().len(), 1);
    }

    #[test]
    fn encoded_stream_verifies_end_to_end() {
        let (body, end) = encode(0..500, PrefixHasher::new(), Some(&"c".repeat(48)));
        let text = std::str::from_utf8(&body).unwrap();
        assert!(text.starts_with("{\"open\":{"));
        assert!(text
            .trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("{\"end\":{\"reason\":\"ok\""));
        assert_eq!(end.row_count, 500);
        let mut v = StreamVerifier::new();
        let events = verify(&mut v, &body).unwrap();
        assert!(matches!(events.last(), Some(StreamEvent::End(e)) if e.row_count == 500));
        assert!(v.is_complete());
        assert_eq!(v.prefix_hash(), end.prefix_hash);
        assert_eq!(
            end.bytes as usize,
            body.len() - text.trim_end().lines().last().unwrap().len() - 1
        );
    }

    #[test]
    fn resumed_stream_verifies_across_responses() {
        let cursor = "c".repeat(48);
        let (full, full_end) = encode(0..100, PrefixHasher::new(), Some(&cursor));
        // The client received 40 rows, then the connection dropped.
        let lines: Vec<&str> = std::str::from_utf8(&full).unwrap().lines().collect();
        let mut v = StreamVerifier::new();
        for l in &lines[..41] {
            v.accept(l).unwrap();
        }
        let resume = v.begin_resume().unwrap();
        assert_eq!(
            (resume.after_rows, resume.cursor.as_str()),
            (40, cursor.as_str())
        );
        let mut server_hasher = PrefixHasher::new();
        server_hasher.update_lines(&lines[1..41]);
        assert_eq!(server_hasher.hex_digest(), resume.prefix_hash);
        let (rest, end) = encode(40..100, server_hasher, Some(&cursor));
        verify(&mut v, &rest).unwrap();
        assert_eq!(end.prefix_hash, full_end.prefix_hash);
        assert_eq!(v.rows(), 100);
        assert_eq!(v.resumes(), 1);
    }

    #[test]
    fn tampered_or_truncated_streams_are_caught() {
        let (body, _) = encode(0..10, PrefixHasher::new(), None);
        let mut tampered = body.clone();
        let pos = tampered.windows(6).position(|w| w == b"\"id\":5").unwrap();
        tampered[pos + 5] = b'6';
        let err = verify(&mut StreamVerifier::new(), &tampered).unwrap_err();
        assert_eq!(err.code(), "digest_mismatch");

        // Drop a row line: counts differ.
        let dropped = without_line(&body, 3);
        assert_eq!(
            verify(&mut StreamVerifier::new(), dropped.as_bytes())
                .unwrap_err()
                .code(),
            "digest_mismatch"
        );

        // Cut before end: no error, but not complete, and no cursor to resume.
        let text = std::str::from_utf8(&body).unwrap();
        let cut: String = text.lines().take(5).map(|l| format!("{l}\n")).collect();
        let mut v = StreamVerifier::new();
        verify(&mut v, cut.as_bytes()).unwrap();
        assert!(!v.is_complete());
        assert!(
            v.begin_resume().is_none(),
            "non-resumable stream has no resume"
        );
    }

    #[test]
    fn protocol_violations() {
        let mut v = StreamVerifier::new();
        assert_eq!(
            v.accept("{\"row\":{\"id\":1}}").unwrap_err().code(),
            "protocol_error"
        );
        let mut v = StreamVerifier::new();
        assert_eq!(v.accept("not json").unwrap_err().code(), "malformed_line");
        assert_eq!(
            v.accept("{\"a\":1,\"b\":2}").unwrap_err().code(),
            "malformed_line"
        );
        let mut v = StreamVerifier::new();
        v.accept(&ControlLine::Open(open(0, None)).to_json())
            .unwrap();
        assert_eq!(
            v.accept("{\"heartbeat\":{}}").unwrap(),
            StreamEvent::Ignored
        );
        assert_eq!(v.accept("{ \"row\" : [1] }").unwrap(), StreamEvent::Row);
        let mut wrong_after = StreamVerifier::new();
        assert_eq!(
            wrong_after
                .accept(&ControlLine::Open(open(5, None)).to_json())
                .unwrap_err()
                .code(),
            "protocol_error"
        );
    }

    #[test]
    fn batched_hashing_matches_per_line_digests_at_every_step() {
        // Row lines are hashed in batches; the running digest must still be
        // that of every row so far, whatever the spelling of the lines
        // (including ones not ending in `}`, hashed as the core strips them).
        let mut v = StreamVerifier::new();
        v.accept(&ControlLine::Open(open(0, Some(&"c".repeat(48)))).to_json())
            .unwrap();
        let pad = "x".repeat(900);
        let mut lines: Vec<String> = Vec::new();
        for i in 0..300 {
            let line = match i % 50 {
                7 => format!("{{ \"row\" : {i} }} "),
                8 => format!("{{\"row\":{i}}}\r\r"),
                _ => format!("{{\"row\":{{\"id\":{i},\"pad\":\"{pad}\"}}}}"),
            };
            assert_eq!(v.accept(&line).unwrap(), StreamEvent::Row, "{line}");
            lines.push(line);
            if i % 37 == 0 {
                v.hash_pending();
            }
            if i % 13 == 0 || i == 299 {
                assert_eq!(v.prefix_hash(), crate::core::digest::prefix_hash_of(&lines));
            }
        }
        let resume = v.begin_resume().unwrap();
        assert_eq!(resume.after_rows, 300);
        assert_eq!(
            resume.prefix_hash,
            crate::core::digest::prefix_hash_of(&lines)
        );
    }

    /// What a caller hashing externally does: feeds the input to its own
    /// SHA-256 and reports the running digest.
    fn report(v: &mut StreamVerifier, sha: &mut sha2::Sha256) -> Result<(), ClientError> {
        use sha2::Digest;
        sha.update(v.hash_input());
        let hex = crate::core::digest::to_hex(&sha.clone().finalize());
        v.input_hashed(&hex)
    }

    #[test]
    fn external_hashing_input_is_byte_identical_to_the_core_digest() {
        // Every spelling the core hashes (including lines whose trailing
        // `\r` / `\n` it strips): the caller's digest of the handed-out input
        // equals the core's, at every report and in the resume request.
        let cursor = "c".repeat(48);
        let open_line = ControlLine::Open(open(0, Some(&cursor))).to_json();
        let mut ext = StreamVerifier::with_external_hashing();
        let mut core = StreamVerifier::new();
        assert!(ext.hashes_externally() && !core.hashes_externally());
        ext.accept(&open_line).unwrap();
        core.accept(&open_line).unwrap();
        assert_eq!(ext.prefix_hash(), core.prefix_hash(), "the empty digest");
        let mut sha = <sha2::Sha256 as sha2::Digest>::new();
        let mut lines: Vec<String> = Vec::new();
        for i in 0..300 {
            let line = match i % 10 {
                1 => format!("{{ \"row\" : {i} }} "),
                2 => format!("{{\"row\":{i}}}\r\r"),
                3 => format!("{{\"row\":{i}}}\r\n"),
                4 => format!("{{\"row\":{i}}}\n\n"),
                5 => format!("{{\"row\":{i}}}\r"),
                6 => format!("{{\"row\":{i}}}\n\r"),
                _ => format!("{{\"row\":{{\"id\":{i}}}}}"),
            };
            assert_eq!(ext.accept(&line).unwrap(), StreamEvent::Row, "{line:?}");
            assert_eq!(core.accept(&line).unwrap(), StreamEvent::Row);
            lines.push(line);
            assert_eq!(ext.rows(), core.rows());
            if i % 7 == 0 {
                report(&mut ext, &mut sha).unwrap();
                assert!(ext.hash_input().is_empty());
                assert_eq!(ext.prefix_hash(), core.prefix_hash(), "after row {i}");
            }
        }
        assert!(
            ext.begin_resume().is_none(),
            "not while input is unreported"
        );
        report(&mut ext, &mut sha).unwrap();
        assert_eq!(
            ext.prefix_hash(),
            crate::core::digest::prefix_hash_of(&lines)
        );
        assert_eq!(ext.begin_resume(), core.begin_resume());
        assert_eq!(ext.resumes(), 1);
        // Without external hashing there is no input to hand out.
        assert!(core.hash_input().is_empty());
        assert_eq!(
            core.input_hashed(&"0".repeat(64)).unwrap_err().code(),
            "protocol_error"
        );
    }

    #[test]
    fn external_hashing_checks_the_end_line_when_the_digest_is_reported() {
        let cursor = "c".repeat(48);
        let (body, end) = encode(0..200, PrefixHasher::new(), Some(&cursor));
        let mut v = StreamVerifier::with_external_hashing();
        let mut sha = <sha2::Sha256 as sha2::Digest>::new();
        let events = verify(&mut v, &body).unwrap();
        assert!(matches!(events.last(), Some(StreamEvent::End(e)) if e == &end));
        assert!(!v.is_complete() && v.end().is_none(), "unchecked yet");
        assert!(v.begin_resume().is_none());
        assert_eq!(
            v.accept("{\"row\":1}").unwrap_err().code(),
            "protocol_error",
            "nothing after end"
        );
        report(&mut v, &mut sha).unwrap();
        assert!(v.is_complete());
        assert_eq!(v.prefix_hash(), end.prefix_hash);

        // A flipped byte: the report is a digest mismatch, worded as the core's.
        let mut tampered = body.clone();
        let pos = tampered.windows(6).position(|w| w == b"\"id\":5").unwrap();
        tampered[pos + 5] = b'6';
        let mut v = StreamVerifier::with_external_hashing();
        verify(&mut v, &tampered).unwrap();
        let err = report(&mut v, &mut <sha2::Sha256 as sha2::Digest>::new()).unwrap_err();
        let core_err = verify(&mut StreamVerifier::new(), &tampered).unwrap_err();
        assert_eq!(err, core_err);
        assert!(!v.is_complete());

        // Counts are still checked at the end line itself.
        let dropped = without_line(&body, 3);
        let mut v = StreamVerifier::with_external_hashing();
        assert_eq!(
            verify(&mut v, dropped.as_bytes()).unwrap_err().code(),
            "digest_mismatch"
        );
        assert_eq!(
            v.input_hashed("not hex").unwrap_err().code(),
            "protocol_error"
        );
    }

    #[test]
    fn external_hashing_resumes_across_responses() {
        let cursor = "c".repeat(48);
        let (full, full_end) = encode(0..100, PrefixHasher::new(), Some(&cursor));
        let lines: Vec<&str> = std::str::from_utf8(&full).unwrap().lines().collect();
        let mut v = StreamVerifier::with_external_hashing();
        let mut sha = <sha2::Sha256 as sha2::Digest>::new();
        for l in &lines[..41] {
            v.accept(l).unwrap();
        }
        report(&mut v, &mut sha).unwrap();
        let resume = v.begin_resume().unwrap();
        assert_eq!(resume.after_rows, 40);
        let mut server_hasher = PrefixHasher::new();
        server_hasher.update_lines(&lines[1..41]);
        assert_eq!(server_hasher.hex_digest(), resume.prefix_hash);
        let (rest, end) = encode(40..100, server_hasher, Some(&cursor));
        verify(&mut v, &rest).unwrap();
        report(&mut v, &mut sha).unwrap();
        assert_eq!(end.prefix_hash, full_end.prefix_hash);
        assert!(v.is_complete());
        assert_eq!((v.rows(), v.resumes()), (100, 1));
    }

    #[test]
    fn batched_row_lines_make_the_same_chunks_digest_and_checkpoints_as_one_by_one() {
        use crate::core::producer::ProducerLimits;
        // Lines of many lengths, one longer than the whole buffer, so runs
        // end on the byte cap, on the row cap, before and after an oversized
        // line; the block is fed in pieces cut anywhere, as the ring does.
        let lines: Vec<Vec<u8>> = (0..60)
            .map(|i: usize| {
                let v = if i == 17 {
                    "x".repeat(90)
                } else {
                    "é".repeat(i % 9)
                };
                format!(r#"{{"row":{{"i":{i},"s":"{v}"}}}}"#).into_bytes()
            })
            .collect();
        let block: Vec<u8> = lines
            .iter()
            .flat_map(|l| l.iter().copied().chain([b'\n']))
            .collect();
        let caps = (30..130)
            .map(|b| (b, 1000))
            .chain([(64, 3), (1 << 16, 7), (1, 1)]);
        for (buffer_bytes, max_rows) in caps {
            let enc = || {
                let limits = ProducerLimits {
                    buffer_bytes,
                    max_rows,
                    max_latency_ms: 1000,
                };
                StreamEncoder::new(
                    ChunkProducer::with_limits(limits, FakeClock::new(0)),
                    PrefixHasher::new(),
                    0,
                    "l",
                )
            };
            let mut one = enc();
            let mut one_chunks: Vec<Vec<u8>> = Vec::new();
            let mut one_marks = Vec::new();
            for l in &lines {
                one.batch_row_line(l, &mut one_chunks).unwrap();
                if one.row_count() % 4 == 0 {
                    one_marks.push((one.row_count(), one.hasher().hex_digest()));
                }
            }
            one.producer().flush(&mut one_chunks).unwrap();
            for cut in [0, 1, 30, 31, 250, block.len() / 2, block.len()] {
                let mut run = enc();
                let mut chunks: Vec<Vec<u8>> = Vec::new();
                let mut marks = Vec::new();
                let mut on_row = |e: &StreamEncoder<FakeClock>| {
                    if e.row_count() % 4 == 0 {
                        marks.push((e.row_count(), e.hasher().hex_digest()));
                    }
                };
                let (a, b) = block.split_at(cut);
                let mut pending = Vec::new();
                for piece in [a, b] {
                    pending.extend_from_slice(piece);
                    let mut done = 0;
                    loop {
                        let took = run
                            .batch_row_lines(&pending[done..], &mut chunks, &mut on_row)
                            .unwrap();
                        if took == 0 {
                            break;
                        }
                        done += took;
                    }
                    pending.drain(..done);
                }
                assert!(pending.is_empty());
                run.producer().flush(&mut chunks).unwrap();
                let ctx = format!("buffer {buffer_bytes}, max_rows {max_rows}, cut {cut}");
                assert_eq!(chunks, one_chunks, "{ctx}");
                assert_eq!(marks, one_marks, "{ctx}");
                assert_eq!(run.row_count(), 60, "{ctx}");
                assert_eq!(
                    run.hasher().hex_digest(),
                    one.hasher().hex_digest(),
                    "{ctx}"
                );
                assert_eq!(run.producer().totals(), one.producer().totals(), "{ctx}");
            }
        }
    }
}
