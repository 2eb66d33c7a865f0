//! `PrefixHasher`: the running prefix digest of PROTOCOL.md §2.1.

use js_sys::Array;
use wasm_bindgen::prelude::*;

use super::js::{invalid_argument, text_or_bytes};
use crate::core::digest::PrefixHasher as CoreHasher;

/// Incremental SHA-256 over row lines (each without its trailing newline).
#[wasm_bindgen(js_name = PrefixHasher)]
#[derive(Clone, Default)]
pub struct PrefixHasher {
    inner: CoreHasher,
    scratch: Vec<u8>,
}

#[wasm_bindgen(js_class = PrefixHasher)]
impl PrefixHasher {
    /// A hasher over zero rows.
    #[wasm_bindgen(constructor)]
    pub fn new() -> PrefixHasher {
        Self::default()
    }

    /// Adds one row line (a string, taken as UTF-8, or its bytes). One
    /// trailing `\n` or `\r\n` is ignored.
    #[wasm_bindgen(js_name = updateLine)]
    pub fn update_line(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "string | Uint8Array")] line: JsValue,
    ) -> Result<(), JsValue> {
        let mut buf = std::mem::take(&mut self.scratch);
        let r = text_or_bytes(&line, "line", &mut buf);
        if r.is_ok() {
            self.inner.update_line(&buf);
        }
        self.scratch = buf;
        r
    }

    /// Adds many row lines in one call. The array crosses into wasm as one
    /// joined string, so this is much faster than a loop of `updateLine`.
    #[wasm_bindgen(js_name = updateLines)]
    pub fn update_lines(
        &mut self,
        #[wasm_bindgen(unchecked_param_type = "readonly string[]")] lines: JsValue,
    ) -> Result<(), JsValue> {
        let Some(arr) = lines.dyn_ref::<Array>() else {
            return Err(invalid_argument("lines must be an array of strings"));
        };
        let n = arr.length();
        for i in 0..n {
            if !arr.get(i).is_string() {
                return Err(invalid_argument(&format!("lines[{i}] is not a string")));
            }
        }
        if n == 0 {
            return Ok(());
        }
        let joined = arr.join("\n").as_string().unwrap_or_default();
        // Row lines never contain '\n'. When one does (a caller passing lines
        // with their newline), hash element by element so the result is the
        // same as a loop of `updateLine`.
        if joined.bytes().filter(|&b| b == b'\n').count() == n as usize - 1 {
            for l in joined.split('\n') {
                self.inner.update_line(l.as_bytes());
            }
        } else {
            for i in 0..n {
                let l = arr.get(i).as_string().unwrap_or_default();
                self.inner.update_line(l.as_bytes());
            }
        }
        Ok(())
    }

    /// The digest of the rows so far, as 64 lowercase hex characters.
    #[wasm_bindgen(js_name = hexDigest)]
    pub fn hex_digest(&self) -> String {
        self.inner.hex_digest()
    }

    /// Compares with a hex digest in constant time (case-insensitive); a
    /// string that is not 64 hex characters never matches.
    #[wasm_bindgen(js_name = matchesHex)]
    pub fn matches_hex(&self, expected_hex: &str) -> bool {
        self.inner.matches_hex(expected_hex)
    }

    /// A copy of the running state; both continue independently.
    pub fn checkpoint(&self) -> PrefixHasher {
        Self {
            inner: self.inner.checkpoint(),
            scratch: Vec::new(),
        }
    }

    /// Same as `checkpoint()`.
    #[wasm_bindgen(js_name = clone)]
    pub fn clone_js(&self) -> PrefixHasher {
        self.checkpoint()
    }

    /// Rows hashed so far.
    #[wasm_bindgen(getter)]
    pub fn rows(&self) -> f64 {
        self.inner.rows() as f64
    }

    /// Bytes hashed so far (without newlines).
    #[wasm_bindgen(getter)]
    pub fn bytes(&self) -> f64 {
        self.inner.bytes() as f64
    }
}
