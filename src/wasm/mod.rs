//! wasm-bindgen bindings: the JS face of the core.
//!
//! Each file adapts one core primitive; nothing here holds protocol logic of
//! its own. Every error that reaches JS is a real `Error` with a `code`
//! property ([`js::coded_error`]), and JS input never reaches a panic: numbers,
//! byte arrays and option bags are checked here before the core sees them.

mod clock;
pub(crate) mod cursor;
pub(crate) mod decoder;
pub(crate) mod framer;
pub(crate) mod hasher;
mod js;
pub(crate) mod misc;
pub(crate) mod producer;
pub(crate) mod resumable;
mod types;

#[cfg(test)]
mod tests;
