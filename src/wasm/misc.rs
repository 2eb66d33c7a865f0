//! Pure functions.

use wasm_bindgen::prelude::*;

use crate::core::jwt::parse_jwt_exp_ms;

/// The `exp` claim of a compact JWT in milliseconds since the epoch, or
/// `undefined` for an opaque or malformed token. The signature is not
/// checked: this is for refreshing a token before it lapses.
#[wasm_bindgen(js_name = parseJwtExpMs)]
pub fn parse_jwt_exp_ms_js(token: &str) -> Option<f64> {
    parse_jwt_exp_ms(token).map(|ms| ms as f64)
}
