//! Plugin configuration: the JSON model (`model`) and the validation types every stage and
//! provider shares (`validate`: the error type that names the JSON path of a fault, secrets,
//! credentials and callout endpoints). Compiling a config into routes and their stages is the
//! plan's (`crate::plan`), the only module that knows every stage.

pub mod model;
pub mod validate;

pub use validate::{
    compile_auth, compile_endpoint, resolve_secret, Auth, ConfigError, Endpoint, EnvLookup, Secret,
    DEFAULT_CALLOUT_TIMEOUT_MS,
};
