//! The `sbk` command: a thin layer over the library (see `cli`).

mod cli;

/// Keeps blob-sized buffers (up to a chunk's 8 MiB, several per delta chain) in the heap
/// instead of giving each its own `mmap`: with glibc's defaults every 2 MiB buffer is a fresh
/// mapping whose pages fault in zeroed and are unmapped again, which cost a restore of a delta
/// chain a quarter of its time. Measured on the pgbench benchmark (restore of the 28th snapshot,
/// `benches/incremental-pgbench.sh`): 0.38 s -> 0.29 s; ingest with deltas about 10% faster.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called before any other thread starts.
    unsafe {
        // 32 MiB is glibc's largest mmap threshold on 64-bit systems.
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        // With buffers kept in the heap, each of glibc's arenas (8 per core by default) holds
        // on to freed chunk buffers of its own: a Supabase snapshot's ~27 threads peaked at
        // 248 MiB with the default and 95 MiB with 2 arenas, at the same speed
        // (docs/measurements/supabase-storage.md).
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        libc::mallopt(libc::M_ARENA_MAX, cores.clamp(2, 8) as libc::c_int);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() {
    sbk::cleanup::private_umask();
    tune_allocator();
    std::process::exit(cli::main());
}
