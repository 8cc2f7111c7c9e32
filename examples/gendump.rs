//! Writes a repeatable stream resembling an uncompressed `pg_dump` of a few tables to stdout:
//! `gendump BYTES [SEED] [CHANGE_PERMILLE]`. With a change rate, that share of rows differs from
//! the same seed's output (a scattered update), for incremental benchmarks.

use std::io::{BufWriter, Write};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let total: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1 << 30);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let change: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
    let words = [
        "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india",
        "juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo", "sierra",
        "tango",
    ];
    let mut out = BufWriter::with_capacity(1 << 20, std::io::stdout().lock());
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut c = 0xC0FF_EE00_u64 ^ seed;
    let next = |x: &mut u64| {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    };
    let mut written = 0u64;
    let mut row = 0u64;
    let mut line = Vec::with_capacity(256);
    while written < total {
        if row.is_multiple_of(2_000_000) {
            line.clear();
            let _ = write!(line, "\n-- Data for table public.t{}\nCOPY public.t{} (id, name, qty, token, day, note) FROM stdin;\n", row / 2_000_000, row / 2_000_000);
        } else {
            line.clear();
        }
        row += 1;
        let r = next(&mut s);
        let h = next(&mut s);
        let changed = change > 0 && next(&mut c) % 1000 < change;
        let qty = (r >> 16) % 1_000_000 + u64::from(changed);
        let _ = writeln!(
            line,
            "{row}\t{} {}\t{qty}\t{h:016x}\t2026-{:02}-{:02}\t{}",
            words[(r % 20) as usize],
            words[((r >> 8) % 20) as usize],
            1 + (r >> 40) % 12,
            1 + (r >> 44) % 28,
            if r % 7 == 0 {
                "\\N"
            } else {
                words[((r >> 50) % 20) as usize]
            }
        );
        let n = line.len().min((total - written) as usize);
        if out.write_all(&line[..n]).is_err() {
            return;
        }
        written += n as u64;
    }
    let _ = out.flush();
}
