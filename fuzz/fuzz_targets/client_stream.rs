//! The client's verifier (open / row / error / end envelope parsing) must never
//! panic, and must never call a stream complete unless the digest matched.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rowstream::core::digest::PrefixHasher;
use rowstream::core::protocol::{StreamEvent, StreamVerifier};

fuzz_target!(|body: &[u8]| {
    let mut framer = rowstream::NdjsonFramer::with_max_line_bytes(4096);
    let mut v = StreamVerifier::new();
    let mut shadow = PrefixHasher::new();
    let Ok(mut lines) = framer.push_collect(body) else { return };
    if let Ok(Some(last)) = framer.finish_collect() {
        lines.push(last);
    }
    for line in &lines {
        match v.accept(line) {
            Ok(StreamEvent::Row) => shadow.update_line(line.as_bytes()),
            Ok(StreamEvent::End(end)) => {
                assert_eq!(end.prefix_hash.to_ascii_lowercase(), shadow.hex_digest());
                assert_eq!(end.row_count, shadow.rows());
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = v.begin_resume();
});
