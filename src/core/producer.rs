//! The page-aligned chunk producer of PROTOCOL.md §2.2.
//!
//! A [`ChunkProducer`] frames NDJSON lines into chunks held in a production
//! buffer of `pages × 16 KiB`, and hands each chunk to a [`ChunkSink`] on the
//! first of three caps: the byte cap (the next line would not fit), the row cap
//! (`max_rows` rows buffered) or the latency cap (`max_latency_ms` since the
//! first row was buffered). A line never spans two chunks; a single line
//! larger than the buffer goes out alone in a chunk of its own.
//!
//! The latency cap must hold while the row source stalls, when nobody calls
//! `push_row`. The producer cannot wake itself, so it tells the host when the
//! next deadline is ([`ChunkProducer::next_deadline_ms`]) and the host, which
//! has a timer, calls [`ChunkProducer::flush_if_due`] at that time.

use super::clock::Clock;
use super::config::StreamConfig;

/// Receives finished chunks.
pub trait ChunkSink {
    /// What a failed write reports.
    type Error;
    /// Takes one chunk. The slice is only valid during the call.
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), Self::Error>;

    /// Takes one chunk from the producer's buffer. A sink that keeps chunks
    /// may take the buffer itself (`std::mem::take`) instead of copying it;
    /// the producer then starts a new one. By default the chunk is lent to
    /// [`ChunkSink::write_chunk`].
    fn take_chunk(&mut self, chunk: &mut Vec<u8>) -> Result<(), Self::Error> {
        self.write_chunk(chunk)
    }
}

/// A `Vec<Vec<u8>>` collects chunks (tests, small in-memory uses).
impl ChunkSink for Vec<Vec<u8>> {
    type Error = std::convert::Infallible;
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), Self::Error> {
        self.push(chunk.to_vec());
        Ok(())
    }
    fn take_chunk(&mut self, chunk: &mut Vec<u8>) -> Result<(), Self::Error> {
        self.push(std::mem::take(chunk));
        Ok(())
    }
}

/// Adapts a closure `FnMut(&[u8]) -> Result<(), E>` into a sink.
pub struct FnSink<F>(pub F);

impl<F, E> ChunkSink for FnSink<F>
where
    F: FnMut(&[u8]) -> Result<(), E>,
{
    type Error = E;
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), E> {
        (self.0)(chunk)
    }
}

impl<S: ChunkSink + ?Sized> ChunkSink for &mut S {
    type Error = S::Error;
    fn write_chunk(&mut self, chunk: &[u8]) -> Result<(), S::Error> {
        (**self).write_chunk(chunk)
    }
    fn take_chunk(&mut self, chunk: &mut Vec<u8>) -> Result<(), S::Error> {
        (**self).take_chunk(chunk)
    }
}

/// Why the last chunk went out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushReason {
    /// The next line would not have fitted the buffer (or one line filled it).
    Bytes,
    /// `max_rows` rows were buffered.
    Rows,
    /// `max_latency_ms` passed since the first buffered row.
    Latency,
    /// The stream ended ([`ChunkProducer::finish`]).
    Finish,
    /// The host asked for it ([`ChunkProducer::flush`]).
    Explicit,
}

impl FlushReason {
    /// Stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            FlushReason::Bytes => "bytes",
            FlushReason::Rows => "rows",
            FlushReason::Latency => "latency",
            FlushReason::Finish => "finish",
            FlushReason::Explicit => "explicit",
        }
    }
}

/// The producer's caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerLimits {
    /// Production buffer size in bytes (a multiple of 16 KiB from config).
    pub buffer_bytes: usize,
    /// Row cap per chunk (≥ 1).
    pub max_rows: u32,
    /// Latency cap in milliseconds (≥ 1).
    pub max_latency_ms: u64,
}

impl ProducerLimits {
    /// The limits a frozen stream config prescribes.
    pub fn from_config(cfg: &StreamConfig) -> Self {
        Self {
            buffer_bytes: cfg.production_buffer_bytes(),
            max_rows: cfg.chunk_max_rows,
            max_latency_ms: cfg.chunk_max_latency_ms,
        }
    }
}

/// Running totals of a producer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProducerTotals {
    /// Row lines pushed.
    pub rows: u64,
    /// Control lines pushed (open, error, end, ...).
    pub control_lines: u64,
    /// Bytes handed to the sink.
    pub bytes: u64,
    /// Chunks handed to the sink.
    pub chunks: u64,
    /// Largest chunk handed to the sink.
    pub max_chunk_bytes: usize,
}

/// Page-aligned NDJSON chunk producer. See the module docs.
pub struct ChunkProducer<C: Clock> {
    buf: Vec<u8>,
    limits: ProducerLimits,
    clock: C,
    rows_buffered: u32,
    first_row_at: Option<u64>,
    totals: ProducerTotals,
    last_flush: Option<FlushReason>,
    timer_driven: bool,
}

impl<C: Clock> std::fmt::Debug for ChunkProducer<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChunkProducer")
            .field("limits", &self.limits)
            .field("buffered_bytes", &self.buf.len())
            .field("rows_buffered", &self.rows_buffered)
            .field("totals", &self.totals)
            .field("last_flush", &self.last_flush)
            .finish()
    }
}

impl<C: Clock> ChunkProducer<C> {
    /// A producer with the caps of a frozen config.
    pub fn new(cfg: &StreamConfig, clock: C) -> Self {
        Self::with_limits(ProducerLimits::from_config(cfg), clock)
    }

    /// A producer with explicit caps (clamped to at least 1 each).
    pub fn with_limits(limits: ProducerLimits, clock: C) -> Self {
        let limits = ProducerLimits {
            buffer_bytes: limits.buffer_bytes.max(1),
            max_rows: limits.max_rows.max(1),
            max_latency_ms: limits.max_latency_ms.max(1),
        };
        Self {
            buf: Vec::with_capacity(limits.buffer_bytes),
            limits,
            clock,
            rows_buffered: 0,
            first_row_at: None,
            totals: ProducerTotals::default(),
            last_flush: None,
            timer_driven: false,
        }
    }

    /// For hosts whose timer calls [`ChunkProducer::flush_if_due`] at every
    /// [`ChunkProducer::next_deadline_ms`]: [`ChunkProducer::push_row`] then
    /// leaves the latency cap to that timer and reads the clock once per
    /// chunk (for its first row) instead of once per row.
    pub fn timer_driven(mut self) -> Self {
        self.timer_driven = true;
        self
    }

    /// The caps in force.
    pub fn limits(&self) -> ProducerLimits {
        self.limits
    }

    /// Totals so far.
    pub fn totals(&self) -> ProducerTotals {
        self.totals
    }

    /// Why the last chunk was flushed, if any was.
    pub fn last_flush(&self) -> Option<FlushReason> {
        self.last_flush
    }

    /// Bytes waiting in the buffer.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len()
    }

    /// Rows waiting in the buffer.
    pub fn buffered_rows(&self) -> u32 {
        self.rows_buffered
    }

    /// Capacity of the production buffer right now (for memory accounting).
    pub fn buffer_capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// When the latency cap of the buffered rows runs out, in clock
    /// milliseconds; `None` when no row is buffered.
    pub fn next_deadline_ms(&self) -> Option<u64> {
        self.first_row_at
            .map(|t| t.saturating_add(self.limits.max_latency_ms))
    }

    /// Appends one row line (without its newline; one is added) and flushes on
    /// whichever cap it reaches.
    pub fn push_row<S: ChunkSink>(&mut self, line: &[u8], sink: &mut S) -> Result<(), S::Error> {
        self.push_row_in_batch(line, sink)?;
        if self.timer_driven {
            return Ok(());
        }
        self.flush_if_due(sink).map(|_| ())
    }

    /// Appends one row line like [`ChunkProducer::push_row`] and flushes on
    /// the byte and row caps, but leaves the latency cap to the caller, who
    /// pushes a batch of rows at once and then calls
    /// [`ChunkProducer::flush_if_due`]: the clock is read once per chunk
    /// (when its first row arrives) instead of once per row.
    pub fn push_row_in_batch<S: ChunkSink>(
        &mut self,
        line: &[u8],
        sink: &mut S,
    ) -> Result<(), S::Error> {
        self.append(line, sink)?;
        self.rows_appended(1, sink)
    }

    /// Counts `rows` rows just appended to the buffer, starts the latency
    /// clock at the first, and flushes on the byte or row cap they reached.
    fn rows_appended<S: ChunkSink>(&mut self, rows: u32, sink: &mut S) -> Result<(), S::Error> {
        self.totals.rows += u64::from(rows);
        self.rows_buffered += rows;
        if self.first_row_at.is_none() {
            self.first_row_at = Some(self.clock.now_ms());
        }
        if self.buf.len() >= self.limits.buffer_bytes {
            self.flush_with(FlushReason::Bytes, sink)
        } else if self.rows_buffered >= self.limits.max_rows {
            self.flush_with(FlushReason::Rows, sink)
        } else {
            Ok(())
        }
    }

    /// Flushes the buffered rows when a row line of `line_len` bytes (without
    /// its newline) would not fit after them, as [`ChunkProducer::push_row`]
    /// does before it appends.
    pub(crate) fn make_room_for<S: ChunkSink>(
        &mut self,
        line_len: usize,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        if !self.buf.is_empty() && self.buf.len() + line_len + 1 > self.limits.buffer_bytes {
            self.flush_with(FlushReason::Bytes, sink)?;
        }
        Ok(())
    }

    /// Appends `rows` whole row lines at once (`lines`: each with its
    /// newline), sized by the caller like [`ChunkProducer::push_row_in_batch`]
    /// would take them one by one: they fit after the buffered bytes (or are
    /// one line into an empty buffer) and do not pass the row cap. Flushes on
    /// the byte or row cap it reaches; the latency cap is the caller's, as
    /// with `push_row_in_batch`.
    pub(crate) fn push_rows_in_batch<S: ChunkSink>(
        &mut self,
        lines: &[u8],
        rows: u32,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        if rows == 0 {
            return Ok(());
        }
        debug_assert!(lines.ends_with(b"\n"));
        debug_assert!(self.rows_buffered + rows <= self.limits.max_rows);
        debug_assert!(
            self.buf.is_empty() && rows == 1
                || self.buf.len() + lines.len() <= self.limits.buffer_bytes
        );
        self.buf.extend_from_slice(lines);
        self.rows_appended(rows, sink)
    }

    /// Appends a control line (`open`, `error`, `end`, `heartbeat`, ...). It
    /// does not count toward the row cap and does not start the latency clock,
    /// but it never splits and respects the byte cap.
    pub fn push_control<S: ChunkSink>(
        &mut self,
        line: &[u8],
        sink: &mut S,
    ) -> Result<(), S::Error> {
        self.append(line, sink)?;
        self.totals.control_lines += 1;
        if self.buf.len() >= self.limits.buffer_bytes {
            return self.flush_with(FlushReason::Bytes, sink);
        }
        Ok(())
    }

    /// Flushes when the latency deadline has passed. Hosts call this from a
    /// timer set to [`ChunkProducer::next_deadline_ms`] while the source stalls.
    /// Returns whether a chunk went out.
    pub fn flush_if_due<S: ChunkSink>(&mut self, sink: &mut S) -> Result<bool, S::Error> {
        match self.next_deadline_ms() {
            Some(deadline) if self.clock.now_ms() >= deadline => {
                self.flush_with(FlushReason::Latency, sink)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Hands whatever is buffered to the sink now.
    pub fn flush<S: ChunkSink>(&mut self, sink: &mut S) -> Result<(), S::Error> {
        self.flush_with(FlushReason::Explicit, sink)
    }

    /// The terminal flush: everything buffered goes out.
    pub fn finish<S: ChunkSink>(&mut self, sink: &mut S) -> Result<ProducerTotals, S::Error> {
        self.flush_with(FlushReason::Finish, sink)?;
        Ok(self.totals)
    }

    /// Pull driver: pushes every row line `lines` yields, then finishes.
    /// Resident memory is the buffer plus the one line being pushed, whatever
    /// the size of the source (the iterator can be lazy).
    pub fn drive_lines<I, L, S>(
        &mut self,
        lines: I,
        sink: &mut S,
    ) -> Result<ProducerTotals, S::Error>
    where
        I: IntoIterator<Item = L>,
        L: AsRef<[u8]>,
        S: ChunkSink,
    {
        for line in lines {
            self.push_row(line.as_ref(), sink)?;
        }
        self.finish(sink)
    }

    fn append<S: ChunkSink>(&mut self, line: &[u8], sink: &mut S) -> Result<(), S::Error> {
        let need = line.len() + 1;
        if !self.buf.is_empty() && self.buf.len() + need > self.limits.buffer_bytes {
            self.flush_with(FlushReason::Bytes, sink)?;
        }
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        Ok(())
    }

    fn flush_with<S: ChunkSink>(
        &mut self,
        reason: FlushReason,
        sink: &mut S,
    ) -> Result<(), S::Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let len = self.buf.len();
        // Reset first: if the sink fails, the producer is still consistent and
        // the failed chunk is not sent twice.
        self.rows_buffered = 0;
        self.first_row_at = None;
        self.last_flush = Some(reason);
        let r = sink.take_chunk(&mut self.buf);
        self.buf.clear();
        if self.buf.capacity() == 0 {
            // The sink kept the buffer.
            self.buf.reserve(self.limits.buffer_bytes);
        } else if self.buf.capacity() > self.limits.buffer_bytes * 2 {
            // One oversized line grew the buffer: give the memory back.
            self.buf.shrink_to(self.limits.buffer_bytes);
        }
        r?;
        self.totals.bytes += len as u64;
        self.totals.chunks += 1;
        self.totals.max_chunk_bytes = self.totals.max_chunk_bytes.max(len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::FakeClock;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn limits(buffer_bytes: usize, max_rows: u32, max_latency_ms: u64) -> ProducerLimits {
        ProducerLimits {
            buffer_bytes,
            max_rows,
            max_latency_ms,
        }
    }

    #[test]
    fn flushes_on_byte_cap_without_splitting_lines() {
        let mut p = ChunkProducer::with_limits(limits(32, 1000, 1000), FakeClock::new(0));
        let mut out: Vec<Vec<u8>> = Vec::new();
        for i in 0..10 {
            p.push_row(format!("row-{i:06}").as_bytes(), &mut out)
                .unwrap(); // 10 bytes + \n
        }
        // 11-byte lines, 32-byte buffer: two lines fit, the third would not.
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|c| c.len() == 22));
        assert_eq!(p.last_flush(), Some(FlushReason::Bytes));
        let t = p.finish(&mut out).unwrap();
        assert_eq!(p.last_flush(), Some(FlushReason::Finish));
        assert_eq!(t.rows, 10);
        assert_eq!(t.chunks, 5);
        let all: Vec<u8> = out.concat();
        let lines: Vec<&[u8]> = all
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(lines.len(), 10);
        for c in &out {
            assert_eq!(c.last(), Some(&b'\n'), "each chunk ends on a line boundary");
        }
    }

    #[test]
    fn exact_fill_flushes_on_bytes() {
        let mut p = ChunkProducer::with_limits(limits(8, 1000, 1000), FakeClock::new(0));
        let mut out: Vec<Vec<u8>> = Vec::new();
        p.push_row(b"abc", &mut out).unwrap();
        assert!(out.is_empty());
        p.push_row(b"def", &mut out).unwrap();
        assert_eq!(out, vec![b"abc\ndef\n".to_vec()]);
        assert_eq!(p.last_flush(), Some(FlushReason::Bytes));
    }

    #[test]
    fn oversized_line_goes_out_alone() {
        let mut p = ChunkProducer::with_limits(limits(8, 1000, 1000), FakeClock::new(0));
        let mut out: Vec<Vec<u8>> = Vec::new();
        p.push_row(b"ab", &mut out).unwrap();
        p.push_row(b"0123456789abcdef", &mut out).unwrap();
        assert_eq!(out, vec![b"ab\n".to_vec(), b"0123456789abcdef\n".to_vec()]);
        assert!(p.buffer_capacity() <= 34);
    }

    #[test]
    fn flushes_on_row_cap() {
        let mut p = ChunkProducer::with_limits(limits(1 << 20, 3, 1000), FakeClock::new(0));
        let mut out: Vec<Vec<u8>> = Vec::new();
        for i in 0..7 {
            p.push_row(format!("{i}").as_bytes(), &mut out).unwrap();
        }
        assert_eq!(out, vec![b"0\n1\n2\n".to_vec(), b"3\n4\n5\n".to_vec()]);
        assert_eq!(p.last_flush(), Some(FlushReason::Rows));
        p.finish(&mut out).unwrap();
        assert_eq!(out.last().unwrap(), b"6\n");
    }

    #[test]
    fn flushes_on_latency_cap_from_first_row() {
        let clock = FakeClock::new(1000);
        let mut p = ChunkProducer::with_limits(limits(1 << 20, 1000, 50), clock.clone());
        let mut out: Vec<Vec<u8>> = Vec::new();
        assert_eq!(p.next_deadline_ms(), None);
        p.push_row(b"a", &mut out).unwrap();
        assert_eq!(p.next_deadline_ms(), Some(1050));
        clock.advance(49);
        p.push_row(b"b", &mut out).unwrap();
        assert!(out.is_empty());
        clock.advance(1);
        p.push_row(b"c", &mut out).unwrap();
        assert_eq!(out, vec![b"a\nb\nc\n".to_vec()]);
        assert_eq!(p.last_flush(), Some(FlushReason::Latency));
        assert_eq!(
            p.next_deadline_ms(),
            None,
            "deadline restarts with the next row"
        );
    }

    #[test]
    fn a_timer_driven_producer_leaves_the_latency_cap_to_the_timer() {
        let clock = FakeClock::new(1000);
        let mut p =
            ChunkProducer::with_limits(limits(1 << 20, 3, 50), clock.clone()).timer_driven();
        let mut out: Vec<Vec<u8>> = Vec::new();
        p.push_row(b"a", &mut out).unwrap();
        assert_eq!(p.next_deadline_ms(), Some(1050));
        clock.advance(60);
        p.push_row(b"b", &mut out).unwrap();
        assert!(out.is_empty(), "no latency flush from push_row");
        assert!(p.flush_if_due(&mut out).unwrap());
        assert_eq!(out, vec![b"a\nb\n".to_vec()]);
        assert_eq!(p.last_flush(), Some(FlushReason::Latency));
        // The byte and row caps still flush from push_row.
        for l in [b"c", b"d", b"e"] {
            p.push_row(l, &mut out).unwrap();
        }
        assert_eq!(out.last().unwrap(), b"c\nd\ne\n");
        assert_eq!(p.last_flush(), Some(FlushReason::Rows));
    }

    #[test]
    fn latency_cap_holds_while_the_source_stalls() {
        let clock = FakeClock::new(0);
        let mut p = ChunkProducer::with_limits(limits(1 << 20, 1000, 50), clock.clone());
        let mut out: Vec<Vec<u8>> = Vec::new();
        p.push_row(b"first", &mut out).unwrap();
        // The source stalls: nobody pushes. The host's timer fires.
        clock.advance(30);
        assert!(!p.flush_if_due(&mut out).unwrap());
        clock.set(p.next_deadline_ms().unwrap());
        assert!(p.flush_if_due(&mut out).unwrap());
        assert_eq!(out, vec![b"first\n".to_vec()]);
        assert_eq!(p.last_flush(), Some(FlushReason::Latency));
        assert!(!p.flush_if_due(&mut out).unwrap(), "nothing left to flush");
    }

    #[test]
    fn control_lines_do_not_count_as_rows_or_start_the_clock() {
        let clock = FakeClock::new(0);
        let mut p = ChunkProducer::with_limits(limits(1 << 20, 2, 50), clock.clone());
        let mut out: Vec<Vec<u8>> = Vec::new();
        p.push_control(b"{\"open\":{}}", &mut out).unwrap();
        assert_eq!(p.next_deadline_ms(), None);
        p.push_row(b"r1", &mut out).unwrap();
        assert!(out.is_empty());
        p.push_row(b"r2", &mut out).unwrap();
        assert_eq!(out, vec![b"{\"open\":{}}\nr1\nr2\n".to_vec()]);
        let t = p.totals();
        assert_eq!((t.rows, t.control_lines), (2, 1));
    }

    #[test]
    fn failed_sink_leaves_a_consistent_producer() {
        let mut p = ChunkProducer::with_limits(limits(4, 1000, 1000), FakeClock::new(0));
        let mut fail = FnSink(|_: &[u8]| Err::<(), &str>("gone"));
        p.push_row(b"ab", &mut fail).unwrap();
        assert_eq!(p.push_row(b"cd", &mut fail), Err("gone"));
        assert_eq!(p.totals().chunks, 0);
        assert_eq!(
            p.buffered_bytes(),
            0,
            "the failed chunk is dropped, never re-sent"
        );
        assert_eq!(p.buffered_rows(), 0);
    }

    fn lazy_rows(n: u64) -> impl Iterator<Item = String> {
        (0..n).map(|i| {
            format!(
                "{{\"row\":{{\"id\":{i},\"name\":\"name-{i}\",\"v\":{}}}}}",
                i * 7
            )
        })
    }

    #[test]
    fn million_row_lazy_source_streams_in_bounded_chunks() {
        let cfg = StreamConfig::default();
        let mut p = ChunkProducer::new(&cfg, FakeClock::new(0));
        let cap = cfg.production_buffer_bytes();
        let mut chunks = 0u64;
        let mut bytes = 0u64;
        let mut longest_line = 0usize;
        let mut max_chunk = 0usize;
        let mut sink = FnSink(|c: &[u8]| {
            chunks += 1;
            bytes += c.len() as u64;
            max_chunk = max_chunk.max(c.len());
            Ok::<(), ()>(())
        });
        let totals = p
            .drive_lines(
                lazy_rows(1_000_000).inspect(|l| longest_line = longest_line.max(l.len() + 1)),
                &mut sink,
            )
            .unwrap();
        assert_eq!(totals.rows, 1_000_000);
        assert!(chunks > 500, "many chunks, got {chunks}");
        assert!(
            max_chunk <= cap + longest_line,
            "chunk {max_chunk} > buffer {cap} + line"
        );
        assert_eq!(totals.bytes, bytes);
        assert_eq!(totals.chunks, chunks);
        assert!(
            p.buffer_capacity() <= cap * 2,
            "resident buffer stays bounded"
        );
    }

    #[test]
    fn first_chunk_flushes_on_latency_long_before_the_source_drains() {
        // A slow source: each row takes 5 ms of clock time.
        let clock = FakeClock::new(0);
        let cfg = StreamConfig::default();
        let mut p = ChunkProducer::new(&cfg, clock.clone());
        let mut first_chunk_at: Option<(u64, u64)> = None;
        let tick = clock.clone();
        let mut produced = 0u64;
        let rows = (0..10_000u64).map(|i| {
            tick.advance(5);
            produced = i + 1;
            format!("{{\"row\":{i}}}")
        });
        let watch = clock.clone();
        let mut sink = FnSink(|_: &[u8]| {
            if first_chunk_at.is_none() {
                first_chunk_at = Some((watch.now_ms(), 0));
            }
            Ok::<(), ()>(())
        });
        p.drive_lines(rows, &mut sink).unwrap();
        let (at, _) = first_chunk_at.unwrap();
        assert!(
            at <= 5 + 50 + 5,
            "first chunk at {at} ms, source drains at 50000 ms"
        );
        assert_eq!(produced, 10_000);
    }

    #[test]
    fn driver_output_is_byte_identical_to_hand_pushes() {
        let lines: Vec<String> = lazy_rows(5000).collect();
        let lim = limits(16 * 1024, 97, 1_000_000);
        let mut a = ChunkProducer::with_limits(lim, FakeClock::new(0));
        let mut driven: Vec<Vec<u8>> = Vec::new();
        a.drive_lines(&lines, &mut driven).unwrap();
        let mut b = ChunkProducer::with_limits(lim, FakeClock::new(0));
        let mut by_hand: Vec<Vec<u8>> = Vec::new();
        for l in &lines {
            b.push_row(l.as_bytes(), &mut by_hand).unwrap();
        }
        b.finish(&mut by_hand).unwrap();
        assert_eq!(driven, by_hand);
        let joined: Vec<u8> = driven.concat();
        let expected: String = lines.iter().map(|l| format!("{l}\n")).collect();
        assert_eq!(joined, expected.as_bytes());
    }
}
