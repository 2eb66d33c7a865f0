//! Producing one response, fresh or resumed, on a blocking thread: the one
//! stream orchestration (lease, cursor, capacity, checkpoints, producer,
//! digest, encoding hand-off) for every backend. The database is reached
//! only through [`backend`](super::backend)'s traits.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::backend::{
    Outcome, Params, ReadBackend, ResumeKey, ResumePlan, RowSource, Run, Session, Shape, Snapshot,
};
use super::handoff::{self, Stepper, RING_BYTES};
use super::pipe::{Pipe, SharedClock, StopCause, StreamCtl};
use super::state::{CheckpointRecord, CursorRecord, SharedState, Slot};
use super::{lock, AppState, Caller};
use crate::core::audit::AuditEvent;
use crate::core::capacity::CapacityLimits;
use crate::core::close::CloseReason;
use crate::core::config::StreamConfig;
use crate::core::cursor::{CursorHandle, NewCursor};
use crate::core::digest::{sha256_hex, PrefixHasher};
use crate::core::lease::{OpenStream, StreamLease};
use crate::core::producer::ChunkProducer;
use crate::core::protocol::{
    Column, CountMode, ErrorBody, ErrorCode, OpenFrame, RowTotal, StreamEncoder, ROW_PREFIX,
};

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

/// A resume checkpoint: after `rows` rows, the digest state and (with a
/// seeking plan) the key of the last row sent.
#[derive(Debug, Clone)]
pub(crate) struct Checkpoint {
    rows: u64,
    key: Option<ResumeKey>,
    hasher: PrefixHasher,
}

/// A cursor's payload: the session holding the pinned snapshot (its read
/// transaction stays open until the TTL) and what is needed to re-run the
/// query.
pub(crate) struct Pinned {
    /// Pinned by this process (not adopted from another instance).
    local: bool,
    backend: Arc<dyn ReadBackend>,
    session: Mutex<Option<Box<dyn Session>>>,
    query: String,
    params: Option<Params>,
    columns: Vec<Column>,
    shape: Shape,
    plan: Option<Arc<dyn ResumePlan>>,
    cfg: StreamConfig,
    pinned_at_ms: u64,
    snapshot: Snapshot,
    first_lease: String,
    checkpoints: Mutex<Vec<Checkpoint>>,
    running: Mutex<Option<Arc<StreamCtl>>>,
    counter: Arc<AtomicUsize>,
    /// (1.1) The first answer to the request's `count`, repeated by resumes.
    total: Option<RowTotal>,
    /// (1.1) The request's `progress_ms` (after clamping), kept by resumes.
    progress_ms: Option<u64>,
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
    /// (1.1) `count`.
    pub(crate) count: CountMode,
    /// (1.1) `progress_ms`, as asked (clamped here to `stream.progress.min_ms`).
    pub(crate) progress_ms: Option<u64>,
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
) -> Result<Slot, Refusal> {
    let limits = CapacityLimits {
        max_global: cfg.max_global,
        max_per_principal: cfg.max_per_principal,
    };
    state
        .shared
        .acquire_slot(&caller.scope, limits)
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
fn resume_capacity(state: &AppState, caller: &Caller, p: &Pinned) -> Result<Slot, Refusal> {
    let limits = CapacityLimits {
        max_global: p.cfg.max_global,
        max_per_principal: p.cfg.max_per_principal,
    };
    if let Ok(g) = state.shared.acquire_slot(&caller.scope, limits) {
        return Ok(g);
    }
    let prev = lock(&p.running).clone();
    if let Some(prev) = prev {
        prev.stop(StopCause::Superseded);
        let until = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
            if let Ok(g) = state.shared.acquire_slot(&caller.scope, limits) {
                return Ok(g);
            }
        }
    }
    // Records the refusal.
    capacity(state, caller, &p.cfg)
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
    /// The statement carries resume keys (a seeking plan).
    keyed: bool,
    checkpoints: Option<(&'a Mutex<Vec<Checkpoint>>, u64)>,
    /// Where every [`SHARED_CHECKPOINT_EVERY`]th checkpoint is published
    /// (the shared state and the cursor's token), so other instances resume
    /// near their row too.
    publish: Option<(&'a dyn SharedState, &'a str)>,
}

/// Every how many local checkpoints one goes to the shared state.
const SHARED_CHECKPOINT_EVERY: u64 = 4;

/// Keys of checkpoint rows, from the stepping thread to the encoding one.
type Keys = Mutex<VecDeque<(u64, ResumeKey)>>;

impl Pump<'_> {
    /// Streams every row of `rows` into the pipe: the first [`DIRECT_ROWS`]
    /// from this thread, the rest through a second, encoding thread while
    /// fewer streams are stepping than there are cores.
    fn run(&self, rows: &mut dyn RowSource) -> Outcome {
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
        let keys = Keys::default();
        let step = |stepper: &mut Stepper<'_>| self.step(rows, start + produced, stepper, &keys);
        let deliver =
            |a: &[u8], b: &[u8], scratch: &mut Vec<u8>| self.deliver(a, b, scratch, &keys);
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
        rows: &mut dyn RowSource,
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
            match rows.advance() {
                Ok(true) => {
                    *produced += 1;
                    if let Some(o) = self.produced(*produced) {
                        return Some(o);
                    }
                    let Some(n) = self.pipe.push_row(self.ctl, |buf| rows.write(buf)) else {
                        continue;
                    };
                    debug_assert_eq!(n, start + *produced);
                    if self.checkpoints.is_some_and(|(_, every)| n % every == 0) {
                        let key = if self.keyed { rows.key() } else { None };
                        if let Some(hasher) = self.pipe.inspect(|e| e.hasher().clone()) {
                            self.checkpoint(n, key, hasher);
                        }
                    }
                }
                Ok(false) => return Some(Outcome::Done),
                Err(e) => return Some(self.failed(e)),
            }
        }
    }

    /// The stepping thread's loop with an encoding thread: writes each row
    /// line and publishes it. `n` is the row count so far.
    fn step(
        &self,
        rows: &mut dyn RowSource,
        mut n: u64,
        stepper: &mut Stepper<'_>,
        keys: &Keys,
    ) -> Outcome {
        let mut line = Vec::with_capacity(512);
        let mut scratch = Vec::new();
        loop {
            if let Some(c) = self.ctl.cause() {
                return Outcome::Stopped(c);
            }
            match rows.advance() {
                Ok(true) => {
                    n += 1;
                    if let Some(o) = self.produced(n) {
                        return o;
                    }
                    if self.keyed && self.checkpoints.is_some_and(|(_, e)| n % e == 0) {
                        if let Some(k) = rows.key() {
                            lock(keys).push_back((n, k));
                        }
                    }
                    line.clear();
                    line.extend_from_slice(ROW_PREFIX);
                    rows.write(&mut line);
                    line.extend_from_slice(b"}\n");
                    if !stepper.send(&line) {
                        if line.len() > RING_BYTES && stepper.drain() {
                            // Longer than the ring: once the encoder has
                            // taken every earlier line, deliver it from here.
                            let _ = self.deliver(&line, &[], &mut scratch, keys);
                        } else if !self.ctl.is_stopped() {
                            // The encoder is gone without a stop: it
                            // panicked, and `handoff::run` raises that panic
                            // here once it has joined the thread.
                            return Outcome::Done;
                        }
                        // Stopped: the loop head returns.
                    }
                }
                Ok(false) => return Outcome::Done,
                Err(e) => return self.failed(e),
            }
        }
    }

    /// The encoding side: encodes a batch of published lines into the pipe,
    /// recording checkpoints as their rows pass.
    fn deliver(&self, a: &[u8], b: &[u8], scratch: &mut Vec<u8>, keys: &Keys) -> Option<()> {
        self.pipe
            .push_lines(self.ctl, a, b, scratch, |enc| {
                let n = enc.row_count();
                if self.checkpoints.is_some_and(|(_, every)| n % every == 0) {
                    let key = if self.keyed {
                        let mut q = lock(keys);
                        while q.front().is_some_and(|(m, _)| *m < n) {
                            q.pop_front();
                        }
                        q.front().filter(|(m, _)| *m == n).map(|(_, k)| k.clone())
                    } else {
                        None
                    };
                    self.checkpoint(n, key, enc.hasher().clone());
                }
            })
            .map(|_| ())
    }

    /// Bookkeeping for each row stepped; `Some` when the snapshot's TTL ran
    /// out.
    fn produced(&self, n: u64) -> Option<Outcome> {
        (n % TTL_CHECK_ROWS == 1 && self.clock.now_ms() > self.expires_at_ms)
            .then_some(Outcome::Stopped(StopCause::SnapshotExpired))
    }

    fn checkpoint(&self, rows: u64, key: Option<ResumeKey>, hasher: PrefixHasher) {
        if let Some((cps, every)) = self.checkpoints {
            if let Some((shared, token)) = self.publish {
                if rows % (every * SHARED_CHECKPOINT_EVERY) == 0 && (key.is_some() || !self.keyed) {
                    shared.save_checkpoint(
                        token,
                        CheckpointRecord {
                            rows,
                            key: key.clone(),
                            hasher: hasher.export_state().to_bytes(),
                        },
                    );
                }
            }
            let mut cps = lock(cps);
            if cps.last().is_none_or(|c| c.rows < rows) {
                cps.push(Checkpoint { rows, key, hasher });
            }
        }
    }

    fn failed(&self, e: ErrorBody) -> Outcome {
        match self.ctl.cause() {
            Some(c) => Outcome::Stopped(c),
            None => Outcome::Failed(e),
        }
    }
}

/// Ends the response: the audit record and the slot release happen before the
/// client can see the `end` line.
fn finish(guard: &mut LeaseGuard<'_>, pipe: &Pipe, outcome: Outcome, cap: Slot) {
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

fn stop_refusal(c: StopCause) -> Refusal {
    match c {
        StopCause::Shutdown => Refusal::new(ErrorCode::ShuttingDown, "the server is shutting down"),
        StopCause::Cancel => Refusal::new(ErrorCode::CursorCancelled, "cursor was cancelled"),
        StopCause::SnapshotExpired => Refusal::new(ErrorCode::CursorExpired, "cursor has expired"),
        _ => Refusal::new(
            ErrorCode::ShuttingDown,
            "the stream was stopped before it started",
        ),
    }
}

/// A fresh stream, from the first check to the `end` line.
pub(crate) fn run_fresh(
    state: Arc<AppState>,
    caller: Caller,
    backend: Arc<dyn ReadBackend>,
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
    let mut session = match backend.session() {
        Ok(s) => s,
        Err(e) => return refuse(&mut ready, Refusal::from_body(e)),
    };
    let cfg = StreamConfig::load_over(&session.runtime_config(), &state.boot);

    // Gate the client's SQL; nothing runs before this passes.
    let prepared = match session.prepare(&req.query, req.params.as_ref()) {
        Ok(p) => p,
        Err(body) => {
            backend.checkin(session);
            return refuse(&mut ready, Refusal::from_body(body));
        }
    };
    let res = prepared.resumability;
    let cap = match capacity(&state, &caller, &cfg) {
        Ok(c) => c,
        Err(r) => {
            backend.checkin(session);
            return refuse(&mut ready, r);
        }
    };
    if let Some(c) = ctl.cause() {
        drop(cap);
        backend.checkin(session);
        return refuse(
            &mut ready,
            if c == StopCause::Shutdown {
                stop_refusal(c)
            } else {
                Refusal::new(ErrorCode::InternalError, "stopped before start")
            },
        );
    }
    let snapshot = match session.pin() {
        Ok(s) => s,
        Err(e) => return refuse(&mut ready, Refusal::from_body(e)),
    };
    // (1.1) The total, in the pinned snapshot, before the first row.
    let total = if req.count == CountMode::None {
        None
    } else {
        let run = Run {
            query: &req.query,
            params: req.params.as_ref(),
            columns: &prepared.columns,
            shape: req.shape,
            plan: None,
            after: None,
            replay: 0,
        };
        match session.total(&run, req.count, &ctl) {
            Ok(t) => Some(t),
            Err(e) => {
                let r = match ctl.cause() {
                    Some(c) => stop_refusal(c),
                    None => Refusal::from_body(e),
                };
                return refuse(&mut ready, r);
            }
        }
    };
    let progress_ms = req.progress_ms.map(|ms| ms.max(cfg.progress_min_ms));
    let now = state.now_ms();
    let lease = match state.leases.open_stream(OpenStream {
        scope: caller.scope.clone(),
        snapshot_lsn: snapshot.lsn,
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

    // Resumable: the session (and its read transaction) moves into the
    // cursor's payload and stays pinned until the TTL.
    // Each pinned snapshot holds a connection (file descriptors, cache) and
    // storage growth: past `max_pinned`, streams are served without a cursor.
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
    let plan = prepared.plan.filter(|_| resumable);
    let payload = resumable.then(|| {
        Arc::new(Pinned {
            local: true,
            backend: backend.clone(),
            session: Mutex::new(None),
            query: req.query.clone(),
            params: req.params.clone(),
            columns: prepared.columns.clone(),
            shape: req.shape,
            plan: plan.clone(),
            cfg: cfg.clone(),
            pinned_at_ms: now,
            snapshot: snapshot.clone(),
            first_lease: lease.handle().to_owned(),
            checkpoints: Mutex::new(Vec::new()),
            running: Mutex::new(Some(ctl.clone())),
            counter: state.pinned.clone(),
            total,
            progress_ms,
        })
    });
    // The session runs the stream from inside the payload, so a resume that
    // supersedes this response waits for it there.
    let mut own = Some(session);
    let mut held = payload.as_ref().map(|p| {
        let mut g = lock(&p.session);
        *g = own.take();
        g
    });
    let Some(session) = held.as_mut().and_then(|g| g.as_mut()).or(own.as_mut()) else {
        return;
    };
    let columns = prepared.columns;
    let run = Run {
        query: &req.query,
        params: req.params.as_ref(),
        columns: &columns,
        shape: req.shape,
        plan: plan.as_ref(),
        after: None,
        replay: 0,
    };
    let mut started = false;
    let mut lease = Some(lease);
    let mut watchdog = None;
    let mut body = |rows: &mut dyn RowSource| -> Outcome {
        let Some(lease) = lease.take() else {
            return Outcome::Done;
        };
        let handle = match &payload {
            Some(p) => match state.cursors.register_shared(
                NewCursor {
                    scope: caller.scope.clone(),
                    query: req.query.clone(),
                    snapshot_lsn: snapshot.lsn,
                    first_lease: lease.handle().to_owned(),
                    expires_at_ms: lease.expires_at_ms,
                },
                p.clone(),
            ) {
                Ok(h) => {
                    let record = CursorRecord {
                        scope: caller.scope.clone(),
                        query: req.query.clone(),
                        params: req.params.clone(),
                        shape: req.shape,
                        columns: columns.clone(),
                        cfg: cfg.clone(),
                        snapshot: snapshot.clone(),
                        first_lease: lease.handle().to_owned(),
                        pinned_at_ms: now,
                        expires_at_ms: lease.expires_at_ms,
                        total,
                        progress_ms,
                    };
                    if let Err(e) = state.shared.publish_cursor(&h.token, &record) {
                        // Resumable here only: not a reason to fail the stream.
                        tracing_warn(&format!("cursor not shared with the cluster: {e}"));
                    }
                    Some(h)
                }
                Err(e) => {
                    refuse(
                        &mut ready,
                        Refusal::new(ErrorCode::InternalError, e.to_string()),
                    );
                    return Outcome::Done;
                }
            },
            None => None,
        };
        if let Some(h) = &handle {
            link_cursor(&ctl, h, state.clock.clone());
        }
        let open = OpenFrame {
            lease: lease.handle().to_owned(),
            snapshot_lsn: snapshot.lsn,
            resumable,
            reason: not_resumable_reason.clone(),
            cursor: handle.as_ref().map(|h| h.token.clone()),
            expires_at_ms: lease.expires_at_ms,
            columns: columns.clone(),
            after_rows: 0,
            total,
        };
        pipe.set_ticks(cfg.heartbeat_ms, progress_ms);
        pipe.start(
            encoder(&state, &cfg, PrefixHasher::new(), 0, lease.handle()),
            &open,
        );
        state.record(AuditEvent::StreamOpened {
            at_ms: now,
            lease: lease.handle().to_owned(),
            principal: caller.scope.principal.clone(),
            tenant: caller.scope.tenant.clone(),
            snapshot_lsn: snapshot.lsn,
            query_hash: sha256_hex(req.query.as_bytes()),
        });
        audit_token_expiry(&state, &caller, &lease);
        let expires_at_ms = lease.expires_at_ms;
        guard.lease = Some(lease);
        started = true;
        if ready.take().is_some_and(|tx| tx.send(Ok(())).is_err()) {
            ctl.stop(StopCause::Disconnect);
        }
        watchdog = Some(ttl_watchdog(&ctl, &state, expires_at_ms));
        let pump = Pump {
            pipe: &pipe,
            producing: &state.producing,
            cores: state.cores,
            ctl: &ctl,
            clock: &state.clock,
            expires_at_ms,
            keyed: plan.as_ref().is_some_and(|p| p.seeks()),
            checkpoints: payload
                .as_ref()
                .map(|p| (&p.checkpoints, state.checkpoint_every)),
            publish: handle.as_ref().map(|h| (&*state.shared, h.token.as_str())),
        };
        pump.run(rows)
    };
    let result = session.execute(&run, &ctl, &mut body);
    drop(watchdog);
    match &mut held {
        Some(g) => {
            // Idle until resumed: give the cache back. A session that lost
            // its snapshot cannot serve resumes.
            match g.as_mut() {
                Some(s) if s.holds_snapshot() => s.idle(),
                _ => {
                    g.take();
                }
            }
        }
        None => {
            if let Some(s) = own {
                backend.checkin(s);
            }
        }
    }
    drop(held);
    match result {
        Ok(outcome) if started => finish(&mut guard, &pipe, outcome, cap),
        Ok(_) => {}
        Err(e) if started => finish(&mut guard, &pipe, Outcome::Failed(e), cap),
        Err(e) => {
            let r = match ctl.cause() {
                Some(c) => stop_refusal(c),
                None => Refusal::from_body(e),
            };
            refuse(&mut ready, r)
        }
    }
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

/// A resume of `handle`'s cursor.
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
            ErrorCode::PrefixHashMismatch
                | ErrorCode::CursorExpired
                | ErrorCode::SnapshotUnavailable
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
    let Some(mut held) = lock_unless_stopped(&p.session, &ctl) else {
        let c = ctl.cause().unwrap_or(StopCause::Cancel);
        return reject(&mut ready, stop_refusal(c));
    };
    // The pinning session, or (when it is gone) one importing the snapshot.
    let mut imported = None;
    if held.is_none() {
        match p.backend.import(&p.snapshot) {
            Ok(s) => imported = Some(s),
            Err(e) => {
                let e = if e.code == ErrorCode::SnapshotUnavailable.as_str() && p.local {
                    ErrorBody::new(
                        ErrorCode::CursorExpired,
                        "the cursor's snapshot is no longer available",
                    )
                } else {
                    e
                };
                return reject(&mut ready, Refusal::from_body(e));
            }
        }
    }
    let Some(session) = held.as_mut().or(imported.as_mut()) else {
        return;
    };
    if ctl.is_stopped() && ctl.cause() != Some(StopCause::Disconnect) {
        let c = ctl.cause().unwrap_or(StopCause::Cancel);
        return reject(&mut ready, stop_refusal(c));
    }
    let expires_at_ms = handle.info.expires_at_ms;
    let seeks = p.plan.as_ref().is_some_and(|pl| pl.seeks());
    let cp = {
        let cps = lock(&p.checkpoints);
        cps.iter()
            .rev()
            .find(|c| c.rows <= req.after_rows && (!seeks || c.key.is_some()))
            .cloned()
    };
    // With a seeking plan the statement starts right after the checkpoint's
    // row; otherwise it starts from row 0 and skips to the checkpoint.
    let (after, skip, start) = match cp {
        Some(cp) if seeks => (cp.key, 0, cp.hasher),
        Some(cp) => (None, cp.rows, cp.hasher),
        None => (None, 0, PrefixHasher::new()),
    };
    // The statement starts after the checkpoint's row when it seeks.
    let from = if after.is_some() { start.rows() } else { 0 };
    let run = Run {
        query: &p.query,
        params: p.params.as_ref(),
        columns: &p.columns,
        shape: p.shape,
        plan: p.plan.as_ref(),
        after: after.as_ref(),
        replay: req.after_rows.saturating_sub(from),
    };
    let mut started = false;
    let mut watchdog = None;
    let mut verify_error = None;
    let mut body = |rows: &mut dyn RowSource| -> Outcome {
        let mismatch = || {
            Refusal::new(
                ErrorCode::PrefixHashMismatch,
                "the prefix_hash does not match the first after_rows rows of the pinned snapshot",
            )
        };
        let stopped = |e: ErrorBody| {
            if ctl.is_stopped() {
                Refusal::new(ErrorCode::InternalError, "stopped")
            } else {
                Refusal::from_body(e)
            }
        };
        state.replayed.fetch_add(skip, Ordering::Relaxed);
        for _ in 0..skip {
            match rows.advance() {
                Ok(true) => {}
                Ok(false) => {
                    verify_error = Some(mismatch());
                    return Outcome::Done;
                }
                Err(e) => {
                    verify_error = Some(stopped(e));
                    return Outcome::Done;
                }
            }
        }
        let mut hasher = start.clone();
        let mut line = Vec::with_capacity(256);
        let mut at = hasher.rows();
        while at < req.after_rows {
            match rows.advance() {
                Ok(true) => {
                    line.clear();
                    line.extend_from_slice(ROW_PREFIX);
                    rows.write(&mut line);
                    line.push(b'}');
                    hasher.update_line(&line);
                    at += 1;
                    state.replayed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(false) => {
                    verify_error = Some(mismatch());
                    return Outcome::Done;
                }
                Err(e) => {
                    verify_error = Some(stopped(e));
                    return Outcome::Done;
                }
            }
        }
        if !hasher.matches_hex(&req.prefix_hash) {
            verify_error = Some(mismatch());
            return Outcome::Done;
        }
        let now = state.now_ms();
        let lease = match state.leases.open_stream(OpenStream {
            scope: caller.scope.clone(),
            snapshot_lsn: p.snapshot.lsn,
            config: p.cfg.clone(),
            in_transaction: false,
            pinned_at_ms: p.pinned_at_ms,
            now_ms: now,
        }) {
            Ok(l) => l,
            Err(_) => return Outcome::Stopped(StopCause::Disconnect),
        };
        let open = OpenFrame {
            lease: lease.handle().to_owned(),
            snapshot_lsn: p.snapshot.lsn,
            resumable: true,
            reason: None,
            cursor: Some(handle.token.clone()),
            expires_at_ms: lease.expires_at_ms,
            columns: p.columns.clone(),
            after_rows: req.after_rows,
            total: p.total,
        };
        pipe.set_ticks(p.cfg.heartbeat_ms, p.progress_ms);
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
        watchdog = Some(ttl_watchdog(&ctl, &state, expires_at_ms));
        let pump = Pump {
            pipe: &pipe,
            producing: &state.producing,
            cores: state.cores,
            ctl: &ctl,
            clock: &state.clock,
            expires_at_ms,
            keyed: seeks,
            checkpoints: Some((&p.checkpoints, state.checkpoint_every)),
            publish: Some((&*state.shared, handle.token.as_str())),
        };
        pump.run(rows)
    };
    let result = session.execute(&run, &ctl, &mut body);
    drop(watchdog);
    let lost = !session.holds_snapshot();
    if lost {
        held.take();
    }
    drop(held);
    if let Some(s) = imported {
        p.backend.checkin(s);
    }
    let result = match (result, verify_error) {
        (Ok(_), Some(r)) => Err(r),
        (Ok(o), None) => Ok(o),
        (Err(e), _) => Err(Refusal::from_body(e)),
    };
    match result {
        Ok(outcome) if started => finish(&mut guard, &pipe, outcome, cap),
        Ok(_) => {}
        Err(r) if started => finish(&mut guard, &pipe, Outcome::Failed(r.body), cap),
        Err(r) => {
            let r = match ctl.cause() {
                Some(c) if r.code != ErrorCode::PrefixHashMismatch => stop_refusal(c),
                _ => r,
            };
            reject(&mut ready, r)
        }
    }
}

fn tracing_warn(msg: &str) {
    tracing::warn!(target: "rowstream::cluster", "{msg}");
}

/// A cursor another instance published, made resumable here: a session
/// importing its snapshot (when the pinning instance still holds it) and its
/// resume plan. Adopted into this process's registry under the same token,
/// so cancels and supersedes reach the response serving it.
pub(crate) fn adopt_remote(
    state: &AppState,
    token: &str,
    record: CursorRecord,
    checkpoints: Vec<CheckpointRecord>,
) -> Option<CursorHandle<Pinned>> {
    let checkpoints = checkpoints
        .into_iter()
        .filter_map(|c| {
            let hasher = crate::core::digest::HasherState::from_bytes(&c.hasher)
                .ok()
                .and_then(|h| PrefixHasher::from_state(h).ok())
                .filter(|h| h.rows() == c.rows)?;
            Some(Checkpoint {
                rows: c.rows,
                key: c.key,
                hasher,
            })
        })
        .collect();
    let backend = state.tenants.get(&record.scope.tenant)?.reader();
    let (session, plan) = match backend.import(&record.snapshot) {
        Ok(mut s) => match s.prepare(&record.query, record.params.as_ref()) {
            Ok(p) => (Some(s), p.plan.filter(|_| p.resumability.resumable)),
            Err(_) => (None, None),
        },
        Err(_) => (None, None),
    };
    state.pinned.fetch_add(1, Ordering::SeqCst);
    let payload = Arc::new(Pinned {
        local: false,
        backend,
        session: Mutex::new(session),
        query: record.query.clone(),
        params: record.params,
        columns: record.columns,
        shape: record.shape,
        plan,
        cfg: record.cfg,
        pinned_at_ms: record.pinned_at_ms,
        snapshot: record.snapshot.clone(),
        first_lease: record.first_lease.clone(),
        checkpoints: Mutex::new(checkpoints),
        running: Mutex::new(None),
        counter: state.pinned.clone(),
        total: record.total,
        progress_ms: record.progress_ms,
    });
    state.cursors.adopt(
        token,
        NewCursor {
            scope: record.scope,
            query: record.query,
            snapshot_lsn: record.snapshot.lsn,
            first_lease: record.first_lease,
            expires_at_ms: record.expires_at_ms,
        },
        payload,
    )
}

/// Resolves a resume's cursor: this process's registry first, then the
/// shared state (a cursor another instance published), which is adopted.
/// Blocking (it may ask the cluster database and import a snapshot).
pub(crate) fn resolve_cursor(
    state: &AppState,
    token: &str,
    scope: &crate::core::lease::Scope,
) -> Result<CursorHandle<Pinned>, crate::core::cursor::CursorError> {
    use crate::core::cursor::CursorError;
    let now = state.now_ms();
    match state.cursors.resolve(token, scope, now) {
        Err(CursorError::NotFound) => {}
        other => return other,
    }
    match state.shared.lookup_cursor(token, scope, now)? {
        None => Err(CursorError::NotFound),
        Some((record, checkpoints)) => {
            // Whichever of two concurrent adopters wins, both get its handle.
            adopt_remote(state, token, record, checkpoints)
                .map_or_else(|| state.cursors.resolve(token, scope, now), Ok)
        }
    }
}
