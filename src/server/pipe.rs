//! The hand-off between a blocking producer thread and the HTTP body.
//!
//! A [`Pipe`] owns the stream's [`StreamEncoder`] (and so its
//! [`ChunkProducer`](crate::core::producer::ChunkProducer)) behind one mutex,
//! plus a small bounded queue of finished chunks:
//!
//! - the producer thread (SQLite stepping, or a user's iterator) locks it once
//!   per row to encode the row; a full chunk goes to the queue; when the queue
//!   holds [`MAX_QUEUED_CHUNKS`] chunks the thread waits (backpressure: a slow
//!   reader never makes the server buffer more than a few chunks);
//! - the [`PipeBody`] (polled by hyper) pops chunks, and when nothing is queued
//!   but rows are buffered it arms a tokio timer at the producer's
//!   [`next_deadline_ms`](crate::core::producer::ChunkProducer::next_deadline_ms)
//!   and calls `flush_if_due` when it fires — the latency cap holds while the
//!   query stalls between rows, without the stepping thread's help;
//! - dropping the body before the stream finished is a client disconnect: it
//!   raises the stream's [`StreamCtl`] with cause `disconnect`, which
//!   interrupts the running statement.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};

use super::compress::{Coding, Compressor};
use crate::core::cancel::CancelToken;
use crate::core::clock::Clock;
use crate::core::close::CloseReason;
use crate::core::producer::ChunkSink;
use crate::core::protocol::{ControlLine, Heartbeat, OpenFrame, ProgressFrame, StreamEncoder};

/// The clock every server component shares.
pub type SharedClock = Arc<dyn Clock + Send + Sync>;

/// Chunks a pipe holds before its producer waits.
pub const MAX_QUEUED_CHUNKS: usize = 4;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why a running stream was stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopCause {
    /// The cancel endpoint.
    Cancel,
    /// The client went away.
    Disconnect,
    /// The server is shutting down.
    Shutdown,
    /// The snapshot's TTL ran out.
    SnapshotExpired,
    /// A resume of the same cursor took over.
    Superseded,
}

impl StopCause {
    /// `end.reason` / audit reason.
    pub fn reason(self) -> CloseReason {
        match self {
            StopCause::SnapshotExpired => CloseReason::SnapshotExpired,
            _ => CloseReason::Cancelled,
        }
    }

    /// Audit `cause`.
    pub fn cause(self) -> &'static str {
        match self {
            StopCause::Cancel => "cancel",
            StopCause::Disconnect => "disconnect",
            StopCause::Shutdown => "shutdown",
            StopCause::SnapshotExpired => "snapshot_expired",
            StopCause::Superseded => "superseded",
        }
    }
}

/// Control of one running response: a cancel token, the first cause that
/// raised it, and a hook that interrupts the statement being stepped.
pub struct StreamCtl {
    token: CancelToken,
    cause: OnceLock<StopCause>,
    interrupt: Mutex<Option<Box<dyn Fn() + Send>>>,
    pipe: Weak<Pipe>,
}

impl std::fmt::Debug for StreamCtl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamCtl")
            .field("cancelled", &self.token.is_cancelled())
            .field("cause", &self.cause.get())
            .finish()
    }
}

impl StreamCtl {
    /// A control for the stream feeding `pipe`.
    pub fn new(pipe: &Arc<Pipe>) -> Arc<StreamCtl> {
        let ctl = Arc::new(StreamCtl {
            token: CancelToken::new(),
            cause: OnceLock::new(),
            interrupt: Mutex::new(None),
            pipe: Arc::downgrade(pipe),
        });
        let weak = Arc::downgrade(&ctl);
        ctl.token.on_cancel(move || {
            if let Some(ctl) = weak.upgrade() {
                if let Some(i) = lock(&ctl.interrupt).as_ref() {
                    i();
                }
                if let Some(p) = ctl.pipe.upgrade() {
                    p.space.notify_all();
                }
            }
        });
        ctl
    }

    /// Stops the stream (the first cause wins). Idempotent.
    pub fn stop(&self, cause: StopCause) {
        let _ = self.cause.set(cause);
        self.token.cancel();
    }

    /// Whether the stream was told to stop.
    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// The cause, once stopped.
    pub fn cause(&self) -> Option<StopCause> {
        if self.token.is_cancelled() {
            Some(self.cause.get().copied().unwrap_or(StopCause::Cancel))
        } else {
            None
        }
    }

    /// Installs the interrupt hook (runs at once if already stopped).
    pub fn set_interrupt(&self, f: impl Fn() + Send + 'static) {
        let mut slot = lock(&self.interrupt);
        if self.token.is_cancelled() {
            f();
        }
        *slot = Some(Box::new(f));
    }

    /// Removes the interrupt hook (the statement is done).
    pub fn clear_interrupt(&self) {
        lock(&self.interrupt).take();
    }
}

struct PipeState<C: Clock> {
    enc: Option<StreamEncoder<C>>,
    queue: VecDeque<Bytes>,
    /// The response's `Content-Encoding` (`None`: identity).
    compressor: Option<Compressor>,
    /// A due latency-cap flush of a compressed stream was handed to the
    /// blocking pool (compression never runs on a tokio worker).
    flush_scheduled: bool,
    /// (1.1) Control lines: heartbeats after this much silence (0: never),
    /// progress lines at most this often.
    ticks: Ticks,
    finished: bool,
    waker: Option<Waker>,
    /// Producers waiting on `Pipe::space` (so a chunk taken by the body
    /// makes a `notify` system call only when someone waits for it).
    waiting_for_room: usize,
}

/// Where the producer's chunks go: straight into the queue, or through the
/// stream's compressor (one flush per chunk, so each chunk decodes at once).
struct QueueSink<'a> {
    queue: &'a mut VecDeque<Bytes>,
    compressor: Option<&'a mut Compressor>,
    /// When the body last got bytes (heartbeats count silence from there).
    last_write_ms: &'a mut u64,
    clock: &'a SharedClock,
}

/// The control-line timing of one response (PROTOCOL §2, 1.1).
#[derive(Debug, Clone, Copy, Default)]
struct Ticks {
    heartbeat_ms: u64,
    progress_ms: Option<u64>,
    /// When the request arrived (progress lines' `elapsed_ms`).
    started_ms: u64,
    /// When the body last got bytes.
    last_write_ms: u64,
    last_progress_ms: u64,
    last_progress_rows: u64,
}

impl Ticks {
    /// When the next heartbeat is due, if any (only while no row waits in
    /// the producer: the latency cap flushes those much sooner).
    fn heartbeat_at<C: Clock>(&self, enc: &mut StreamEncoder<C>) -> Option<u64> {
        (self.heartbeat_ms > 0 && enc.producer().buffered_bytes() == 0)
            .then(|| self.last_write_ms.saturating_add(self.heartbeat_ms))
    }
}

impl ChunkSink for QueueSink<'_> {
    type Error = Infallible;
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), Infallible> {
        let out = match self.compressor.as_mut() {
            Some(c) => Bytes::from(c.chunk(chunk)),
            None => Bytes::copy_from_slice(chunk),
        };
        self.push(out);
        Ok(())
    }
    fn take_chunk(&mut self, chunk: &mut Vec<u8>) -> Result<(), Infallible> {
        let out = match self.compressor.as_mut() {
            Some(c) => {
                let out = Bytes::from(c.chunk(chunk));
                chunk.clear();
                out
            }
            // The producer's buffer becomes the body chunk: no copy.
            None => Bytes::from(std::mem::take(chunk)),
        };
        self.push(out);
        Ok(())
    }
}

impl QueueSink<'_> {
    fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            *self.last_write_ms = self.clock.now_ms();
            self.queue.push_back(b);
        }
    }
}

impl<C: Clock> PipeState<C> {
    /// The encoder and a sink over the queue, borrowed together.
    fn parts<'a>(
        &'a mut self,
        clock: &'a SharedClock,
    ) -> (Option<&'a mut StreamEncoder<C>>, QueueSink<'a>) {
        let PipeState {
            enc,
            queue,
            compressor,
            ticks,
            ..
        } = self;
        (
            enc.as_mut(),
            QueueSink {
                queue,
                compressor: compressor.as_mut(),
                last_write_ms: &mut ticks.last_write_ms,
                clock,
            },
        )
    }
}

/// See the module docs.
pub struct Pipe {
    st: Mutex<PipeState<SharedClock>>,
    space: Condvar,
    clock: SharedClock,
}

impl std::fmt::Debug for Pipe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipe").finish_non_exhaustive()
    }
}

/// What [`Pipe::finish`] reports.
#[derive(Debug, Clone, Copy, Default)]
pub struct Finished {
    /// Rows from row 0.
    pub row_count: u64,
    /// Bytes of the whole response body.
    pub bytes: u64,
}

impl Pipe {
    /// An empty pipe; [`Pipe::start`] installs the encoder.
    pub fn new(clock: SharedClock) -> Arc<Pipe> {
        Arc::new(Pipe {
            st: Mutex::new(PipeState {
                enc: None,
                queue: VecDeque::new(),
                compressor: None,
                flush_scheduled: false,
                ticks: Ticks {
                    started_ms: clock.now_ms(),
                    last_write_ms: clock.now_ms(),
                    ..Ticks::default()
                },
                finished: false,
                waker: None,
                waiting_for_room: 0,
            }),
            space: Condvar::new(),
            clock,
        })
    }

    /// The clock.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// (1.1) Heartbeat lines after `heartbeat_ms` of silence (0: never) and
    /// progress lines at most every `progress_ms` while rows flow (before
    /// [`Pipe::start`]).
    pub fn set_ticks(&self, heartbeat_ms: u64, progress_ms: Option<u64>) {
        let mut st = lock(&self.st);
        st.ticks.heartbeat_ms = heartbeat_ms;
        st.ticks.progress_ms = progress_ms;
        st.ticks.last_progress_ms = st.ticks.started_ms;
    }

    /// Compresses the body with `c` (before [`Pipe::start`]).
    pub fn compress_with(&self, c: Compressor) {
        lock(&self.st).compressor = Some(c);
    }

    /// The body's `Content-Encoding`, `None` for identity.
    pub fn coding(&self) -> Option<Coding> {
        lock(&self.st).compressor.as_ref().map(|c| c.coding())
    }

    /// Installs the encoder and writes the `open` line.
    pub fn start(&self, enc: StreamEncoder<SharedClock>, open: &OpenFrame) {
        let mut st = lock(&self.st);
        st.enc = Some(enc);
        self.with_locked(&mut st, |enc, sink| {
            let _ = enc.open(open, sink);
            // The open line goes out at once: clients learn the cursor (and
            // that the query started) even if the first row takes a while.
            let _ = enc.producer().flush(sink);
        });
    }

    fn with_locked<R>(
        &self,
        st: &mut PipeState<SharedClock>,
        f: impl FnOnce(&mut StreamEncoder<SharedClock>, &mut QueueSink<'_>) -> R,
    ) -> Option<R> {
        let before = st.queue.len();
        let (enc, mut sink) = st.parts(&self.clock);
        let enc = enc?;
        let had_deadline = enc.producer().next_deadline_ms().is_some();
        let r = f(enc, &mut sink);
        let new_deadline = !had_deadline && enc.producer().next_deadline_ms().is_some();
        let emitted = st.queue.len() > before;
        if emitted && st.ticks.progress_ms.is_some() {
            self.progress_locked(st);
        }
        if emitted || new_deadline {
            if let Some(w) = st.waker.take() {
                w.wake();
            }
        }
        Some(r)
    }

    /// A progress line, when one is due: rows went out since the last one
    /// and `progress_ms` passed. Checked when a chunk was emitted, so the
    /// clock is read once per chunk, not per row.
    fn progress_locked(&self, st: &mut PipeState<SharedClock>) {
        let Some(every) = st.ticks.progress_ms else {
            return;
        };
        let now = self.clock.now_ms();
        let ticks = st.ticks;
        let (enc, mut sink) = st.parts(&self.clock);
        let Some(enc) = enc else { return };
        let rows = enc.row_count();
        if now < ticks.last_progress_ms.saturating_add(every) || rows <= ticks.last_progress_rows {
            return;
        }
        let line = ControlLine::Progress(ProgressFrame {
            rows,
            bytes: enc.body_bytes(),
            elapsed_ms: now.saturating_sub(ticks.started_ms),
        });
        let _ = enc.control(&line, &mut sink);
        st.ticks.last_progress_ms = now;
        st.ticks.last_progress_rows = rows;
    }

    /// A heartbeat line when `heartbeat_ms` passed without a byte.
    fn heartbeat_locked(&self, st: &mut PipeState<SharedClock>, now: u64) {
        let ticks = st.ticks;
        let (enc, mut sink) = st.parts(&self.clock);
        let Some(enc) = enc else { return };
        if ticks.heartbeat_at(enc).is_some_and(|at| now >= at) {
            let _ = enc.control(&ControlLine::Heartbeat(Heartbeat {}), &mut sink);
        }
    }

    /// Whatever the clock made due: the latency cap's flush, a progress
    /// line after it, a heartbeat. Wakes the body when bytes were queued.
    fn tick_locked(&self, st: &mut PipeState<SharedClock>) {
        let now = self.clock.now_ms();
        self.with_locked(st, |enc, sink| {
            let _ = enc.producer().flush_if_due(sink);
        });
        let before = st.queue.len();
        self.heartbeat_locked(st, now);
        if st.queue.len() > before {
            if let Some(w) = st.waker.take() {
                w.wake();
            }
        }
    }

    /// Waits until the queue has room (backpressure), then encodes one row
    /// with `write_value` (which appends the row's JSON value). Returns the
    /// encoder's row count after the row, or `None` when `ctl` was stopped.
    /// One lock per row.
    pub fn push_row(&self, ctl: &StreamCtl, write_value: impl FnOnce(&mut Vec<u8>)) -> Option<u64> {
        let mut st = self.lock_with_room(ctl, lock(&self.st))?;
        self.with_locked(&mut st, |enc, sink| {
            let _ = enc.row_with(write_value, sink);
            enc.row_count()
        })
    }

    /// Encodes every complete row line of `a` then `b` (the two halves of a
    /// ring buffer's readable region: newline-terminated `{"row":…}` lines,
    /// one of which may straddle the halves) under one lock, a chunk's worth
    /// of lines at a time, waiting for room in the queue between chunks.
    /// `on_row` sees the encoder after each row (checkpoints). Returns the
    /// row count after the last line, or `None` when `ctl` was stopped.
    pub fn push_lines(
        &self,
        ctl: &StreamCtl,
        a: &[u8],
        b: &[u8],
        scratch: &mut Vec<u8>,
        mut on_row: impl FnMut(&StreamEncoder<SharedClock>),
    ) -> Option<u64> {
        let mut st = lock(&self.st);
        let (s, took) = self.push_run(ctl, st, a, &mut on_row)?;
        st = s;
        let tail = &a[took..];
        let mut b = b;
        if !tail.is_empty() {
            // The line straddling the ring's two halves, in one piece.
            let Some(i) = memchr::memchr(b'\n', b) else {
                debug_assert!(false, "the ring holds whole lines");
                return None;
            };
            scratch.clear();
            scratch.extend_from_slice(tail);
            scratch.extend_from_slice(&b[..=i]);
            b = &b[i + 1..];
            let (s, took) = self.push_run(ctl, st, scratch, &mut on_row)?;
            debug_assert_eq!(took, scratch.len());
            st = s;
        }
        let (s, took) = self.push_run(ctl, st, b, &mut on_row)?;
        debug_assert_eq!(took, b.len(), "the ring holds whole lines");
        st = s;
        // The latency cap, once per batch.
        self.with_locked(&mut st, |enc, sink| {
            let _ = enc.producer().flush_if_due(sink);
            enc.row_count()
        })
    }

    /// Encodes the whole lines of `block`, a chunk's worth at a time,
    /// waiting for room in the queue before each; returns the bytes taken
    /// (all but a partial last line).
    fn push_run<'g>(
        &self,
        ctl: &StreamCtl,
        mut st: MutexGuard<'g, PipeState<SharedClock>>,
        block: &[u8],
        on_row: &mut impl FnMut(&StreamEncoder<SharedClock>),
    ) -> Option<(MutexGuard<'g, PipeState<SharedClock>>, usize)> {
        let mut done = 0;
        loop {
            st = self.lock_with_room(ctl, st)?;
            let took = self.with_locked(&mut st, |enc, sink| {
                match enc.batch_row_lines(&block[done..], sink, &mut *on_row) {
                    Ok(took) => took,
                    Err(never) => match never {},
                }
            })?;
            if took == 0 {
                return Some((st, done));
            }
            done += took;
        }
    }

    /// Waits (on the lock `st`) until the queue has room; `None` once `ctl`
    /// is stopped.
    fn lock_with_room<'g>(
        &self,
        ctl: &StreamCtl,
        mut st: MutexGuard<'g, PipeState<SharedClock>>,
    ) -> Option<MutexGuard<'g, PipeState<SharedClock>>> {
        while st.queue.len() >= MAX_QUEUED_CHUNKS {
            if ctl.is_stopped() {
                return None;
            }
            st.waiting_for_room += 1;
            st = self
                .space
                .wait_timeout(st, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
            st.waiting_for_room -= 1;
        }
        (!ctl.is_stopped()).then_some(st)
    }

    /// Runs `f` on the encoder (checkpoints read the hasher here).
    pub fn inspect<R>(&self, f: impl FnOnce(&StreamEncoder<SharedClock>) -> R) -> Option<R> {
        let st = lock(&self.st);
        st.enc.as_ref().map(f)
    }

    /// Writes the optional error line and the `end` line, then closes the
    /// pipe. `before_visible` runs while the end line is still invisible to
    /// the body (audit records and slot releases happen-before the client
    /// can see the end).
    pub fn finish(
        &self,
        error: Option<&crate::core::protocol::ErrorBody>,
        reason: CloseReason,
        before_visible: impl FnOnce(Finished),
    ) -> Finished {
        let mut st = lock(&self.st);
        let (enc, mut sink) = st.parts(&self.clock);
        let out = enc
            .map(|enc| {
                let _ = enc.error_then_end(error, reason, &mut sink);
                Finished {
                    row_count: enc.row_count(),
                    bytes: enc.totals().bytes,
                }
            })
            .unwrap_or_default();
        // The compressed stream's last block follows the end line.
        if let Some(tail) = st.compressor.as_mut().map(Compressor::finish) {
            if !tail.is_empty() {
                st.queue.push_back(Bytes::from(tail));
            }
        }
        before_visible(out);
        st.enc = None;
        st.finished = true;
        if let Some(w) = st.waker.take() {
            w.wake();
        }
        out
    }

    /// Closes the pipe without an end line (used before the stream started).
    pub fn abort(&self) {
        let mut st = lock(&self.st);
        st.enc = None;
        st.finished = true;
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    /// The body took a chunk (`st` is the state after it). A producer waiting for room
    /// is woken once the queue is half empty, not for every chunk: under
    /// backpressure it then fills two chunks per wake-up.
    fn made_room(&self, st: &PipeState<SharedClock>) {
        if st.waiting_for_room > 0 && st.queue.len() <= MAX_QUEUED_CHUNKS / 2 {
            self.space.notify_all();
        }
    }

    /// The latency cap's flush of a compressed stream (see
    /// [`PipeBody`]'s poll), off the tokio workers.
    fn flush_due(&self) {
        let mut st = lock(&self.st);
        st.flush_scheduled = false;
        self.tick_locked(&mut st);
        // Nothing was due any more (the producer flushed first): the body
        // re-arms its timer when polled.
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    fn is_drained(&self) -> bool {
        let st = lock(&self.st);
        st.finished && st.queue.is_empty()
    }
}

/// The streamed response body of a [`Pipe`].
pub struct PipeBody {
    pipe: Arc<Pipe>,
    ctl: Arc<StreamCtl>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    done: bool,
}

impl std::fmt::Debug for PipeBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PipeBody")
            .field("done", &self.done)
            .finish()
    }
}

impl PipeBody {
    /// A body reading `pipe`; dropping it early stops `ctl` (disconnect).
    pub fn new(pipe: Arc<Pipe>, ctl: Arc<StreamCtl>) -> Self {
        PipeBody {
            pipe,
            ctl,
            sleep: None,
            done: false,
        }
    }
}

impl Body for PipeBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        loop {
            let wait_ms = {
                let mut st = lock(&this.pipe.st);
                if let Some(chunk) = st.queue.pop_front() {
                    this.pipe.made_room(&st);
                    return Poll::Ready(Some(Ok(Frame::data(chunk))));
                }
                if st.finished {
                    this.done = true;
                    return Poll::Ready(None);
                }
                let now = this.pipe.clock.now_ms();
                let ticks = st.ticks;
                let deadline = st.enc.as_mut().and_then(|e| {
                    let latency = e.producer().next_deadline_ms();
                    let heartbeat = ticks.heartbeat_at(e);
                    match (latency, heartbeat) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                });
                let wait = match deadline {
                    Some(d) if now >= d && st.compressor.is_some() => {
                        // Compressing is CPU work: the due flush runs on the
                        // blocking pool, which wakes this body when the chunk
                        // is queued.
                        if !st.flush_scheduled {
                            st.flush_scheduled = true;
                            let pipe = this.pipe.clone();
                            tokio::task::spawn_blocking(move || pipe.flush_due());
                        }
                        None
                    }
                    Some(d) if now >= d => {
                        this.pipe.tick_locked(&mut st);
                        if let Some(chunk) = st.queue.pop_front() {
                            this.pipe.made_room(&st);
                            return Poll::Ready(Some(Ok(Frame::data(chunk))));
                        }
                        None
                    }
                    Some(d) => Some(d - now),
                    None => None,
                };
                st.waker = Some(cx.waker().clone());
                wait
            };
            match wait_ms {
                Some(ms) => {
                    let sleep = this.sleep.get_or_insert_with(|| {
                        Box::pin(tokio::time::sleep(Duration::from_millis(ms)))
                    });
                    sleep
                        .as_mut()
                        .reset(tokio::time::Instant::now() + Duration::from_millis(ms));
                    if sleep.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                    return Poll::Pending;
                }
                None => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

impl Drop for PipeBody {
    fn drop(&mut self) {
        if !self.done && !self.pipe.is_drained() {
            self.ctl.stop(StopCause::Disconnect);
        }
    }
}

use std::future::Future;

trait ErrorThenEnd {
    fn error_then_end(
        &mut self,
        error: Option<&crate::core::protocol::ErrorBody>,
        reason: CloseReason,
        sink: &mut QueueSink<'_>,
    ) -> Result<(), Infallible>;
}

impl ErrorThenEnd for StreamEncoder<SharedClock> {
    fn error_then_end(
        &mut self,
        error: Option<&crate::core::protocol::ErrorBody>,
        reason: CloseReason,
        sink: &mut QueueSink<'_>,
    ) -> Result<(), Infallible> {
        if let Some(e) = error {
            self.error(e, sink)?;
        }
        self.end(reason, sink).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::SystemClock;
    use crate::core::config::StreamConfig;
    use crate::core::digest::PrefixHasher;
    use crate::core::producer::ChunkProducer;

    fn started() -> (Arc<Pipe>, Arc<StreamCtl>) {
        let clock: SharedClock = Arc::new(SystemClock);
        let pipe = Pipe::new(clock.clone());
        let cfg = StreamConfig::default();
        let enc = StreamEncoder::new(
            ChunkProducer::new(&cfg, clock),
            PrefixHasher::new(),
            0,
            "l1",
        );
        let open = OpenFrame {
            lease: "l1".into(),
            snapshot_lsn: 1,
            resumable: false,
            reason: None,
            cursor: None,
            expires_at_ms: 0,
            columns: Vec::new(),
            after_rows: 0,
            total: None,
        };
        pipe.start(enc, &open);
        let ctl = StreamCtl::new(&pipe);
        (pipe, ctl)
    }

    fn body(pipe: &Pipe) -> Vec<u8> {
        pipe.finish(None, CloseReason::Ok, |_| {});
        let st = lock(&pipe.st);
        st.queue.iter().flat_map(|b| b.iter().copied()).collect()
    }

    /// A batch handed over as the two halves of a ring, split anywhere (also
    /// inside a line), encodes exactly like the same rows pushed one by one.
    #[test]
    fn push_lines_split_anywhere_matches_push_row() {
        let values: Vec<String> = (0..40)
            .map(|i| format!(r#"{{"id":{i},"s":"{}"}}"#, "é".repeat(i % 7)))
            .collect();
        let (one, ctl) = started();
        for v in &values {
            one.push_row(&ctl, |b| b.extend_from_slice(v.as_bytes()))
                .unwrap();
        }
        let expected = body(&one);
        let mut ring = Vec::new();
        for v in &values {
            ring.extend_from_slice(br#"{"row":"#);
            ring.extend_from_slice(v.as_bytes());
            ring.extend_from_slice(b"}\n");
        }
        for split in 0..=ring.len() {
            let (pipe, ctl) = started();
            let mut checkpoints = Vec::new();
            let (a, b) = ring.split_at(split);
            let n = pipe
                .push_lines(&ctl, a, b, &mut Vec::new(), |enc| {
                    if enc.row_count() % 8 == 0 {
                        checkpoints.push((enc.row_count(), enc.hasher().hex_digest()));
                    }
                })
                .unwrap();
            assert_eq!(n, values.len() as u64);
            assert_eq!(checkpoints.len(), 5);
            assert_eq!(body(&pipe), expected, "split at {split}");
        }
    }

    #[test]
    fn push_lines_stops_when_the_stream_is_stopped() {
        let (pipe, ctl) = started();
        ctl.stop(StopCause::Cancel);
        assert_eq!(
            pipe.push_lines(&ctl, b"{\"row\":1}\n", b"", &mut Vec::new(), |_| {}),
            None
        );
    }
}
