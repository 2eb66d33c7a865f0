//! The shared framing vectors (`tests/vectors/framing.json`) checked through
//! the core on every target: natively, and as wasm under Node and headless
//! Chromium, where the bindings run them. The JS suite (`tests/js/`) checks
//! the same file through the built package. (Digest vectors: `digest_vectors.rs`.)

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use rowstream::core::framer::NdjsonFramer;
use serde_json::Value;

const FRAMING: &str = include_str!("vectors/framing.json");

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|s| s.as_str().expect("string").to_owned())
        .collect()
}

/// Frames `pieces` in order; returns the lines and the error code and line.
fn frame(pieces: &[&[u8]], max: Option<usize>) -> (Vec<String>, Option<(String, u64)>) {
    let mut f = max.map_or_else(NdjsonFramer::new, NdjsonFramer::with_max_line_bytes);
    let mut lines = Vec::new();
    for p in pieces {
        if let Err(e) = f.push(p, |l| lines.push(l.to_owned())) {
            return (lines, Some((e.code().to_owned(), e.line())));
        }
    }
    match f.finish(|l| lines.push(l.to_owned())) {
        Ok(()) => (lines, None),
        Err(e) => (lines, Some((e.code().to_owned(), e.line()))),
    }
}

#[test]
fn framing_vectors_do_not_depend_on_the_split() {
    let cases: Vec<Value> = serde_json::from_str(FRAMING).unwrap();
    assert!(cases.len() >= 6);
    for c in &cases {
        let name = c["name"].as_str().unwrap();
        let input = unhex(c["input_hex"].as_str().unwrap());
        let max = c["max_line_bytes"].as_u64().map(|m| m as usize);
        let want_lines = strings(&c["lines"]);
        let want_error = c.get("error").map(|e| {
            (
                e["code"].as_str().unwrap().to_owned(),
                e["line"].as_u64().unwrap(),
            )
        });
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(
            frame(&bytes, max),
            (want_lines.clone(), want_error.clone()),
            "{name}: byte by byte"
        );
        for i in 0..=input.len() {
            let got = frame(&[&input[..i], &input[i..]], max);
            assert_eq!(
                got,
                (want_lines.clone(), want_error.clone()),
                "{name}: split at {i}"
            );
        }
    }
}
