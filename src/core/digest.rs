//! The prefix digest of PROTOCOL.md §2.1.
//!
//! `prefix_hash` is the lowercase hex SHA-256 over the exact bytes of each row
//! line, without its trailing newline, concatenated in emission order from
//! row 0. Control lines are never hashed. A [`PrefixHasher`] holds the running
//! digest of rows `0..k`; it is `Clone`, so a checkpoint is a copy.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Incremental SHA-256 over row lines.
#[derive(Clone, Default)]
pub struct PrefixHasher {
    inner: Sha256,
    rows: u64,
    bytes: u64,
}

impl std::fmt::Debug for PrefixHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrefixHasher")
            .field("rows", &self.rows)
            .field("bytes", &self.bytes)
            .field("digest", &self.hex_digest())
            .finish()
    }
}

impl PrefixHasher {
    /// A hasher over zero rows.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one row line. A single trailing `\n` (or `\r\n`) is ignored, so a
    /// caller may pass the line as framed or as written.
    pub fn update_line(&mut self, line: &[u8]) {
        let line = strip_newline(line);
        self.inner.update(line);
        self.rows += 1;
        self.bytes += line.len() as u64;
    }

    /// Adds several row lines in order.
    pub fn update_lines<I, L>(&mut self, lines: I)
    where
        I: IntoIterator<Item = L>,
        L: AsRef<[u8]>,
    {
        for l in lines {
            self.update_line(l.as_ref());
        }
    }

    /// Rows hashed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Bytes hashed so far (row bytes without newlines).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The digest of the rows so far; the hasher keeps going.
    pub fn digest(&self) -> [u8; 32] {
        self.inner.clone().finalize().into()
    }

    /// The digest as 64 lowercase hex characters.
    pub fn hex_digest(&self) -> String {
        to_hex(&self.digest())
    }

    /// A copy of the running state (same as `clone`, named for intent).
    pub fn checkpoint(&self) -> PrefixHasher {
        self.clone()
    }

    /// Compares the running digest with `expected_hex` in constant time.
    /// Upper-case hex is accepted; anything that is not 64 hex characters is
    /// simply not equal.
    pub fn matches_hex(&self, expected_hex: &str) -> bool {
        digest_matches_hex(&self.digest(), expected_hex)
    }
}

/// Digest of a whole set of row lines, in one call.
pub fn prefix_hash_of<I, L>(lines: I) -> String
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    let mut h = PrefixHasher::new();
    h.update_lines(lines);
    h.hex_digest()
}

/// Constant-time comparison of a raw digest with a hex string.
pub fn digest_matches_hex(actual: &[u8; 32], expected_hex: &str) -> bool {
    match parse_hex32(expected_hex) {
        Some(expected) => actual.ct_eq(&expected).into(),
        None => false,
    }
}

/// Constant-time equality of two hex digests (case-insensitive). Strings that
/// are not 64 hex characters are never equal to anything.
pub fn hex_digests_equal(a: &str, b: &str) -> bool {
    match (parse_hex32(a), parse_hex32(b)) {
        (Some(x), Some(y)) => x.ct_eq(&y).into(),
        _ => false,
    }
}

/// Parses exactly 64 hex characters.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        out[i] = (hex_val(pair[0])? << 4) | hex_val(pair[1])?;
    }
    Some(out)
}

/// True when `s` is `len` lowercase-or-uppercase hex characters.
pub fn is_hex_of_len(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|c| hex_val(c).is_some())
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// SHA-256 of arbitrary bytes as lowercase hex (used for audit `query_hash`).
pub fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// The part of a row line that is hashed: one trailing `\n`, then one
/// trailing `\r`, dropped.
pub(crate) fn strip_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const EMPTY: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn empty_prefix_is_sha256_of_nothing() {
        assert_eq!(PrefixHasher::new().hex_digest(), EMPTY);
        assert!(PrefixHasher::new().matches_hex(&EMPTY.to_uppercase()));
    }

    #[test]
    fn per_line_equals_one_shot_of_concatenation() {
        let lines = [
            r#"{"row":{"id":1}}"#,
            r#"{"row":{"id":2,"s":"é"}}"#,
            r#"{"row":[3,null]}"#,
        ];
        let mut h = PrefixHasher::new();
        for l in lines {
            h.update_line(l.as_bytes());
        }
        let concat: String = lines.concat();
        assert_eq!(h.hex_digest(), sha256_hex(concat.as_bytes()));
        assert_eq!(h.rows(), 3);
        assert_eq!(h.bytes(), concat.len() as u64);
    }

    #[test]
    fn trailing_newline_is_not_hashed() {
        let a = prefix_hash_of(["{\"row\":1}\n", "{\"row\":2}\r\n"]);
        let b = prefix_hash_of(["{\"row\":1}", "{\"row\":2}"]);
        assert_eq!(a, b);
    }

    #[test]
    fn order_sensitive_and_deterministic() {
        let ab = prefix_hash_of(["a", "b"]);
        assert_ne!(ab, prefix_hash_of(["b", "a"]));
        assert_eq!(ab, prefix_hash_of(["a", "b"]));
    }

    #[test]
    fn checkpoint_continues_independently() {
        let mut h = PrefixHasher::new();
        h.update_line(b"r0");
        let cp = h.checkpoint();
        h.update_line(b"r1");
        let mut resumed = cp.clone();
        resumed.update_line(b"r1");
        assert_eq!(h.hex_digest(), resumed.hex_digest());
        assert_eq!(cp.rows(), 1);
        assert_eq!(cp.hex_digest(), prefix_hash_of(["r0"]));
    }

    #[test]
    fn malformed_expected_digests_never_match() {
        let h = PrefixHasher::new();
        assert!(!h.matches_hex(""));
        assert!(!h.matches_hex(&EMPTY[..63]));
        assert!(!h.matches_hex(&format!("{EMPTY}0")));
        assert!(!h.matches_hex(&EMPTY.replace('e', "g")));
        assert!(!hex_digests_equal(EMPTY, "zz"));
        assert!(hex_digests_equal(EMPTY, &EMPTY.to_uppercase()));
        let mut flipped = EMPTY.to_string();
        flipped.replace_range(63..64, "4");
        assert!(!h.matches_hex(&flipped));
    }

    #[test]
    fn hex_helpers() {
        assert_eq!(to_hex(&[0, 15, 255]), "000fff");
        assert!(is_hex_of_len("00aaFF", 6));
        assert!(!is_hex_of_len("00aaFG", 6));
        assert_eq!(
            parse_hex32(EMPTY).map(|d| to_hex(&d)).as_deref(),
            Some(EMPTY)
        );
    }
}
