//! Plugin configuration: the JSON model (`model`), its compilation into an immutable,
//! validated plan (`compile`), and the error type that names the JSON path of a fault.

pub(crate) mod compile;
pub mod model;

pub use compile::{
    compile, compile_auth, compile_endpoint, parse_and_compile, resolve_secret, Attempts, Auth,
    ConfigError, Endpoint, EnvLookup, Plan, RetryCondition, Route, RouteMatcher, Secret,
    DEFAULT_PER_TRY_TIMEOUT_MS,
};
