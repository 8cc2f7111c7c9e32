//! Snapshot files: save, load, list (damaged ones passed over and noted), find by prefix.

use std::collections::HashMap;

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

    /// All snapshots, oldest first, every file read (damaged ones noted and passed over): what
    /// the verbs that judge or show them all use (`snapshots`, `forget`, `prune`, `stats`).
    pub fn list_snapshots(&self) -> Result<Vec<(Id, Snapshot)>> {
        self.list_snapshots_from(false)
    }

    /// All snapshots, oldest first, for a caller that needs one of them (`latest`, a parent, a
    /// base backup): the listing decides which exist; their contents come from the snapshot
    /// list cache when it has them (one sealed file under the cache folder; snapshot files
    /// never change, so an entry for a listed ID is never stale), and only new ones are read.
    /// At 10,000 snapshots reading every file took 0.44 s locally. A damaged file the cache
    /// holds is not read, so not noted: `check` and the verbs of [`Repository::list_snapshots`]
    /// find it.
    pub fn list_snapshots_cached(&self) -> Result<Vec<(Id, Snapshot)>> {
        self.list_snapshots_from(true)
    }

    fn list_snapshots_from(&self, use_cache: bool) -> Result<Vec<(Id, Snapshot)>> {
        use rayon::prelude::*;
        let ids = self.list_ids(FileType::Snapshot)?;
        let mut cached = self.read_list_cache();
        let listed: std::collections::HashSet<&Id> = ids.iter().collect();
        let stale = cached.keys().filter(|id| !listed.contains(id)).count();
        let before: std::collections::HashSet<Id> = match use_cache {
            true => Default::default(),
            false => std::mem::take(&mut cached).into_keys().collect(),
        };
        let missing: Vec<Id> = ids
            .iter()
            .filter(|id| !cached.contains_key(id))
            .copied()
            .collect();
        let loaded: Vec<Option<(Id, Snapshot)>> = missing
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
        let new = loaded.iter().flatten().count();
        let mut out: Vec<(Id, Snapshot)> = ids
            .iter()
            .filter_map(|id| cached.remove(id).map(|s| (*id, s)))
            .chain(loaded.into_iter().flatten())
            .collect();
        out.sort_by(|a, b| a.1.time.cmp(&b.1.time).then(a.0.cmp(&b.0)));
        let changed = match use_cache {
            true => new > 0 || stale > 0,
            // Every file read: the cache is rewritten unless it held exactly these (so a file
            // found damaged leaves it, and cached listings read that file again and say so).
            false => {
                out.len() + stale != before.len() || out.iter().any(|(id, _)| !before.contains(id))
            }
        };
        if changed {
            self.write_list_cache(&out);
        }
        Ok(out)
    }

    /// The associated data of the list cache: bound to this repository.
    fn list_cache_aad(&self) -> Vec<u8> {
        [b"sbk:snapshot-list-cache".as_slice(), &self.config.id.0].concat()
    }

    /// The snapshots the list cache holds; empty when there is none or it cannot be read (it
    /// is sealed with the repository's key, so a file no sbk wrote is never believed).
    fn read_list_cache(&self) -> HashMap<Id, Snapshot> {
        let Some(path) = &self.list_cache else {
            return HashMap::new();
        };
        let Ok(sealed) = std::fs::read(path) else {
            return HashMap::new();
        };
        self.key
            .open(&self.list_cache_aad(), &sealed)
            .ok()
            .and_then(|p| payload::decode(&p, 1 << 30).ok())
            .and_then(|json| serde_json::from_slice::<Vec<(Id, Snapshot)>>(&json).ok())
            .map(|list| list.into_iter().collect())
            .unwrap_or_default()
    }

    /// Replaces the list cache (atomically; a failure only costs the next run its speed).
    fn write_list_cache(&self, list: &[(Id, Snapshot)]) {
        let Some(path) = &self.list_cache else {
            return;
        };
        let json = serde_json::to_vec(list).expect("snapshots serialize");
        let sealed = self.key.seal(
            &self.list_cache_aad(),
            &payload::encode(&json, DEFAULT_ZSTD_LEVEL),
        );
        let Some(dir) = path.parent() else { return };
        let _ = std::fs::create_dir_all(dir).and_then(|()| {
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            std::io::Write::write_all(&mut tmp, &sealed)?;
            tmp.persist(path).map(|_| ()).map_err(|e| e.error)
        });
    }

    /// Resolves `latest`, an ID or a prefix to a snapshot, and loads it.
    pub fn find_snapshot(&self, which: &SnapshotRef) -> Result<(Id, Snapshot)> {
        if *which == SnapshotRef::Latest {
            return self
                .list_snapshots_cached()?
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
