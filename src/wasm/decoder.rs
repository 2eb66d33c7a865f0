//! `StreamDecoder`: the client's hot path. One call per network chunk frames
//! the bytes, hashes and checks every line with the core's
//! [`StreamVerifier`], and hands back all the rows of the chunk as one JSON
//! array text (one `JSON.parse` in JS instead of one per row) plus the
//! control frames it met.
//!
//! With `externalHashing` the SHA-256 is left to JS (Node's native
//! `node:crypto` is about 4× faster than SHA-256 in wasm): after each call
//! JS feeds `hashInput()` to its hash and reports the running digest with
//! `inputHashed(hex)`, which is where the `end` line's digest is checked.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use super::framer::{framer_error, max_line_bytes};
use super::js::{coded_error, copy_bytes, to_js, with_details, ExactJson};
use crate::core::framer::NdjsonFramer;
use crate::core::protocol::{ClientError, StreamEvent, StreamVerifier, ROW_PREFIX};

/// The value of a row line `{"row":VALUE}`, as written. The server's exact
/// form is sliced; other spellings (spaces) are trimmed; a key written with
/// escapes is re-serialised by serde.
fn row_value(line: &str) -> Cow<'_, str> {
    if line.as_bytes().starts_with(ROW_PREFIX) {
        if let Some(v) = line[ROW_PREFIX.len()..].strip_suffix('}') {
            return Cow::Borrowed(v);
        }
    }
    let spaced = line
        .trim()
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .and_then(|t| t.trim_start().strip_prefix("\"row\""))
        .and_then(|t| t.trim_start().strip_prefix(':'));
    match spaced {
        Some(v) => Cow::Borrowed(v.trim()),
        None => Cow::Owned(
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("row").map(|r| r.to_string()))
                .unwrap_or_else(|| "null".to_owned()),
        ),
    }
}

/// The JS error for a verification failure.
fn client_error(e: &ClientError) -> JsValue {
    #[derive(Serialize)]
    struct Line {
        line: u64,
    }
    let err = coded_error(e.code(), &e.to_string());
    match e {
        ClientError::MalformedLine { line, .. } => with_details(err, &Line { line: *line }),
        _ => err,
    }
}

/// The inner object of a control line (`{"open":{...}}` → `{...}`). The
/// verifier has already parsed the line as one JSON object.
fn control_frame(line: &str, key: &str) -> serde_json::Value {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|mut v| v.get_mut(key).map(serde_json::Value::take))
        .unwrap_or_default()
}

/// `StreamDecoderOptions`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StreamDecoderOptions {
    max_line_bytes: Option<u64>,
    external_hashing: Option<bool>,
}

/// `DecodedBatch`: control frames keep their wire names and values, with
/// integers past 2^53 as `bigint`s.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DecodedBatch<'a> {
    rows: &'a str,
    row_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    open: Option<ExactJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ExactJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<ExactJson<'a>>,
}

#[derive(Default)]
struct Batch {
    rows: String,
    row_count: u64,
    open: Option<String>,
    error: Option<String>,
    end: Option<String>,
    failure: Option<ClientError>,
}

/// Verifying client state for one logical stream across all its resumes.
#[wasm_bindgen(js_name = StreamDecoder)]
pub struct StreamDecoder {
    framer: NdjsonFramer,
    max_line_bytes: usize,
    verifier: StreamVerifier,
    scratch: Vec<u8>,
    /// The buffer of `Batch::rows`, kept across calls.
    rows: String,
    bytes: u64,
    failed: Option<JsValue>,
}

#[wasm_bindgen(js_class = StreamDecoder)]
impl StreamDecoder {
    /// `new StreamDecoder({ maxLineBytes, externalHashing })`.
    #[wasm_bindgen(constructor)]
    pub fn new(
        options: Option<super::types::StreamDecoderOptionsArg>,
    ) -> Result<StreamDecoder, JsValue> {
        let options: StreamDecoderOptions = super::js::options(options)?;
        let max = max_line_bytes(options.max_line_bytes)?;
        let external = options.external_hashing.unwrap_or(false);
        Ok(Self {
            framer: NdjsonFramer::with_max_line_bytes(max),
            max_line_bytes: max,
            verifier: if external {
                StreamVerifier::with_external_hashing()
            } else {
                StreamVerifier::new()
            },
            scratch: Vec::new(),
            rows: String::new(),
            bytes: 0,
            failed: None,
        })
    }

    /// Takes one chunk of a response body. Returns its rows (as the text of
    /// a JSON array of row values) and the control frames it completed.
    /// Throws an `Error` with `code` `digest_mismatch` (the `end` line does
    /// not match the rows), `protocol_error`, `malformed_line`,
    /// `line_too_long` or `invalid_utf8`; after that the decoder stays failed.
    /// With external hashing the `end` line's digest is checked by
    /// `inputHashed` instead: hash and report before using the rows.
    #[wasm_bindgen(unchecked_return_type = "DecodedBatch")]
    pub fn push(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "Uint8Array | ArrayBuffer")] chunk: JsValue,
    ) -> Result<JsValue, JsValue> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut buf = std::mem::take(&mut self.scratch);
        copy_bytes(&chunk, "chunk", &mut buf)?;
        self.bytes += buf.len() as u64;
        let mut batch = Batch {
            rows: std::mem::take(&mut self.rows),
            ..Batch::default()
        };
        batch.rows.clear();
        let framed = {
            let verifier = &mut self.verifier;
            self.framer
                .push(&buf, |line| accept(verifier, line, &mut batch))
        };
        // JS reads the running digest after every chunk.
        self.verifier.hash_pending();
        self.scratch = buf;
        let result = match framed {
            Err(e) => Err(framer_error(&e)),
            Ok(()) => batch_to_js(&mut batch),
        };
        self.rows = batch.rows;
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// The response body ended. A last line without its newline is kept
    /// only when it is a control line (a cut row could still look whole);
    /// returns what was completed, with `complete` telling whether the
    /// stream reached a verified `end`.
    #[wasm_bindgen(js_name = endOfBody, unchecked_return_type = "DecodedBatch")]
    pub fn end_of_body(&mut self) -> Result<JsValue, JsValue> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut batch = Batch::default();
        let mut fresh = NdjsonFramer::with_max_line_bytes(self.max_line_bytes);
        std::mem::swap(&mut fresh, &mut self.framer);
        if let Ok(Some(last)) = fresh.finish_collect() {
            let is_control = serde_json::from_str::<serde_json::Value>(&last)
                .ok()
                .and_then(|v| {
                    v.as_object()
                        .map(|o| o.len() == 1 && !o.contains_key("row"))
                })
                .unwrap_or(false);
            if is_control {
                accept(&mut self.verifier, &last, &mut batch);
            }
        }
        self.verifier.hash_pending();
        let result = batch_to_js(&mut batch);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// External hashing: the digest input (PROTOCOL.md §2.1) of the row
    /// lines taken since the last `inputHashed`, concatenated: feed it to an
    /// incremental SHA-256 as is. Empty without external hashing.
    #[wasm_bindgen(js_name = hashInput)]
    pub fn hash_input(&self) -> js_sys::Uint8Array {
        // A copy, made by JS in one step. A view into the module's memory
        // would save that copy (about 3 ms per 34 MB in Node) but can be
        // detached before JS sees it: returning it to JS runs the externref
        // table's allocator, which may grow the memory.
        js_sys::Uint8Array::from(self.verifier.hash_input())
    }

    /// External hashing: `hashInput()` was fed to the caller's SHA-256, whose
    /// running digest (every row from row 0, lowercase hex) is `digestHex`.
    /// Checks a pending `end` line against it: throws `digest_mismatch` (and
    /// the decoder stays failed) when it differs.
    #[wasm_bindgen(js_name = inputHashed)]
    pub fn input_hashed(&mut self, digest_hex: &str) -> Result<(), JsValue> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self
            .verifier
            .input_hashed(digest_hex)
            .map_err(|e| client_error(&e));
        if let Err(e) = &result {
            self.failed = Some(e.clone());
        }
        result
    }

    /// Prepares for a resume after an interruption: drops any partial line
    /// and returns the request body `{cursor, after_rows, prefix_hash}`, or
    /// `null` when the stream has no cursor (not resumable) or is complete.
    /// With external hashing, throws `protocol_error` while `hashInput()`
    /// holds rows not yet reported hashed.
    #[wasm_bindgen(js_name = beginResume, unchecked_return_type = "ResumeRequest | null")]
    pub fn begin_resume(&mut self) -> Result<JsValue, JsValue> {
        if self.failed.is_some() {
            return Ok(JsValue::NULL);
        }
        if !self.verifier.hash_input().is_empty() {
            return Err(coded_error(
                "protocol_error",
                "beginResume: report the hash input with inputHashed() first",
            ));
        }
        match self.verifier.begin_resume() {
            Some(req) => {
                self.framer = NdjsonFramer::with_max_line_bytes(self.max_line_bytes);
                // The core's request, with its wire names.
                to_js(&req)
            }
            None => Ok(JsValue::NULL),
        }
    }

    /// True when the decoder leaves the hashing to JS (`externalHashing`).
    #[wasm_bindgen(getter = externalHashing)]
    pub fn external_hashing(&self) -> bool {
        self.verifier.hashes_externally()
    }

    /// Rows received (and hashed) so far, across resumes.
    #[wasm_bindgen(getter = rowCount)]
    pub fn row_count(&self) -> f64 {
        self.verifier.rows() as f64
    }

    /// The running digest of the rows received (external hashing: the last
    /// one reported to `inputHashed`).
    #[wasm_bindgen(getter = prefixHash)]
    pub fn prefix_hash(&self) -> String {
        self.verifier.prefix_hash()
    }

    /// The cursor, once an `open` line carried one.
    #[wasm_bindgen(getter)]
    pub fn cursor(&self) -> Option<String> {
        self.verifier.cursor().map(str::to_owned)
    }

    /// Resumes begun so far.
    #[wasm_bindgen(getter)]
    pub fn resumes(&self) -> u32 {
        self.verifier.resumes()
    }

    /// True once a verified `end` line was seen (external hashing: once its
    /// digest was checked by `inputHashed`).
    #[wasm_bindgen(getter)]
    pub fn complete(&self) -> bool {
        self.verifier.is_complete()
    }

    /// Body bytes pushed so far, across resumes.
    #[wasm_bindgen(getter)]
    pub fn bytes(&self) -> f64 {
        self.bytes as f64
    }
}

fn accept(verifier: &mut StreamVerifier, line: &str, batch: &mut Batch) {
    if batch.failure.is_some() {
        return;
    }
    match verifier.accept(line) {
        Ok(StreamEvent::Row) => {
            batch
                .rows
                .push(if batch.row_count == 0 { '[' } else { ',' });
            batch.rows.push_str(&row_value(line));
            batch.row_count += 1;
        }
        Ok(StreamEvent::Open(_)) => batch.open = Some(line.to_owned()),
        Ok(StreamEvent::Error(_)) => batch.error = Some(line.to_owned()),
        Ok(StreamEvent::End(_)) => batch.end = Some(line.to_owned()),
        Ok(StreamEvent::Ignored) => {}
        Err(e) => batch.failure = Some(e),
    }
}

fn batch_to_js(batch: &mut Batch) -> Result<JsValue, JsValue> {
    if let Some(e) = &batch.failure {
        return Err(client_error(e));
    }
    if batch.row_count == 0 {
        batch.rows.push('[');
    }
    batch.rows.push(']');
    let open = batch.open.as_deref().map(|l| control_frame(l, "open"));
    let error = batch.error.as_deref().map(|l| control_frame(l, "error"));
    let end = batch.end.as_deref().map(|l| control_frame(l, "end"));
    to_js(&DecodedBatch {
        rows: &batch.rows,
        row_count: batch.row_count,
        open: open.as_ref().map(ExactJson),
        error: error.as_ref().map(ExactJson),
        end: end.as_ref().map(ExactJson),
    })
}

#[cfg(test)]
mod tests {
    use super::row_value;
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn row_values_are_sliced_exactly() {
        assert_eq!(row_value(r#"{"row":{"a":1}}"#), r#"{"a":1}"#);
        assert_eq!(row_value(r#" { "row" : [1, 2] } "#), "[1, 2]");
        assert_eq!(row_value(r#"{"\u0072ow":[3]}"#), "[3]");
        assert_eq!(
            row_value(r#"{"row":12345678901234567890}"#),
            "12345678901234567890"
        );
    }
}
