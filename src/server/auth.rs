//! Bearer authentication: static tokens and HS256 JWTs.
//!
//! The tenant always comes from the server's own configuration (the static
//! token's entry, or the signed `tenant` claim), never from a client header.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::core::lease::Scope;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Tenant and principal.
    pub scope: Scope,
    /// The JWT's `exp` in ms, when the caller used a JWT with one.
    pub token_exp_ms: Option<u64>,
}

/// The authentication configuration.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: HashMap<String, Scope>,
    jwt_secret: Option<Vec<u8>>,
    open_tenant: Option<String>,
}

/// Why a bearer token was refused (the message of the 401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError(pub &'static str);

impl Auth {
    /// Static tokens (`token → scope`) and an optional HS256 secret. With
    /// neither, the server is open and every caller is `anonymous` in
    /// `open_tenant`.
    pub fn new(
        tokens: HashMap<String, Scope>,
        jwt_secret: Option<Vec<u8>>,
        open_tenant: Option<String>,
    ) -> Self {
        Auth {
            tokens,
            jwt_secret,
            open_tenant,
        }
    }

    /// True when no token or secret is configured.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty() && self.jwt_secret.is_none()
    }

    /// Authenticates the `Authorization` header value at `now_ms`.
    /// `known_tenant` says whether a tenant name is served.
    pub fn authenticate(
        &self,
        header: Option<&str>,
        now_ms: u64,
        known_tenant: impl Fn(&str) -> bool,
    ) -> Result<Caller, AuthError> {
        if self.is_open() {
            let tenant = self
                .open_tenant
                .clone()
                .ok_or(AuthError("this server has no default tenant"))?;
            return Ok(Caller {
                scope: Scope::new(tenant, "anonymous"),
                token_exp_ms: None,
            });
        }
        let header = header.ok_or(AuthError("a bearer token is required"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError(
                "the Authorization header must be `Bearer <token>`",
            ))?;
        if let Some(scope) = self.tokens.get(token) {
            return Ok(Caller {
                scope: scope.clone(),
                token_exp_ms: None,
            });
        }
        let secret = self
            .jwt_secret
            .as_deref()
            .ok_or(AuthError("unknown bearer token"))?;
        let caller = verify_hs256(token, secret, now_ms)?;
        if !known_tenant(&caller.scope.tenant) {
            return Err(AuthError(
                "the token names a tenant this server does not serve",
            ));
        }
        Ok(caller)
    }
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
}

#[derive(serde::Deserialize)]
struct Claims {
    sub: String,
    tenant: String,
    #[serde(default)]
    exp: Option<f64>,
    #[serde(default)]
    nbf: Option<f64>,
}

/// Verifies a compact HS256 JWT: `alg` must be `HS256`, the signature must
/// match, `sub` and `tenant` must be strings, `exp` (if present) must be in
/// the future and `nbf` (if present) in the past.
pub fn verify_hs256(token: &str, secret: &[u8], now_ms: u64) -> Result<Caller, AuthError> {
    const BAD: AuthError = AuthError("invalid token");
    if token.len() > 16 * 1024 {
        return Err(BAD);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(BAD);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(BAD)?;
    if header.alg != "HS256" {
        return Err(AuthError("only HS256 tokens are accepted"));
    }
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| BAD)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| BAD)?;
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    let expected = mac.finalize().into_bytes();
    if sig.len() != expected.len() || !bool::from(expected.as_slice().ct_eq(&sig)) {
        return Err(BAD);
    }
    let claims: Claims = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthError(
            "the token's claims need string `sub` and `tenant`",
        ))?;
    let exp_ms = match claims.exp {
        Some(e) if e.is_finite() && e >= 0.0 => Some((e * 1000.0) as u64),
        Some(_) => return Err(BAD),
        None => None,
    };
    if exp_ms.is_some_and(|e| e <= now_ms) {
        return Err(AuthError("the token has expired"));
    }
    if claims
        .nbf
        .is_some_and(|n| !n.is_finite() || (n * 1000.0) as u64 > now_ms)
    {
        return Err(AuthError("the token is not valid yet"));
    }
    Ok(Caller {
        scope: Scope::new(claims.tenant, claims.sub),
        token_exp_ms: exp_ms,
    })
}

/// Signs claims as an HS256 JWT (for tests, examples and token tooling).
pub fn sign_hs256(claims: &serde_json::Value, secret: &[u8]) -> String {
    let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let p = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(h.as_bytes());
    mac.update(b".");
    mac.update(p.as_bytes());
    let s = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{h}.{p}.{s}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hs256_round_trip_and_rejections() {
        let now = 1_700_000_000_000;
        let t = sign_hs256(
            &json!({"sub":"alice","tenant":"t1","exp":1_700_000_100}),
            b"k",
        );
        let c = verify_hs256(&t, b"k", now).unwrap();
        assert_eq!(c.scope, Scope::new("t1", "alice"));
        assert_eq!(c.token_exp_ms, Some(1_700_000_100_000));
        assert_eq!(
            verify_hs256(&t, b"other", now).unwrap_err().0,
            "invalid token"
        );
        assert_eq!(
            verify_hs256(&t, b"k", 1_700_000_100_000).unwrap_err().0,
            "the token has expired"
        );
        let mut tampered = t.clone();
        tampered.insert(t.find('.').unwrap() + 3, 'x');
        assert!(verify_hs256(&tampered, b"k", now).is_err());
        let none_alg = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            t.split('.').nth(1).unwrap()
        );
        assert!(verify_hs256(&none_alg, b"k", now).is_err());
        let no_tenant = sign_hs256(&json!({"sub":"alice"}), b"k");
        assert!(verify_hs256(&no_tenant, b"k", now).is_err());
    }
}
