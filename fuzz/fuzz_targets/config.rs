//! Any bytes as a plugin config: refused with a path or compiled, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let env = |_: &str| Some("fuzz-secret".to_string());
    if let Err(error) = aigate_core::plan::parse_and_compile(data, &env) {
        assert!(!error.to_string().contains("fuzz-secret"));
    }
});
