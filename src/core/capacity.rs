//! Concurrent-stream caps: one global, one per principal.
//!
//! Both counters are checked and bumped under one lock, so the caps cannot be
//! over-issued by racing callers. A [`CapacityGuard`] releases both on drop —
//! on every exit, panic unwinding included.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use thiserror::Error;

use super::cancel::lock;
use super::lease::Scope;

/// Which cap refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityKind {
    /// `stream.max_global`.
    Global,
    /// `stream.max_per_principal`.
    Principal,
}

/// A refusal, with the numbers the 429 body carries.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{} ({current} of {limit} streams in use)", match .kind { CapacityKind::Global => "server stream capacity exhausted", CapacityKind::Principal => "principal stream quota exhausted" })]
pub struct CapacityError {
    /// Which cap.
    pub kind: CapacityKind,
    /// The cap.
    pub limit: u32,
    /// Streams holding slots when refused.
    pub current: u32,
}

impl CapacityError {
    /// The protocol error code.
    pub fn code(&self) -> &'static str {
        match self.kind {
            CapacityKind::Global => "server_stream_capacity_exhausted",
            CapacityKind::Principal => "principal_stream_quota_exhausted",
        }
    }
}

/// The caps a stream is admitted under (from its frozen config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapacityLimits {
    /// Whole server.
    pub max_global: u32,
    /// Per principal.
    pub max_per_principal: u32,
}

#[derive(Debug, Default)]
struct Counts {
    global: u32,
    per_principal: HashMap<Scope, u32>,
}

/// Counts running streams. Clones share the counters.
#[derive(Debug, Clone, Default)]
pub struct StreamCapacityRegistry {
    counts: Arc<Mutex<Counts>>,
}

impl StreamCapacityRegistry {
    /// Empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one global and one per-principal slot, or says which cap is full.
    pub fn try_acquire(
        &self,
        scope: &Scope,
        limits: CapacityLimits,
    ) -> Result<CapacityGuard, CapacityError> {
        let mut c = lock(&self.counts);
        if c.global >= limits.max_global {
            return Err(CapacityError {
                kind: CapacityKind::Global,
                limit: limits.max_global,
                current: c.global,
            });
        }
        let mine = c.per_principal.get(scope).copied().unwrap_or(0);
        if mine >= limits.max_per_principal {
            return Err(CapacityError {
                kind: CapacityKind::Principal,
                limit: limits.max_per_principal,
                current: mine,
            });
        }
        c.global += 1;
        *c.per_principal.entry(scope.clone()).or_insert(0) += 1;
        Ok(CapacityGuard {
            registry: self.clone(),
            scope: scope.clone(),
        })
    }

    /// Slots held on the whole server.
    pub fn global_in_use(&self) -> u32 {
        lock(&self.counts).global
    }

    /// Slots held by `scope`.
    pub fn in_use_by(&self, scope: &Scope) -> u32 {
        lock(&self.counts)
            .per_principal
            .get(scope)
            .copied()
            .unwrap_or(0)
    }

    fn release(&self, scope: &Scope) {
        let mut c = lock(&self.counts);
        c.global = c.global.saturating_sub(1);
        if let Some(n) = c.per_principal.get_mut(scope) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_principal.remove(scope);
            }
        }
    }
}

/// One held slot; dropping it releases the slot.
#[derive(Debug)]
pub struct CapacityGuard {
    registry: StreamCapacityRegistry,
    scope: Scope,
}

impl CapacityGuard {
    /// Whose slot this is.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }
}

impl Drop for CapacityGuard {
    fn drop(&mut self) {
        self.registry.release(&self.scope);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const LIMITS: CapacityLimits = CapacityLimits {
        max_global: 3,
        max_per_principal: 2,
    };

    #[test]
    fn per_principal_then_global_caps() {
        let reg = StreamCapacityRegistry::new();
        let alice = Scope::new("t", "alice");
        let bob = Scope::new("t", "bob");
        let a1 = reg.try_acquire(&alice, LIMITS).unwrap();
        let _a2 = reg.try_acquire(&alice, LIMITS).unwrap();
        let e = reg.try_acquire(&alice, LIMITS).unwrap_err();
        assert_eq!(
            (e.code(), e.limit, e.current),
            ("principal_stream_quota_exhausted", 2, 2)
        );
        let _b1 = reg.try_acquire(&bob, LIMITS).unwrap();
        let e = reg.try_acquire(&bob, LIMITS).unwrap_err();
        assert_eq!(
            (e.code(), e.limit, e.current),
            ("server_stream_capacity_exhausted", 3, 3)
        );
        drop(a1);
        assert_eq!(reg.global_in_use(), 2);
        assert_eq!(reg.in_use_by(&alice), 1);
        reg.try_acquire(&bob, LIMITS).unwrap();
    }

    #[test]
    fn same_principal_name_in_two_tenants_is_two_principals() {
        let reg = StreamCapacityRegistry::new();
        let l = CapacityLimits {
            max_global: 10,
            max_per_principal: 1,
        };
        let _a = reg.try_acquire(&Scope::new("t1", "p"), l).unwrap();
        assert!(reg.try_acquire(&Scope::new("t2", "p"), l).is_ok());
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn guard_releases_on_panic_unwind() {
        let reg = StreamCapacityRegistry::new();
        let scope = Scope::new("t", "p");
        let r = reg.clone();
        let s = scope.clone();
        let res = std::panic::catch_unwind(move || {
            let _g = r.try_acquire(&s, LIMITS).unwrap();
            panic!("stream task died");
        });
        assert!(res.is_err());
        assert_eq!(reg.global_in_use(), 0);
        assert_eq!(reg.in_use_by(&scope), 0);
    }

    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn no_over_issue_under_sixteen_threads() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let reg = StreamCapacityRegistry::new();
        let limits = CapacityLimits {
            max_global: 5,
            max_per_principal: 3,
        };
        let held = Arc::new(AtomicU32::new(0));
        let max_seen = Arc::new(AtomicU32::new(0));
        let per_held: Arc<Vec<AtomicU32>> = Arc::new((0..4).map(|_| AtomicU32::new(0)).collect());
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let reg = reg.clone();
                let held = held.clone();
                let max_seen = max_seen.clone();
                let per_held = per_held.clone();
                std::thread::spawn(move || {
                    let p = t % 4;
                    let scope = Scope::new("t", format!("p{p}"));
                    let mut granted = 0;
                    for _ in 0..200 {
                        if let Ok(g) = reg.try_acquire(&scope, limits) {
                            granted += 1;
                            let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                            max_seen.fetch_max(now, Ordering::SeqCst);
                            let mine = per_held[p].fetch_add(1, Ordering::SeqCst) + 1;
                            assert!(mine <= 3, "principal over-issued: {mine}");
                            std::thread::yield_now();
                            per_held[p].fetch_sub(1, Ordering::SeqCst);
                            held.fetch_sub(1, Ordering::SeqCst);
                            drop(g);
                        }
                    }
                    granted
                })
            })
            .collect();
        let granted: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(granted > 0);
        assert!(max_seen.load(Ordering::SeqCst) <= 5, "global over-issued");
        assert_eq!(reg.global_in_use(), 0);
        for p in 0..4 {
            assert_eq!(reg.in_use_by(&Scope::new("t", format!("p{p}"))), 0);
        }
    }
}
