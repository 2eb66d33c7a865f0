//! Resume cursors.
//!
//! A cursor is a 192-bit random token bound to its owner ([`Scope`]), its
//! query, its pinned snapshot and a TTL, plus a host payload (the server keeps
//! the pinned snapshot there). [`CursorRegistry::resolve`] checks the owner
//! **before** anything else, so an unknown token and somebody else's token
//! get the same [`CursorError::NotFound`]; only the owner learns that a cursor
//! was cancelled or has expired.
//!
//! Expired and cancelled cursors drop their payload (releasing the snapshot)
//! as soon as [`CursorRegistry::prune`] sees them, and stay as small
//! tombstones for a grace period so their owner gets the precise answer; after
//! that they are forgotten, so the registry does not grow without bound.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;

use super::cancel::{lock, CancelToken};
use super::lease::Scope;
use super::token::{cursor_token, RandomError};

/// Default time a tombstone is kept after expiry or cancel: 10 minutes.
pub const DEFAULT_TOMBSTONE_GRACE_MS: u64 = 10 * 60 * 1000;

/// Why a cursor cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CursorError {
    /// Unknown, or owned by someone else: deliberately the same answer.
    #[error("cursor not found")]
    NotFound,
    /// The owner cancelled it.
    #[error("cursor was cancelled")]
    Cancelled,
    /// Past its TTL.
    #[error("cursor has expired")]
    Expired,
}

impl CursorError {
    /// The protocol error code.
    pub fn code(self) -> &'static str {
        match self {
            CursorError::NotFound => "cursor_not_found",
            CursorError::Cancelled => "cursor_cancelled",
            CursorError::Expired => "cursor_expired",
        }
    }
}

/// What is registered with a new cursor.
#[derive(Debug, Clone)]
pub struct NewCursor {
    /// Owner.
    pub scope: Scope,
    /// The query text (for audit and re-execution).
    pub query: String,
    /// Pinned snapshot.
    pub snapshot_lsn: u64,
    /// Wire handle of the lease that created it.
    pub first_lease: String,
    /// When the snapshot stops being valid (clock ms, inclusive).
    pub expires_at_ms: u64,
}

/// A live cursor as handed out by the registry.
#[derive(Debug)]
pub struct CursorHandle<P> {
    /// The 48-hex token.
    pub token: String,
    /// Everything it was registered with.
    pub info: NewCursor,
    /// Raised by [`CursorRegistry::cancel`]; running streams watch a child.
    pub cancel: CancelToken,
    /// The host's payload.
    pub payload: Arc<P>,
}

impl<P> Clone for CursorHandle<P> {
    fn clone(&self) -> Self {
        Self {
            token: self.token.clone(),
            info: self.info.clone(),
            cancel: self.cancel.clone(),
            payload: self.payload.clone(),
        }
    }
}

#[derive(Debug)]
enum State<P> {
    Live(CursorHandle<P>),
    Cancelled { scope: Scope, forget_at_ms: u64 },
    Expired { scope: Scope, forget_at_ms: u64 },
}

impl<P> State<P> {
    fn scope(&self) -> &Scope {
        match self {
            State::Live(h) => &h.info.scope,
            State::Cancelled { scope, .. } | State::Expired { scope, .. } => scope,
        }
    }
}

/// Counts for monitoring and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CursorStats {
    /// Live cursors (each may hold a pinned snapshot).
    pub live: usize,
    /// Tombstones kept for precise answers.
    pub tombstones: usize,
}

/// Thread-safe map from token to cursor. `P` is the host's payload.
#[derive(Debug)]
pub struct CursorRegistry<P = ()> {
    entries: Mutex<HashMap<String, State<P>>>,
    grace_ms: u64,
}

impl<P> Default for CursorRegistry<P> {
    fn default() -> Self {
        Self::new()
    }
}

impl<P> CursorRegistry<P> {
    /// A registry keeping tombstones for [`DEFAULT_TOMBSTONE_GRACE_MS`].
    pub fn new() -> Self {
        Self::with_tombstone_grace(DEFAULT_TOMBSTONE_GRACE_MS)
    }

    /// A registry keeping tombstones for `grace_ms` after expiry or cancel.
    pub fn with_tombstone_grace(grace_ms: u64) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            grace_ms,
        }
    }

    /// Registers a cursor and returns its handle (with a fresh token).
    pub fn register(&self, info: NewCursor, payload: P) -> Result<CursorHandle<P>, RandomError> {
        self.register_shared(info, Arc::new(payload))
    }

    /// [`register`](Self::register) for a payload the caller shares already.
    pub fn register_shared(
        &self,
        info: NewCursor,
        payload: Arc<P>,
    ) -> Result<CursorHandle<P>, RandomError> {
        let mut entries = lock(&self.entries);
        let token = loop {
            let t = cursor_token()?;
            if !entries.contains_key(&t) {
                break t;
            }
        };
        let handle = CursorHandle {
            token: token.clone(),
            info,
            cancel: CancelToken::new(),
            payload,
        };
        entries.insert(token, State::Live(handle.clone()));
        Ok(handle)
    }

    /// Registers, under its existing `token`, a cursor that another holder
    /// of the same state (another server instance) created. A live entry of
    /// that token wins and is returned; a tombstone is kept (`None`).
    pub fn adopt(&self, token: &str, info: NewCursor, payload: Arc<P>) -> Option<CursorHandle<P>> {
        let mut entries = lock(&self.entries);
        match entries.get(token) {
            Some(State::Live(h)) => Some(h.clone()),
            Some(_) => None,
            None => {
                let handle = CursorHandle {
                    token: token.to_owned(),
                    info,
                    cancel: CancelToken::new(),
                    payload,
                };
                entries.insert(token.to_owned(), State::Live(handle.clone()));
                Some(handle)
            }
        }
    }

    /// Cancels the cursor `token` whoever owns it (the owner's cancel was
    /// authorised elsewhere, by another holder of the same state). Returns
    /// whether a live cursor was cancelled.
    pub fn cancel_authorised(&self, token: &str, now_ms: u64) -> bool {
        let scope = match lock(&self.entries).get(token) {
            Some(State::Live(h)) => h.info.scope.clone(),
            _ => return false,
        };
        self.cancel(token, &scope, now_ms).is_ok()
    }

    /// Whether `token` names a live cursor (whoever owns it).
    pub fn is_live(&self, token: &str) -> bool {
        matches!(lock(&self.entries).get(token), Some(State::Live(_)))
    }

    /// Looks a cursor up for `scope` at `now_ms`. Scope first, then state,
    /// then expiry (boundary inclusive: valid at exactly `expires_at_ms`).
    pub fn resolve(
        &self,
        token: &str,
        scope: &Scope,
        now_ms: u64,
    ) -> Result<CursorHandle<P>, CursorError> {
        let mut entries = lock(&self.entries);
        let Some(state) = entries.get(token) else {
            return Err(CursorError::NotFound);
        };
        if state.scope() != scope {
            return Err(CursorError::NotFound);
        }
        match state {
            State::Cancelled { .. } => Err(CursorError::Cancelled),
            State::Expired { .. } => Err(CursorError::Expired),
            State::Live(h) if now_ms > h.info.expires_at_ms => {
                let forget_at_ms = h.info.expires_at_ms.saturating_add(self.grace_ms);
                h.cancel.cancel();
                entries.insert(
                    token.to_owned(),
                    State::Expired {
                        scope: scope.clone(),
                        forget_at_ms,
                    },
                );
                Err(CursorError::Expired)
            }
            State::Live(h) => Ok(h.clone()),
        }
    }

    /// Cancels `scope`'s cursor: raises its cancel token (stopping a running
    /// stream) and tombstones it. Idempotent for the owner; `NotFound` for an
    /// unknown or foreign token. Cancelling an expired cursor succeeds too.
    pub fn cancel(&self, token: &str, scope: &Scope, now_ms: u64) -> Result<(), CursorError> {
        let mut entries = lock(&self.entries);
        let Some(state) = entries.get(token) else {
            return Err(CursorError::NotFound);
        };
        if state.scope() != scope {
            return Err(CursorError::NotFound);
        }
        if let State::Live(h) = state {
            h.cancel.cancel();
            let forget_at_ms = h
                .info
                .expires_at_ms
                .max(now_ms)
                .saturating_add(self.grace_ms);
            entries.insert(
                token.to_owned(),
                State::Cancelled {
                    scope: scope.clone(),
                    forget_at_ms,
                },
            );
        }
        Ok(())
    }

    /// Drops the payload of every cursor past its TTL (turning it into a
    /// tombstone) and forgets tombstones past their grace period. Returns how
    /// many live cursors expired in this call.
    pub fn prune(&self, now_ms: u64) -> usize {
        let mut entries = lock(&self.entries);
        let mut expired = 0;
        let grace = self.grace_ms;
        entries.retain(|_, state| match state {
            State::Live(h) if now_ms > h.info.expires_at_ms => {
                expired += 1;
                h.cancel.cancel();
                let forget_at_ms = h.info.expires_at_ms.saturating_add(grace);
                *state = State::Expired {
                    scope: h.info.scope.clone(),
                    forget_at_ms,
                };
                now_ms <= forget_at_ms
            }
            State::Live(_) => true,
            State::Cancelled { forget_at_ms, .. } | State::Expired { forget_at_ms, .. } => {
                now_ms <= *forget_at_ms
            }
        });
        expired
    }

    /// Live cursors and tombstones.
    pub fn stats(&self) -> CursorStats {
        let entries = lock(&self.entries);
        let live = entries
            .values()
            .filter(|s| matches!(s, State::Live(_)))
            .count();
        CursorStats {
            live,
            tombstones: entries.len() - live,
        }
    }

    /// The earliest expiry among live cursors, for a host's prune timer.
    pub fn next_expiry_ms(&self) -> Option<u64> {
        lock(&self.entries)
            .values()
            .filter_map(|s| match s {
                State::Live(h) => Some(h.info.expires_at_ms),
                _ => None,
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::digest::is_hex_of_len;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn info(scope: &Scope, expires_at_ms: u64) -> NewCursor {
        NewCursor {
            scope: scope.clone(),
            query: "SELECT * FROM t".into(),
            snapshot_lsn: 7,
            first_lease: "00".repeat(16),
            expires_at_ms,
        }
    }

    #[test]
    fn owner_resolves_its_cursor() {
        let reg = CursorRegistry::new();
        let alice = Scope::new("t1", "alice");
        let h = reg.register(info(&alice, 1000), "pinned").unwrap();
        assert!(is_hex_of_len(&h.token, 48));
        let got = reg.resolve(&h.token, &alice, 500).unwrap();
        assert_eq!(*got.payload, "pinned");
        assert_eq!(got.info.snapshot_lsn, 7);
    }

    #[test]
    fn foreign_and_unknown_tokens_are_indistinguishable() {
        let reg = CursorRegistry::new();
        let alice = Scope::new("t1", "alice");
        let h = reg.register(info(&alice, 1000), ()).unwrap();
        let other_tenant = Scope::new("t2", "alice");
        let other_principal = Scope::new("t1", "bob");
        let unknown = "ab".repeat(24);
        for (tok, scope) in [
            (&h.token, &other_tenant),
            (&h.token, &other_principal),
            (&unknown, &alice),
        ] {
            assert_eq!(
                reg.resolve(tok, scope, 0).unwrap_err(),
                CursorError::NotFound
            );
            assert_eq!(
                reg.cancel(tok, scope, 0).unwrap_err(),
                CursorError::NotFound
            );
        }
        assert!(
            reg.resolve(&h.token, &alice, 0).is_ok(),
            "foreign cancel did nothing"
        );
        assert!(!h.cancel.is_cancelled());
    }

    #[test]
    fn scope_is_checked_before_expiry_and_cancel() {
        let reg = CursorRegistry::new();
        let alice = Scope::new("t1", "alice");
        let bob = Scope::new("t1", "bob");
        let expired = reg.register(info(&alice, 100), ()).unwrap();
        let cancelled = reg.register(info(&alice, 10_000), ()).unwrap();
        reg.cancel(&cancelled.token, &alice, 0).unwrap();
        assert_eq!(
            reg.resolve(&expired.token, &bob, 5000).unwrap_err(),
            CursorError::NotFound
        );
        assert_eq!(
            reg.resolve(&cancelled.token, &bob, 0).unwrap_err(),
            CursorError::NotFound
        );
        assert_eq!(
            reg.resolve(&expired.token, &alice, 5000).unwrap_err(),
            CursorError::Expired
        );
        assert_eq!(
            reg.resolve(&cancelled.token, &alice, 0).unwrap_err(),
            CursorError::Cancelled
        );
        assert_eq!(CursorError::Expired.code(), "cursor_expired");
    }

    #[test]
    fn ttl_boundary_is_inclusive() {
        let reg = CursorRegistry::new();
        let s = Scope::new("t", "p");
        let h = reg.register(info(&s, 1000), ()).unwrap();
        assert!(reg.resolve(&h.token, &s, 1000).is_ok());
        assert_eq!(
            reg.resolve(&h.token, &s, 1001).unwrap_err(),
            CursorError::Expired
        );
        assert!(
            h.cancel.is_cancelled(),
            "an expired cursor stops its stream"
        );
    }

    #[test]
    fn cancel_raises_token_tombstones_and_is_idempotent() {
        let reg = CursorRegistry::new();
        let s = Scope::new("t", "p");
        let h = reg.register(info(&s, 1000), ()).unwrap();
        let running = h.cancel.child();
        reg.cancel(&h.token, &s, 10).unwrap();
        assert!(h.cancel.is_cancelled());
        assert!(running.is_cancelled());
        reg.cancel(&h.token, &s, 11).unwrap();
        assert_eq!(
            reg.resolve(&h.token, &s, 12).unwrap_err(),
            CursorError::Cancelled
        );
        assert_eq!(
            reg.stats(),
            CursorStats {
                live: 0,
                tombstones: 1
            }
        );
    }

    #[test]
    fn a_disconnect_does_not_tombstone() {
        let reg = CursorRegistry::new();
        let s = Scope::new("t", "p");
        let h = reg.register(info(&s, 1000), ()).unwrap();
        let running = h.cancel.child();
        running.cancel(); // the connection dropped
        assert!(!h.cancel.is_cancelled());
        assert!(reg.resolve(&h.token, &s, 5).is_ok());
    }

    #[test]
    fn prune_releases_payloads_and_bounds_the_registry() {
        let reg = CursorRegistry::with_tombstone_grace(100);
        let s = Scope::new("t", "p");
        let payload = Arc::new(());
        let mut tokens = Vec::new();
        for i in 0..50 {
            let h = reg.register(info(&s, 1000 + i), payload.clone()).unwrap();
            tokens.push(h.token);
        }
        let keep = reg.register(info(&s, 10_000), payload.clone()).unwrap();
        assert_eq!(Arc::strong_count(&payload), 52);
        assert_eq!(reg.next_expiry_ms(), Some(1000));
        assert_eq!(reg.prune(1100), 50);
        assert_eq!(Arc::strong_count(&payload), 2, "expired payloads dropped");
        assert_eq!(
            reg.stats(),
            CursorStats {
                live: 1,
                tombstones: 50
            }
        );
        assert_eq!(
            reg.resolve(&tokens[0], &s, 1100).unwrap_err(),
            CursorError::Expired
        );
        reg.prune(1200);
        assert_eq!(
            reg.stats(),
            CursorStats {
                live: 1,
                tombstones: 0
            }
        );
        assert_eq!(
            reg.resolve(&tokens[0], &s, 1200).unwrap_err(),
            CursorError::NotFound
        );
        assert!(reg.resolve(&keep.token, &s, 1200).is_ok());
    }
}
