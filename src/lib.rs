#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod core;

#[cfg(feature = "server")]
pub mod server;

#[cfg(all(feature = "client", not(target_arch = "wasm32")))]
pub mod client;

#[cfg(target_arch = "wasm32")]
mod wasm;

pub use crate::core::audit::{AuditEvent, AuditSink, JsonLinesAuditSink, MemoryAuditSink};
pub use crate::core::cancel::CancelToken;
pub use crate::core::capacity::{
    CapacityError, CapacityGuard, CapacityLimits, StreamCapacityRegistry,
};
#[cfg(not(target_arch = "wasm32"))]
pub use crate::core::clock::SystemClock;
pub use crate::core::clock::{Clock, FakeClock};
pub use crate::core::close::CloseReason;
pub use crate::core::config::{ConfigSource, StreamConfig};
pub use crate::core::cursor::{CursorError, CursorRegistry};
pub use crate::core::digest::PrefixHasher;
pub use crate::core::framer::{FramerError, NdjsonFramer};
pub use crate::core::jwt::parse_jwt_exp_ms;
pub use crate::core::lease::{LeaseIssuer, Scope, StreamLease};
pub use crate::core::producer::{ChunkProducer, ChunkSink, FlushReason};
pub use crate::core::protocol::{ErrorCode, StreamEncoder, StreamVerifier};
pub use crate::core::resumable::{assess_resumability, Resumability};
