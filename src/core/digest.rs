//! The prefix digest of PROTOCOL.md §2.1.
//!
//! `prefix_hash` is the lowercase hex SHA-256 over the exact bytes of each row
//! line, without its trailing newline, concatenated in emission order from
//! row 0. Control lines are never hashed. A [`PrefixHasher`] holds the running
//! digest of rows `0..k`; it is `Clone`, so a checkpoint is a copy.
//!
//! The running SHA-256 state is also exportable ([`PrefixHasher::export_state`])
//! and importable ([`PrefixHasher::from_state`]): a checkpoint stored as
//! [`HasherState::to_bytes`] lets any server instance (or the export CLI)
//! continue the digest at row `k` without re-reading rows `0..k`. The state
//! is the SHA-256 midstate (eight words), the byte count, the pending partial
//! block and the row count. sha2's `Sha256` does not expose its midstate, so
//! the hasher keeps its own 64-byte block buffer and drives
//! [`sha2::compress256`] (which uses SHA-NI / ARMv8 SHA when present).

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 block size in bytes.
const BLOCK: usize = 64;

/// SHA-256 initial hash value (FIPS 180-4 §5.3.3).
const IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// One SHA-256 block as `compress256` takes it.
type Block = GenericArray<u8, sha2::digest::typenum::U64>;

// What the cast in `compress_blocks` relies on.
const _: () = assert!(std::mem::size_of::<Block>() == BLOCK && std::mem::align_of::<Block>() == 1);

/// Compresses whole 64-byte blocks into `state`; `blocks.len()` is a
/// multiple of 64 (any remainder is ignored).
///
/// All blocks go to `compress256` in one call, as sha2's own `Sha256` does:
/// one block per call measured about 5% slower with SHA-NI on ~170-byte
/// lines (the per-call state load/store and feature check).
#[inline]
fn compress_blocks(state: &mut [u32; 8], blocks: &[u8]) {
    let n = blocks.len() / BLOCK;
    // SAFETY: `GenericArray<u8, U64>` is `#[repr(transparent)]` over nested
    // `#[repr(C)]` halves of `u8`, i.e. laid out as `[u8; 64]` with
    // alignment 1 (checked above), so `n * 64` initialised bytes are `n`
    // valid blocks; the slice borrows `blocks` for its lifetime. sha2's
    // `compress256` performs the same cast in the other direction.
    let blocks: &[Block] = unsafe { std::slice::from_raw_parts(blocks.as_ptr().cast(), n) };
    sha2::compress256(state, blocks);
}

/// Incremental SHA-256 over row lines.
#[derive(Clone)]
pub struct PrefixHasher {
    /// The SHA-256 chaining value after every complete block so far.
    state: [u32; 8],
    /// The pending partial block: its first `bytes % 64` bytes are live.
    buffer: [u8; BLOCK],
    rows: u64,
    /// Bytes hashed so far; `bytes % 64` of them wait in `buffer`.
    bytes: u64,
}

impl Default for PrefixHasher {
    fn default() -> Self {
        Self {
            state: IV,
            buffer: [0; BLOCK],
            rows: 0,
            bytes: 0,
        }
    }
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
        self.absorb(line);
        self.rows += 1;
    }

    /// Feeds raw bytes into SHA-256 (no row counted).
    #[inline]
    fn absorb(&mut self, mut data: &[u8]) {
        let pos = self.pending_len();
        self.bytes += data.len() as u64;
        if pos > 0 {
            let take = (BLOCK - pos).min(data.len());
            let (head, rest) = data.split_at(take);
            self.buffer[pos..pos + take].copy_from_slice(head);
            if pos + take < BLOCK {
                return;
            }
            compress_blocks(&mut self.state, &self.buffer);
            data = rest;
        }
        let whole = data.len() - data.len() % BLOCK;
        let (blocks, tail) = data.split_at(whole);
        compress_blocks(&mut self.state, blocks);
        self.buffer[..tail.len()].copy_from_slice(tail);
    }

    /// Length of the pending partial block.
    fn pending_len(&self) -> usize {
        (self.bytes % BLOCK as u64) as usize
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
        // FIPS 180-4 §5.1.1: 0x80, zeros, then the bit length big-endian.
        let mut state = self.state;
        let pos = self.pending_len();
        let mut block = [0u8; BLOCK];
        block[..pos].copy_from_slice(&self.buffer[..pos]);
        block[pos] = 0x80;
        if pos >= BLOCK - 8 {
            compress_blocks(&mut state, &block);
            block = [0; BLOCK];
        }
        block[BLOCK - 8..].copy_from_slice(&self.bytes.wrapping_mul(8).to_be_bytes());
        compress_blocks(&mut state, &block);
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
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

    /// The running state, to be stored and continued elsewhere with
    /// [`PrefixHasher::from_state`].
    pub fn export_state(&self) -> HasherState {
        HasherState {
            words: self.state,
            total_bytes: self.bytes,
            pending: self.buffer[..self.pending_len()].to_vec(),
            rows: self.rows,
        }
    }

    /// Continues a digest from an exported state.
    ///
    /// # Errors
    ///
    /// [`HasherStateError`] when the state is inconsistent: a pending block
    /// that is not `total_bytes % 64` long, or chaining words other than
    /// SHA-256's initial value although no block is complete yet.
    pub fn from_state(state: HasherState) -> Result<PrefixHasher, HasherStateError> {
        state.validate()?;
        let mut buffer = [0u8; BLOCK];
        buffer[..state.pending.len()].copy_from_slice(&state.pending);
        Ok(PrefixHasher {
            state: state.words,
            buffer,
            rows: state.rows,
            bytes: state.total_bytes,
        })
    }
}

/// The exportable state of a [`PrefixHasher`]: the SHA-256 midstate after
/// every complete 64-byte block, the bytes hashed so far, the pending partial
/// block and the rows hashed so far.
///
/// A plain value (serde-serialisable as it is); [`HasherState::to_bytes`] is
/// the compact, versioned and checksummed binary form for storage.
/// [`PrefixHasher::from_state`] validates it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HasherState {
    /// SHA-256 chaining value `H0..H7` after the complete blocks.
    pub words: [u32; 8],
    /// Bytes hashed so far (row bytes without newlines).
    pub total_bytes: u64,
    /// The last `total_bytes % 64` bytes, not yet compressed.
    pub pending: Vec<u8>,
    /// Rows hashed so far.
    pub rows: u64,
}

/// Why a [`HasherState`] (or its binary form) was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HasherStateError {
    /// The binary form is shorter or longer than its header says.
    #[error("hasher state has the wrong length ({0} bytes)")]
    Length(usize),
    /// The binary form has a version this build does not read.
    #[error("unsupported hasher state version {0}")]
    Version(u8),
    /// The binary form's checksum does not match its content.
    #[error("hasher state checksum mismatch")]
    Checksum,
    /// The pending block is not `total_bytes % 64` bytes long.
    #[error("pending block of {pending} bytes does not fit a total of {total_bytes} bytes")]
    PendingLength {
        /// Length of the pending block.
        pending: usize,
        /// The total byte count.
        total_bytes: u64,
    },
    /// Fewer than 64 bytes were hashed, yet the words are not SHA-256's
    /// initial value.
    #[error("hasher state words do not match its byte count")]
    Words,
}

impl HasherState {
    /// Current version of the binary form.
    pub const VERSION: u8 = 1;
    /// Bytes of the binary form without the pending block: version (1),
    /// words (32), total bytes (8), rows (8), pending length (1), checksum (4).
    const FIXED_LEN: usize = 1 + 32 + 8 + 8 + 1 + 4;
    /// Longest binary form (63 pending bytes).
    pub const MAX_BYTES: usize = Self::FIXED_LEN + BLOCK - 1;

    fn validate(&self) -> Result<(), HasherStateError> {
        let pending = self.pending.len();
        if pending >= BLOCK || pending as u64 != self.total_bytes % BLOCK as u64 {
            return Err(HasherStateError::PendingLength {
                pending,
                total_bytes: self.total_bytes,
            });
        }
        if self.total_bytes < BLOCK as u64 && self.words != IV {
            return Err(HasherStateError::Words);
        }
        Ok(())
    }

    /// The compact binary form, version 1, all integers big-endian:
    /// `version u8 | words 8×u32 | total_bytes u64 | rows u64 | pending_len u8
    /// | pending | check`, where `check` is the first 4 bytes of the SHA-256
    /// of everything before it. 54 to 117 bytes.
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::FIXED_LEN + self.pending.len());
        out.push(Self::VERSION);
        for w in self.words {
            out.extend_from_slice(&w.to_be_bytes());
        }
        out.extend_from_slice(&self.total_bytes.to_be_bytes());
        out.extend_from_slice(&self.rows.to_be_bytes());
        // A valid state's pending block is < 64 bytes; an invalid one is
        // written truncated and refused when read back.
        let pending = &self.pending[..self.pending.len().min(BLOCK - 1)];
        out.push(pending.len() as u8);
        out.extend_from_slice(pending);
        let check = Sha256::digest(&out);
        out.extend_from_slice(&check[..4]);
        out
    }

    /// Reads and validates the binary form of [`HasherState::to_bytes`].
    ///
    /// # Errors
    ///
    /// [`HasherStateError`] on a wrong length, an unknown version, a checksum
    /// mismatch or an inconsistent state.
    pub fn from_bytes(bytes: &[u8]) -> Result<HasherState, HasherStateError> {
        let wrong_length = HasherStateError::Length(bytes.len());
        if bytes.len() < Self::FIXED_LEN || bytes.len() > Self::MAX_BYTES {
            return Err(wrong_length);
        }
        if bytes[0] != Self::VERSION {
            return Err(HasherStateError::Version(bytes[0]));
        }
        let pending_len = usize::from(bytes[49]);
        if bytes.len() != Self::FIXED_LEN + pending_len {
            return Err(wrong_length);
        }
        let (body, check) = bytes.split_at(bytes.len() - 4);
        if !bool::from(Sha256::digest(body)[..4].ct_eq(check)) {
            return Err(HasherStateError::Checksum);
        }
        let u64_at = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&body[at..at + 8]);
            u64::from_be_bytes(b)
        };
        let mut words = [0u32; 8];
        for (w, chunk) in words.iter_mut().zip(body[1..33].chunks_exact(4)) {
            *w = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        let state = HasherState {
            words,
            total_bytes: u64_at(33),
            rows: u64_at(41),
            pending: body[50..].to_vec(),
        };
        state.validate()?;
        Ok(state)
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

    /// Lines whose lengths walk through every pending-block length and
    /// every way of straddling a block boundary.
    fn varied_lines() -> Vec<Vec<u8>> {
        (0..200usize)
            .map(|n| {
                let len = (n * 37) % 131;
                (0..len).map(|i| b'a' + ((i + n) % 26) as u8).collect()
            })
            .collect()
    }

    #[test]
    fn matches_sha2_on_every_length_and_split() {
        // FIPS 180-2 known answers.
        let mut h = PrefixHasher::new();
        h.update_line(b"abc");
        assert_eq!(
            h.hex_digest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut h = PrefixHasher::new();
        h.update_line(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq");
        assert_eq!(
            h.hex_digest(),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let data: Vec<u8> = (0..300u32).map(|i| b' ' + (i * 7 % 90) as u8).collect();
        for len in 0..data.len() {
            for split in [0, 1, len / 3, len / 2, len.saturating_sub(1), len] {
                let split = split.min(len);
                let mut h = PrefixHasher::new();
                h.update_line(&data[..split]);
                h.update_line(&data[split..len]);
                assert_eq!(h.hex_digest(), sha256_hex(&data[..len]), "{len}/{split}");
                assert_eq!(h.bytes(), len as u64);
            }
        }
    }

    #[test]
    fn export_at_every_row_then_import_continues_the_digest() {
        let lines = varied_lines();
        let whole = prefix_hash_of(&lines);
        let mut h = PrefixHasher::new();
        for k in 0..=lines.len() {
            let state = h.export_state();
            assert_eq!(state.rows, k as u64);
            assert_eq!(state.pending.len() as u64, state.total_bytes % 64);
            let bytes = state.to_bytes();
            assert!(bytes.len() <= HasherState::MAX_BYTES);
            let back = HasherState::from_bytes(&bytes).expect("own bytes read back");
            assert_eq!(back, state);
            let json = serde_json::to_string(&state).unwrap();
            let from_json: HasherState = serde_json::from_str(&json).unwrap();
            assert_eq!(from_json, state);
            let mut resumed = PrefixHasher::from_state(back).expect("valid state");
            assert_eq!(resumed.hex_digest(), h.hex_digest(), "row {k}");
            assert_eq!((resumed.rows(), resumed.bytes()), (h.rows(), h.bytes()));
            resumed.update_lines(&lines[k..]);
            assert_eq!(resumed.hex_digest(), whole, "resumed at row {k}");
            assert_eq!(resumed.rows(), lines.len() as u64);
            if let Some(line) = lines.get(k) {
                h.update_line(line);
            }
        }
    }

    #[test]
    fn digest_vectors_survive_an_export_at_every_prefix() {
        #[derive(serde::Deserialize)]
        struct Vector {
            name: String,
            lines: Vec<String>,
            prefix_hash: String,
            prefix_hashes: Vec<String>,
            row_count: u64,
        }
        let vectors: Vec<Vector> =
            serde_json::from_str(include_str!("../../tests/vectors/digests.json")).unwrap();
        assert!(vectors.len() >= 5);
        for v in vectors {
            let mut h = PrefixHasher::new();
            for k in 0..=v.lines.len() {
                let bytes = h.export_state().to_bytes();
                let state = HasherState::from_bytes(&bytes).unwrap();
                let mut resumed = PrefixHasher::from_state(state).unwrap();
                assert_eq!(
                    resumed.hex_digest(),
                    v.prefix_hashes[k],
                    "{} at {k}",
                    v.name
                );
                resumed.update_lines(&v.lines[k..]);
                assert_eq!(resumed.hex_digest(), v.prefix_hash, "{} from {k}", v.name);
                assert_eq!(resumed.rows(), v.row_count);
                if let Some(line) = v.lines.get(k) {
                    h.update_line(line.as_bytes());
                }
            }
        }
    }

    #[test]
    fn corrupted_binary_states_are_refused() {
        let mut h = PrefixHasher::new();
        h.update_lines(varied_lines().iter().take(5));
        let good = h.export_state().to_bytes();
        assert!(!h.export_state().pending.is_empty());
        assert!(HasherState::from_bytes(&good).is_ok());
        // Every single-bit flip is caught (length, version or checksum).
        for byte in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    HasherState::from_bytes(&bad).is_err(),
                    "flip of bit {bit} in byte {byte} accepted"
                );
            }
        }
        for len in 0..good.len() {
            assert_eq!(
                HasherState::from_bytes(&good[..len]),
                Err(HasherStateError::Length(len))
            );
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(
            HasherState::from_bytes(&longer),
            Err(HasherStateError::Length(good.len() + 1))
        );
        for version in [0u8, 2, 255] {
            let mut bad = good.clone();
            bad[0] = version;
            assert_eq!(
                HasherState::from_bytes(&bad),
                Err(HasherStateError::Version(version))
            );
        }
        let mut bad = good.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x80;
        assert_eq!(
            HasherState::from_bytes(&bad),
            Err(HasherStateError::Checksum)
        );
        assert_eq!(
            HasherState::from_bytes(&[0u8; 200]),
            Err(HasherStateError::Length(200))
        );
    }

    #[test]
    fn inconsistent_states_are_refused() {
        let mut h = PrefixHasher::new();
        h.update_line(b"0123456789");
        let good = h.export_state();
        let mut bad = good.clone();
        bad.pending.push(b'x');
        assert!(matches!(
            PrefixHasher::from_state(bad.clone()),
            Err(HasherStateError::PendingLength {
                pending: 11,
                total_bytes: 10
            })
        ));
        // Written out, the inconsistent state is refused on the way back in.
        assert!(HasherState::from_bytes(&bad.to_bytes()).is_err());
        let mut bad = good.clone();
        bad.pending = vec![0; 64];
        bad.total_bytes = 64;
        assert!(PrefixHasher::from_state(bad.clone()).is_err());
        assert!(HasherState::from_bytes(&bad.to_bytes()).is_err());
        let mut bad = good.clone();
        bad.words[3] ^= 1;
        assert_eq!(
            PrefixHasher::from_state(bad.clone()).err(),
            Some(HasherStateError::Words)
        );
        assert_eq!(
            HasherState::from_bytes(&bad.to_bytes()),
            Err(HasherStateError::Words)
        );
        // Past the first block any words are a possible midstate.
        let mut long = PrefixHasher::new();
        long.update_line(&[7u8; 100]);
        let mut other = long.export_state();
        other.words[0] ^= 1;
        let resumed = PrefixHasher::from_state(other).unwrap();
        assert_ne!(resumed.hex_digest(), long.hex_digest());
    }
}
