//! Reading files back: blobs are fetched and opened in parallel a window at a time, checked
//! against their IDs, and written in order; the whole file's hash and size are checked at the end.
//! No byte reaches the writer before its blob has been authenticated and re-hashed.

use std::io::Write;

use crossbeam_channel::bounded;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::format::tree::FileNode;
use crate::id::Id;
use crate::index::Index;
use crate::repository::Repository;

/// Blobs fetched in parallel at once.
pub const WINDOW: usize = 8;

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
    let concurrency = repo.backend().concurrency();
    let window = WINDOW.max(concurrency);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(if repo.backend().is_local() {
            0
        } else {
            concurrency
        })
        .thread_name(|i| format!("sbk-read-{i}"))
        .build()
        .map_err(|e| Error::Source(format!("cannot start reader threads: {e}")))?;
    let (tx, rx) = bounded::<Result<Vec<Vec<u8>>>>(1);
    let mut hasher = repo.key().hasher();
    let mut written = 0u64;
    std::thread::scope(|s| -> Result<()> {
        s.spawn(move || {
            for window in refs.chunks(window) {
                let blobs: Result<Vec<Vec<u8>>> = pool.install(|| {
                    window
                        .par_iter()
                        .map(|b| {
                            repo.load_blob(index, b).map_err(|e| {
                                Error::damaged(
                                    format!("file {}", node.name),
                                    format!("cannot read its blob {}: {e}", b.id.short()),
                                )
                            })
                        })
                        .collect()
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
