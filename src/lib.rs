//! aigate: an AI gateway as one proxy-wasm filter for Envoy.
//!
//! Everything but `plugin` is plain Rust with no proxy-wasm dependency, so the whole request
//! pipeline runs natively in tests through the `host::Host` trait.

pub mod api;
#[cfg(not(target_arch = "wasm32"))]
pub mod cli;
pub mod client_api;
pub mod config;
pub mod counting_host;
pub mod encoding;
pub mod error;
pub mod find;
pub mod guards;
pub mod host;
pub mod json;
pub mod json_view;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod providers;
pub mod secrets;
pub mod shaping;
pub mod sse;
pub mod transform;
pub mod usage;

#[cfg(target_arch = "wasm32")]
mod plugin;
