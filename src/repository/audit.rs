//! The audit trail: what this handle changed (the journal every write and removal goes
//! through), and the sealed records under `audit/` that say so (`docs/format.md`, section 13).
//! Records are written by whoever ran the operation (the CLI, the job runner), once it ends.

use std::sync::Mutex;

use super::*;
use crate::format::audit::{AuditRecord, Changes, AUDIT_VERSION, REMOVING};

/// The files a repository handle added and removed since its last record, and the handle's
/// random run ID that its records carry.
#[derive(Debug)]
pub struct Journal(Mutex<(Changes, Changes)>, String);

impl Default for Journal {
    fn default() -> Self {
        let mut id = [0u8; 8];
        crate::crypto::getrandom(&mut id);
        Journal(Default::default(), hex::encode(id))
    }
}

fn set_of(c: &mut Changes, t: FileType) -> Option<&mut std::collections::BTreeSet<Id>> {
    match t {
        FileType::Snapshot => Some(&mut c.snapshots),
        FileType::Pack => Some(&mut c.packs),
        FileType::Index => Some(&mut c.index),
        FileType::Key => Some(&mut c.keys),
        _ => None,
    }
}

impl Journal {
    pub(super) fn added(&self, t: FileType, id: Id) {
        let mut j = self.0.lock().expect("journal");
        if let Some(s) = set_of(&mut j.0, t) {
            s.insert(id);
        }
    }

    /// An archived WAL file removed (named, not content-addressed by an [`Id`] alone).
    pub(super) fn removed_wal(&self, stored_name: &str) {
        self.0
            .lock()
            .expect("journal")
            .1
            .wal
            .insert(stored_name.to_string());
    }

    pub(super) fn removed(&self, t: FileType, id: Id) {
        let mut j = self.0.lock().expect("journal");
        if let Some(s) = set_of(&mut j.1, t) {
            s.insert(id);
        }
    }

    fn take(&self) -> (Changes, Changes) {
        std::mem::take(&mut *self.0.lock().expect("journal"))
    }

    fn put_back(&self, (added, removed): (Changes, Changes)) {
        let mut j = self.0.lock().expect("journal");
        j.0.snapshots.extend(added.snapshots);
        j.0.packs.extend(added.packs);
        j.0.index.extend(added.index);
        j.0.keys.extend(added.keys);
        j.1.snapshots.extend(removed.snapshots);
        j.1.packs.extend(removed.packs);
        j.1.index.extend(removed.index);
        j.1.keys.extend(removed.keys);
        j.1.wal.extend(removed.wal);
    }
}

/// An operation to record: its verb and its (not yet redacted) arguments.
#[derive(Clone, Debug)]
pub struct Operation {
    pub verb: String,
    pub args: Vec<String>,
}

/// A handle that writes a repository's audit record after the command that changed it has
/// dropped its own (the CLI records every repository a run opened, once the run ends).
pub struct Auditor(Repository);

impl Auditor {
    /// Whether the handle added or removed anything since its last record.
    pub fn changed(&self) -> bool {
        let j = self.0.journal.0.lock().expect("journal");
        !(j.0.is_empty() && j.1.is_empty())
    }

    /// [`Repository::write_audit`].
    pub fn write(&self, op: &Operation, outcome: &str, actor: &Actor) -> Result<Id> {
        self.0.write_audit(op, outcome, actor)
    }
}

impl Repository {
    /// An [`Auditor`] sharing this handle's journal.
    pub fn auditor(&self) -> Auditor {
        Auditor(self.uncached())
    }

    /// Writes the audit record of `op`, which ended with `outcome` (`ok` or the error), with
    /// every file this handle added or removed since its last record.
    pub fn write_audit(&self, op: &Operation, outcome: &str, actor: &Actor) -> Result<Id> {
        let (added, removed) = self.journal.take();
        let record = AuditRecord {
            version: AUDIT_VERSION,
            time: actor.now,
            host: actor.host.clone(),
            user: actor.username.clone(),
            sbk: env!("CARGO_PKG_VERSION").to_string(),
            verb: op.verb.clone(),
            args: op
                .args
                .iter()
                .map(|a| crate::format::audit::redact(a))
                .collect(),
            outcome: outcome.to_string(),
            run: Some(self.journal.1.clone()),
            added,
            removed,
        };
        let json = serde_json::to_vec(&record).expect("audit record serializes");
        match self.save_file(FileType::Audit, aad::AUDIT, &json) {
            Ok(id) => Ok(id),
            Err(e) => {
                // Kept for the next record of this handle.
                self.journal.put_back((record.added, record.removed));
                Err(e)
            }
        }
    }

    /// Files of each kind that audit records (or this handle, not yet recorded) say sbk
    /// removed.
    pub fn recorded_removals(&self, records: &[(Id, Result<AuditRecord>)]) -> Changes {
        let mut all = self.journal.0.lock().expect("journal").1.clone();
        let loaded: Vec<&AuditRecord> = records
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .collect();
        for r in &loaded {
            if r.outcome == REMOVING {
                // Counts unless the same run recorded its end (which lists what it removed).
                let ended = loaded.iter().any(|o| {
                    o.outcome != REMOVING && o.run.is_some() && o.run == r.run && o.time >= r.time
                });
                if !ended {
                    all.snapshots.extend(&r.removed.snapshots);
                }
                continue;
            }
            all.snapshots.extend(&r.removed.snapshots);
            all.wal.extend(r.removed.wal.iter().cloned());
            all.packs.extend(&r.removed.packs);
            all.index.extend(&r.removed.index);
            all.keys.extend(&r.removed.keys);
        }
        all
    }

    /// Snapshots the audit trail says were added and never removed, which the repository no
    /// longer holds: deleted by something other than `sbk forget` (an attacker, a mistake, a
    /// rollback of the storage). `current` is the snapshots listed now.
    pub fn vanished_snapshots(&self, current: &std::collections::HashSet<Id>) -> Result<Vec<Id>> {
        let records = self.audit_records()?;
        let removed = self.recorded_removals(&records).snapshots;
        let mut out: Vec<Id> = records
            .iter()
            .filter_map(|(_, r)| r.as_ref().ok())
            .flat_map(|r| r.added.snapshots.iter().copied())
            .filter(|id| !current.contains(id) && !removed.contains(id))
            // Still waiting in the spool: not uploaded yet, not gone.
            .filter(|id| !self.is_spooled(id))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Records, before removing them, the snapshots a command is about to remove: a run killed
    /// between a removal and its end-of-run record must not leave a removal that looks like
    /// someone else's deletion (see [`crate::repository::seen`]). Nothing is removed unless
    /// this record is stored.
    pub fn announce_removals(&self, verb: &str, snapshots: &[Id]) -> Result<()> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let actor = Actor::current();
        let record = AuditRecord {
            version: AUDIT_VERSION,
            time: actor.now,
            host: actor.host,
            user: actor.username,
            sbk: env!("CARGO_PKG_VERSION").to_string(),
            verb: verb.to_string(),
            args: Vec::new(),
            outcome: REMOVING.into(),
            run: Some(self.journal.1.clone()),
            added: Changes::default(),
            removed: Changes {
                snapshots: snapshots.iter().copied().collect(),
                ..Default::default()
            },
        };
        let json = serde_json::to_vec(&record).expect("audit record serializes");
        self.save_file(FileType::Audit, aad::AUDIT, &json)?;
        Ok(())
    }

    /// Reads one audit record.
    pub fn load_audit(&self, id: &Id) -> Result<AuditRecord> {
        let json = self.load_file(FileType::Audit, id, aad::AUDIT)?;
        let r: AuditRecord = serde_json::from_slice(&json)
            .map_err(|e| damaged(FileType::Audit, id, e.to_string()))?;
        if r.version != AUDIT_VERSION {
            return Err(damaged(
                FileType::Audit,
                id,
                format!("unknown audit record version {}", r.version),
            ));
        }
        Ok(r)
    }

    /// Every audit record, oldest first; records that do not load are returned as errors
    /// beside their IDs, so that one damaged record hides no other.
    pub fn audit_records(&self) -> Result<Vec<(Id, Result<AuditRecord>)>> {
        let mut out: Vec<(Id, Result<AuditRecord>)> = self
            .list_ids(FileType::Audit)?
            .into_iter()
            .map(|id| (id, self.load_audit(&id)))
            .collect();
        out.sort_by_key(|(id, r)| (r.as_ref().ok().map(|r| r.time), *id));
        Ok(out)
    }
}
