//! Cancellation shared between a cursor, its running stream and the host.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Inner {
    raised: AtomicBool,
    hooks: Mutex<Vec<Hook>>,
}

/// A shared flag that, once raised, stays raised. Clones share the flag.
///
/// Hosts can register hooks that run once when it is raised — the server uses
/// one to interrupt the running SQLite statement, so a query that produces no
/// rows for a long time stops too.
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

impl CancelToken {
    /// A token that is not raised.
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the token and runs the registered hooks (once). Idempotent.
    /// Returns `true` when this call raised it.
    pub fn cancel(&self) -> bool {
        if self.inner.raised.swap(true, Ordering::SeqCst) {
            return false;
        }
        let hooks = std::mem::take(&mut *lock(&self.inner.hooks));
        for h in hooks {
            h();
        }
        true
    }

    /// Whether the token was raised.
    pub fn is_cancelled(&self) -> bool {
        self.inner.raised.load(Ordering::SeqCst)
    }

    /// Runs `hook` when the token is raised (at once if it already is).
    pub fn on_cancel<F: FnOnce() + Send + 'static>(&self, hook: F) {
        let mut hooks = lock(&self.inner.hooks);
        if self.is_cancelled() {
            drop(hooks);
            hook();
        } else {
            hooks.push(Box::new(hook));
        }
    }

    /// A token raised when either `self` or the returned child is cancelled:
    /// cancelling the child does not raise the parent.
    pub fn child(&self) -> CancelToken {
        let child = CancelToken::new();
        let c = child.clone();
        self.on_cancel(move || {
            c.cancel();
        });
        child
    }

    /// True when both handles share one flag.
    pub fn same_as(&self, other: &CancelToken) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Locks a mutex, recovering the data if a panicking thread poisoned it:
/// every structure guarded here stays consistent between statements.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn cancel_is_shared_sticky_and_idempotent() {
        let a = CancelToken::new();
        let b = a.clone();
        assert!(!b.is_cancelled());
        assert!(a.cancel());
        assert!(!a.cancel());
        assert!(b.is_cancelled());
        assert!(a.same_as(&b));
    }

    #[test]
    fn hooks_run_exactly_once() {
        let t = CancelToken::new();
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        t.on_cancel(move || {
            n2.fetch_add(1, Ordering::SeqCst);
        });
        t.cancel();
        t.cancel();
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let n3 = n.clone();
        t.on_cancel(move || {
            n3.fetch_add(10, Ordering::SeqCst);
        });
        assert_eq!(n.load(Ordering::SeqCst), 11, "late hook runs at once");
    }

    #[test]
    fn child_follows_parent_not_the_reverse() {
        let parent = CancelToken::new();
        let child = parent.child();
        child.cancel();
        assert!(!parent.is_cancelled());
        let child2 = parent.child();
        parent.cancel();
        assert!(child2.is_cancelled());
    }
}
