//! Fuzz target: see `../checks/pack_header.rs`.
#![no_main]

#[path = "../checks/pack_header.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
