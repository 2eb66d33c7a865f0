//! The hot loops of TEXT values: UTF-8 validation and the JSON escape scan.
//!
//! A TEXT value is written as a JSON string exactly as `serde_json` writes
//! it: `"`, `\\` and the control bytes below 0x20 are escaped, everything else
//! (DEL, every non-ASCII character, U+2028/2029 too) is copied as is. So the
//! escape scan looks for three kinds of byte and treats every byte ≥ 0x80 as
//! clean; a string is copied in long runs between escapes (most strings have
//! none), 16 bytes tested at a time with SSE2 on x86_64 (always present
//! there), 8 at a time elsewhere.
//!
//! Validation is separate: SQLite does not promise that TEXT is valid UTF-8
//! (a blob cast to text, a client writing raw bytes), and invalid text is
//! written lossily (U+FFFD per bad sequence, as `String::from_utf8_lossy`).
//! Pure ASCII is valid and skips it; the rest goes through `simdutf8`, whose
//! SIMD validator (AVX2 or SSE4.2, chosen at run time) is several times
//! faster than `core::str::from_utf8` on non-ASCII text.

/// The index of the first byte of `s` at or after `from` that a JSON string
/// must escape (`"`, `\\`, or below 0x20), or `s.len()` when there is none.
#[inline]
pub(crate) fn find_escape(s: &[u8], from: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: SSE2 is part of the x86_64 baseline.
        unsafe { find_escape_sse2(s, from) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        find_escape_swar(s, from)
    }
}

/// Whether byte `b` needs a JSON escape.
#[inline(always)]
fn needs_escape(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

#[cfg(target_arch = "x86_64")]
#[inline]
unsafe fn find_escape_sse2(s: &[u8], from: usize) -> usize {
    use std::arch::x86_64::*;
    let len = s.len();
    let mut i = from;
    if len - i < 16 {
        // Short: the bytes one at a time (a SIMD load would need a padded copy).
        return from
            + s[from..]
                .iter()
                .position(|&b| needs_escape(b))
                .unwrap_or(len - from);
    }
    let quote = _mm_set1_epi8(b'"' as i8);
    let backslash = _mm_set1_epi8(b'\\' as i8);
    let ctrl_max = _mm_set1_epi8(0x1f);
    let mask = |v: __m128i| -> u32 {
        // v <= 0x1f (unsigned) ⇔ max(v, 0x1f) == 0x1f.
        let ctrl = _mm_cmpeq_epi8(_mm_max_epu8(v, ctrl_max), ctrl_max);
        let q = _mm_cmpeq_epi8(v, quote);
        let b = _mm_cmpeq_epi8(v, backslash);
        _mm_movemask_epi8(_mm_or_si128(ctrl, _mm_or_si128(q, b))) as u32
    };
    let p = s.as_ptr();
    while i + 16 <= len {
        // SAFETY: `i + 16 <= len`: the 16 bytes are inside `s`.
        let m = mask(_mm_loadu_si128(p.add(i) as *const __m128i));
        if m != 0 {
            return i + m.trailing_zeros() as usize;
        }
        i += 16;
    }
    if i < len {
        // The last 16 bytes, overlapping the ones already tested (which were
        // clean): only lanes from `i` on can match.
        let last = len - 16;
        // SAFETY: `len >= 16` (tested above), so `last..len` is inside `s`.
        let m = mask(_mm_loadu_si128(p.add(last) as *const __m128i)) >> (i - last);
        if m != 0 {
            return i + m.trailing_zeros() as usize;
        }
    }
    len
}

/// The portable scan: eight bytes a word.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
pub(crate) fn find_escape_swar(s: &[u8], from: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    // Exact as a yes/no test: some byte of `v` is zero.
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH != 0;
    let mut i = from;
    while i + 8 <= s.len() {
        let w = &s[i..i + 8];
        let x = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        // Some byte < 0x20: `x - 0x20…` borrows into a byte whose high bit
        // `x` did not have (bytes ≥ 0x80 have it, so they never count).
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH != 0;
        if control
            || has_zero(x ^ (ONES * u64::from(b'"')))
            || has_zero(x ^ (ONES * u64::from(b'\\')))
        {
            break;
        }
        i += 8;
    }
    i + s[i..]
        .iter()
        .position(|&b| needs_escape(b))
        .unwrap_or(s.len() - i)
}

/// Whether `s` is valid UTF-8.
#[inline]
pub(crate) fn is_utf8(s: &[u8]) -> bool {
    s.is_ascii() || simdutf8::basic::from_utf8(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scans_agree_with_a_byte_loop_at_every_offset() {
        let naive = |s: &[u8], from: usize| {
            from + s[from..]
                .iter()
                .position(|&b| needs_escape(b))
                .unwrap_or(s.len() - from)
        };
        let fillers: [&[u8]; 3] = [b"a", "é".as_bytes(), "日".as_bytes()];
        for special in (0u8..0x20).chain([b'"', b'\\']) {
            for filler in fillers {
                for len in 0..=40 {
                    let base: Vec<u8> = filler.iter().copied().cycle().take(len).collect();
                    for at in 0..=len {
                        let mut s = base.clone();
                        if at < len {
                            s[at] = special;
                        }
                        for from in [0, at / 2, at] {
                            let want = naive(&s, from);
                            assert_eq!(find_escape(&s, from), want, "{s:?} from {from}");
                            assert_eq!(find_escape_swar(&s, from), want, "{s:?} from {from}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn validation_agrees_with_std() {
        let cases: [&[u8]; 7] = [
            b"",
            b"plain",
            "naïve 日本語 🙂".as_bytes(),
            b"a\xffb",
            b"\xe6\x97",
            b"\xed\xa0\x80",
            b"\xf4\x90\x80\x80",
        ];
        for c in cases {
            assert_eq!(is_utf8(c), std::str::from_utf8(c).is_ok(), "{c:?}");
        }
    }
}
