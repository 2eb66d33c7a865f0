//! wasm-bindgen bindings: the JS face of the core.

mod clock;

pub use clock::JsClock;
