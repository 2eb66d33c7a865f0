//! `exp` extraction must never panic on any token.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|token: &str| {
    let _ = rowstream::parse_jwt_exp_ms(token);
});
