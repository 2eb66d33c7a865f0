//! Property tests of the core, on every target (native, Node, Chromium):
//! framing must not depend on how bytes were split, and the prefix hasher fed
//! line by line must equal one-shot SHA-256 of the concatenation.
//!
//! Random splits come from a seeded generator so a failure names its seed.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use rowstream::core::digest::{prefix_hash_of, sha256_hex};
use rowstream::core::framer::{FramerError, NdjsonFramer};
use rowstream::core::producer::{ChunkProducer, ProducerLimits};
use rowstream::FakeClock;

/// xorshift64*: tiny, deterministic, good enough to pick split points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const SAMPLES: [&str; 8] = [
    "plain",
    "caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e",
    "\u{4e16}\u{754c}\u{3053}\u{3093}\u{306b}\u{3061}\u{306f}",
    "emoji \u{1F600}\u{1F980}\u{1F30D}",
    "quote \\\" backslash \\\\ tab \\t",
    "",
    "\u{10FFFF} max scalar",
    "mixed \u{e9}\u{1F600}\u{4e16}a",
];

/// A random NDJSON body with CRLF and blank lines sprinkled in.
fn random_body(rng: &mut Rng, rows: usize) -> (Vec<u8>, Vec<String>) {
    let mut body = Vec::new();
    let mut lines = Vec::new();
    for i in 0..rows {
        let text = SAMPLES[rng.below(SAMPLES.len())];
        let line = format!(
            "{{\"row\":{{\"id\":{i},\"s\":\"{text}\",\"n\":{}}}}}",
            rng.next() as i64
        );
        body.extend_from_slice(line.as_bytes());
        match rng.below(6) {
            0 => body.extend_from_slice(b"\r\n"),
            1 => body.extend_from_slice(b"\n\n"),
            2 => body.extend_from_slice(b"\r\n\r\n"),
            _ => body.push(b'\n'),
        }
        lines.push(line);
    }
    if rng.below(2) == 0 {
        // Last line without its newline: delivered by finish().
        while body.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
            body.pop();
        }
    }
    (body, lines)
}

fn frame_with_splits(body: &[u8], cuts: &[usize]) -> Result<Vec<String>, FramerError> {
    let mut f = NdjsonFramer::new();
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts {
        out.extend(f.push_collect(&body[start..c])?);
        start = c;
    }
    out.extend(f.push_collect(&body[start..])?);
    out.extend(f.finish_collect()?);
    Ok(out)
}

#[test]
fn framer_output_is_independent_of_random_splits() {
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let rows = 1 + rng.below(40);
        let (body, lines) = random_body(&mut rng, rows);
        let whole = frame_with_splits(&body, &[]).unwrap();
        assert_eq!(whole, lines, "seed {seed}: whole body");
        for _ in 0..20 {
            let n = rng.below(12);
            let mut cuts: Vec<usize> = (0..n).map(|_| rng.below(body.len() + 1)).collect();
            cuts.sort_unstable();
            assert_eq!(
                frame_with_splits(&body, &cuts).unwrap(),
                lines,
                "seed {seed}, cuts {cuts:?}"
            );
        }
        // One byte at a time: every UTF-8 sequence is split.
        let every: Vec<usize> = (1..body.len()).collect();
        assert_eq!(
            frame_with_splits(&body, &every).unwrap(),
            lines,
            "seed {seed}: byte by byte"
        );
    }
}

#[test]
fn invalid_utf8_error_is_independent_of_splits() {
    let mut body = b"{\"row\":1}\n{\"row\":2}\n{\"row\":\"".to_vec();
    body.extend_from_slice(&[0xe2, 0x28, 0xa1]); // broken 3-byte sequence
    body.extend_from_slice(b"\"}\n{\"row\":4}\n");
    let expected = frame_with_splits(&body, &[]).unwrap_err();
    assert_eq!(expected, FramerError::InvalidUtf8 { line: 3, offset: 8 });
    for cut in 0..=body.len() {
        assert_eq!(
            frame_with_splits(&body, &[cut]).unwrap_err(),
            expected,
            "cut {cut}"
        );
    }
}

#[test]
fn hasher_per_line_equals_one_shot_of_the_concatenation() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let rows = rng.below(50);
        let (_, lines) = random_body(&mut rng, rows);
        let concat: String = lines.concat();
        assert_eq!(
            prefix_hash_of(&lines),
            sha256_hex(concat.as_bytes()),
            "seed {seed}"
        );
    }
}

#[test]
fn produced_chunks_frame_back_to_the_same_lines() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed);
        let (_, lines) = random_body(&mut rng, 200);
        let limits = ProducerLimits {
            buffer_bytes: 64 + rng.below(2048),
            max_rows: 1 + rng.below(50) as u32,
            max_latency_ms: 1_000,
        };
        let mut p = ChunkProducer::with_limits(limits, FakeClock::new(0));
        let mut chunks: Vec<Vec<u8>> = Vec::new();
        p.drive_lines(&lines, &mut chunks).unwrap();
        let longest = lines.iter().map(|l| l.len() + 1).max().unwrap_or(0);
        let mut f = NdjsonFramer::new();
        let mut back = Vec::new();
        for c in &chunks {
            assert!(
                c.len() <= limits.buffer_bytes.max(longest),
                "seed {seed}: chunk too big"
            );
            assert_eq!(
                c.last(),
                Some(&b'\n'),
                "seed {seed}: a row line spans two chunks"
            );
            back.extend(f.push_collect(c).unwrap());
        }
        assert_eq!(back, lines, "seed {seed}");
    }
}
