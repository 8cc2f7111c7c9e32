//! Fuzz target: see `../checks/json_files.rs`.
#![no_main]

#[path = "../checks/json_files.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
