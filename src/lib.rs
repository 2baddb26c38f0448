//! aigate-core: the logic of aigate, an AI gateway as one proxy-wasm filter for Envoy.
//!
//! Plain Rust with no proxy-wasm dependency, so the whole request pipeline runs natively in
//! tests through the `host::Host` trait. The filter crate (`filter/`, the only proxy-wasm user)
//! and the CLI crate (`cli/`) sit on top of it; ARCHITECTURE.md has the layers.

pub mod api;
pub mod client_api;
pub mod config;
pub mod cost;
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
pub mod plan;
pub mod providers;
pub mod secrets;
pub mod shaping;
pub mod sse;
pub mod transform;
pub mod usage;
