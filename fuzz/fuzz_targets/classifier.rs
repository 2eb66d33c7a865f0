//! The classifier must never panic and always give a reason when it refuses.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|sql: &str| {
    let r = rowstream::assess_resumability(sql);
    assert_eq!(r.resumable, r.reason.is_none());
    let _ = rowstream::core::resumable::assess_resumability_with(sql, &|t: &str| Some(format!("{t}_id")));
});
