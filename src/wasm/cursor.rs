//! `CursorRegistry`: resume cursors for a JS server, with any JS value as
//! the payload (what the host needs to resume: a snapshot handle, a query).

use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;

use super::clock::JsClock;
use super::js::{coded_error, exact_u64, from_js, to_js, u64_arg};
use crate::core::clock::Clock;
use crate::core::cursor::{CursorError, CursorRegistry as CoreRegistry, NewCursor};
use crate::core::lease::Scope;

fn cursor_error(e: CursorError) -> JsValue {
    coded_error(e.code(), &e.to_string())
}

/// `CursorRegistryOptions`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RegistryOptions {
    tombstone_grace_ms: Option<u64>,
}

/// `CursorScope`. Other keys are allowed: a `CursorInfo` (or any record
/// holding the two names) is a scope, as TypeScript's structural types say.
#[derive(Deserialize)]
struct ScopeArg {
    tenant: String,
    principal: String,
}

/// `NewCursor` (an option bag: unknown keys are refused).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewCursorArg {
    tenant: String,
    principal: String,
    query: String,
    snapshot_lsn: Option<u64>,
    first_lease: Option<String>,
    expires_at_ms: u64,
}

/// `CursorInfo`: the numbers JS registered come back exactly (a `bigint`
/// stays one past 2^53).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CursorInfo<'a> {
    token: &'a str,
    tenant: &'a str,
    principal: &'a str,
    query: &'a str,
    #[serde(serialize_with = "exact_u64")]
    snapshot_lsn: u64,
    first_lease: &'a str,
    #[serde(serialize_with = "exact_u64")]
    expires_at_ms: u64,
    #[serde(with = "serde_wasm_bindgen::preserve")]
    payload: JsValue,
}

/// `CursorStats`.
#[derive(Serialize)]
struct Stats {
    live: u64,
    tombstones: u64,
}

fn scope_of(v: JsValue) -> Result<Scope, JsValue> {
    let s: ScopeArg = from_js(v, "scope", false)?;
    Ok(Scope::new(s.tenant, s.principal))
}

fn now_or(now_ms: Option<f64>) -> Result<u64, JsValue> {
    match now_ms {
        None => Ok(JsClock.now_ms()),
        Some(t) => u64_arg(JsValue::from_f64(t), "nowMs"),
    }
}

/// Cursor tokens (192 random bits) bound to an owner, a snapshot and a TTL.
/// An unknown token and another owner's token get the same
/// `cursor_not_found` error; only the owner learns `cursor_cancelled` or
/// `cursor_expired`.
#[wasm_bindgen(js_name = CursorRegistry)]
pub struct CursorRegistry {
    inner: CoreRegistry<JsValue>,
}

#[wasm_bindgen(js_class = CursorRegistry)]
impl CursorRegistry {
    /// `new CursorRegistry({ tombstoneGraceMs })` (default 10 minutes).
    #[wasm_bindgen(constructor)]
    pub fn new(
        options: Option<super::types::CursorRegistryOptionsArg>,
    ) -> Result<CursorRegistry, JsValue> {
        let options: RegistryOptions = super::js::options(options)?;
        let inner = match options.tombstone_grace_ms {
            Some(ms) => CoreRegistry::with_tombstone_grace(ms),
            None => CoreRegistry::new(),
        };
        Ok(Self { inner })
    }

    /// Registers a cursor and returns its 48-hex token.
    pub fn register(
        &self,
        #[wasm_bindgen(unchecked_param_type = "NewCursor")] info: JsValue,
        #[wasm_bindgen(unchecked_param_type = "unknown")] payload: JsValue,
    ) -> Result<String, JsValue> {
        let info: NewCursorArg = from_js(info, "info", true)?;
        let new = NewCursor {
            scope: Scope::new(info.tenant, info.principal),
            query: info.query,
            snapshot_lsn: info.snapshot_lsn.unwrap_or(0),
            first_lease: info.first_lease.unwrap_or_default(),
            expires_at_ms: info.expires_at_ms,
        };
        self.inner
            .register(new, payload)
            .map(|h| h.token)
            .map_err(|e| coded_error("internal_error", &e.to_string()))
    }

    /// Looks a cursor up for its owner; throws `cursor_not_found`,
    /// `cursor_cancelled` or `cursor_expired`. `nowMs` defaults to `Date.now()`.
    #[wasm_bindgen(unchecked_return_type = "CursorInfo")]
    pub fn resolve(
        &self,
        token: &str,
        #[wasm_bindgen(unchecked_param_type = "CursorScope")] scope: JsValue,
        #[wasm_bindgen(js_name = nowMs)] now_ms: Option<f64>,
    ) -> Result<JsValue, JsValue> {
        let h = self
            .inner
            .resolve(token, &scope_of(scope)?, now_or(now_ms)?)
            .map_err(cursor_error)?;
        to_js(&CursorInfo {
            token: &h.token,
            tenant: &h.info.scope.tenant,
            principal: &h.info.scope.principal,
            query: &h.info.query,
            snapshot_lsn: h.info.snapshot_lsn,
            first_lease: &h.info.first_lease,
            expires_at_ms: h.info.expires_at_ms,
            payload: (*h.payload).clone(),
        })
    }

    /// Cancels the owner's cursor (idempotent); `cursor_not_found` for an
    /// unknown or foreign token.
    pub fn cancel(
        &self,
        token: &str,
        #[wasm_bindgen(unchecked_param_type = "CursorScope")] scope: JsValue,
        #[wasm_bindgen(js_name = nowMs)] now_ms: Option<f64>,
    ) -> Result<(), JsValue> {
        self.inner
            .cancel(token, &scope_of(scope)?, now_or(now_ms)?)
            .map_err(cursor_error)
    }

    /// Expires cursors past their TTL (dropping their payloads) and forgets
    /// old tombstones. Returns how many cursors expired.
    pub fn prune(
        &self,
        #[wasm_bindgen(js_name = nowMs)] now_ms: Option<f64>,
    ) -> Result<u32, JsValue> {
        Ok(self.inner.prune(now_or(now_ms)?) as u32)
    }

    /// Live cursors and tombstones.
    #[wasm_bindgen(getter, unchecked_return_type = "CursorStats")]
    pub fn stats(&self) -> Result<JsValue, JsValue> {
        let s = self.inner.stats();
        to_js(&Stats {
            live: s.live as u64,
            tombstones: s.tombstones as u64,
        })
    }

    /// The earliest expiry among live cursors, for a prune timer.
    #[wasm_bindgen(js_name = nextExpiryMs)]
    pub fn next_expiry_ms(&self) -> Option<f64> {
        self.inner.next_expiry_ms().map(|t| t as f64)
    }
}
