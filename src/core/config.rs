//! Stream configuration: the `stream.*` keys of PROTOCOL.md §5.
//!
//! A [`StreamConfig`] is a plain value. It is loaded from a [`ConfigSource`]
//! (the server backs one with a database table, tests with a map) when a
//! stream opens and is frozen for that stream: later changes to the source
//! never reach a loaded value. Bad values never fail a request: unparseable or
//! out-of-range values fall back to their defaults, then [`StreamConfig::normalize`]
//! clamps the whole to a consistent state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Size of one production-buffer page.
pub const PAGE_BYTES: usize = 16 * 1024;

/// Upper bound accepted for any page count (1 GiB of buffer at most).
const MAX_PAGES_LIMIT: u32 = 65_536;

/// Input-stream verification mode (`stream.integrity.default_verify`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// The client must send a SHA-256 digest of its row lines.
    Sha256,
    /// No digest is checked.
    None,
}

impl VerifyMode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Sha256 => "sha256",
            VerifyMode::None => "none",
        }
    }

    /// Parses the wire string (case-insensitive, surrounding spaces ignored).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sha256" => Some(VerifyMode::Sha256),
            "none" => Some(VerifyMode::None),
            _ => None,
        }
    }
}

/// Every `stream.*` key with its value. See PROTOCOL.md §5.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamConfig {
    /// `stream.snapshot.ttl_ms`: snapshot and cursor lifetime.
    pub snapshot_ttl_ms: u64,
    /// `stream.chunk.default_pages`: production buffer pages.
    pub chunk_default_pages: u32,
    /// `stream.chunk.min_pages`.
    pub chunk_min_pages: u32,
    /// `stream.chunk.max_pages`.
    pub chunk_max_pages: u32,
    /// `stream.chunk.max_rows`: row cap per chunk.
    pub chunk_max_rows: u32,
    /// `stream.chunk.max_latency_ms`: latency cap, from the first buffered row.
    pub chunk_max_latency_ms: u64,
    /// `stream.max_global`: concurrent streams on the whole server.
    pub max_global: u32,
    /// `stream.max_per_principal`: concurrent streams per principal.
    pub max_per_principal: u32,
    /// `stream.integrity.default_verify`.
    pub integrity_default_verify: VerifyMode,
    /// (1.1) `stream.heartbeat_ms`: silence before a heartbeat line; 0 = never.
    #[serde(default = "default_heartbeat_ms")]
    pub heartbeat_ms: u64,
    /// (1.1) `stream.progress.min_ms`: the shortest accepted `progress_ms`.
    #[serde(default = "default_progress_min_ms")]
    pub progress_min_ms: u64,
}

fn default_heartbeat_ms() -> u64 {
    15_000
}

fn default_progress_min_ms() -> u64 {
    100
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            snapshot_ttl_ms: 60_000,
            chunk_default_pages: 4,
            chunk_min_pages: 1,
            chunk_max_pages: 64,
            chunk_max_rows: 1000,
            chunk_max_latency_ms: 50,
            max_global: 256,
            max_per_principal: 32,
            integrity_default_verify: VerifyMode::None,
            heartbeat_ms: default_heartbeat_ms(),
            progress_min_ms: default_progress_min_ms(),
        }
    }
}

/// Where configuration values come from: anything that maps a key to text.
///
/// Integers stored as numbers are handed over in their decimal form.
pub trait ConfigSource {
    /// The raw value of `key`, if the source has one.
    fn get(&self, key: &str) -> Option<String>;
}

impl<S: ConfigSource + ?Sized> ConfigSource for &S {
    fn get(&self, key: &str) -> Option<String> {
        (**self).get(key)
    }
}

impl ConfigSource for BTreeMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        BTreeMap::get(self, key).cloned()
    }
}

impl ConfigSource for std::collections::HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        std::collections::HashMap::get(self, key).cloned()
    }
}

/// A source with nothing in it: every key takes its fallback.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptySource;

impl ConfigSource for EmptySource {
    fn get(&self, _key: &str) -> Option<String> {
        None
    }
}

/// Two sources stacked: `top` wins where it has a value (runtime store over
/// boot-time defaults).
#[derive(Debug, Clone, Copy)]
pub struct Layered<A, B> {
    /// Consulted first.
    pub top: A,
    /// Consulted where `top` has no value.
    pub bottom: B,
}

impl<A: ConfigSource, B: ConfigSource> ConfigSource for Layered<A, B> {
    fn get(&self, key: &str) -> Option<String> {
        self.top.get(key).or_else(|| self.bottom.get(key))
    }
}

/// The recognised keys.
pub const KEYS: [&str; 11] = [
    "stream.snapshot.ttl_ms",
    "stream.chunk.default_pages",
    "stream.chunk.min_pages",
    "stream.chunk.max_pages",
    "stream.chunk.max_rows",
    "stream.chunk.max_latency_ms",
    "stream.max_global",
    "stream.max_per_principal",
    "stream.integrity.default_verify",
    "stream.heartbeat_ms",
    "stream.progress.min_ms",
];

/// Parses a non-negative integer written as decimal text, allowing a
/// surrounding quote or spaces and a whole-valued float (`"64.0"`).
fn parse_u64(raw: &str) -> Option<u64> {
    let t = raw.trim().trim_matches('"').trim();
    if let Ok(v) = t.parse::<u64>() {
        return Some(v);
    }
    let f: f64 = t.parse().ok()?;
    if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f <= u64::MAX as f64 {
        Some(f as u64)
    } else {
        None
    }
}

fn read_u64<S: ConfigSource + ?Sized>(
    src: &S,
    key: &str,
    fallback: u64,
    min: u64,
    max: u64,
) -> u64 {
    match src.get(key).as_deref().and_then(parse_u64) {
        Some(v) if (min..=max).contains(&v) => v,
        _ => fallback,
    }
}

fn read_u32<S: ConfigSource + ?Sized>(
    src: &S,
    key: &str,
    fallback: u32,
    min: u32,
    max: u32,
) -> u32 {
    read_u64(src, key, fallback.into(), min.into(), max.into()) as u32
}

impl StreamConfig {
    /// Reads every key from `src`, falling back to the protocol defaults for
    /// missing, unparseable or out-of-range values, then normalises.
    pub fn load<S: ConfigSource + ?Sized>(src: &S) -> Self {
        Self::load_over(src, &StreamConfig::default())
    }

    /// Like [`StreamConfig::load`] but with `base` as the fallback for each key
    /// (boot-time values under a runtime store).
    pub fn load_over<S: ConfigSource + ?Sized>(src: &S, base: &StreamConfig) -> Self {
        let d = base;
        let mut c = StreamConfig {
            snapshot_ttl_ms: read_u64(
                src,
                "stream.snapshot.ttl_ms",
                d.snapshot_ttl_ms,
                1,
                7 * 24 * 3_600_000,
            ),
            chunk_default_pages: read_u32(
                src,
                "stream.chunk.default_pages",
                d.chunk_default_pages,
                1,
                MAX_PAGES_LIMIT,
            ),
            chunk_min_pages: read_u32(
                src,
                "stream.chunk.min_pages",
                d.chunk_min_pages,
                1,
                MAX_PAGES_LIMIT,
            ),
            chunk_max_pages: read_u32(
                src,
                "stream.chunk.max_pages",
                d.chunk_max_pages,
                1,
                MAX_PAGES_LIMIT,
            ),
            chunk_max_rows: read_u32(src, "stream.chunk.max_rows", d.chunk_max_rows, 1, u32::MAX),
            chunk_max_latency_ms: read_u64(
                src,
                "stream.chunk.max_latency_ms",
                d.chunk_max_latency_ms,
                1,
                3_600_000,
            ),
            max_global: read_u32(src, "stream.max_global", d.max_global, 1, u32::MAX),
            max_per_principal: read_u32(
                src,
                "stream.max_per_principal",
                d.max_per_principal,
                1,
                u32::MAX,
            ),
            integrity_default_verify: src
                .get("stream.integrity.default_verify")
                .as_deref()
                .and_then(VerifyMode::parse)
                .unwrap_or(d.integrity_default_verify),
            heartbeat_ms: read_u64(src, "stream.heartbeat_ms", d.heartbeat_ms, 0, 3_600_000),
            progress_min_ms: read_u64(
                src,
                "stream.progress.min_ms",
                d.progress_min_ms,
                1,
                3_600_000,
            ),
        };
        c.normalize();
        c
    }

    /// Clamps the value to a consistent state: at least one page, `min ≤ max`,
    /// the default page count within `[min, max]`, every cap at least 1.
    pub fn normalize(&mut self) {
        self.chunk_min_pages = self.chunk_min_pages.clamp(1, MAX_PAGES_LIMIT);
        self.chunk_max_pages = self.chunk_max_pages.clamp(1, MAX_PAGES_LIMIT);
        if self.chunk_max_pages < self.chunk_min_pages {
            self.chunk_max_pages = self.chunk_min_pages;
        }
        self.chunk_default_pages = self
            .chunk_default_pages
            .clamp(self.chunk_min_pages, self.chunk_max_pages);
        self.chunk_max_rows = self.chunk_max_rows.max(1);
        self.chunk_max_latency_ms = self.chunk_max_latency_ms.max(1);
        self.max_global = self.max_global.max(1);
        self.max_per_principal = self.max_per_principal.max(1);
        self.snapshot_ttl_ms = self.snapshot_ttl_ms.max(1);
    }

    /// Returns the normalised copy of `self`.
    pub fn normalized(mut self) -> Self {
        self.normalize();
        self
    }

    /// The production buffer size: `chunk_default_pages × 16 KiB`.
    pub fn production_buffer_bytes(&self) -> usize {
        self.chunk_default_pages as usize * PAGE_BYTES
    }

    /// The value of one key in its wire form, for `--help` and diagnostics.
    pub fn value_of(&self, key: &str) -> Option<String> {
        Some(match key {
            "stream.snapshot.ttl_ms" => self.snapshot_ttl_ms.to_string(),
            "stream.chunk.default_pages" => self.chunk_default_pages.to_string(),
            "stream.chunk.min_pages" => self.chunk_min_pages.to_string(),
            "stream.chunk.max_pages" => self.chunk_max_pages.to_string(),
            "stream.chunk.max_rows" => self.chunk_max_rows.to_string(),
            "stream.chunk.max_latency_ms" => self.chunk_max_latency_ms.to_string(),
            "stream.max_global" => self.max_global.to_string(),
            "stream.max_per_principal" => self.max_per_principal.to_string(),
            "stream.integrity.default_verify" => self.integrity_default_verify.as_str().to_string(),
            "stream.heartbeat_ms" => self.heartbeat_ms.to_string(),
            "stream.progress.min_ms" => self.progress_min_ms.to_string(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_protocol() {
        let c = StreamConfig::load(&EmptySource);
        assert_eq!(c, StreamConfig::default());
        assert_eq!(c.snapshot_ttl_ms, 60_000);
        assert_eq!(c.chunk_default_pages, 4);
        assert_eq!((c.chunk_min_pages, c.chunk_max_pages), (1, 64));
        assert_eq!(c.chunk_max_rows, 1000);
        assert_eq!(c.chunk_max_latency_ms, 50);
        assert_eq!((c.max_global, c.max_per_principal), (256, 32));
        assert_eq!(c.integrity_default_verify, VerifyMode::None);
        assert_eq!(c.production_buffer_bytes(), 65_536);
    }

    #[test]
    fn values_are_read_from_the_source() {
        let c = StreamConfig::load(&map(&[
            ("stream.chunk.default_pages", "8"),
            ("stream.chunk.max_rows", " 250 "),
            ("stream.max_global", "\"3\""),
            ("stream.snapshot.ttl_ms", "1500.0"),
            ("stream.integrity.default_verify", "SHA256"),
        ]));
        assert_eq!(c.chunk_default_pages, 8);
        assert_eq!(c.production_buffer_bytes(), 8 * 16 * 1024);
        assert_eq!(c.chunk_max_rows, 250);
        assert_eq!(c.max_global, 3);
        assert_eq!(c.snapshot_ttl_ms, 1500);
        assert_eq!(c.integrity_default_verify, VerifyMode::Sha256);
    }

    #[test]
    fn bad_values_fall_back_to_defaults() {
        let c = StreamConfig::load(&map(&[
            ("stream.chunk.max_rows", "lots"),
            ("stream.chunk.max_latency_ms", "-5"),
            ("stream.max_global", "0"),
            ("stream.max_per_principal", "1e99"),
            ("stream.snapshot.ttl_ms", "NaN"),
            ("stream.integrity.default_verify", "md5"),
            ("stream.chunk.default_pages", "2.5"),
        ]));
        assert_eq!(c, StreamConfig::default());
    }

    #[test]
    fn normalize_clamps_to_a_consistent_state() {
        // min above max, default outside both.
        let c = StreamConfig::load(&map(&[
            ("stream.chunk.min_pages", "10"),
            ("stream.chunk.max_pages", "2"),
            ("stream.chunk.default_pages", "1"),
        ]));
        assert_eq!(c.chunk_min_pages, 10);
        assert_eq!(c.chunk_max_pages, 10);
        assert_eq!(c.chunk_default_pages, 10);

        let c = StreamConfig::load(&map(&[("stream.chunk.default_pages", "500")]));
        assert_eq!(c.chunk_default_pages, 64, "default clamped to max_pages");

        let mut raw = StreamConfig {
            chunk_min_pages: 0,
            chunk_max_pages: 0,
            chunk_default_pages: 0,
            chunk_max_rows: 0,
            chunk_max_latency_ms: 0,
            max_global: 0,
            max_per_principal: 0,
            snapshot_ttl_ms: 0,
            ..StreamConfig::default()
        };
        raw.normalize();
        assert_eq!(raw.chunk_min_pages, 1);
        assert_eq!(raw.chunk_default_pages, 1);
        assert!(raw.chunk_max_rows >= 1 && raw.chunk_max_latency_ms >= 1);
        assert!(raw.max_global >= 1 && raw.max_per_principal >= 1 && raw.snapshot_ttl_ms >= 1);
        assert_eq!(raw.production_buffer_bytes(), PAGE_BYTES);
    }

    #[test]
    fn a_loaded_config_is_frozen() {
        let mut src = map(&[("stream.chunk.max_rows", "10")]);
        let c = StreamConfig::load(&src);
        src.insert("stream.chunk.max_rows".into(), "99".into());
        assert_eq!(c.chunk_max_rows, 10);
        assert_eq!(StreamConfig::load(&src).chunk_max_rows, 99);
    }

    #[test]
    fn layered_source_prefers_top_then_boot_values() {
        let boot = StreamConfig::load(&map(&[
            ("stream.chunk.max_rows", "7"),
            ("stream.max_global", "9"),
        ]));
        let runtime = map(&[
            ("stream.max_global", "5"),
            ("stream.chunk.max_latency_ms", "bogus"),
        ]);
        let c = StreamConfig::load_over(&runtime, &boot);
        assert_eq!(c.chunk_max_rows, 7, "boot value kept");
        assert_eq!(c.max_global, 5, "runtime value wins");
        assert_eq!(c.chunk_max_latency_ms, 50, "bad runtime value falls back");
        let l = Layered {
            top: runtime,
            bottom: map(&[("stream.max_per_principal", "4")]),
        };
        assert_eq!(StreamConfig::load(&l).max_per_principal, 4);
    }

    #[test]
    fn value_of_round_trips() {
        let c = StreamConfig::default();
        for key in KEYS {
            let v = c.value_of(key).expect(key);
            let back = StreamConfig::load(&map(&[(key, &v)]));
            assert_eq!(back, c, "{key}");
        }
        assert_eq!(c.value_of("stream.nope"), None);
    }
}
