//! Plain chunked-HTTP/1.1 helpers for hosts that write to a `std::io::Write`
//! (a raw socket, a CGI-style process) instead of using an HTTP library.

use std::io::{self, Write};

use super::producer::ChunkSink;
use super::protocol::NDJSON_CONTENT_TYPE;

/// Headers every streamed response carries (PROTOCOL.md §1).
pub const STREAM_HEADERS: [(&str, &str); 4] = [
    ("Content-Type", NDJSON_CONTENT_TYPE),
    ("Cache-Control", "no-store"),
    ("X-Accel-Buffering", "no"),
    ("Access-Control-Allow-Origin", "*"),
];

/// Writes the status line and headers of a chunked NDJSON response.
pub fn write_stream_head<W: Write>(w: &mut W) -> io::Result<()> {
    let mut head = String::from("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n");
    for (k, v) in STREAM_HEADERS {
        head.push_str(k);
        head.push_str(": ");
        head.push_str(v);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())
}

/// Writes one HTTP chunk. An empty `data` writes nothing (an empty chunk
/// would end the body).
pub fn write_chunk<W: Write>(w: &mut W, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    write!(w, "{:x}\r\n", data.len())?;
    w.write_all(data)?;
    w.write_all(b"\r\n")
}

/// Writes the terminating zero-length chunk.
pub fn write_terminator<W: Write>(w: &mut W) -> io::Result<()> {
    w.write_all(b"0\r\n\r\n")
}

/// A [`ChunkSink`] that writes each chunk as one HTTP chunk and flushes.
#[derive(Debug)]
pub struct ChunkedWriter<W: Write> {
    inner: W,
}

impl<W: Write> ChunkedWriter<W> {
    /// Wraps a writer positioned after the response head.
    pub fn new(inner: W) -> Self {
        Self { inner }
    }

    /// Writes the terminator and returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        write_terminator(&mut self.inner)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> ChunkSink for ChunkedWriter<W> {
    type Error = io::Error;
    fn write_chunk(&mut self, chunk: &[u8]) -> io::Result<()> {
        write_chunk(&mut self.inner, chunk)?;
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::clock::FakeClock;
    use crate::core::producer::{ChunkProducer, ProducerLimits};
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn head_has_protocol_headers_and_no_credentials() {
        let mut out = Vec::new();
        write_stream_head(&mut out).unwrap();
        let s = String::from_utf8(out).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(s.contains("Content-Type: application/x-ndjson\r\n"));
        assert!(s.contains("Transfer-Encoding: chunked\r\n"));
        assert!(s.contains("Access-Control-Allow-Origin: *\r\n"));
        assert!(!s.to_ascii_lowercase().contains("allow-credentials"));
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn producer_chunks_become_http_chunks() {
        let lim = ProducerLimits {
            buffer_bytes: 8,
            max_rows: 100,
            max_latency_ms: 100,
        };
        let mut p = ChunkProducer::with_limits(lim, FakeClock::new(0));
        let mut w = ChunkedWriter::new(Vec::new());
        p.drive_lines(["abc", "def", "g"], &mut w).unwrap();
        write_chunk(&mut w.inner, b"").unwrap();
        let out = w.finish().unwrap();
        assert_eq!(out, b"8\r\nabc\ndef\n\r\n2\r\ng\n\r\n0\r\n\r\n");
    }
}
