//! The fuzz targets' checks (`fuzz/checks/`) over their committed seeds and a fixed set of
//! mutations of each (every single-byte flip of the first 256 bytes, bytes set to 0x00/0xFF,
//! truncations, a splice of two seeds): the ordinary test suite's share of fuzzing, with no
//! fuzzing engine to build. Coverage-guided runs stay with `fuzz/run-smoke.sh` (cargo-fuzz).

#[path = "../fuzz/checks/chunker.rs"]
mod chunker;
#[path = "../fuzz/checks/config.rs"]
mod config;
#[path = "../fuzz/checks/index.rs"]
mod index;
#[path = "../fuzz/checks/json_files.rs"]
mod json_files;
#[path = "../fuzz/checks/pack_header.rs"]
mod pack_header;
#[path = "../fuzz/checks/payload.rs"]
mod payload;
#[path = "../fuzz/checks/pg_archive.rs"]
mod pg_archive;
#[path = "../fuzz/checks/sealed.rs"]
mod sealed;

use std::path::Path;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds for {target}");
    out
}

/// The inputs derived from one seed.
fn mutations(seed: &[u8], other: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![seed.to_vec(), Vec::new()];
    for i in 0..seed.len().min(256) {
        for m in [0x01u8, 0x80] {
            let mut v = seed.to_vec();
            v[i] ^= m;
            out.push(v);
        }
        for b in [0x00u8, 0xFF] {
            let mut v = seed.to_vec();
            v[i] = b;
            out.push(v);
        }
    }
    for cut in [1, 4, 8, 12, seed.len() / 2, seed.len().saturating_sub(1)] {
        out.push(seed[..cut.min(seed.len())].to_vec());
        out.push(seed[seed.len().saturating_sub(cut)..].to_vec());
    }
    let half = seed.len() / 2;
    out.push([&seed[..half], other].concat());
    out
}

fn run(target: &str, check: fn(&[u8])) {
    let seeds = seeds(target);
    let mut runs = 0;
    for (i, (name, seed)) in seeds.iter().enumerate() {
        let other = &seeds[(i + 1) % seeds.len()].1;
        for (k, input) in mutations(seed, other).into_iter().enumerate() {
            let outcome = std::panic::catch_unwind(|| check(&input));
            assert!(
                outcome.is_ok(),
                "{target}: seed {name}, mutation {k} failed; input (hex): {}",
                input.iter().map(|b| format!("{b:02x}")).collect::<String>()
            );
            runs += 1;
        }
    }
    assert!(runs > seeds.len());
}

#[test]
fn chunker_seeds() {
    run("chunker", chunker::check);
}

#[test]
fn config_seeds() {
    run("config", config::check);
}

#[test]
fn index_seeds() {
    run("index", index::check);
}

#[test]
fn json_files_seeds() {
    run("json_files", json_files::check);
}

#[test]
fn pack_header_seeds() {
    run("pack_header", pack_header::check);
}

#[test]
fn payload_seeds() {
    run("payload", payload::check);
}

#[test]
fn pg_archive_seeds() {
    run("pg_archive", pg_archive::check);
}

#[test]
fn sealed_seeds() {
    run("sealed", sealed::check);
}
