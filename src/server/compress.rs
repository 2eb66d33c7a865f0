//! `Content-Encoding` of streamed responses (PROTOCOL §1, 1.1): negotiation
//! from `Accept-Encoding` and the per-stream compressor.
//!
//! The compressor sits below the stream encoder, in the pipe's chunk sink:
//! every chunk the producer flushes is written to it and flushed through it
//! (zstd `ZSTD_e_flush`, a brotli flush meta-block, a deflate sync flush), so
//! whatever the producer made visible — a full chunk, or the rows the
//! latency cap flushes while a query stalls — is decodable by the client at
//! once. The digest, row counts and `end.bytes` are over the decoded lines,
//! as before.
//!
//! Codecs: `zstd` (the C library's streaming API, window limited to 8 MiB:
//! Chromium refuses larger windows), `brotli` (the pure-Rust port) and
//! `flate2` (gzip, pure-Rust miniz_oxide). Levels are [`Compression`]
//! settings; the defaults are the fast ones (zstd 1, brotli 4, gzip 1).

use std::io::Write;

use axum::http::HeaderMap;

/// One content coding the server can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// `zstd`.
    Zstd,
    /// `br`.
    Brotli,
    /// `gzip`.
    Gzip,
}

impl Coding {
    /// Every coding, in the server's order of preference.
    pub const PREFERENCE: [Coding; 3] = [Coding::Zstd, Coding::Brotli, Coding::Gzip];

    /// The `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Zstd => "zstd",
            Coding::Brotli => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// The server's compression settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// `false`: every response is `identity` (`--compression off`).
    pub enabled: bool,
    /// zstd level (1..=19; default 1).
    pub zstd_level: i32,
    /// brotli quality (0..=11; default 4).
    pub brotli_quality: u32,
    /// gzip level (0..=9; default 1).
    pub gzip_level: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Compression {
            enabled: true,
            zstd_level: 1,
            brotli_quality: 4,
            gzip_level: 1,
        }
    }
}

/// The largest zstd window the server uses: 2^23 = 8 MiB (Chromium refuses
/// frames that need more).
pub const ZSTD_WINDOW_LOG: u32 = 23;
/// A zstd stream starts a new frame after this much input: one window.
/// Within a frame, once the input passes the window, the C library's
/// streaming compressor wraps its buffer and matches through its slower
/// "external dictionary" path (`ZSTD_compressBlock_fast_extDict`, most of
/// its time in a profile of a 1M-row stream); a fresh frame at each window
/// keeps every block on the fast path and costs a few hundred bytes of
/// history per 8 MiB. Decoders read the frames one after another (RFC 8878
/// §3.1: a zstd body may hold several frames; Chromium in the e2e test, the
/// `zstd` crate and the `zstd` CLI do).
pub const ZSTD_FRAME_INPUT: usize = 1 << ZSTD_WINDOW_LOG;
/// brotli's window: 2^18 = 256 KiB. The Rust port sets up its ring buffer
/// and hash tables for the whole window before the first byte comes out: at
/// 2^22 that took ~1.3 ms more before the first chunk of a stream than 2^18.
/// Rows repeat within a few lines, so the smaller window lost nothing: on the
/// 1M-row benchmark table, flushed every ~64 KiB at quality 4, 2^18 made a
/// smaller body (ratio 9.6 vs 9.1) and compressed faster (BENCHMARKS.md,
/// issue 13).
const BROTLI_LGWIN: u32 = 18;

impl Compression {
    /// The coding for a request's `Accept-Encoding` (all of its values):
    /// the highest q-value among the codings the server has wins; ties, and
    /// `*`, go to the server's preference (zstd > br > gzip); `q=0` refuses a
    /// coding (also through `*;q=0`); unknown codings (`deflate`, …) are
    /// ignored. `None`: identity.
    pub fn negotiate(&self, headers: &HeaderMap) -> Option<Coding> {
        if !self.enabled {
            return None;
        }
        let mut q_of: [Option<u32>; 3] = [None; 3];
        let mut star: Option<u32> = None;
        for value in headers.get_all(axum::http::header::ACCEPT_ENCODING) {
            let Ok(value) = value.to_str() else { continue };
            for item in value.split(',') {
                let mut parts = item.split(';');
                let name = parts.next().unwrap_or("").trim();
                if name.is_empty() {
                    continue;
                }
                let mut q = Some(1000);
                for p in parts {
                    let p = p.trim();
                    if let Some(v) = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q=")) {
                        q = parse_qvalue(v.trim());
                    }
                }
                // A malformed q-value makes the item void (RFC 9110 §12.4.2).
                let Some(q) = q else { continue };
                if name == "*" {
                    star = Some(q);
                    continue;
                }
                if let Some(i) = Coding::PREFERENCE
                    .iter()
                    .position(|c| c.token().eq_ignore_ascii_case(name))
                {
                    q_of[i] = Some(q);
                }
            }
        }
        let mut best: Option<(u32, Coding)> = None;
        for (i, c) in Coding::PREFERENCE.iter().enumerate() {
            let q = q_of[i].or(star).unwrap_or(0);
            if q > 0 && best.is_none_or(|(bq, _)| q > bq) {
                best = Some((q, *c));
            }
        }
        best.map(|(_, c)| c)
    }

    /// A compressor for `coding` at this configuration's level.
    pub fn compressor(&self, coding: Coding) -> Compressor {
        let inner = match coding {
            Coding::Zstd => Inner::Zstd {
                e: zstd_encoder(Vec::new(), self.zstd_level),
                level: self.zstd_level,
                frame_in: 0,
            },
            Coding::Brotli => Inner::Brotli(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                16 * 1024,
                self.brotli_quality.min(11),
                BROTLI_LGWIN,
            ))),
            Coding::Gzip => Inner::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(self.gzip_level.min(9)),
            )),
        };
        Compressor {
            coding,
            inner: Some(inner),
        }
    }
}

/// `0`, `0.5`, `1.000` → thousandths; `None` when malformed.
fn parse_qvalue(v: &str) -> Option<u32> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let whole = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    let mut f = 0u32;
    for (i, b) in frac.bytes().enumerate() {
        f += u32::from(b - b'0') * [100, 10, 1][i];
    }
    (whole + f <= 1000).then_some(whole + f)
}

/// A zstd encoder writing frames into `out`, window at most 8 MiB.
fn zstd_encoder(out: Vec<u8>, level: i32) -> zstd::stream::write::Encoder<'static, Vec<u8>> {
    let mut e = zstd::stream::write::Encoder::new(out, level).expect("a zstd encoder for a Vec");
    // Cannot fail for a valid window log.
    let _ = e.window_log(ZSTD_WINDOW_LOG);
    e
}

enum Inner {
    Zstd {
        e: zstd::stream::write::Encoder<'static, Vec<u8>>,
        level: i32,
        /// Input bytes in the current frame.
        frame_in: usize,
    },
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

/// One stream's compressor: chunks in, flushed compressed bytes out.
pub struct Compressor {
    coding: Coding,
    inner: Option<Inner>,
}

impl std::fmt::Debug for Compressor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressor")
            .field("coding", &self.coding)
            .finish_non_exhaustive()
    }
}

impl Compressor {
    /// Its coding.
    pub fn coding(&self) -> Coding {
        self.coding
    }

    /// Compresses `chunk` and flushes: the returned bytes decode to
    /// everything given so far. Writing to a `Vec` cannot fail.
    pub fn chunk(&mut self, chunk: &[u8]) -> Vec<u8> {
        match self.inner.as_mut() {
            Some(Inner::Zstd { e, level, frame_in }) => {
                if *frame_in > 0 && *frame_in + chunk.len() > ZSTD_FRAME_INPUT {
                    // End this frame (its bytes were all flushed but the
                    // last block's marker) and go on in a new one.
                    let old = std::mem::replace(e, zstd_encoder(Vec::new(), *level));
                    let mut out = old.finish().unwrap_or_default();
                    *frame_in = 0;
                    let _ = e.write_all(chunk);
                    let _ = e.flush();
                    out.append(e.get_mut());
                    *frame_in += chunk.len();
                    return out;
                }
                *frame_in += chunk.len();
                let _ = e.write_all(chunk);
                let _ = e.flush();
                std::mem::take(e.get_mut())
            }
            Some(Inner::Brotli(e)) => {
                let _ = e.write_all(chunk);
                let _ = e.flush();
                std::mem::take(e.get_mut())
            }
            Some(Inner::Gzip(e)) => {
                let _ = e.write_all(chunk);
                let _ = e.flush();
                std::mem::take(e.get_mut())
            }
            None => Vec::new(),
        }
    }

    /// Ends the compressed stream (zstd's last block, brotli's last
    /// meta-block, gzip's trailer): the bytes that complete the body.
    pub fn finish(&mut self) -> Vec<u8> {
        match self.inner.take() {
            Some(Inner::Zstd { e, .. }) => e.finish().unwrap_or_default(),
            Some(Inner::Brotli(e)) => e.into_inner(),
            Some(Inner::Gzip(e)) => e.finish().unwrap_or_default(),
            None => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn accept(v: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in v {
            h.append(axum::http::header::ACCEPT_ENCODING, v.parse().unwrap());
        }
        h
    }

    fn pick(v: &[&str]) -> Option<&'static str> {
        Compression::default()
            .negotiate(&accept(v))
            .map(Coding::token)
    }

    #[test]
    fn negotiation_honours_q_values_and_prefers_zstd_br_gzip_on_ties() {
        assert_eq!(pick(&[]), None);
        assert_eq!(pick(&["identity"]), None);
        assert_eq!(pick(&["gzip, deflate, br, zstd"]), Some("zstd"));
        assert_eq!(pick(&["gzip, deflate, br"]), Some("br"));
        assert_eq!(
            pick(&["gzip", "br"]),
            Some("br"),
            "every header value counts"
        );
        assert_eq!(pick(&["deflate"]), None, "unknown codings are ignored");
        assert_eq!(pick(&["zstd;q=0.5, gzip;q=0.9"]), Some("gzip"));
        assert_eq!(pick(&["zstd;q=0, br;q=0.1"]), Some("br"));
        assert_eq!(pick(&["*"]), Some("zstd"));
        assert_eq!(pick(&["*;q=0.2, gzip"]), Some("gzip"));
        assert_eq!(pick(&["*;q=0"]), None);
        assert_eq!(pick(&["zstd;q=0, *"]), Some("br"));
        assert_eq!(pick(&["ZSTD;Q=1.000"]), Some("zstd"));
        assert_eq!(
            pick(&["zstd;q=2, gzip"]),
            Some("gzip"),
            "a bad q voids its item"
        );
        assert_eq!(pick(&["zstd;q=0.1234, gzip;q=0.1"]), Some("gzip"));
        let off = Compression {
            enabled: false,
            ..Compression::default()
        };
        assert_eq!(off.negotiate(&accept(&["zstd"])), None);
    }

    fn decode(coding: Coding, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::new();
        match coding {
            Coding::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(bytes)?;
                d.window_log_max(ZSTD_WINDOW_LOG)?;
                d.read_to_end(&mut out)?;
            }
            Coding::Brotli => {
                brotli::Decompressor::new(bytes, 4096).read_to_end(&mut out)?;
            }
            Coding::Gzip => {
                flate2::read::GzDecoder::new(bytes).read_to_end(&mut out)?;
            }
        }
        Ok(out)
    }

    #[test]
    fn every_flushed_chunk_decodes_at_once_and_the_whole_body_round_trips() {
        for coding in Coding::PREFERENCE {
            let mut c = Compression::default().compressor(coding);
            let mut wire = Vec::new();
            let mut plain = Vec::new();
            for i in 0..2000 {
                let chunk = format!("{{\"row\":{{\"id\":{i},\"name\":\"n{i} é 東京\"}}}}\n");
                plain.extend_from_slice(chunk.as_bytes());
                wire.extend(c.chunk(chunk.as_bytes()));
                if i % 500 == 0 {
                    // Everything so far decodes from what was sent so far.
                    let got = streaming_prefix(coding, &wire);
                    assert_eq!(got, plain, "{coding:?} after chunk {i}");
                }
            }
            wire.extend(c.finish());
            assert_eq!(decode(coding, &wire).unwrap(), plain, "{coding:?}");
            assert!(
                wire.len() < plain.len() / 3,
                "{coding:?}: {} bytes",
                wire.len()
            );
        }
    }

    /// What a streaming decoder yields from an unfinished body.
    fn streaming_prefix(coding: Coding, wire: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let mut read_some = |r: &mut dyn Read| loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        };
        match coding {
            Coding::Zstd => {
                let mut d = zstd::stream::read::Decoder::new(wire).unwrap();
                read_some(&mut d);
            }
            Coding::Brotli => read_some(&mut brotli::Decompressor::new(wire, 4096)),
            Coding::Gzip => read_some(&mut flate2::read::GzDecoder::new(wire)),
        }
        out
    }

    #[test]
    fn zstd_frames_fit_an_8_mib_window_even_at_high_levels() {
        let mut c = Compression {
            zstd_level: 19,
            ..Compression::default()
        }
        .compressor(Coding::Zstd);
        let mut plain = Vec::new();
        let mut pending = Vec::new();
        let mut wire = Vec::new();
        for i in 0..20_000u32 {
            let line = format!("{{\"row\":[{i},\"{}\"]}}\n", i.wrapping_mul(2654435761));
            plain.extend_from_slice(line.as_bytes());
            pending.extend_from_slice(line.as_bytes());
            if i % 100 == 99 {
                wire.extend(c.chunk(&pending));
                pending.clear();
            }
        }
        wire.extend(c.finish());
        // A decoder limited to 2^23 refuses larger windows.
        assert_eq!(decode(Coding::Zstd, &wire).unwrap(), plain);
    }

    #[test]
    fn zstd_starts_a_new_frame_every_window_and_the_frames_decode_as_one_body() {
        let mut c = Compression::default().compressor(Coding::Zstd);
        let mut plain = Vec::new();
        let mut wire = Vec::new();
        let mut chunk = Vec::new();
        let mut i = 0u64;
        while plain.len() < 2 * ZSTD_FRAME_INPUT + 1_000_000 {
            chunk.clear();
            while chunk.len() < 65_000 {
                let line = format!(
                    "{{\"row\":{{\"id\":{i},\"h\":{}}}}}\n",
                    i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
                );
                chunk.extend_from_slice(line.as_bytes());
                i += 1;
            }
            plain.extend_from_slice(&chunk);
            wire.extend(c.chunk(&chunk));
        }
        // Right after the frame boundaries, everything sent still decodes.
        assert_eq!(streaming_prefix(Coding::Zstd, &wire), plain);
        wire.extend(c.finish());
        let mut frames = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let n = zstd::zstd_safe::find_frame_compressed_size(rest).expect("a whole frame");
            frames.push(n);
            rest = &rest[n..];
        }
        assert_eq!(
            frames.len(),
            3,
            "{} B of input in frames of {frames:?} B",
            plain.len()
        );
        assert_eq!(decode(Coding::Zstd, &wire).unwrap(), plain);
    }
}
