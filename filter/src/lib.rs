//! aigate, the proxy-wasm filter: the only crate that uses proxy-wasm. All logic lives in
//! `aigate_core` (plain Rust, tested natively); this crate wires it to Envoy's ABI. Natively it
//! is empty, so workspace-wide native builds and lints need no proxy-wasm.

#[cfg(target_arch = "wasm32")]
mod plugin;
