//! Two threads for one long result: the *stepping* thread runs SQLite and
//! writes each row line; the *encoding* thread hashes the lines and feeds the
//! chunk producer. SQLite stepping and SHA-256 are both serial per stream, so
//! on two cores they overlap instead of adding up.
//!
//! The lines travel through a lock-free single-producer ring of bytes
//! ([`rtrb`]): the stepping thread publishes every line the moment it is
//! written (one atomic store), so a row produced just before the query stalls
//! reaches the encoder (and so the latency cap) without waiting for a batch.
//! Neither thread takes a lock per row; the encoder takes the [`Pipe`] lock
//! once per batch.
//!
//! Waking is batched so neither side makes a system call per row:
//!
//! - the encoder, finding the ring empty, parks until a batch
//!   ([`WAKE_BYTES`]) is waiting, or at most [`BATCH_WAIT`]; after
//!   [`IDLE_ROUNDS`] empty rounds (the query is stalling) it asks to be woken
//!   by the next line instead, so a row never waits more than
//!   [`BATCH_WAIT`] for the encoder;
//! - the stepping thread, finding the ring full (the client reads slowly:
//!   backpressure), parks until the encoder has emptied half the ring (and
//!   the encoder, in turn, waits for the body to take half the chunk queue).
//!
//! A stop (cancel, disconnect, shutdown, TTL) reaches both threads through the
//! stream's [`StreamCtl`].
//!
//! [`Pipe`]: super::pipe::Pipe

use std::sync::atomic::{fence, AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;
use std::thread::{self, Thread};
use std::time::Duration;

use super::pipe::StreamCtl;

/// Ring size: room for a few chunks of rows while the encoder waits on a
/// slow reader or is descheduled.
pub(crate) const RING_BYTES: usize = 256 * 1024;
/// The encoder wakes for a batch of this many bytes.
pub(crate) const WAKE_BYTES: usize = 128 * 1024;
/// The longest a published line waits for the encoder.
pub(crate) const BATCH_WAIT: Duration = Duration::from_millis(1);
/// Empty rounds (of up to [`BATCH_WAIT`]) before the encoder asks to be woken
/// by any line.
const IDLE_ROUNDS: u32 = 8;

const RUNNING: u8 = 0;
const WANTS_BATCH: u8 = 1;
const WANTS_ANY: u8 = 2;

/// State both threads share.
struct Shared {
    /// The stepping thread wrote its last line.
    done: AtomicBool,
    /// The encoding thread has ended: done, stopped or panicked.
    encoder_gone: AtomicBool,
    /// What the parked encoder waits for (`RUNNING` while it runs).
    encoder_waits: AtomicU8,
    /// The stepping thread is parked waiting for room.
    stepper_waits: AtomicBool,
}

/// The stepping thread's end of the hand-off.
pub(crate) struct Stepper<'a> {
    ring: rtrb::Producer<u8>,
    shared: &'a Shared,
    encoder: Thread,
    ctl: &'a StreamCtl,
}

impl Stepper<'_> {
    /// Publishes one row line (with its trailing newline). Waits while the
    /// ring is full. Returns false when the stream was stopped, or `line` can
    /// never fit (longer than the ring: the caller delivers it itself, after
    /// [`Stepper::drain`]).
    pub(crate) fn send(&mut self, line: &[u8]) -> bool {
        if line.len() > RING_BYTES {
            return false;
        }
        while self.ring.push_entire_slice(line).is_err() {
            if !self.wait_for_room(line.len()) {
                return false;
            }
        }
        // No fence here (one per row costs more than the rest of this
        // function): the load may see a stale `encoder_waits` for as long as
        // the store of the line takes to become visible. The encoder covers
        // that window by never parking for long right after it changed what
        // it waits for (see `encode`).
        match self.shared.encoder_waits.load(Ordering::Relaxed) {
            RUNNING => {}
            WANTS_BATCH if RING_BYTES - self.ring.slots() < WAKE_BYTES => {}
            _ => self.wake_encoder(),
        }
        true
    }

    /// Waits until the encoder has taken every published line (so the caller
    /// may deliver the next line itself). False when the stream was stopped.
    pub(crate) fn drain(&mut self) -> bool {
        self.wake_encoder();
        self.wait_for_room(RING_BYTES)
    }

    fn wait_for_room(&mut self, need: usize) -> bool {
        loop {
            if self.ring.slots() >= need {
                return true;
            }
            if self.ctl.is_stopped() || self.shared.encoder_gone.load(Ordering::Acquire) {
                return false;
            }
            self.shared.stepper_waits.store(true, Ordering::SeqCst);
            if self.ring.slots() < need {
                thread::park_timeout(Duration::from_millis(10));
            }
            self.shared.stepper_waits.store(false, Ordering::SeqCst);
        }
    }

    fn wake_encoder(&self) {
        if self.shared.encoder_waits.swap(RUNNING, Ordering::SeqCst) != RUNNING {
            self.encoder.unpark();
        }
    }
}

/// Runs `step` on this thread with a [`Stepper`], while a scoped thread
/// hands every published batch of lines to `deliver` (the two halves of the
/// ring's readable region, and a scratch buffer; `None` = stopped). Returns
/// `step`'s result and whether every line was delivered. When no thread can
/// be spawned, returns `Err(step)` so the caller runs single-threaded.
pub(crate) fn run<R, S, D>(ctl: &StreamCtl, step: S, deliver: D) -> Result<(R, bool), S>
where
    S: FnOnce(&mut Stepper<'_>) -> R,
    D: FnMut(&[u8], &[u8], &mut Vec<u8>) -> Option<()> + Send,
{
    let shared = Shared {
        done: AtomicBool::new(false),
        encoder_gone: AtomicBool::new(false),
        encoder_waits: AtomicU8::new(RUNNING),
        stepper_waits: AtomicBool::new(false),
    };
    let (ring, cons) = rtrb::RingBuffer::<u8>::new(RING_BYTES);
    let stepper_thread = thread::current();
    // Kept outside the spawned closure so a failed spawn hands `step` back.
    let deliver = Mutex::new(deliver);
    thread::scope(|scope| {
        let spawned = thread::Builder::new()
            .name("rowstream-encode".into())
            .spawn_scoped(scope, || {
                let mut deliver = deliver.lock().unwrap_or_else(|p| p.into_inner());
                encode(cons, &shared, &stepper_thread, ctl, &mut *deliver)
            });
        let encoder = match spawned {
            Ok(h) => h,
            Err(_) => return Err(step),
        };
        let mut stepper = Stepper {
            ring,
            shared: &shared,
            encoder: encoder.thread().clone(),
            ctl,
        };
        // Also on a panic in `step`: the encoder drains and exits, so the
        // scope can join it.
        let done = Done(&shared, encoder.thread().clone());
        let r = step(&mut stepper);
        drop(done);
        let delivered = match encoder.join() {
            Ok(d) => d,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        Ok((r, delivered))
    })
}

/// Marks the stepping thread done and wakes the encoder, when dropped.
struct Done<'a>(&'a Shared, Thread);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.done.store(true, Ordering::SeqCst);
        self.1.unpark();
    }
}

/// What the encoding thread calls with each batch.
type Deliver<'a> = dyn FnMut(&[u8], &[u8], &mut Vec<u8>) -> Option<()> + 'a;

/// Marks the encoder gone and wakes the stepping thread, when dropped.
struct Gone<'a>(&'a Shared, &'a Thread);

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        self.0.encoder_gone.store(true, Ordering::SeqCst);
        self.1.unpark();
    }
}

/// The encoding thread: delivers batches until the stepping thread is done
/// and the ring is empty (true), or the stream was stopped (false).
fn encode(
    mut ring: rtrb::Consumer<u8>,
    shared: &Shared,
    stepper: &Thread,
    ctl: &StreamCtl,
    deliver: &mut Deliver<'_>,
) -> bool {
    let mut scratch = Vec::new();
    let mut idle = 0u32;
    // However this thread ends (also by a panic), the stepping thread must
    // not wait for room that never comes.
    let _gone = Gone(shared, stepper);
    loop {
        let n = ring.slots();
        if n == 0 {
            if shared.done.load(Ordering::SeqCst) {
                if ring.slots() == 0 {
                    return true;
                }
                continue;
            }
            if ctl.is_stopped() {
                return false;
            }
            // A line published while `encoder_waits` changes may not see the
            // change (the stepping thread does not fence): every change is
            // followed by a short park and a fresh look at the ring, after
            // which the new value is visible to every later line.
            let timeout = if idle < IDLE_ROUNDS {
                shared.encoder_waits.store(WANTS_BATCH, Ordering::SeqCst);
                BATCH_WAIT
            } else if idle == IDLE_ROUNDS {
                shared.encoder_waits.store(WANTS_ANY, Ordering::SeqCst);
                BATCH_WAIT
            } else {
                // Stays `WANTS_ANY` until a line swaps it back.
                Duration::from_millis(100)
            };
            if ring.slots() == 0 && !shared.done.load(Ordering::SeqCst) {
                thread::park_timeout(timeout);
            }
            idle += 1;
            continue;
        }
        shared.encoder_waits.store(RUNNING, Ordering::SeqCst);
        idle = 0;
        let Ok(chunk) = ring.read_chunk(n) else {
            continue;
        };
        let (a, b) = chunk.as_slices();
        let delivered = deliver(a, b, &mut scratch);
        chunk.commit_all();
        // Pairs with the stepping thread's store of `stepper_waits`. A
        // stepping thread waiting for room is woken once the ring is half
        // empty, so it writes half a ring per wake-up under backpressure.
        fence(Ordering::SeqCst);
        if shared.stepper_waits.load(Ordering::Relaxed) && ring.slots() <= RING_BYTES / 2 {
            stepper.unpark();
        }
        if delivered.is_none() {
            return false;
        }
    }
}
