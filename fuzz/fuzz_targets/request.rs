//! Any bytes as a request body, for every operation: parsed and checked, never a panic.
#![no_main]

use aigate_core::api::{parse_body, validate, Operation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = parse_body(data) {
        for operation in [
            Operation::ChatCompletions,
            Operation::Completions,
            Operation::Embeddings,
        ] {
            let _ = validate(operation, &body);
        }
    }
});
