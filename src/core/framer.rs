//! NDJSON decoding: bytes in, complete lines out.
//!
//! [`NdjsonFramer`] takes arbitrary byte chunks with [`NdjsonFramer::push`] and
//! hands out each complete line as `&str`; [`NdjsonFramer::finish`] delivers a
//! last line that has no newline. The lines produced for a byte stream never
//! depend on how it was split: a line or a multi-byte UTF-8 character split
//! across chunks is reassembled exactly, because UTF-8 is only checked on
//! complete lines. `\r\n` is accepted, blank lines are skipped (but counted,
//! so line numbers in errors match the byte stream), and a line longer than
//! the configured maximum is a [`FramerError::LineTooLong`] instead of
//! unbounded memory.

use thiserror::Error;

/// Default maximum line length: 16 MiB.
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// Why a byte stream could not be framed. Line numbers are 1-based and count
/// every line of the stream, blank ones included.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FramerError {
    /// A line exceeded the maximum length.
    #[error("line {line} is longer than the limit of {limit} bytes")]
    LineTooLong {
        /// The offending line.
        line: u64,
        /// The limit in bytes.
        limit: usize,
    },
    /// A line is not valid UTF-8.
    #[error("line {line} is not valid UTF-8 (at byte {offset} of the line)")]
    InvalidUtf8 {
        /// The offending line.
        line: u64,
        /// Byte offset of the first invalid sequence within the line.
        offset: usize,
    },
}

impl FramerError {
    /// Stable snake_case code for the wire and for JS `Error.code`.
    pub fn code(&self) -> &'static str {
        match self {
            FramerError::LineTooLong { .. } => "line_too_long",
            FramerError::InvalidUtf8 { .. } => "invalid_utf8",
        }
    }

    /// The line the error is about.
    pub fn line(&self) -> u64 {
        match self {
            FramerError::LineTooLong { line, .. } | FramerError::InvalidUtf8 { line, .. } => *line,
        }
    }
}

/// Push-style NDJSON line framer.
#[derive(Debug, Clone)]
pub struct NdjsonFramer {
    /// Bytes of the current, incomplete line.
    pending: Vec<u8>,
    /// Lines completed so far (blank ones included).
    lines_seen: u64,
    /// Non-blank lines delivered so far.
    lines_delivered: u64,
    /// Total bytes pushed.
    bytes_in: u64,
    max_line_bytes: usize,
    /// Once an error happened, every later call repeats it.
    failed: Option<FramerError>,
}

impl Default for NdjsonFramer {
    fn default() -> Self {
        Self::new()
    }
}

impl NdjsonFramer {
    /// A framer with the default 16 MiB line limit.
    pub fn new() -> Self {
        Self::with_max_line_bytes(DEFAULT_MAX_LINE_BYTES)
    }

    /// A framer that refuses lines longer than `max_line_bytes` (at least 1).
    pub fn with_max_line_bytes(max_line_bytes: usize) -> Self {
        Self {
            pending: Vec::new(),
            lines_seen: 0,
            lines_delivered: 0,
            bytes_in: 0,
            max_line_bytes: max_line_bytes.max(1),
            failed: None,
        }
    }

    /// The configured line limit.
    pub fn max_line_bytes(&self) -> usize {
        self.max_line_bytes
    }

    /// Non-blank lines delivered so far.
    pub fn lines_delivered(&self) -> u64 {
        self.lines_delivered
    }

    /// Bytes pushed so far.
    pub fn bytes_in(&self) -> u64 {
        self.bytes_in
    }

    /// Bytes held for an incomplete line.
    pub fn pending_bytes(&self) -> usize {
        self.pending.len()
    }

    /// Feeds a chunk; calls `on_line` for every line it completes, in order.
    ///
    /// On error, the lines before the bad one have been delivered and the
    /// framer stays failed: later calls return the same error.
    pub fn push<F: FnMut(&str)>(
        &mut self,
        chunk: &[u8],
        mut on_line: F,
    ) -> Result<(), FramerError> {
        self.push_numbered(chunk, |l, _| on_line(l))
    }

    /// Like [`NdjsonFramer::push`], also handing each line's 1-based number
    /// in the stream (blank lines counted), for errors that name their line.
    pub fn push_numbered<F: FnMut(&str, u64)>(
        &mut self,
        chunk: &[u8],
        mut on_line: F,
    ) -> Result<(), FramerError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.bytes_in += chunk.len() as u64;
        let mut rest = chunk;
        while let Some(nl) = memchr(b'\n', rest) {
            let (head, tail) = rest.split_at(nl);
            rest = &tail[1..];
            if self.pending.is_empty() {
                self.complete_line(head, &mut on_line)?;
            } else {
                if self.pending.len() + head.len() > self.max_line_bytes.saturating_add(1) {
                    return Err(self.fail_too_long());
                }
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(head);
                let r = self.complete_line(&line, &mut on_line);
                line.clear();
                self.pending = line;
                r?;
            }
        }
        if !rest.is_empty() {
            // +1: a line may carry a '\r' that is stripped once it completes.
            if self.pending.len() + rest.len() > self.max_line_bytes.saturating_add(1) {
                return Err(self.fail_too_long());
            }
            self.pending.extend_from_slice(rest);
        }
        Ok(())
    }

    /// Feeds a chunk and returns its completed lines.
    pub fn push_collect(&mut self, chunk: &[u8]) -> Result<Vec<String>, FramerError> {
        let mut out = Vec::new();
        self.push(chunk, |l| out.push(l.to_owned()))?;
        Ok(out)
    }

    /// Ends the stream: a last line without a newline is delivered. The framer
    /// is then ready for a new stream (line numbers continue).
    pub fn finish<F: FnMut(&str)>(&mut self, mut on_line: F) -> Result<(), FramerError> {
        self.finish_numbered(|l, _| on_line(l))
    }

    /// Like [`NdjsonFramer::finish`], with the line's number.
    pub fn finish_numbered<F: FnMut(&str, u64)>(
        &mut self,
        mut on_line: F,
    ) -> Result<(), FramerError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        if self.pending.is_empty() {
            return Ok(());
        }
        let line = std::mem::take(&mut self.pending);
        self.complete_line(&line, &mut on_line)
    }

    /// Like [`NdjsonFramer::finish`], returning the last line if there was one.
    pub fn finish_collect(&mut self) -> Result<Option<String>, FramerError> {
        let mut out = None;
        self.finish(|l| out = Some(l.to_owned()))?;
        Ok(out)
    }

    fn fail_too_long(&mut self) -> FramerError {
        let e = FramerError::LineTooLong {
            line: self.lines_seen + 1,
            limit: self.max_line_bytes,
        };
        self.pending = Vec::new();
        self.failed = Some(e.clone());
        e
    }

    fn complete_line<F: FnMut(&str, u64)>(
        &mut self,
        raw: &[u8],
        on_line: &mut F,
    ) -> Result<(), FramerError> {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.len() > self.max_line_bytes {
            return Err(self.fail_too_long());
        }
        self.lines_seen += 1;
        match std::str::from_utf8(line) {
            Ok(s) => {
                if !s.bytes().all(|b| b.is_ascii_whitespace()) {
                    self.lines_delivered += 1;
                    on_line(s, self.lines_seen);
                }
                Ok(())
            }
            Err(e) => {
                let err = FramerError::InvalidUtf8 {
                    line: self.lines_seen,
                    offset: e.valid_up_to(),
                };
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }
}

/// Position of the first `needle` in `hay`: 16 bytes a step with SSE2 (part
/// of the x86_64 baseline), a word at a time elsewhere; a plain
/// `iter().position` is markedly slower on long lines. (The core names no
/// host crate, so not the `memchr` crate, which the server uses.)
pub(crate) fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of the x86_64 baseline.
        unsafe { memchr_sse2(needle, hay) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        memchr_swar(needle, hay)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn memchr_sse2(needle: u8, hay: &[u8]) -> Option<usize> {
    use std::arch::x86_64::*;
    let len = hay.len();
    if len < 16 {
        return hay.iter().position(|&b| b == needle);
    }
    let n = _mm_set1_epi8(needle as i8);
    let p = hay.as_ptr();
    let mut i = 0;
    while i + 16 <= len {
        // SAFETY: `i + 16 <= len`: the 16 bytes are inside `hay`.
        let m = _mm_movemask_epi8(_mm_cmpeq_epi8(
            _mm_loadu_si128(p.add(i) as *const __m128i),
            n,
        ));
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        i += 16;
    }
    if i < len {
        // The last 16 bytes, overlapping ones already tested (no match
        // there): only lanes from `i` on count.
        let last = len - 16;
        // SAFETY: `len >= 16`, so `last..len` is inside `hay`.
        let m = (_mm_movemask_epi8(_mm_cmpeq_epi8(
            _mm_loadu_si128(p.add(last) as *const __m128i),
            n,
        )) as u32)
            >> (i - last);
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
    }
    None
}

/// The portable scan: eight bytes a word.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
fn memchr_swar(needle: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let rep = LO.wrapping_mul(needle as u64);
    let mut i = 0;
    while i + 8 <= hay.len() {
        let mut w = [0u8; 8];
        w.copy_from_slice(&hay[i..i + 8]);
        let x = u64::from_le_bytes(w) ^ rep;
        if (x.wrapping_sub(LO) & !x & HI) != 0 {
            break;
        }
        i += 8;
    }
    hay[i..].iter().position(|&b| b == needle).map(|p| p + i)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn frame_all(chunks: &[&[u8]]) -> Result<Vec<String>, FramerError> {
        let mut f = NdjsonFramer::new();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(f.push_collect(c)?);
        }
        out.extend(f.finish_collect()?);
        Ok(out)
    }

    #[test]
    fn splits_lines_and_keeps_partial_ones() {
        let mut f = NdjsonFramer::new();
        assert_eq!(
            f.push_collect(b"{\"a\":1}\n{\"b\"").unwrap(),
            vec!["{\"a\":1}"]
        );
        assert_eq!(f.pending_bytes(), 4);
        assert_eq!(f.push_collect(b":2}\n").unwrap(), vec!["{\"b\":2}"]);
        assert_eq!(f.lines_delivered(), 2);
    }

    #[test]
    fn numbered_lines_count_blank_ones() {
        let mut f = NdjsonFramer::new();
        let mut got = Vec::new();
        f.push_numbered(b"a\n\n  \nb\r\nc", |l, n| got.push((l.to_owned(), n)))
            .unwrap();
        f.finish_numbered(|l, n| got.push((l.to_owned(), n)))
            .unwrap();
        assert_eq!(got, vec![("a".into(), 1), ("b".into(), 4), ("c".into(), 5)]);
    }

    #[test]
    fn crlf_blank_lines_and_final_line() {
        let out = frame_all(&[b"a\r\n\r\n\n  \nb\r", b"\nc"]).unwrap();
        assert_eq!(out, vec!["a", "b", "c"]);
    }

    #[test]
    fn multibyte_utf8_split_across_chunks() {
        let text = "{\"s\":\"h\u{e9}llo \u{1F600} \u{4e16}\"}\n";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let out = frame_all(&[&bytes[..cut], &bytes[cut..]]).unwrap();
            assert_eq!(out, vec![text.trim_end()], "cut at {cut}");
        }
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let mut f = NdjsonFramer::new();
        let mut got = Vec::new();
        let err = f
            .push(b"ok\n\nbad \xff here\nnever\n", |l| got.push(l.to_owned()))
            .unwrap_err();
        assert_eq!(err, FramerError::InvalidUtf8 { line: 3, offset: 4 });
        assert_eq!(err.code(), "invalid_utf8");
        assert_eq!(got, vec!["ok"], "lines before the bad one are delivered");
        assert_eq!(
            f.push_collect(b"more\n").unwrap_err(),
            err,
            "the framer stays failed"
        );
    }

    #[test]
    fn truncated_utf8_at_end_is_an_error() {
        let mut f = NdjsonFramer::new();
        f.push_collect(b"x\n\xe2\x82").unwrap();
        assert_eq!(
            f.finish_collect().unwrap_err(),
            FramerError::InvalidUtf8 { line: 2, offset: 0 }
        );
    }

    #[test]
    fn long_lines_are_refused_without_buffering_them() {
        let mut f = NdjsonFramer::with_max_line_bytes(8);
        assert_eq!(f.push_collect(b"12345678\n").unwrap(), vec!["12345678"]);
        assert_eq!(f.push_collect(b"1234567\r\n").unwrap(), vec!["1234567"]);
        // A partial line that already exceeds the limit fails at once.
        let err = f.push_collect(b"123456789012").unwrap_err();
        assert_eq!(err, FramerError::LineTooLong { line: 3, limit: 8 });
        assert_eq!(f.pending_bytes(), 0);

        // Growing across many small chunks is caught too.
        let mut f = NdjsonFramer::with_max_line_bytes(8);
        let mut err = None;
        for _ in 0..100 {
            if let Err(e) = f.push_collect(b"xx") {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err.unwrap().code(), "line_too_long");
        assert!(f.pending_bytes() <= 9);
    }

    #[test]
    fn an_unlimited_line_length_does_not_overflow() {
        let mut f = NdjsonFramer::with_max_line_bytes(usize::MAX);
        assert_eq!(f.push_collect(b"abc").unwrap(), Vec::<String>::new());
        assert_eq!(f.push_collect(b"def\n").unwrap(), vec!["abcdef"]);
    }

    #[test]
    fn output_is_independent_of_every_two_and_three_way_split() {
        let text =
            "{\"id\":1,\"s\":\"\u{e9}\u{e8}\"}\r\n\n{\"id\":2,\"s\":\"\u{1F980}\"}\n{\"id\":3}";
        let b = text.as_bytes();
        let whole = frame_all(&[b]).unwrap();
        assert_eq!(whole.len(), 3);
        for i in 0..=b.len() {
            assert_eq!(frame_all(&[&b[..i], &b[i..]]).unwrap(), whole);
            for j in i..=b.len() {
                assert_eq!(frame_all(&[&b[..i], &b[i..j], &b[j..]]).unwrap(), whole);
            }
        }
    }

    #[test]
    fn memchr_matches_naive_search() {
        let mut hay = vec![b'a'; 40];
        for pos in 0..40 {
            hay[pos] = b'\n';
            for start in 0..=pos {
                assert_eq!(memchr(b'\n', &hay[start..]), Some(pos - start));
            }
            hay[pos] = b'a';
        }
        assert_eq!(memchr(b'\n', &hay), None);
        assert_eq!(memchr(b'\n', &[0x8a, 0x0a]), Some(1));
    }

    #[test]
    fn memchr_finds_the_first_match_at_every_length_and_offset() {
        // Both scans (SIMD and word-at-a-time) against the naive one, with
        // the needle at every place of every length up to 3 vector widths,
        // bytes >= 0x80 around it, and a second match after the first.
        for len in 0..48 {
            for pos in 0..=len {
                let mut hay: Vec<u8> = (0..len).map(|i| 0x80 | (i as u8).wrapping_mul(7)).collect();
                if pos < len {
                    hay[pos] = b'\n';
                    if pos + 3 < len {
                        hay[pos + 3] = b'\n';
                    }
                }
                let want = hay.iter().position(|&b| b == b'\n');
                assert_eq!(memchr(b'\n', &hay), want, "len {len} pos {pos}");
                assert_eq!(memchr_swar(b'\n', &hay), want, "len {len} pos {pos}");
            }
        }
    }
}
