//! Non-validating extraction of a JWT's `exp`.
//!
//! Used to warn (audit `stream.token_expired_during_lease`) and by clients to
//! refresh a token before it lapses. It does **not** check the signature:
//! the server validates tokens separately.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Largest token accepted, so hostile input cannot make us decode megabytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The `exp` claim of a compact JWT, in milliseconds since the epoch, or
/// `None` for anything that is not a three-part JWT with a numeric `exp`
/// (opaque tokens included).
pub fn parse_jwt_exp_ms(token: &str) -> Option<u64> {
    let token = token.trim();
    let token = token.strip_prefix("Bearer ").unwrap_or(token);
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.as_object()?.get("exp")?;
    let secs = if let Some(u) = exp.as_u64() {
        u as f64
    } else {
        let f = exp.as_f64()?;
        if !f.is_finite() || f < 0.0 {
            return None;
        }
        f
    };
    let ms = secs * 1000.0;
    if ms > u64::MAX as f64 {
        return None;
    }
    Some(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn jwt(payload: &str) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            URL_SAFE_NO_PAD.encode(payload.as_bytes())
        )
    }

    #[test]
    fn extracts_exp_in_milliseconds() {
        assert_eq!(
            parse_jwt_exp_ms(&jwt(r#"{"sub":"a","exp":1700000000}"#)),
            Some(1_700_000_000_000)
        );
        assert_eq!(
            parse_jwt_exp_ms(&jwt(r#"{"exp":1700000000.5}"#)),
            Some(1_700_000_000_500)
        );
        let padded = format!("{}==", jwt(r#"{"exp":1}"#).rsplit_once('.').unwrap().0);
        assert_eq!(parse_jwt_exp_ms(&format!("{padded}.x")), Some(1000));
        assert_eq!(
            parse_jwt_exp_ms(&format!("Bearer {}", jwt(r#"{"exp":2}"#))),
            Some(2000)
        );
    }

    #[test]
    fn opaque_and_malformed_tokens_give_none() {
        for t in [
            "",
            "opaque-static-token",
            "a.b",
            "a.b.c.d",
            "!!!.@@@.###",
            &jwt(r#"{"sub":"no exp"}"#),
            &jwt(r#"{"exp":"tomorrow"}"#),
            &jwt(r#"{"exp":-5}"#),
            &jwt(r#"[1,2]"#),
            &jwt("not json"),
            &jwt(r#"{"exp":1e400}"#),
        ] {
            assert_eq!(parse_jwt_exp_ms(t), None, "{t}");
        }
        assert_eq!(parse_jwt_exp_ms(&"a.".repeat(20_000)), None);
    }
}
