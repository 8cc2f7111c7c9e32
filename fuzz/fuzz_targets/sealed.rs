//! Fuzz target: see `../checks/sealed.rs`.
#![no_main]

#[path = "../checks/sealed.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
