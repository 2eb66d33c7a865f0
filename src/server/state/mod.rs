//! State that several server instances share when they act as one: capacity
//! slots (with the lease each running stream holds), cursors with their
//! tombstones, and resume checkpoints.
//!
//! [`SharedState`] is the interface; [`LocalState`] keeps everything in the
//! process (one instance, the default), [`cluster::ClusterState`] keeps it in
//! a PostgreSQL database that every instance started with the same
//! `--cluster` URL uses.
//!
//! Whatever the implementation, each process keeps the cursors *it* serves
//! in its [`CursorRegistry`](crate::core::cursor::CursorRegistry): their
//! payload (the pinned session) lives here and nowhere else. The shared
//! state only knows what another instance needs to resume or cancel them.

pub mod cluster;

use std::any::Any;

use crate::core::capacity::{CapacityError, CapacityLimits, StreamCapacityRegistry};
use crate::core::config::StreamConfig;
use crate::core::cursor::CursorError;
use crate::core::lease::Scope;
use crate::core::protocol::Column;

use super::backend::{Params, ResumeKey, Shape, Snapshot};

/// A capacity slot; released when dropped.
pub(crate) struct Slot(#[allow(dead_code)] Box<dyn Any + Send>);

impl Slot {
    pub(crate) fn new(guard: impl Any + Send) -> Slot {
        Slot(Box::new(guard))
    }
}

/// What another instance needs to resume a cursor.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct CursorRecord {
    pub(crate) scope: Scope,
    pub(crate) query: String,
    pub(crate) params: Option<Params>,
    pub(crate) shape: Shape,
    pub(crate) columns: Vec<Column>,
    pub(crate) cfg: StreamConfig,
    pub(crate) snapshot: Snapshot,
    pub(crate) first_lease: String,
    pub(crate) pinned_at_ms: u64,
    pub(crate) expires_at_ms: u64,
    /// (1.1) The open's answer to `count`, repeated by every resume.
    #[serde(default)]
    pub(crate) total: Option<crate::core::protocol::RowTotal>,
    /// (1.1) The request's `progress_ms`.
    #[serde(default)]
    pub(crate) progress_ms: Option<u64>,
}

/// A resume checkpoint as stored: rows, the key of the last row, and the
/// exported digest state.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct CheckpointRecord {
    pub(crate) rows: u64,
    pub(crate) key: Option<ResumeKey>,
    pub(crate) hasher: Vec<u8>,
}

/// The state instances share.
pub(crate) trait SharedState: Send + Sync {
    /// This instance's name.
    fn instance(&self) -> &str;
    /// Takes a slot for `scope` (a running stream), or says which cap is
    /// reached, counting every instance.
    fn acquire_slot(&self, scope: &Scope, limits: CapacityLimits) -> Result<Slot, CapacityError>;
    /// Slots this instance holds.
    fn slots_in_use(&self) -> u32;
    /// Makes a cursor known to every instance.
    fn publish_cursor(&self, token: &str, record: &CursorRecord) -> Result<(), String>;
    /// A cursor this process does not hold: `Ok(None)` when no instance
    /// knows it; the same errors as the local registry otherwise (a foreign
    /// cursor is `NotFound`, byte for byte like an unknown one).
    fn lookup_cursor(
        &self,
        token: &str,
        scope: &Scope,
        now_ms: u64,
    ) -> Result<Option<(CursorRecord, Vec<CheckpointRecord>)>, CursorError>;
    /// Tombstones `scope`'s cursor for every instance (the instance running
    /// it stops it). `Ok(false)` when no instance knows it.
    fn cancel_cursor(&self, token: &str, scope: &Scope, now_ms: u64) -> Result<bool, CursorError>;
    /// Records a checkpoint of a published cursor (best effort).
    fn save_checkpoint(&self, token: &str, checkpoint: CheckpointRecord);
    /// Whether the shared store answers (readiness).
    fn check(&self) -> Result<(), String>;
}

/// Everything in this process: one instance.
pub(crate) struct LocalState {
    instance: String,
    capacity: StreamCapacityRegistry,
}

impl LocalState {
    pub(crate) fn new(instance: String) -> Self {
        LocalState {
            instance,
            capacity: StreamCapacityRegistry::new(),
        }
    }
}

impl SharedState for LocalState {
    fn instance(&self) -> &str {
        &self.instance
    }

    fn acquire_slot(&self, scope: &Scope, limits: CapacityLimits) -> Result<Slot, CapacityError> {
        self.capacity.try_acquire(scope, limits).map(Slot::new)
    }

    fn slots_in_use(&self) -> u32 {
        self.capacity.global_in_use()
    }

    fn publish_cursor(&self, _token: &str, _record: &CursorRecord) -> Result<(), String> {
        Ok(())
    }

    fn lookup_cursor(
        &self,
        _token: &str,
        _scope: &Scope,
        _now_ms: u64,
    ) -> Result<Option<(CursorRecord, Vec<CheckpointRecord>)>, CursorError> {
        Ok(None)
    }

    fn cancel_cursor(
        &self,
        _token: &str,
        _scope: &Scope,
        _now_ms: u64,
    ) -> Result<bool, CursorError> {
        Ok(false)
    }

    fn save_checkpoint(&self, _token: &str, _checkpoint: CheckpointRecord) {}

    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}
