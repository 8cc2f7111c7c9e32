//! Fuzz target: see `../checks/chunker.rs`.
#![no_main]

#[path = "../checks/chunker.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
