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

    /// Resolves `latest`, an ID or a prefix to a snapshot, and loads it.
    pub fn find_snapshot(&self, which: &SnapshotRef) -> Result<(Id, Snapshot)> {
        if *which == SnapshotRef::Latest {
            return self
                .list_snapshots()?
                .pop()
                .ok_or_else(|| Error::NotFound("the repository has no snapshots".into()));
        }
        let id = self.snapshot_id(which)?;
        Ok((id, self.load_snapshot(&id)?))
    }

    /// The ID of the snapshot file `which` names, known to exist, without loading it (a damaged
    /// snapshot still has its ID: `forget` removes it by that).
    pub fn snapshot_id(&self, which: &SnapshotRef) -> Result<Id> {
        match which {
            SnapshotRef::Latest => Ok(self.find_snapshot(which)?.0),
            SnapshotRef::Id(id) => match self.list_ids(FileType::Snapshot)?.contains(id) {
                true => Ok(*id),
                false => Err(Error::NotFound(format!(
                    "no snapshot matches {:?}",
                    id.to_hex()
                ))),
            },
            SnapshotRef::Prefix(p) => self.resolve(FileType::Snapshot, p),
        }
    }
}

/// A snapshot as a user names it: `latest`, a full ID, or a unique prefix of one. Parsed once,
/// where the name comes in (a command-line argument, a configuration), and resolved by
/// [`Repository::find_snapshot`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotRef {
    /// The newest snapshot (by time) the repository lists.
    Latest,
    Id(Id),
    /// A hex prefix, lower-cased (shorter than a full ID).
    Prefix(String),
}

impl std::str::FromStr for SnapshotRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s == "latest" {
            return Ok(SnapshotRef::Latest);
        }
        if let Some(id) = Id::from_hex(s) {
            return Ok(SnapshotRef::Id(id));
        }
        let p = s.to_ascii_lowercase();
        if p.is_empty() || p.len() >= 64 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Invalid(format!(
                "{s:?} names no snapshot: give `latest`, an ID or a unique prefix of one"
            )));
        }
        Ok(SnapshotRef::Prefix(p))
    }
}

impl std::fmt::Display for SnapshotRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotRef::Latest => f.write_str("latest"),
            SnapshotRef::Id(id) => write!(f, "{id}"),
            SnapshotRef::Prefix(p) => f.write_str(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_refs_parse_once_and_print_back() {
        let full = "ab".repeat(32);
        for (text, want) in [
            ("latest", SnapshotRef::Latest),
            ("AB12", SnapshotRef::Prefix("ab12".into())),
            (full.as_str(), SnapshotRef::Id(Id::from_hex(&full).unwrap())),
        ] {
            let r: SnapshotRef = text.parse().unwrap();
            assert_eq!(r, want);
            assert_eq!(r.to_string().parse::<SnapshotRef>().unwrap(), want);
        }
        for bad in ["", "xyz", "12 34", "Latest", &"a".repeat(65)] {
            assert!(bad.parse::<SnapshotRef>().is_err(), "{bad:?}");
        }
    }
}
