//! Reading files back: blobs are fetched and opened in parallel a window at a time, checked
//! against their IDs, and written in order; the whole file's hash and size are checked at the end.
//! No byte reaches the writer before its blob has been authenticated and re-hashed.

use std::io::Write;

use crossbeam_channel::bounded;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::tree::FileNode;
use crate::id::Id;
use crate::index::{BlobRef, Index};
use crate::repository::Repository;

/// Blobs fetched in parallel at once.
pub const WINDOW: usize = 8;
/// Most blobs in one window on a remote backend (about 1.5 MiB each in memory).
const MAX_REMOTE_WINDOW: usize = 64;
/// Longest run of back-to-back blobs read with one request.
const MAX_RUN_BYTES: u64 = 8 << 20;

/// Splits blobs into runs that lie back to back in one pack, so that each run is one ranged
/// read: a first snapshot restores with a request per few MiB instead of one per blob.
fn runs(blobs: &[BlobRef]) -> Vec<&[BlobRef]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=blobs.len() {
        let split = i == blobs.len() || {
            let (a, b) = (&blobs[i - 1], &blobs[i]);
            b.pack != a.pack
                || b.offset as u64 != a.offset as u64 + a.stored_len as u64
                || (b.offset as u64 + b.stored_len as u64) - blobs[start].offset as u64
                    > MAX_RUN_BYTES
        };
        if split {
            out.push(&blobs[start..i]);
            start = i;
        }
    }
    out
}

fn damaged(node: &FileNode, b: &BlobRef, e: Error) -> Error {
    Error::damaged(
        format!("file {}", node.name),
        format!("cannot read its blob {}: {e}", b.id.short()),
    )
}

/// A blob and, when a run read it already, its sealed bytes.
type Fetched<'r> = (&'r BlobRef, Option<Vec<u8>>);

/// Reads one run with a single request (a lone blob is read when it is opened).
fn read_run<'r>(
    repo: &Repository,
    node: &FileNode,
    run: &'r [BlobRef],
) -> Result<Vec<Fetched<'r>>> {
    if run.len() == 1 {
        return Ok(vec![(&run[0], None)]);
    }
    let sealed = repo
        .read_sealed_run(run)
        .map_err(|e| damaged(node, &run[0], e))?;
    Ok(run.iter().zip(sealed.into_iter().map(Some)).collect())
}

/// Writes one file's content to `out`, verifying every blob and the whole file.
pub fn write_file(
    repo: &Repository,
    index: &Index,
    node: &FileNode,
    out: &mut dyn Write,
) -> Result<u64> {
    let refs = node
        .content
        .iter()
        .map(|id| {
            index.get(id).ok_or_else(|| {
                Error::damaged(
                    format!("file {}", node.name),
                    format!("blob {} is not in the index", id.short()),
                )
            })
        })
        .collect::<Result<Vec<_>>>()?;
    // Reads from a remote backend wait on the network: as many at once as it has connections,
    // on threads of their own rather than the CPU-sized global pool.
    let concurrency = repo.concurrency();
    // Remote reads are coalesced into runs, so a window spans several runs per connection.
    let local = repo.is_local();
    let window = if local {
        WINDOW
    } else {
        // Bounded whatever --s3-connections says: at most MAX_REMOTE_WINDOW blobs in memory.
        (8 * concurrency).clamp(WINDOW, MAX_REMOTE_WINDOW)
    };
    let pool = if local {
        None
    } else {
        Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(concurrency)
                .thread_name(|i| format!("sbk-read-{i}"))
                .build()
                .map_err(|e| Error::Source(format!("cannot start reader threads: {e}")))?,
        )
    };
    let install = |f: &(dyn Fn() -> Result<Vec<Vec<u8>>> + Sync)| match &pool {
        Some(p) => p.install(f),
        None => f(),
    };
    let (tx, rx) = bounded::<Result<Vec<Vec<u8>>>>(1);
    let mut hasher = repo.key().hasher();
    let mut written = 0u64;
    std::thread::scope(|s| -> Result<()> {
        s.spawn(move || {
            for window in refs.chunks(window) {
                let blobs: Result<Vec<Vec<u8>>> = install(&|| {
                    let open = |(b, s): Fetched| {
                        match s {
                            Some(s) => repo.load_blob_sealed(index, b, s),
                            None => repo.load_blob(index, b),
                        }
                        .map_err(|e| damaged(node, b, e))
                    };
                    if local {
                        return window.par_iter().map(|b| open((b, None))).collect();
                    }
                    // Remote: one request per run of back-to-back blobs, and each run's blobs
                    // are opened as soon as it arrives, so decoding overlaps the other runs'
                    // transfers instead of waiting for the whole window.
                    let runs = runs(window)
                        .par_iter()
                        .map(|run| -> Result<Vec<Vec<u8>>> {
                            read_run(repo, node, run)?
                                .into_par_iter()
                                .map(open)
                                .collect()
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok(runs.into_iter().flatten().collect())
                });
                let failed = blobs.is_err();
                if tx.send(blobs).is_err() || failed {
                    break;
                }
            }
        });
        for blobs in rx {
            for data in blobs? {
                hasher.update(&data);
                written += data.len() as u64;
                out.write_all(&data).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::BrokenPipe {
                        Error::BrokenPipe
                    } else {
                        Error::io("write", &node.name, e)
                    }
                })?;
            }
        }
        Ok(())
    })?;
    out.flush().map_err(|e| Error::io("write", &node.name, e))?;
    if written != node.size || Id(*hasher.finalize().as_bytes()) != node.hash {
        return Err(Error::damaged(
            format!("file {}", node.name),
            "restored content does not match the file's recorded size and hash",
        ));
    }
    Ok(written)
}
