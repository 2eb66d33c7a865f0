//! Known-answer digests (PROTOCOL.md §2.1) shared with the JS suites, on every
//! target: each vector's lines must hash to its `prefix_hash`, and every
//! prefix `0..k` to `prefix_hashes[k]`.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use rowstream::core::digest::sha256_hex;
use rowstream::PrefixHasher;
use serde::Deserialize;

#[derive(Deserialize)]
struct Vector {
    name: String,
    lines: Vec<String>,
    prefix_hash: String,
    prefix_hashes: Vec<String>,
    row_count: u64,
}

fn vectors() -> Vec<Vector> {
    serde_json::from_str(include_str!("vectors/digests.json")).expect("digests.json parses")
}

#[test]
fn every_vector_hashes_to_its_digest() {
    let vs = vectors();
    assert!(vs.len() >= 5, "too few digest vectors");
    for v in vs {
        let mut h = PrefixHasher::new();
        assert_eq!(v.prefix_hashes.len(), v.lines.len() + 1, "{}", v.name);
        assert_eq!(
            h.hex_digest(),
            v.prefix_hashes[0],
            "{}: empty prefix",
            v.name
        );
        for (k, line) in v.lines.iter().enumerate() {
            h.update_line(line.as_bytes());
            assert_eq!(
                h.hex_digest(),
                v.prefix_hashes[k + 1],
                "{}: prefix of {} rows",
                v.name,
                k + 1
            );
        }
        assert_eq!(h.rows(), v.row_count, "{}", v.name);
        assert_eq!(h.hex_digest(), v.prefix_hash, "{}", v.name);
        assert_eq!(
            sha256_hex(v.lines.concat().as_bytes()),
            v.prefix_hash,
            "{}: one-shot",
            v.name
        );
    }
}
