//! Trees: the files a snapshot holds, as a sealed JSON blob of kind [`super::BlobKind::Tree`].
//! Each file lists its content blobs in order and carries a keyed BLAKE3 hash of its whole
//! content, checked after every restore.
//!
//! Version 2 adds folders: a [`DirNode`] names its listing as one or more tree blobs ("pages",
//! read in order), so a folder of millions of entries is never one document, and identical
//! folders (an unchanged storage bucket) are one blob. It also adds a file's `attrs` (a storage
//! object's content type, ETag...). A tree with folders must be version 2, so that a reader of
//! version 1, which would not see them, refuses it rather than prune what they reference.

use serde::{Deserialize, Serialize};

use crate::id::Id;

/// Tree JSON version written when a tree has no folders and no attributes.
pub const TREE_VERSION: u32 = 1;
/// Tree JSON version with folders and file attributes.
pub const TREE_VERSION_FOLDERS: u32 = 2;

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
    /// Source-specific attributes (version 2): a storage object's content type, ETag, size and
    /// time as the server reported them, its user metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attrs: Option<serde_json::Map<String, serde_json::Value>>,
}

/// A folder of a snapshot (version 2): its listing is the concatenation of these tree blobs.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DirNode {
    /// Folder name (one path component).
    pub name: String,
    /// The folder's pages, in order.
    pub trees: Vec<Id>,
}

/// The files (and, from version 2, folders) of a snapshot or of one page of a folder.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tree {
    pub version: u32,
    pub files: Vec<FileNode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<DirNode>,
}

impl Tree {
    /// A tree of these entries, with the lowest version that can hold them.
    pub fn new(files: Vec<FileNode>, dirs: Vec<DirNode>) -> Tree {
        let version = if dirs.is_empty() && files.iter().all(|f| f.attrs.is_none()) {
            TREE_VERSION
        } else {
            TREE_VERSION_FOLDERS
        };
        Tree {
            version,
            files,
            dirs,
        }
    }

    /// Checks the version, and that names are usable single path components, unique among the
    /// files and among the folders (a file and a folder may share a name, as S3 keys `a` and
    /// `a/b` do).
    pub fn validate(&self) -> Result<(), String> {
        match self.version {
            TREE_VERSION if !self.dirs.is_empty() => {
                return Err("a version 1 tree cannot hold folders".into())
            }
            TREE_VERSION | TREE_VERSION_FOLDERS => {}
            v => {
                return Err(format!(
                    "tree version {v} is not supported by this sbk; upgrade sbk"
                ))
            }
        }
        let mut seen = std::collections::HashSet::new();
        for f in &self.files {
            validate_name(&f.name)?;
            if !seen.insert(&f.name) {
                return Err(format!("duplicate file name {:?}", f.name));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.dirs {
            validate_name(&d.name)?;
            if !seen.insert(&d.name) {
                return Err(format!("duplicate folder name {:?}", d.name));
            }
            if d.trees.is_empty() {
                return Err(format!("folder {:?} names no tree", d.name));
            }
        }
        Ok(())
    }

    /// The file with this name.
    pub fn file(&self, name: &str) -> Option<&FileNode> {
        self.files.iter().find(|f| f.name == name)
    }

    /// The folder with this name.
    pub fn dir(&self, name: &str) -> Option<&DirNode> {
        self.dirs.iter().find(|d| d.name == name)
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
                content: content.into_iter().map(Id).collect(), attrs: None }).collect(), dirs: vec![] };
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
            attrs: None,
        };
        let t = Tree::new(vec![dup.clone(), dup], vec![]);
        assert!(t.validate().is_err());
    }
}
