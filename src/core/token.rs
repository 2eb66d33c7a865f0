//! Random handles from the operating system's CSPRNG (on wasm, the JS
//! `crypto.getRandomValues` through getrandom's `wasm_js` backend).

use super::digest::to_hex;
use thiserror::Error;

/// The OS random source failed.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(pub String);

/// `N` random bytes as `2 × N` lowercase hex characters.
pub fn random_hex<const N: usize>() -> Result<String, RandomError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| RandomError(e.to_string()))?;
    Ok(to_hex(&b))
}

/// A 128-bit lease handle: 32 hex characters.
pub fn lease_handle() -> Result<String, RandomError> {
    random_hex::<16>()
}

/// A 192-bit cursor token: 48 hex characters.
pub fn cursor_token() -> Result<String, RandomError> {
    random_hex::<24>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::digest::is_hex_of_len;
    use std::collections::HashSet;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn handles_have_the_protocol_lengths() {
        assert!(is_hex_of_len(&lease_handle().unwrap(), 32));
        assert!(is_hex_of_len(&cursor_token().unwrap(), 48));
        let t = cursor_token().unwrap();
        assert_eq!(t, t.to_lowercase());
    }

    #[test]
    fn one_thousand_twenty_four_tokens_without_a_duplicate() {
        let set: HashSet<String> = (0..1024).map(|_| cursor_token().unwrap()).collect();
        assert_eq!(set.len(), 1024);
        let set: HashSet<String> = (0..1024).map(|_| lease_handle().unwrap()).collect();
        assert_eq!(set.len(), 1024);
    }
}
