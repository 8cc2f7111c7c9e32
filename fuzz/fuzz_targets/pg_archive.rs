//! Fuzz target: see `../checks/pg_archive.rs`.
#![no_main]

#[path = "../checks/pg_archive.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::check(data));
