//! Producing one response: fresh streams and resumes, on a blocking thread.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use rusqlite::types::ValueRef;
use tokio::sync::oneshot;

use super::handoff::{self, Stepper, RING_BYTES};
use super::pipe::{Pipe, SharedClock, StatementWatch, StopCause, StreamCtl};
use super::rewrite::RowidPlan;
use super::sql::{
    bind_params, columns_of, read_runtime_config, sql_error_text, Params, ReadConn, RowWriter,
    Shape,
};
use super::{lock, AppState, Caller, Tenant};
use crate::core::audit::AuditEvent;
use crate::core::capacity::{CapacityGuard, CapacityLimits};
use crate::core::close::CloseReason;
use crate::core::config::StreamConfig;
use crate::core::cursor::{CursorHandle, NewCursor};
use crate::core::digest::{sha256_hex, PrefixHasher};
use crate::core::lease::{OpenStream, StreamLease};
use crate::core::producer::ChunkProducer;
use crate::core::protocol::{Column, ErrorBody, ErrorCode, OpenFrame, StreamEncoder, ROW_PREFIX};
use crate::core::resumable::assess_resumability_with;

/// `open.reason` when a resumable query gets no cursor because the server
/// holds `max_pinned` snapshots already.
pub(crate) const SNAPSHOT_LIMIT_REASON: &str = "snapshot_limit";

/// A refusal before the first streamed byte.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) body: ErrorBody,
    pub(crate) retry_after: bool,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal {
            code,
            body: ErrorBody::new(code, message),
            retry_after: false,
        }
    }

    pub(crate) fn from_body(body: ErrorBody) -> Self {
        let code = ErrorCode::parse(&body.code).unwrap_or(ErrorCode::InternalError);
        Refusal {
            code,
            body,
            retry_after: false,
        }
    }
}

pub(crate) type Ready = oneshot::Sender<Result<(), Refusal>>;

/// A resume checkpoint: after `rows` rows, the digest state and (in rowid
/// mode) the rowid of the last row sent.
#[derive(Debug, Clone)]
pub(crate) struct Checkpoint {
    rows: u64,
    rowid: Option<i64>,
    hasher: PrefixHasher,
}

/// A cursor's payload: the pinned snapshot (a read-only connection holding an
/// open read transaction) and what is needed to re-run its query.
pub(crate) struct Pinned {
    conn: Mutex<Option<ReadConn>>,
    query: String,
    params: Option<Params>,
    columns: Vec<Column>,
    writer: RowWriter,
    plan: Option<RowidPlan>,
    cfg: StreamConfig,
    pinned_at_ms: u64,
    snapshot_lsn: u64,
    first_lease: String,
    checkpoints: Mutex<Vec<Checkpoint>>,
    running: Mutex<Option<Arc<StreamCtl>>>,
    counter: Arc<AtomicUsize>,
}

impl Drop for Pinned {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A fresh request, parsed.
#[derive(Debug, Clone)]
pub(crate) struct FreshRequest {
    pub(crate) query: String,
    pub(crate) params: Option<Params>,
    pub(crate) shape: Shape,
}

/// A resume request, parsed.
#[derive(Debug, Clone)]
pub(crate) struct ResumeRequest {
    pub(crate) after_rows: u64,
    pub(crate) prefix_hash: String,
}

/// Registers the stream for shutdown; records exactly one `stream.closed` for
/// its lease (also on panic, where it ends the body with an error line).
struct LeaseGuard<'a> {
    state: &'a AppState,
    pipe: &'a Pipe,
    id: u64,
    lease: Option<StreamLease>,
    scope: crate::core::lease::Scope,
    reason: CloseReason,
    cause: String,
    row_count: u64,
    bytes: u64,
    finished: bool,
}

impl<'a> LeaseGuard<'a> {
    fn new(state: &'a AppState, pipe: &'a Pipe, ctl: &Arc<StreamCtl>, caller: &Caller) -> Self {
        let id = state.register_running(ctl);
        LeaseGuard {
            state,
            pipe,
            id,
            lease: None,
            scope: caller.scope.clone(),
            reason: CloseReason::Cancelled,
            cause: "abandoned".into(),
            row_count: 0,
            bytes: 0,
            finished: false,
        }
    }
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        lock(&self.state.running).remove(&self.id);
        if std::thread::panicking() {
            self.reason = CloseReason::Error;
            self.cause = "panic".into();
            if !self.finished {
                // Recorded before the `end` line becomes visible, as on
                // every other exit.
                let pipe = self.pipe;
                pipe.finish(
                    Some(&ErrorBody::new(
                        ErrorCode::InternalError,
                        "the server failed",
                    )),
                    CloseReason::Error,
                    |f| {
                        self.row_count = f.row_count;
                        self.bytes = f.bytes;
                        self.record();
                    },
                );
            }
        } else if !self.finished {
            self.pipe.abort();
        }
        self.record();
    }
}

impl LeaseGuard<'_> {
    /// Records `stream.closed` for the lease, once.
    fn record(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.state.record_lease_closed(
                &lease,
                &self.scope,
                self.reason,
                std::mem::take(&mut self.cause),
                self.row_count,
                self.bytes,
            );
        }
    }
}

pub(crate) fn capacity(
    state: &AppState,
    caller: &Caller,
    cfg: &StreamConfig,
) -> Result<CapacityGuard, Refusal> {
    let limits = CapacityLimits {
        max_global: cfg.max_global,
        max_per_principal: cfg.max_per_principal,
    };
    state
        .capacity
        .try_acquire(&caller.scope, limits)
        .map_err(|e| {
            state.record(AuditEvent::StreamClosed {
                at_ms: state.now_ms(),
                lease: None,
                reason: CloseReason::CapacityRefused,
                cause: e.code().to_owned(),
                row_count: 0,
                bytes_written: 0,
                duration_ms: 0,
                principal: caller.scope.principal.clone(),
                tenant: caller.scope.tenant.clone(),
            });
            let code =
                ErrorCode::parse(e.code()).unwrap_or(ErrorCode::ServerStreamCapacityExhausted);
            Refusal {
                code,
                body: ErrorBody::new(code, e.to_string())
                    .with("limit", e.limit)
                    .with("current", e.current),
                retry_after: true,
            }
        })
}

/// A resume's slot. At the limit, a response of the same cursor that is
/// still running (its client most likely gone unnoticed, which is why it
/// resumes) would get the resume refused for its own slot: it is superseded
/// and the resume waits briefly for the slot it releases.
fn resume_capacity(
    state: &AppState,
    caller: &Caller,
    p: &Pinned,
) -> Result<CapacityGuard, Refusal> {
    let limits = CapacityLimits {
        max_global: p.cfg.max_global,
        max_per_principal: p.cfg.max_per_principal,
    };
    if let Ok(g) = state.capacity.try_acquire(&caller.scope, limits) {
        return Ok(g);
    }
    let prev = lock(&p.running).clone();
    if let Some(prev) = prev {
        prev.stop(StopCause::Superseded);
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
            if let Ok(g) = state.capacity.try_acquire(&caller.scope, limits) {
                return Ok(g);
            }
        }
    }
    // Records the refusal.
    capacity(state, caller, &p.cfg)
}

fn internal(e: impl std::fmt::Display) -> Refusal {
    Refusal::new(ErrorCode::InternalError, format!("database failure: {e}"))
}

fn encoder(
    state: &AppState,
    cfg: &StreamConfig,
    hasher: PrefixHasher,
    rows: u64,
    lease: &str,
) -> StreamEncoder<SharedClock> {
    // The body's timer flushes at the latency deadline (`PipeBody`).
    let producer = ChunkProducer::new(cfg, state.clock.clone()).timer_driven();
    StreamEncoder::new(producer, hasher, rows, lease)
}

/// Raises `ctl` with `snapshot_expired` when the TTL runs out, even while the
/// statement stalls. Ends with the stream (the returned sender).
fn ttl_watchdog(ctl: &Arc<StreamCtl>, state: &AppState, expires_at_ms: u64) -> oneshot::Sender<()> {
    let (tx, rx) = oneshot::channel::<()>();
    let wait = Duration::from_millis(expires_at_ms.saturating_sub(state.now_ms()) + 1);
    let ctl = Arc::downgrade(ctl);
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {
                    if let Some(c) = ctl.upgrade() { c.stop(StopCause::SnapshotExpired); }
                }
                _ = rx => {}
            }
        });
    }
    tx
}

/// Links a stream to its cursor: a cancel of the cursor (endpoint, or expiry
/// noticed by the registry) stops the stream with the right cause.
fn link_cursor(ctl: &Arc<StreamCtl>, handle: &CursorHandle<Pinned>, clock: SharedClock) {
    let weak = Arc::downgrade(ctl);
    let expires = handle.info.expires_at_ms;
    handle.cancel.on_cancel(move || {
        if let Some(c) = weak.upgrade() {
            if clock.now_ms() > expires {
                c.stop(StopCause::SnapshotExpired);
            } else {
                c.stop(StopCause::Cancel);
            }
        }
    });
}

enum Outcome {
    Done,
    Stopped(StopCause),
    Failed(ErrorBody),
}

/// Rows a stream encodes on its stepping thread before it hands encoding to
/// a second thread ([`handoff`](super::handoff)); short results never start
/// one, and the first rows go out without a thread start in their way.
const DIRECT_ROWS: u64 = 4096;

/// How often (in rows) the stepping thread reads the clock for the snapshot
/// TTL; the TTL watchdog stops a stalled stream on time by itself.
const TTL_CHECK_ROWS: u64 = 64;

/// Counts a stream in `AppState::producing` while it steps its query.
struct Producing<'a>(&'a AtomicUsize);

impl<'a> Producing<'a> {
    fn enter(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Producing(n)
    }
}

impl Drop for Producing<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct Pump<'a> {
    pipe: &'a Pipe,
    producing: &'a AtomicUsize,
    cores: usize,
    ctl: &'a StreamCtl,
    clock: &'a SharedClock,
    expires_at_ms: u64,
    writer: &'a RowWriter,
    hidden_rowid: bool,
    checkpoints: Option<(&'a Mutex<Vec<Checkpoint>>, u64)>,
}

/// Rowids of checkpoint rows, from the stepping thread to the encoding one.
type Rowids = Mutex<VecDeque<(u64, i64)>>;

impl Pump<'_> {
    /// Streams every row of `rows` into the pipe: the first [`DIRECT_ROWS`]
    /// from this thread, the rest through a second, encoding thread while
    /// fewer streams are stepping than there are cores.
    fn run(&self, rows: &mut rusqlite::Rows<'_>) -> Outcome {
        let start = self.pipe.inspect(|e| e.row_count()).unwrap_or(0);
        let mut produced = 0;
        let _producing = Producing::enter(self.producing);
        if let Some(o) = self.direct(rows, start, &mut produced, Some(DIRECT_ROWS)) {
            return o;
        }
        // A second thread per stream pays off only on an idle core: it costs
        // about a fifth more CPU per row (the rows cross cores), which
        // streams that already keep every core busy cannot spare. (A lone
        // stream always gets one, also on a single core.)
        if self.producing.load(Ordering::Relaxed) >= self.cores.max(2) {
            return self
                .direct(rows, start, &mut produced, None)
                .unwrap_or(Outcome::Done);
        }
        let rowids = Rowids::default();
        let step = |stepper: &mut Stepper<'_>| self.step(rows, start + produced, stepper, &rowids);
        let deliver =
            |a: &[u8], b: &[u8], scratch: &mut Vec<u8>| self.deliver(a, b, scratch, &rowids);
        match handoff::run(self.ctl, step, deliver) {
            Ok((_, false)) => Outcome::Stopped(self.ctl.cause().unwrap_or(StopCause::Cancel)),
            Ok((outcome, true)) => outcome,
            Err(_step) => {
                // No thread to be had: carry on single-threaded.
                self.direct(rows, start, &mut produced, None)
                    .unwrap_or(Outcome::Done)
            }
        }
    }

    /// Steps and encodes on this thread, up to `limit` rows in all (`None`
    /// when the limit was reached first).
    fn direct(
        &self,
        rows: &mut rusqlite::Rows<'_>,
        start: u64,
        produced: &mut u64,
        limit: Option<u64>,
    ) -> Option<Outcome> {
        loop {
            if let Some(c) = self.ctl.cause() {
                return Some(Outcome::Stopped(c));
            }
            if limit.is_some_and(|l| *produced >= l) {
                return None;
            }
            match rows.next() {
                Ok(Some(row)) => {
                    *produced += 1;
                    if let Some(o) = self.produced(*produced) {
                        return Some(o);
                    }
                    let Some(n) = self
                        .pipe
                        .push_row(self.ctl, |buf| self.writer.write(row, buf))
                    else {
                        continue;
                    };
                    debug_assert_eq!(n, start + *produced);
                    if self.checkpoints.is_some_and(|(_, every)| n % every == 0) {
                        let rowid = self.rowid(row);
                        if let Some(hasher) = self.pipe.inspect(|e| e.hasher().clone()) {
                            self.checkpoint(n, rowid, hasher);
                        }
                    }
                }
                Ok(None) => return Some(Outcome::Done),
                Err(e) => return Some(self.failed(&e)),
            }
        }
    }

    /// The stepping thread's loop with an encoding thread: writes each row
    /// line and publishes it. `n` is the row count so far.
    fn step(
        &self,
        rows: &mut rusqlite::Rows<'_>,
        mut n: u64,
        stepper: &mut Stepper<'_>,
        rowids: &Rowids,
    ) -> Outcome {
        let mut line = Vec::with_capacity(512);
        let mut scratch = Vec::new();
        loop {
            if let Some(c) = self.ctl.cause() {
                return Outcome::Stopped(c);
            }
            match rows.next() {
                Ok(Some(row)) => {
                    n += 1;
                    if let Some(o) = self.produced(n) {
                        return o;
                    }
                    if self.hidden_rowid && self.checkpoints.is_some_and(|(_, e)| n % e == 0) {
                        if let Some(id) = self.rowid(row) {
                            lock(rowids).push_back((n, id));
                        }
                    }
                    line.clear();
                    line.extend_from_slice(ROW_PREFIX);
                    self.writer.write(row, &mut line);
                    line.extend_from_slice(b"}\n");
                    if !stepper.send(&line) {
                        if line.len() > RING_BYTES && stepper.drain() {
                            // Longer than the ring: once the encoder has
                            // taken every earlier line, deliver it from here.
                            let _ = self.deliver(&line, &[], &mut scratch, rowids);
                        } else if !self.ctl.is_stopped() {
                            // The encoder is gone without a stop: it
                            // panicked, and `handoff::run` raises that panic
                            // here once it has joined the thread.
                            return Outcome::Done;
                        }
                        // Stopped: the loop head returns.
                    }
                }
                Ok(None) => return Outcome::Done,
                Err(e) => return self.failed(&e),
            }
        }
    }

    /// The encoding side: encodes a batch of published lines into the pipe,
    /// recording checkpoints as their rows pass.
    fn deliver(&self, a: &[u8], b: &[u8], scratch: &mut Vec<u8>, rowids: &Rowids) -> Option<()> {
        self.pipe
            .push_lines(self.ctl, a, b, scratch, |enc| {
                let n = enc.row_count();
                if self.checkpoints.is_some_and(|(_, every)| n % every == 0) {
                    let rowid = if self.hidden_rowid {
                        let mut q = lock(rowids);
                        while q.front().is_some_and(|&(m, _)| m < n) {
                            q.pop_front();
                        }
                        q.front().filter(|&&(m, _)| m == n).map(|&(_, id)| id)
                    } else {
                        None
                    };
                    self.checkpoint(n, rowid, enc.hasher().clone());
                }
            })
            .map(|_| ())
    }

    /// Bookkeeping for each row stepped; `Some` when the snapshot's TTL ran
    /// out.
    fn produced(&self, n: u64) -> Option<Outcome> {
        super::limits::row_produced();
        (n % TTL_CHECK_ROWS == 1 && self.clock.now_ms() > self.expires_at_ms)
            .then_some(Outcome::Stopped(StopCause::SnapshotExpired))
    }

    /// The hidden rowid column of `row`, in rowid mode.
    fn rowid(&self, row: &rusqlite::Row<'_>) -> Option<i64> {
        if !self.hidden_rowid {
            return None;
        }
        match row.get_ref(self.writer.width()) {
            Ok(ValueRef::Integer(i)) => Some(i),
            _ => None,
        }
    }

    fn checkpoint(&self, rows: u64, rowid: Option<i64>, hasher: PrefixHasher) {
        if let Some((cps, _)) = self.checkpoints {
            let mut cps = lock(cps);
            if cps.last().is_none_or(|c| c.rows < rows) {
                cps.push(Checkpoint {
                    rows,
                    rowid,
                    hasher,
                });
            }
        }
    }

    fn failed(&self, e: &rusqlite::Error) -> Outcome {
        match self.ctl.cause() {
            Some(c) => Outcome::Stopped(c),
            None => Outcome::Failed(super::limits::step_error(e)),
        }
    }
}

/// Ends the response: the audit record and the slot release happen before the
/// client can see the `end` line.
fn finish(guard: &mut LeaseGuard<'_>, pipe: &Pipe, outcome: Outcome, cap: CapacityGuard) {
    let (reason, cause, err) = match outcome {
        Outcome::Done => (CloseReason::Ok, "end".to_owned(), None),
        Outcome::Stopped(c) => (c.reason(), c.cause().to_owned(), None),
        Outcome::Failed(e) => (CloseReason::Error, e.code.clone(), Some(e)),
    };
    guard.finished = true;
    pipe.finish(err.as_ref(), reason, |f| {
        guard.reason = reason;
        guard.cause = cause;
        guard.row_count = f.row_count;
        guard.bytes = f.bytes;
        drop(cap);
        lock(&guard.state.running).remove(&guard.id);
        guard.record();
    });
}

fn audit_token_expiry(state: &AppState, caller: &Caller, lease: &StreamLease) {
    if let Some(exp) = caller.token_exp_ms {
        if exp < lease.expires_at_ms {
            state.record(AuditEvent::TokenExpiredDuringLease {
                at_ms: state.now_ms(),
                lease: lease.handle().to_owned(),
                token_exp_ms: exp,
                lease_expires_at_ms: lease.expires_at_ms,
                principal: caller.scope.principal.clone(),
                tenant: caller.scope.tenant.clone(),
            });
        }
    }
}

fn table_columns(rc: &ReadConn, table: &str) -> Option<Vec<String>> {
    let mut stmt = rc
        .conn
        .prepare("SELECT name FROM pragma_table_info(?1)")
        .ok()?;
    let names = stmt
        .query_map([table], |r| r.get::<_, String>(0))
        .ok()?
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    (!names.is_empty()).then_some(names)
}

fn integer_primary_key(rc: &ReadConn, table: &str) -> Option<String> {
    let mut stmt = rc
        .conn
        .prepare("SELECT name, type, pk FROM pragma_table_info(?1)")
        .ok()?;
    let cols: Vec<(String, String, i64)> = stmt
        .query_map([table], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .ok()?
        .collect::<Result<_, _>>()
        .ok()?;
    let pks: Vec<_> = cols.iter().filter(|c| c.2 > 0).collect();
    match pks.as_slice() {
        [one] if one.1.eq_ignore_ascii_case("integer") => Some(one.0.clone()),
        _ => None,
    }
}

/// A fresh stream, from the first check to the `end` line.
pub(crate) fn run_fresh(
    state: Arc<AppState>,
    caller: Caller,
    tenant: Arc<Tenant>,
    req: FreshRequest,
    pipe: Arc<Pipe>,
    ctl: Arc<StreamCtl>,
    ready: Ready,
) {
    let mut guard = LeaseGuard::new(&state, &pipe, &ctl, &caller);
    let mut ready = Some(ready);
    let refuse = |ready: &mut Option<Ready>, r: Refusal| {
        if let Some(tx) = ready.take() {
            let _ = tx.send(Err(r));
        }
    };
    let rc = match tenant.checkout() {
        Ok(rc) => rc,
        Err(e) => return refuse(&mut ready, internal(e)),
    };
    super::limits::apply(&rc.conn, &state.limits);
    let runtime = read_runtime_config(&rc.conn);
    let cfg = StreamConfig::load_over(&runtime, &state.boot);

    // Gate the client's SQL; nothing runs before this passes.
    let columns = {
        let mut stmt = match rc.prepare_checked(&req.query) {
            Ok(s) => s,
            Err(body) => return refuse(&mut ready, Refusal::from_body(body)),
        };
        if let Err(body) = bind_params(&mut stmt, req.params.as_ref()) {
            return refuse(&mut ready, Refusal::from_body(body));
        }
        columns_of(&stmt, stmt.column_count())
    };
    let res = assess_resumability_with(&req.query, &|t| integer_primary_key(&rc, t));
    let plan = if res.resumable {
        res.table
            .as_deref()
            .and_then(|t| table_columns(&rc, t))
            .and_then(|cols| RowidPlan::new(&req.query, &cols))
            .filter(|p| {
                rc.prepare_checked(&p.sql(Some(0)))
                    .map(|s| s.column_count() == columns.len() + 1)
                    .unwrap_or(false)
            })
    } else {
        None
    };

    let cap = match capacity(&state, &caller, &cfg) {
        Ok(c) => c,
        Err(r) => return refuse(&mut ready, r),
    };
    if let Some(c) = ctl.cause() {
        drop(cap);
        return refuse(
            &mut ready,
            if c == StopCause::Shutdown {
                Refusal::new(ErrorCode::ShuttingDown, "the server is shutting down")
            } else {
                Refusal::new(ErrorCode::InternalError, "stopped before start")
            },
        );
    }
    let snapshot_lsn = match tenant.pin(&rc) {
        Ok(l) => l,
        Err(e) => return refuse(&mut ready, internal(e)),
    };
    let now = state.now_ms();
    let lease = match state.leases.open_stream(OpenStream {
        scope: caller.scope.clone(),
        snapshot_lsn,
        config: cfg.clone(),
        in_transaction: false,
        pinned_at_ms: now,
        now_ms: now,
    }) {
        Ok(l) => l,
        Err(e) => {
            return refuse(
                &mut ready,
                Refusal::new(ErrorCode::InternalError, e.to_string()),
            )
        }
    };
    let writer = RowWriter::new(&columns, req.shape);

    // Resumable: the connection (and its read transaction) moves into the
    // cursor's payload and stays pinned until the TTL.
    // Each pinned snapshot holds a connection (file descriptors, cache) and
    // WAL growth: past `max_pinned`, streams are served without a cursor.
    let over_pin_limit =
        res.resumable && state.pinned.fetch_add(1, Ordering::SeqCst) >= state.max_pinned;
    if res.resumable && over_pin_limit {
        state.pinned.fetch_sub(1, Ordering::SeqCst);
    }
    let resumable = res.resumable && !over_pin_limit;
    let not_resumable_reason = if over_pin_limit {
        Some(SNAPSHOT_LIMIT_REASON.to_owned())
    } else {
        res.reason.map(|r| r.as_str().to_owned())
    };
    let pinned = if resumable {
        let payload = Pinned {
            conn: Mutex::new(None),
            query: req.query.clone(),
            params: req.params.clone(),
            columns: columns.clone(),
            writer: writer.clone(),
            plan: plan.clone(),
            cfg: cfg.clone(),
            pinned_at_ms: now,
            snapshot_lsn,
            first_lease: lease.handle().to_owned(),
            checkpoints: Mutex::new(Vec::new()),
            running: Mutex::new(Some(ctl.clone())),
            counter: state.pinned.clone(),
        };
        match state.cursors.register(
            NewCursor {
                scope: caller.scope.clone(),
                query: req.query.clone(),
                snapshot_lsn,
                first_lease: lease.handle().to_owned(),
                expires_at_ms: lease.expires_at_ms,
            },
            payload,
        ) {
            Ok(h) => Some(h),
            Err(e) => {
                return refuse(
                    &mut ready,
                    Refusal::new(ErrorCode::InternalError, e.to_string()),
                )
            }
        }
    } else {
        None
    };
    let mut own_rc = Some(rc);
    if let Some(h) = &pinned {
        link_cursor(&ctl, h, state.clock.clone());
        *lock(&h.payload.conn) = own_rc.take();
    }

    let open = OpenFrame {
        lease: lease.handle().to_owned(),
        snapshot_lsn,
        resumable,
        reason: not_resumable_reason,
        cursor: pinned.as_ref().map(|h| h.token.clone()),
        expires_at_ms: lease.expires_at_ms,
        columns: columns.clone(),
        after_rows: 0,
    };
    pipe.start(
        encoder(&state, &cfg, PrefixHasher::new(), 0, lease.handle()),
        &open,
    );
    state.record(AuditEvent::StreamOpened {
        at_ms: now,
        lease: lease.handle().to_owned(),
        principal: caller.scope.principal.clone(),
        tenant: caller.scope.tenant.clone(),
        snapshot_lsn,
        query_hash: sha256_hex(req.query.as_bytes()),
    });
    audit_token_expiry(&state, &caller, &lease);
    let expires_at_ms = lease.expires_at_ms;
    guard.lease = Some(lease);
    if ready.take().is_some_and(|tx| tx.send(Ok(())).is_err()) {
        ctl.stop(StopCause::Disconnect);
    }
    let _watchdog = ttl_watchdog(&ctl, &state, expires_at_ms);

    let outcome = match &pinned {
        Some(h) => {
            // A resume that superseded this response may hold the pinned
            // connection for as long as it streams: stop waiting when told to.
            let Some(conn_guard) = lock_unless_stopped(&h.payload.conn, &ctl) else {
                let cause = ctl.cause().unwrap_or(StopCause::Cancel);
                finish(&mut guard, &pipe, Outcome::Stopped(cause), cap);
                return;
            };
            let Some(rc) = conn_guard.as_ref() else {
                return;
            };
            let sql = plan.as_ref().map(|p| p.sql(None));
            let o = execute(
                &state,
                rc,
                sql.as_deref().unwrap_or(&req.query),
                req.params.as_ref(),
                &pipe,
                &ctl,
                expires_at_ms,
                &writer,
                plan.is_some(),
                Some((&h.payload.checkpoints, state.checkpoint_every)),
                None,
            );
            // Idle until resumed: give the page cache back.
            let _ = rc.conn.release_memory();
            if rc.conn.is_autocommit() {
                // The read transaction is gone (should not happen for a
                // read-only statement); the cursor cannot serve resumes.
                drop(conn_guard);
                lock(&h.payload.conn).take();
            }
            o
        }
        None => {
            let Some(rc) = own_rc else {
                return;
            };
            let o = execute(
                &state,
                &rc,
                &req.query,
                req.params.as_ref(),
                &pipe,
                &ctl,
                expires_at_ms,
                &writer,
                false,
                None,
                None,
            );
            tenant.checkin(rc);
            o
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(r) => Outcome::Failed(r.body),
    };
    finish(&mut guard, &pipe, outcome, cap);
}

/// Locks `m`, unless `ctl` is stopped while it waits.
fn lock_unless_stopped<'a, T>(m: &'a Mutex<T>, ctl: &StreamCtl) -> Option<MutexGuard<'a, T>> {
    loop {
        match m.try_lock() {
            Ok(g) => return Some(g),
            Err(TryLockError::Poisoned(p)) => return Some(p.into_inner()),
            Err(TryLockError::WouldBlock) if ctl.is_stopped() => return None,
            Err(TryLockError::WouldBlock) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

/// What a resume must verify before it streams.
struct Verify<'a> {
    after_rows: u64,
    prefix_hash: &'a str,
    start: PrefixHasher,
    skip: u64,
}

/// Prepares and runs `sql` on `rc`, pumping rows into `pipe`. With `verify`,
/// first skips `skip` rows (unencoded), then hashes rows up to `after_rows`
/// and compares with the client's digest; the verified hasher is returned
/// through `on_verified`, which starts the pipe.
#[allow(clippy::too_many_arguments)]
fn execute(
    state: &AppState,
    rc: &ReadConn,
    sql: &str,
    params: Option<&Params>,
    pipe: &Pipe,
    ctl: &Arc<StreamCtl>,
    expires_at_ms: u64,
    writer: &RowWriter,
    hidden_rowid: bool,
    checkpoints: Option<(&Mutex<Vec<Checkpoint>>, u64)>,
    verify: Option<(Verify<'_>, &mut dyn FnMut(PrefixHasher) -> bool)>,
) -> Result<Outcome, Refusal> {
    let mut stmt = rc.prepare_checked(sql).map_err(Refusal::from_body)?;
    bind_params(&mut stmt, params).map_err(Refusal::from_body)?;
    // Declared before `rows`, so it is dropped after the statement is reset.
    let _watch = StatementWatch::new(ctl, &rc.conn);
    let _deadline = super::limits::StepDeadline::arm(&state.limits);
    let mut rows = stmt.raw_query();
    if let Some((v, on_verified)) = verify {
        let mismatch = || {
            Refusal::new(
                ErrorCode::PrefixHashMismatch,
                "the prefix_hash does not match the first after_rows rows of the pinned snapshot",
            )
        };
        let stopped = |e: rusqlite::Error| {
            if ctl.is_stopped() {
                Refusal::new(ErrorCode::InternalError, "stopped")
            } else {
                Refusal::new(ErrorCode::QueryError, sql_error_text(&e))
            }
        };
        state.replayed.fetch_add(v.skip, Ordering::Relaxed);
        for _ in 0..v.skip {
            match rows.next() {
                Ok(Some(_)) => super::limits::row_produced(),
                Ok(None) => return Err(mismatch()),
                Err(e) => return Err(stopped(e)),
            }
        }
        let mut hasher = v.start;
        let mut line = Vec::with_capacity(256);
        let mut at = hasher.rows();
        while at < v.after_rows {
            match rows.next() {
                Ok(Some(row)) => {
                    line.clear();
                    line.extend_from_slice(ROW_PREFIX);
                    writer.write(row, &mut line);
                    line.push(b'}');
                    hasher.update_line(&line);
                    super::limits::row_produced();
                    at += 1;
                    state.replayed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(None) => return Err(mismatch()),
                Err(e) => return Err(stopped(e)),
            }
        }
        if !hasher.matches_hex(v.prefix_hash) {
            return Err(mismatch());
        }
        if !on_verified(hasher) {
            return Ok(Outcome::Stopped(StopCause::Disconnect));
        }
    }
    let pump = Pump {
        pipe,
        producing: &state.producing,
        cores: state.cores,
        ctl,
        clock: &state.clock,
        expires_at_ms,
        writer,
        hidden_rowid,
        checkpoints,
    };
    Ok(pump.run(&mut rows))
}

/// A resume of `handle`'s cursor.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_resume(
    state: Arc<AppState>,
    caller: Caller,
    handle: CursorHandle<Pinned>,
    req: ResumeRequest,
    pipe: Arc<Pipe>,
    ctl: Arc<StreamCtl>,
    ready: Ready,
) {
    let mut guard = LeaseGuard::new(&state, &pipe, &ctl, &caller);
    let mut ready = Some(ready);
    let p = handle.payload.clone();
    let reject = |ready: &mut Option<Ready>, r: Refusal| {
        if matches!(
            r.code,
            ErrorCode::PrefixHashMismatch | ErrorCode::CursorExpired
        ) {
            state.record(AuditEvent::CursorRejected {
                at_ms: state.now_ms(),
                code: r.code.as_str().to_owned(),
                principal: caller.scope.principal.clone(),
                tenant: caller.scope.tenant.clone(),
            });
        }
        if let Some(tx) = ready.take() {
            let _ = tx.send(Err(r));
        }
    };
    let cap = match resume_capacity(&state, &caller, &p) {
        Ok(c) => c,
        Err(r) => return reject(&mut ready, r),
    };
    // One response per cursor at a time: a resume takes over from a response
    // still running (typically one whose client vanished unnoticed).
    if let Some(prev) = lock(&p.running).replace(ctl.clone()) {
        prev.stop(StopCause::Superseded);
    }
    link_cursor(&ctl, &handle, state.clock.clone());
    let conn_guard = lock(&p.conn);
    let Some(rc) = conn_guard.as_ref() else {
        return reject(
            &mut ready,
            Refusal::new(
                ErrorCode::CursorExpired,
                "the cursor's snapshot is no longer available",
            ),
        );
    };
    if ctl.is_stopped() && ctl.cause() != Some(StopCause::Disconnect) {
        let r = if ctl.cause() == Some(StopCause::Cancel) {
            Refusal::new(ErrorCode::CursorCancelled, "cursor was cancelled")
        } else if ctl.cause() == Some(StopCause::Shutdown) {
            Refusal::new(ErrorCode::ShuttingDown, "the server is shutting down")
        } else {
            Refusal::new(ErrorCode::CursorExpired, "cursor has expired")
        };
        return reject(&mut ready, r);
    }
    let expires_at_ms = handle.info.expires_at_ms;
    let cp = {
        let cps = lock(&p.checkpoints);
        cps.iter()
            .rev()
            .find(|c| c.rows <= req.after_rows && (p.plan.is_none() || c.rowid.is_some()))
            .cloned()
    };
    let (sql, skip, start) = match (&p.plan, cp) {
        (Some(plan), Some(cp)) if plan.seeks() => (plan.sql(cp.rowid), 0, cp.hasher),
        (Some(plan), Some(cp)) => (plan.sql(None), cp.rows, cp.hasher),
        (Some(plan), None) => (plan.sql(None), 0, PrefixHasher::new()),
        (None, Some(cp)) => (p.query.clone(), cp.rows, cp.hasher),
        (None, None) => (p.query.clone(), 0, PrefixHasher::new()),
    };
    let mut started = false;
    let mut on_verified = |hasher: PrefixHasher| {
        let now = state.now_ms();
        let lease = match state.leases.open_stream(OpenStream {
            scope: caller.scope.clone(),
            snapshot_lsn: p.snapshot_lsn,
            config: p.cfg.clone(),
            in_transaction: false,
            pinned_at_ms: p.pinned_at_ms,
            now_ms: now,
        }) {
            Ok(l) => l,
            Err(_) => return false,
        };
        let open = OpenFrame {
            lease: lease.handle().to_owned(),
            snapshot_lsn: p.snapshot_lsn,
            resumable: true,
            reason: None,
            cursor: Some(handle.token.clone()),
            expires_at_ms: lease.expires_at_ms,
            columns: p.columns.clone(),
            after_rows: req.after_rows,
        };
        pipe.start(
            encoder(&state, &p.cfg, hasher, req.after_rows, lease.handle()),
            &open,
        );
        state.record(AuditEvent::StreamResumed {
            at_ms: now,
            lease: lease.handle().to_owned(),
            first_lease: p.first_lease.clone(),
            after_rows: req.after_rows,
            principal: caller.scope.principal.clone(),
            tenant: caller.scope.tenant.clone(),
        });
        audit_token_expiry(&state, &caller, &lease);
        guard.lease = Some(lease);
        started = true;
        if ready.take().is_some_and(|tx| tx.send(Ok(())).is_err()) {
            ctl.stop(StopCause::Disconnect);
        }
        true
    };
    let _watchdog = ttl_watchdog(&ctl, &state, expires_at_ms);
    let result = execute(
        &state,
        rc,
        &sql,
        p.params.as_ref(),
        &pipe,
        &ctl,
        expires_at_ms,
        &p.writer,
        p.plan.is_some(),
        Some((&p.checkpoints, state.checkpoint_every)),
        Some((
            Verify {
                after_rows: req.after_rows,
                prefix_hash: &req.prefix_hash,
                start,
                skip,
            },
            &mut on_verified,
        )),
    );
    let lost = rc.conn.is_autocommit();
    drop(conn_guard);
    if lost {
        lock(&p.conn).take();
    }
    match result {
        Ok(outcome) if started => finish(&mut guard, &pipe, outcome, cap),
        Ok(_) => {}
        Err(r) if started => finish(&mut guard, &pipe, Outcome::Failed(r.body), cap),
        Err(r) => {
            let r = if ctl.is_stopped() {
                match ctl.cause() {
                    Some(StopCause::Cancel) => {
                        Refusal::new(ErrorCode::CursorCancelled, "cursor was cancelled")
                    }
                    Some(StopCause::SnapshotExpired) => {
                        Refusal::new(ErrorCode::CursorExpired, "cursor has expired")
                    }
                    _ => Refusal::new(
                        ErrorCode::ShuttingDown,
                        "the stream was stopped before it started",
                    ),
                }
            } else {
                r
            };
            reject(&mut ready, r)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_introspection_works_through_the_gate() {
        let dir = std::env::temp_dir().join(format!("rs-introspect-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let _ = std::fs::remove_file(&path);
        let c = rusqlite::Connection::open(&path).unwrap();
        c.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT)")
            .unwrap();
        let rc = ReadConn::open(&path, None).unwrap();
        assert_eq!(
            table_columns(&rc, "t"),
            Some(vec!["id".to_string(), "name".to_string()])
        );
        assert_eq!(integer_primary_key(&rc, "t").as_deref(), Some("id"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
