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
}

/// The files of a snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Tree {
    pub version: u32,
    pub files: Vec<FileNode>,
}

impl Tree {
    /// Checks that names are usable single path components and unique.
    pub fn validate(&self) -> Result<(), String> {
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
