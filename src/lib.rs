//! sbk: deduplicating, encrypted backups for PostgreSQL.
//!
//! A [`Repository`] holds snapshots of streams (database dumps, command output). Streams are cut
//! into blobs by FastCDC ([`chunker`]), named by a keyed BLAKE3 hash, compressed with zstd,
//! sealed with XChaCha20-Poly1305 and gathered into packs ([`archiver`]). Index files map blobs
//! to packs; snapshots name a tree of files. `docs/format.md` specifies every byte.
//!
//! ```no_run
//! use sbk::{backend::Storage, commands, crypto::KdfParams, Actor};
//!
//! let storage = Storage::local("/srv/backups/repo");
//! let repo = sbk::Repository::init(storage, b"correct horse", KdfParams::new_random(), &Actor::current())?;
//! let opts = commands::snapshot::SnapshotOptions::new("dump.sql");
//! let outcome = commands::snapshot::snapshot_reader(&repo, &opts, &b"hello"[..], Default::default())?;
//! println!("snapshot {}", outcome.id);
//! # Ok::<(), sbk::Error>(())
//! ```

pub mod archiver;
pub mod automation;
pub mod backend;
pub mod cache;
pub mod chunker;
pub mod cleanup;
pub mod commands;
pub mod crypto;
pub mod error;
pub mod folders;
pub mod format;
pub mod human;
pub mod id;
pub mod index;
pub mod pieces;
pub mod postgres;
pub mod progress;
pub mod repository;
pub mod restorer;
pub mod retention;
pub mod similarity;
pub mod source;
pub mod supabase;
#[cfg(test)]
mod testdata;
mod trail;

pub use error::{Error, Result};
pub use id::Id;
pub use repository::{Actor, Repository};
