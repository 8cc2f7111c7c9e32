//! `sbk cat`: decrypted JSON views of stored objects, for debugging.

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::repository::FileType;
use crate::repository::Repository;
use crate::repository::SnapshotRef;

/// What to show.
#[derive(Clone, Debug)]
pub enum CatTarget {
    Config,
    Key(String),
    Snapshot(SnapshotRef),
    Index(String),
    Pack(String),
    Tree(SnapshotRef),
}

fn entries_json(entries: &[crate::repository::PackEntry]) -> Value {
    Value::from(
        entries
            .iter()
            .map(|e| {
                let mut v = json!({
                    "id": e.id, "kind": e.kind, "offset": e.offset,
                    "stored_len": e.stored_len, "raw_len": e.raw_len,
                });
                if let Some(b) = e.base {
                    v["base"] = json!(b);
                }
                v
            })
            .collect::<Vec<_>>(),
    )
}

/// Loads and decrypts the target as JSON.
pub fn cat(repo: &Repository, target: &CatTarget) -> Result<Value> {
    Ok(match target {
        CatTarget::Config => serde_json::to_value(repo.config()).expect("config serializes"),
        CatTarget::Key(p) => {
            let id = repo.resolve(FileType::Key, p)?;
            let (_, kf) = repo
                .list_keys()?
                .into_iter()
                .find(|(k, _)| *k == id)
                .ok_or_else(|| Error::NotFound(format!("no key {id}")))?;
            let mut v = serde_json::to_value(kf).expect("key serializes");
            v["id"] = json!(id);
            v
        }
        CatTarget::Snapshot(p) => {
            let (id, s) = repo.find_snapshot(p)?;
            serde_json::to_value(super::SnapshotView::new(id, s)).expect("snapshot serializes")
        }
        CatTarget::Index(p) => {
            let id = repo.resolve(FileType::Index, p)?;
            let f = repo.load_index_file(&id)?;
            json!({
                "id": id,
                "supersedes": f.supersedes,
                "packs": f.packs.iter().map(|p| json!({"id": p.id, "blobs": entries_json(&p.blobs)})).collect::<Vec<_>>(),
            })
        }
        CatTarget::Pack(p) => {
            let id = repo.resolve(FileType::Pack, p)?;
            let bytes = repo.read_pack(&id)?;
            let entries = repo.parse_pack(&id, &bytes)?;
            json!({"id": id, "size": bytes.len(), "blobs": entries_json(&entries)})
        }
        CatTarget::Tree(p) => {
            let (_, s) = repo.find_snapshot(p)?;
            let index = repo.load_index()?;
            serde_json::to_value(repo.load_tree(&index, &s.tree)?).expect("tree serializes")
        }
    })
}
