//! `NdjsonFramer`: bytes in, complete lines out.

use wasm_bindgen::prelude::*;

use serde::{Deserialize, Serialize};

use super::js::{coded_error, copy_bytes, invalid_argument, string_array, with_details};
use crate::core::framer::{FramerError, NdjsonFramer as CoreFramer, DEFAULT_MAX_LINE_BYTES};

/// The JS error for a framing failure: `code` plus the line and its details.
pub(crate) fn framer_error(e: &FramerError) -> JsValue {
    #[derive(Serialize)]
    struct Details {
        line: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        limit: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
    }
    let (limit, offset) = match e {
        FramerError::LineTooLong { limit, .. } => (Some(*limit as u64), None),
        FramerError::InvalidUtf8 { offset, .. } => (None, Some(*offset as u64)),
    };
    let details = Details {
        line: e.line(),
        limit,
        offset,
    };
    with_details(coded_error(e.code(), &e.to_string()), &details)
}

/// The lines of a failing chunk before the bad one, on its error.
fn with_lines(err: JsValue, lines: js_sys::Array) -> JsValue {
    #[derive(Serialize)]
    struct Lines {
        #[serde(with = "serde_wasm_bindgen::preserve")]
        lines: js_sys::Array,
    }
    with_details(err, &Lines { lines })
}

/// `FramerOptions`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct FramerOptions {
    max_line_bytes: Option<u64>,
}

/// Largest `maxLineBytes` accepted: 1 GiB.
const MAX_LINE_LIMIT: u64 = 1 << 30;

/// Checks a `maxLineBytes` option (default 16 MiB).
pub(crate) fn max_line_bytes(option: Option<u64>) -> Result<usize, JsValue> {
    match option {
        Some(n) => {
            // Bounded well below usize::MAX on wasm32: the framer adds to
            // the limit (room for a '\r').
            if n == 0 || n > MAX_LINE_LIMIT {
                return Err(invalid_argument("maxLineBytes must be between 1 and 2^30"));
            }
            Ok(n as usize)
        }
        None => Ok(DEFAULT_MAX_LINE_BYTES),
    }
}

/// Push-style NDJSON line framer: a line or a UTF-8 character split across
/// chunks is reassembled exactly; blank lines are skipped.
#[wasm_bindgen(js_name = NdjsonFramer)]
pub struct NdjsonFramer {
    inner: CoreFramer,
    scratch: Vec<u8>,
    joined: String,
}

#[wasm_bindgen(js_class = NdjsonFramer)]
impl NdjsonFramer {
    /// `new NdjsonFramer({ maxLineBytes })`; the default limit is 16 MiB.
    #[wasm_bindgen(constructor)]
    pub fn new(options: Option<super::types::FramerOptionsArg>) -> Result<NdjsonFramer, JsValue> {
        let options: FramerOptions = super::js::options(options)?;
        Ok(Self {
            inner: CoreFramer::with_max_line_bytes(max_line_bytes(options.max_line_bytes)?),
            scratch: Vec::new(),
            joined: String::new(),
        })
    }

    /// Feeds a chunk; returns the lines it completed, in order. Throws an
    /// `Error` with `code` `line_too_long` or `invalid_utf8`, the 1-based
    /// `line`, and in `lines` the lines of this chunk before the bad one.
    /// The framer then stays failed.
    #[wasm_bindgen(unchecked_return_type = "string[]")]
    pub fn push(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "Uint8Array | ArrayBuffer")] chunk: JsValue,
    ) -> Result<JsValue, JsValue> {
        copy_bytes(&chunk, "chunk", &mut self.scratch)?;
        let out = js_sys::Array::new();
        let pushed = self.inner.push(&self.scratch, |l| {
            out.push(&JsValue::from_str(l));
        });
        match pushed {
            Ok(()) => Ok(out.into()),
            Err(e) => {
                // The lines before the bad one are complete and valid: they
                // travel with the error instead of being lost.
                Err(with_lines(framer_error(&e), out))
            }
        }
    }

    /// Like `push`, but returns the completed lines as one string, joined
    /// with `\n` (`""` when there are none; no line holds a newline, so
    /// `text.split("\n")` gives them back). One string crosses into JS per
    /// chunk instead of one per line, which is much cheaper in browsers.
    /// Errors are the same as `push`'s, `lines` included.
    #[wasm_bindgen(js_name = pushJoined, unchecked_return_type = "string")]
    pub fn push_joined(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "Uint8Array | ArrayBuffer")] chunk: JsValue,
    ) -> Result<JsValue, JsValue> {
        copy_bytes(&chunk, "chunk", &mut self.scratch)?;
        let mut joined = std::mem::take(&mut self.joined);
        joined.clear();
        let pushed = self.inner.push(&self.scratch, |l| {
            if !joined.is_empty() {
                joined.push('\n');
            }
            joined.push_str(l);
        });
        let result = match pushed {
            Ok(()) => Ok(JsValue::from_str(&joined)),
            Err(e) => {
                let lines = if joined.is_empty() {
                    js_sys::Array::new()
                } else {
                    string_array(joined.split('\n'))
                };
                Err(with_lines(framer_error(&e), lines))
            }
        };
        self.joined = joined;
        result
    }

    /// Ends the stream: returns the last line if it had no newline.
    #[wasm_bindgen(unchecked_return_type = "string[]")]
    pub fn finish(&mut self) -> Result<JsValue, JsValue> {
        let last = self.inner.finish_collect().map_err(|e| framer_error(&e))?;
        Ok(string_array(last).into())
    }

    /// Non-blank lines delivered so far.
    #[wasm_bindgen(getter = linesDelivered)]
    pub fn lines_delivered(&self) -> f64 {
        self.inner.lines_delivered() as f64
    }

    /// Bytes pushed so far.
    #[wasm_bindgen(getter = bytesIn)]
    pub fn bytes_in(&self) -> f64 {
        self.inner.bytes_in() as f64
    }

    /// Bytes held for an incomplete line.
    #[wasm_bindgen(getter = pendingBytes)]
    pub fn pending_bytes(&self) -> f64 {
        self.inner.pending_bytes() as f64
    }

    /// The line limit in force.
    #[wasm_bindgen(getter = maxLineBytes)]
    pub fn max_line_bytes(&self) -> f64 {
        self.inner.max_line_bytes() as f64
    }
}
