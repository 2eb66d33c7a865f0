//! The host-independent core: every primitive of an NDJSON output stream.
//!
//! Nothing here depends on a host: no HTTP stack, async runtime, database
//! driver or JS binding. The server (`server` feature) and the wasm bindings
//! adapt the core, never the other way round.

pub mod audit;
pub mod cancel;
pub mod capacity;
pub mod clock;
pub mod close;
pub mod config;
pub mod cursor;
pub mod digest;
pub mod framer;
pub mod http;
pub mod ingest;
pub mod jwt;
pub mod lease;
pub mod producer;
pub mod protocol;
pub mod resumable;
pub mod sql;
pub mod token;
