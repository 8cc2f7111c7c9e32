//! Rollback and deletion detection: each client remembers, in its cache folder, the snapshots
//! and audit records it has seen in a repository (`<cache>/<repository ID>/seen.json`). A
//! snapshot that is gone without a record of `sbk forget` removing it, or an audit record that
//! is gone at all (sbk never removes one), was deleted behind sbk's back, or the storage was
//! rolled back: every verb reports it by ID until it is back (`repair versions`) or, for a
//! snapshot, forgotten by its full ID.
//!
//! The audit trail alone finds a deleted snapshot whose record is still there; the local
//! memory finds the rest (a snapshot deleted with its record, a record deleted alone).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::*;

/// What a client remembers of one repository.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Seen {
    snapshots: BTreeSet<Id>,
    audit: BTreeSet<Id>,
}

/// Files that disappeared without sbk removing them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Disappeared {
    pub snapshots: Vec<Id>,
    pub audit_records: Vec<Id>,
}

impl Disappeared {
    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty() && self.audit_records.is_empty()
    }

    /// One line for a warning, with full IDs (what `sbk forget` takes).
    pub fn describe(&self) -> String {
        let ids = |v: &[Id]| v.iter().map(Id::to_hex).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::new();
        if !self.snapshots.is_empty() {
            parts.push(format!(
                "snapshots deleted without `sbk forget`: {}",
                ids(&self.snapshots)
            ));
        }
        if !self.audit_records.is_empty() {
            parts.push(format!(
                "audit records deleted: {}",
                ids(&self.audit_records)
            ));
        }
        format!(
            "{}; on a versioned bucket `sbk repair versions --at TIME` brings them back; a \
             snapshot's loss is accepted with `sbk forget <full ID>`",
            parts.join("; ")
        )
    }
}

/// Where a client keeps its memory of repository `id` under the cache folder `root`.
pub fn seen_path(root: &Path, id: &Id) -> PathBuf {
    root.join(id.to_hex()).join("seen.json")
}

impl Repository {
    /// Compares the repository with what this client saw before (kept at `path`), updates
    /// that memory, and returns what disappeared without sbk removing it.
    pub fn detect_disappeared(&self, path: &Path) -> Result<Disappeared> {
        // A spooling run lists only what the spool holds: nothing can be judged.
        if self.spool().is_some_and(|s| s.spooled_because().is_some()) {
            return Ok(Disappeared::default());
        }
        let mut seen: Seen = std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let snapshots: BTreeSet<Id> = self.list_ids(FileType::Snapshot)?.into_iter().collect();
        let audit: BTreeSet<Id> = self.list_ids(FileType::Audit)?.into_iter().collect();
        // Every record (from the file cache once downloaded): a record that does not load is
        // check's to report and tells nothing here.
        let records = self.audit_records()?;
        let removed = self.recorded_removals(&records).snapshots;
        let added: BTreeSet<Id> = records
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flat_map(|r| r.added.snapshots.iter().copied())
            .collect();
        let gone = |id: &&Id| !snapshots.contains(id) && !removed.contains(id);
        let mut out = Disappeared {
            snapshots: seen
                .snapshots
                .iter()
                .chain(&added)
                .filter(gone)
                .copied()
                .collect::<BTreeSet<Id>>()
                .into_iter()
                .collect(),
            audit_records: seen.audit.difference(&audit).copied().collect(),
        };
        out.snapshots.retain(|id| !self.is_spooled(id));
        // Remember everything seen, the missing included: they are reported until back.
        seen.snapshots.extend(snapshots);
        seen.snapshots.retain(|id| !removed.contains(id));
        seen.audit.extend(audit);
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
            let tmp = path.with_extension("json.tmp");
            let json = serde_json::to_vec(&seen).expect("serializes");
            if std::fs::write(&tmp, json).is_ok() {
                let _ = std::fs::rename(&tmp, path);
            }
        }
        Ok(out)
    }
}
