//! Fuzz target: see `../checks/payload.rs`.
#![no_main]

#[path = "../checks/payload.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
