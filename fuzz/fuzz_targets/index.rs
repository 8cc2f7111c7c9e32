//! Fuzz target: see `../checks/index.rs`.
#![no_main]

#[path = "../checks/index.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
