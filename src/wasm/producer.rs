//! `ChunkProducer`: lets a JS server (Node, Deno, a Service Worker) frame
//! rows into chunks exactly as the native server does (PROTOCOL.md §2.2).

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::Function;
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use super::clock::JsClock;
use super::js::{chunk_array, coded_error, invalid_argument, text_or_bytes, to_js, with_details};
use crate::core::clock::Clock;
use crate::core::config::{StreamConfig, PAGE_BYTES};
use crate::core::producer::{ChunkProducer as CoreProducer, ProducerLimits};

/// Code of the error a throwing (or non-numeric) `now` callback becomes.
const CLOCK_FAILED: &str = "clock_failed";

/// `Date.now()`, or the caller's `now()` callback. A callback that throws or
/// returns something that is not a time cannot fail inside the core (a clock
/// is infallible there): the clock keeps its last reading, remembers the
/// error, and the binding throws it when the call returns.
enum ProducerClock {
    Js(JsClock),
    Callback {
        now: Function,
        last: Cell<u64>,
        failure: Rc<RefCell<Option<JsValue>>>,
    },
}

impl Clock for ProducerClock {
    fn now_ms(&self) -> u64 {
        match self {
            ProducerClock::Js(c) => c.now_ms(),
            ProducerClock::Callback { now, last, failure } => {
                let reading = now
                    .call0(&JsValue::UNDEFINED)
                    .and_then(|v| match v.as_f64() {
                        Some(f) if f.is_finite() && f >= 0.0 => Ok(f as u64),
                        _ => Err(coded_error(
                            CLOCK_FAILED,
                            "now() must return a non-negative finite number",
                        )),
                    });
                match reading {
                    Ok(t) => {
                        last.set(t);
                        t
                    }
                    Err(thrown) => {
                        let mut slot = failure.borrow_mut();
                        if slot.is_none() {
                            #[derive(Serialize)]
                            struct Cause {
                                #[serde(with = "serde_wasm_bindgen::preserve")]
                                cause: JsValue,
                            }
                            let e = coded_error(CLOCK_FAILED, "the now() callback failed");
                            *slot = Some(with_details(e, &Cause { cause: thrown }));
                        }
                        last.get()
                    }
                }
            }
        }
    }
}

/// `ProducerOptions`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ProducerOptions {
    pages: Option<u64>,
    buffer_bytes: Option<u64>,
    max_rows: Option<u64>,
    max_latency_ms: Option<u64>,
    #[serde(default, deserialize_with = "super::js::opt_function")]
    now: Option<Function>,
}

/// `ProducerTotals` (local counters: the writer refuses, never rounds, a
/// count past 2^53).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Totals {
    rows: u64,
    control_lines: u64,
    bytes: u64,
    chunks: u64,
    max_chunk_bytes: u64,
}

/// Frames NDJSON lines into page-aligned chunks and tells the caller what
/// to write: every method returns the chunks (possibly none) to send now.
#[wasm_bindgen(js_name = ChunkProducer)]
pub struct ChunkProducer {
    inner: CoreProducer<ProducerClock>,
    failure: Rc<RefCell<Option<JsValue>>>,
    scratch: Vec<u8>,
    out: Vec<Vec<u8>>,
}

#[wasm_bindgen(js_class = ChunkProducer)]
impl ChunkProducer {
    /// `new ChunkProducer({ pages, bufferBytes, maxRows, maxLatencyMs, now })`.
    /// Defaults are the protocol's: 4 pages of 16 KiB, 1000 rows, 50 ms.
    #[wasm_bindgen(constructor)]
    pub fn new(
        options: Option<super::types::ProducerOptionsArg>,
    ) -> Result<ChunkProducer, JsValue> {
        let options: ProducerOptions = super::js::options(options)?;
        let cfg = StreamConfig::default();
        let mut limits = ProducerLimits::from_config(&cfg);
        if let Some(pages) = options.pages {
            if pages == 0 || pages > 65_536 {
                return Err(invalid_argument("pages must be between 1 and 65536"));
            }
            limits.buffer_bytes = pages as usize * PAGE_BYTES;
        }
        if let Some(bytes) = options.buffer_bytes {
            if bytes == 0 || bytes > (1 << 30) {
                return Err(invalid_argument("bufferBytes must be between 1 and 2^30"));
            }
            limits.buffer_bytes = bytes as usize;
        }
        if let Some(rows) = options.max_rows {
            limits.max_rows = u32::try_from(rows.max(1)).unwrap_or(u32::MAX);
        }
        if let Some(ms) = options.max_latency_ms {
            limits.max_latency_ms = ms.max(1);
        }
        let failure = Rc::new(RefCell::new(None));
        let clock = match options.now {
            None => ProducerClock::Js(JsClock),
            Some(now) => ProducerClock::Callback {
                now,
                last: Cell::new(0),
                failure: failure.clone(),
            },
        };
        Ok(Self {
            inner: CoreProducer::with_limits(limits, clock),
            failure,
            scratch: Vec::new(),
            out: Vec::new(),
        })
    }

    /// Appends one row line (without newline; one is added). Returns the
    /// chunks to write now.
    #[wasm_bindgen(js_name = pushRow, unchecked_return_type = "Uint8Array[]")]
    pub fn push_row(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "string | Uint8Array")] line: JsValue,
    ) -> Result<JsValue, JsValue> {
        text_or_bytes(&line, "line", &mut self.scratch)?;
        let (p, line, out) = (&mut self.inner, &self.scratch, &mut self.out);
        let Ok(()) = p.push_row(line, out);
        self.take_chunks()
    }

    /// Appends a control line (`open`, `error`, `end`, ...): no row cap, no
    /// latency clock, never split.
    #[wasm_bindgen(js_name = pushControl, unchecked_return_type = "Uint8Array[]")]
    pub fn push_control(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "string | Uint8Array")] line: JsValue,
    ) -> Result<JsValue, JsValue> {
        text_or_bytes(&line, "line", &mut self.scratch)?;
        let (p, line, out) = (&mut self.inner, &self.scratch, &mut self.out);
        let Ok(()) = p.push_control(line, out);
        self.take_chunks()
    }

    /// The chunk whose latency cap has passed, if any. Call it from a timer
    /// set to `nextDeadlineMs()` while the row source stalls.
    #[wasm_bindgen(js_name = flushIfDue, unchecked_return_type = "Uint8Array[]")]
    pub fn flush_if_due(&mut self) -> Result<JsValue, JsValue> {
        let Ok(_) = self.inner.flush_if_due(&mut self.out);
        self.take_chunks()
    }

    /// Everything buffered, now.
    #[wasm_bindgen(unchecked_return_type = "Uint8Array[]")]
    pub fn flush(&mut self) -> Result<JsValue, JsValue> {
        let Ok(()) = self.inner.flush(&mut self.out);
        self.take_chunks()
    }

    /// The terminal flush.
    #[wasm_bindgen(unchecked_return_type = "Uint8Array[]")]
    pub fn finish(&mut self) -> Result<JsValue, JsValue> {
        let Ok(_) = self.inner.finish(&mut self.out);
        self.take_chunks()
    }

    /// When the buffered rows' latency cap runs out (clock milliseconds), or
    /// `undefined` when no row is buffered.
    #[wasm_bindgen(js_name = nextDeadlineMs)]
    pub fn next_deadline_ms(&self) -> Option<f64> {
        self.inner.next_deadline_ms().map(|t| t as f64)
    }

    /// Running totals.
    #[wasm_bindgen(getter, unchecked_return_type = "ProducerTotals")]
    pub fn totals(&self) -> Result<JsValue, JsValue> {
        let t = self.inner.totals();
        to_js(&Totals {
            rows: t.rows,
            control_lines: t.control_lines,
            bytes: t.bytes,
            chunks: t.chunks,
            max_chunk_bytes: t.max_chunk_bytes as u64,
        })
    }

    /// Bytes waiting in the buffer.
    #[wasm_bindgen(getter = bufferedBytes)]
    pub fn buffered_bytes(&self) -> f64 {
        self.inner.buffered_bytes() as f64
    }

    /// Rows waiting in the buffer.
    #[wasm_bindgen(getter = bufferedRows)]
    pub fn buffered_rows(&self) -> f64 {
        self.inner.buffered_rows() as f64
    }

    /// The production buffer size in bytes.
    #[wasm_bindgen(getter = bufferBytes)]
    pub fn buffer_bytes(&self) -> f64 {
        self.inner.limits().buffer_bytes as f64
    }

    /// Why the last chunk went out: `bytes`, `rows`, `latency`, `finish`,
    /// `explicit`, or `undefined` before the first.
    #[wasm_bindgen(getter = lastFlush, unchecked_return_type = "FlushReason | undefined")]
    pub fn last_flush(&self) -> JsValue {
        match self.inner.last_flush() {
            Some(r) => JsValue::from_str(r.as_str()),
            None => JsValue::UNDEFINED,
        }
    }
}

impl ChunkProducer {
    /// Hands the collected chunks to JS, or the clock callback's failure.
    /// The producer has moved on either way, so a failure carries the chunks
    /// the call produced in its `chunks` property: nothing is lost.
    fn take_chunks(&mut self) -> Result<JsValue, JsValue> {
        let chunks = chunk_array(&self.out);
        self.out.clear();
        match self.failure.borrow_mut().take() {
            Some(e) => {
                #[derive(Serialize)]
                struct Chunks {
                    #[serde(with = "serde_wasm_bindgen::preserve")]
                    chunks: js_sys::Array,
                }
                Err(with_details(e, &Chunks { chunks }))
            }
            None => Ok(chunks.into()),
        }
    }
}
