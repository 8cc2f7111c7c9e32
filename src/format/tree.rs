//! Trees: the files a snapshot holds, as a sealed JSON blob of kind [`super::BlobKind::Tree`].
//! Each file lists its content blobs in order and carries a keyed BLAKE3 hash of its whole
//! content, checked after every restore.

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// Tree JSON version.
pub const TREE_VERSION: u32 = 1;

/// One file of a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileNode {
    /// File name (one path component).
    pub name: String,
    /// Length in bytes.
    pub size: u64,
    /// Keyed BLAKE3 of the whole content.
    pub hash: Id,
    /// Content blobs, in order.
    pub content: Vec<Id>,
    /// Per content blob: its delta generation and similarity sketch, which the next snapshot
    /// uses to choose delta bases (empty when deltas are off).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chunks: Vec<crate::similarity::ChunkMeta>,
}

/// The files of a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tree {
    pub version: u32,
    pub files: Vec<FileNode>,
}

impl Tree {
    /// Checks the version, and that names are usable single path components and unique.
    pub fn validate(&self) -> Result<(), String> {
        if self.version != TREE_VERSION {
            return Err(format!(
                "tree version {} is not supported by this sbk; upgrade sbk",
                self.version
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            validate_name(&f.name)?;
            if !seen.insert(&f.name) {
                return Err(format!("duplicate file name {:?}", f.name));
            }
        }
        Ok(())
    }

    /// The file with this name.
    pub fn file(&self, name: &str) -> Option<&FileNode> {
        self.files.iter().find(|f| f.name == name)
    }
}

/// A file name must be one plain path component.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\\', '\0']) {
        return Err(format!(
            "invalid file name {name:?}: must be one path component"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn json_round_trip(files in proptest::collection::vec(
            ("[a-z][a-z0-9._-]{0,20}", any::<u64>(), any::<[u8; 32]>(), proptest::collection::vec(any::<[u8; 32]>(), 0..5)), 0..5)) {
            let tree = Tree { version: TREE_VERSION, files: files.into_iter().map(|(name, size, hash, content)| FileNode {
                name, size, hash: Id(hash), chunks: vec![crate::similarity::ChunkMeta(3, [7; 8]); content.len()],
                content: content.into_iter().map(Id).collect() }).collect() };
            let json = serde_json::to_vec(&tree).unwrap();
            prop_assert_eq!(serde_json::from_slice::<Tree>(&json).unwrap(), tree);
        }

        #[test]
        fn parsing_never_panics(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(t) = serde_json::from_slice::<Tree>(&data) {
                let _ = t.validate();
            }
        }
    }

    #[test]
    fn names_must_be_single_components() {
        for bad in ["", ".", "..", "a/b", "a\\b", "a\0b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_name("app.pgdump").is_ok());
        let dup = FileNode {
            chunks: vec![],
            name: "x".into(),
            size: 0,
            hash: Id::default(),
            content: vec![],
        };
        let t = Tree {
            version: 1,
            files: vec![dup.clone(), dup],
        };
        assert!(t.validate().is_err());
    }
}
