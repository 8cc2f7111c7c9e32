//! Snapshot files: save, load, list (damaged ones passed over and noted), find by prefix.

use super::*;

impl Repository {
    /// Saves a snapshot (after its index is durable); returns its ID.
    pub fn save_snapshot(&self, snap: &Snapshot) -> Result<Id> {
        let json = serde_json::to_vec(snap).expect("snapshot serializes");
        self.save_file(FileType::Snapshot, aad::SNAPSHOT, &json)
    }

    /// Loads one snapshot.
    pub fn load_snapshot(&self, id: &Id) -> Result<Snapshot> {
        let json = self.load_file(FileType::Snapshot, id, aad::SNAPSHOT)?;
        let snap: Snapshot =
            serde_json::from_slice(&json).map_err(|e| damaged(FileType::Snapshot, id, e))?;
        if snap.version != crate::format::snapshot::SNAPSHOT_VERSION {
            return Err(damaged(
                FileType::Snapshot,
                id,
                format!(
                    "snapshot version {} is not supported by this sbk; upgrade sbk",
                    snap.version
                ),
            ));
        }
        Ok(snap)
    }

    /// All snapshots, oldest first.
    pub fn list_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        use rayon::prelude::*;
        let ids = self.list_ids(FileType::Snapshot)?;
        let loaded: Vec<Option<(Id, Snapshot)>> = ids
            .par_iter()
            .map(|id| match self.load_snapshot(id) {
                Ok(s) => Ok(Some((*id, s))),
                // Listed, then removed by a concurrent `forget`.
                Err(Error::Backend(e)) if e.kind == ErrorKind::NotFound => Ok(None),
                // Passed over, so that backups and the other snapshots go on.
                Err(e @ Error::Damaged { .. }) => {
                    self.note_damage(Damage {
                        kind: "snapshot",
                        id: *id,
                        message: e.to_string(),
                        remedy: format!(
                            "`sbk forget {}` removes it (`sbk check` tells whether its data is whole)",
                            id.short()
                        ),
                    });
                    Ok(None)
                }
                Err(e) => Err(e),
            })
            .collect::<Result<_>>()?;
        let mut out: Vec<(Id, Snapshot)> = loaded.into_iter().flatten().collect();
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        Ok(out)
    }

    /// Resolves `latest` or an ID prefix to a snapshot.
    pub fn find_snapshot(&self, spec: &str) -> Result<(Id, Snapshot)> {
        if spec == "latest" {
            return self
                .list_snapshots()?
                .pop()
                .ok_or_else(|| Error::NotFound("the repository has no snapshots".into()));
        }
        let id = self.resolve(FileType::Snapshot, spec)?;
        Ok((id, self.load_snapshot(&id)?))
    }
}
