//! `Date.now()` as a [`Clock`]: `SystemTime::now()` traps on wasm32-unknown-unknown.

use crate::core::clock::Clock;

/// Wall-clock milliseconds from JavaScript's `Date.now()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsClock;

impl Clock for JsClock {
    fn now_ms(&self) -> u64 {
        js_sys::Date::now() as u64
    }
}
