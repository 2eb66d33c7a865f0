//! `CursorRegistry`: resume cursors for a JS server, with any JS value as
//! the payload (what the host needs to resume: a snapshot handle, a query).

use wasm_bindgen::prelude::*;

use super::clock::JsClock;
use super::js::{coded_error, get_opt, num, object, opt_u64, req_string, set, to_u64};
use crate::core::clock::Clock;
use crate::core::cursor::{CursorError, CursorRegistry as CoreRegistry, NewCursor};
use crate::core::lease::Scope;

fn cursor_error(e: CursorError) -> JsValue {
    coded_error(e.code(), &e.to_string())
}

fn scope_of(v: &JsValue) -> Result<Scope, JsValue> {
    Ok(Scope::new(
        req_string(v, "tenant")?,
        req_string(v, "principal")?,
    ))
}

fn now_or(now_ms: Option<f64>) -> Result<u64, JsValue> {
    match now_ms {
        None => Ok(JsClock.now_ms()),
        Some(t) => to_u64(&JsValue::from_f64(t), "nowMs"),
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
        let options = super::types::bag(options);
        let inner = match opt_u64(&options, "tombstoneGraceMs")? {
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
        let expires = get_opt(&info, "expiresAtMs")?
            .ok_or_else(|| super::js::invalid_argument("expiresAtMs is required"))?;
        let new = NewCursor {
            scope: scope_of(&info)?,
            query: req_string(&info, "query")?,
            snapshot_lsn: opt_u64(&info, "snapshotLsn")?.unwrap_or(0),
            first_lease: get_opt(&info, "firstLease")?
                .and_then(|v| v.as_string())
                .unwrap_or_default(),
            expires_at_ms: to_u64(&expires, "expiresAtMs")?,
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
            .resolve(token, &scope_of(&scope)?, now_or(now_ms)?)
            .map_err(cursor_error)?;
        let o = object();
        set(&o, "token", h.token.clone());
        set(&o, "tenant", h.info.scope.tenant.clone());
        set(&o, "principal", h.info.scope.principal.clone());
        set(&o, "query", h.info.query.clone());
        set(&o, "snapshotLsn", num(h.info.snapshot_lsn));
        set(&o, "firstLease", h.info.first_lease.clone());
        set(&o, "expiresAtMs", num(h.info.expires_at_ms));
        set(&o, "payload", (*h.payload).clone());
        Ok(o)
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
            .cancel(token, &scope_of(&scope)?, now_or(now_ms)?)
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
    pub fn stats(&self) -> JsValue {
        let s = self.inner.stats();
        let o = object();
        set(&o, "live", s.live as u32);
        set(&o, "tombstones", s.tombstones as u32);
        o
    }

    /// The earliest expiry among live cursors, for a prune timer.
    #[wasm_bindgen(js_name = nextExpiryMs)]
    pub fn next_expiry_ms(&self) -> Option<f64> {
        self.inner.next_expiry_ms().map(|t| t as f64)
    }
}
