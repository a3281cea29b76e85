//! Fuzz target: see `inputs::event_envelope`.
#![no_main]

#[path = "../inputs.rs"]
mod inputs;

libfuzzer_sys::fuzz_target!(|data: &[u8]| inputs::event_envelope(data));
