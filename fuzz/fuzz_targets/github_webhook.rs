//! Fuzz target: see `inputs::github_webhook`.
#![no_main]

#[path = "../inputs.rs"]
mod inputs;

libfuzzer_sys::fuzz_target!(|data: &[u8]| inputs::github_webhook(data));
