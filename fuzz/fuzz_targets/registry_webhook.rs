//! Fuzz target: see `inputs::registry_webhook`.
#![no_main]

#[path = "../inputs.rs"]
mod inputs;

libfuzzer_sys::fuzz_target!(|data: &[u8]| inputs::registry_webhook(data));
