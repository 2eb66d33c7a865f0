//! Stream leases: one per running response.
//!
//! [`LeaseIssuer::open_stream`] binds a lease to a snapshot LSN and a frozen
//! [`StreamConfig`]. The lease has two identities: an internal sequence number
//! for the process (logs, maps) and a 128-bit random wire handle, the only one
//! ever sent to a client.

use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use super::config::StreamConfig;
use super::token::{lease_handle, RandomError};

/// Who a stream or cursor belongs to. The tenant comes from the server's own
/// token configuration, never from a client-chosen header.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct Scope {
    /// The tenant (one database).
    pub tenant: String,
    /// The principal within the tenant.
    pub principal: String,
}

impl Scope {
    /// A scope from its parts.
    pub fn new(tenant: impl Into<String>, principal: impl Into<String>) -> Self {
        Self {
            tenant: tenant.into(),
            principal: principal.into(),
        }
    }
}

/// Why a lease was not issued.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeaseError {
    /// The caller asked to stream inside an open transaction.
    #[error("streaming inside an open transaction is not supported")]
    InTransaction,
    /// No randomness for the handle.
    #[error(transparent)]
    Random(#[from] RandomError),
}

impl LeaseError {
    /// The protocol error code.
    pub fn code(&self) -> &'static str {
        match self {
            LeaseError::InTransaction => "stream_in_transaction_unsupported",
            LeaseError::Random(_) => "internal_error",
        }
    }
}

/// What a host asks for when it opens a stream.
#[derive(Debug, Clone)]
pub struct OpenStream {
    /// Owner.
    pub scope: Scope,
    /// The snapshot the stream reads.
    pub snapshot_lsn: u64,
    /// Config frozen for the stream's lifetime.
    pub config: StreamConfig,
    /// Whether the caller's session has an open transaction.
    pub in_transaction: bool,
    /// When the snapshot was pinned (clock ms); the TTL counts from here.
    /// A resume passes its cursor's pin time: the TTL is never extended.
    pub pinned_at_ms: u64,
    /// Lease open time (clock ms).
    pub now_ms: u64,
}

/// A running stream's lease.
#[derive(Debug, Clone)]
pub struct StreamLease {
    internal_id: u64,
    handle: String,
    /// Owner.
    pub scope: Scope,
    /// Snapshot the stream reads.
    pub snapshot_lsn: u64,
    /// Frozen config.
    pub config: StreamConfig,
    /// Open time (clock ms).
    pub opened_at_ms: u64,
    /// When the pinned snapshot expires (clock ms).
    pub expires_at_ms: u64,
}

impl StreamLease {
    /// The process-internal id. Never put it on the wire.
    pub fn internal_id(&self) -> u64 {
        self.internal_id
    }

    /// The 32-hex wire handle.
    pub fn handle(&self) -> &str {
        &self.handle
    }

    /// Whether the snapshot is past its TTL at `now_ms`. The boundary is
    /// inclusive: at exactly `expires_at_ms` the snapshot is still valid.
    pub fn snapshot_expired(&self, now_ms: u64) -> bool {
        now_ms > self.expires_at_ms
    }
}

/// Issues leases with process-unique internal ids.
#[derive(Debug, Default)]
pub struct LeaseIssuer {
    next: AtomicU64,
}

impl LeaseIssuer {
    /// A fresh issuer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Issues a lease, or refuses one inside a transaction.
    pub fn open_stream(&self, req: OpenStream) -> Result<StreamLease, LeaseError> {
        if req.in_transaction {
            return Err(LeaseError::InTransaction);
        }
        let handle = lease_handle()?;
        let internal_id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let expires_at_ms = req.pinned_at_ms.saturating_add(req.config.snapshot_ttl_ms);
        Ok(StreamLease {
            internal_id,
            handle,
            scope: req.scope,
            snapshot_lsn: req.snapshot_lsn,
            config: req.config,
            opened_at_ms: req.now_ms,
            expires_at_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::digest::is_hex_of_len;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn req(in_transaction: bool) -> OpenStream {
        OpenStream {
            scope: Scope::new("t1", "alice"),
            snapshot_lsn: 42,
            config: StreamConfig {
                snapshot_ttl_ms: 1000,
                ..StreamConfig::default()
            },
            in_transaction,
            pinned_at_ms: 5000,
            now_ms: 5000,
        }
    }

    #[test]
    fn lease_is_bound_to_snapshot_and_config() {
        let issuer = LeaseIssuer::new();
        let lease = issuer.open_stream(req(false)).unwrap();
        assert_eq!(lease.snapshot_lsn, 42);
        assert_eq!(lease.config.snapshot_ttl_ms, 1000);
        assert_eq!(lease.expires_at_ms, 6000);
        assert!(is_hex_of_len(lease.handle(), 32));
        let second = issuer.open_stream(req(false)).unwrap();
        assert_ne!(lease.internal_id(), second.internal_id());
        assert_ne!(lease.handle(), second.handle());
    }

    #[test]
    fn refuses_inside_a_transaction() {
        let err = LeaseIssuer::new().open_stream(req(true)).unwrap_err();
        assert_eq!(err, LeaseError::InTransaction);
        assert_eq!(err.code(), "stream_in_transaction_unsupported");
    }

    #[test]
    fn snapshot_expiry_boundary_is_inclusive() {
        let lease = LeaseIssuer::new().open_stream(req(false)).unwrap();
        assert!(!lease.snapshot_expired(5999));
        assert!(!lease.snapshot_expired(6000));
        assert!(lease.snapshot_expired(6001));
    }

    #[test]
    fn resume_keeps_the_original_pin_time() {
        let mut r = req(false);
        r.now_ms = 5900; // resumed 900 ms after the pin
        let lease = LeaseIssuer::new().open_stream(r).unwrap();
        assert_eq!(lease.expires_at_ms, 6000, "TTL not extended by a resume");
    }
}
