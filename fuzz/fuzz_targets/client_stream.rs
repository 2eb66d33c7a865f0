//! The client's verifier (open / row / error / end envelope parsing) must never
//! panic, and must never call a stream complete unless the digest matched.
//! Its external-hashing mode (the caller hashes the exact input it hands
//! out, as `streamQuery` does with `node:crypto`) must agree with it on every
//! line: the same events, the same refusals, the same completion.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rowstream::core::digest::PrefixHasher;
use rowstream::core::protocol::{StreamEvent, StreamVerifier};
use sha2::{Digest, Sha256};

fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

fuzz_target!(|body: &[u8]| {
    let mut framer = rowstream::NdjsonFramer::with_max_line_bytes(4096);
    let mut v = StreamVerifier::new();
    let mut x = StreamVerifier::with_external_hashing();
    let mut sha = Sha256::new();
    let mut shadow = PrefixHasher::new();
    let Ok(mut lines) = framer.push_collect(body) else { return };
    if let Ok(Some(last)) = framer.finish_collect() {
        lines.push(last);
    }
    for line in &lines {
        let internal = v.accept(line);
        let external = x.accept(line).and_then(|e| {
            sha.update(x.hash_input());
            x.input_hashed(&hex(&sha.clone().finalize())).map(|_| e)
        });
        match (&internal, &external) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "{line:?}"),
            (Err(_), Err(_)) => {}
            _ => panic!("modes disagree on {line:?}: {internal:?} vs {external:?}"),
        }
        assert_eq!(v.end(), x.end(), "{line:?}");
        assert_eq!(v.prefix_hash(), x.prefix_hash(), "{line:?}");
        match internal {
            Ok(StreamEvent::Row) => shadow.update_line(line.as_bytes()),
            Ok(StreamEvent::End(end)) => {
                assert_eq!(end.prefix_hash.to_ascii_lowercase(), shadow.hex_digest());
                assert_eq!(end.row_count, shadow.rows());
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let a = v.begin_resume();
    let b = x.begin_resume();
    assert_eq!(a, b);
});
