//! Reading snapshot trees back (tree version 2, `docs/format.md` §11): a cursor and a walk
//! over a folder's pages in the order [`crate::folders::TreeBuilder`] was fed, with one page per
//! level in memory, and finding one file by path.

use std::collections::{HashSet, VecDeque};

use crate::error::Result;
use crate::format::tree::{DirNode, FileNode, Tree};
use crate::id::Id;
use crate::index::Index;
use crate::repository::Repository;

enum Entry {
    File(FileNode),
    Dir(DirNode),
}

/// A page's entries in walk order.
fn merged(tree: Tree) -> VecDeque<Entry> {
    let mut files = tree.files.into_iter().peekable();
    let mut dirs = tree.dirs.into_iter().peekable();
    let mut out = VecDeque::new();
    loop {
        let take_file = match (files.peek(), dirs.peek()) {
            (Some(f), Some(d)) => f.name <= d.name,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => return out,
        };
        if take_file {
            out.push_back(Entry::File(files.next().expect("peeked")));
        } else {
            out.push_back(Entry::Dir(dirs.next().expect("peeked")));
        }
    }
}

struct Level {
    /// Folder name (empty for the cursor's start).
    name: String,
    pages: VecDeque<Id>,
    entries: VecDeque<Entry>,
}

/// Walks the files under a folder in [`path_order`], loading one page per level at a time.
pub struct TreeCursor<'r> {
    repo: &'r Repository,
    index: &'r Index,
    stack: Vec<Level>,
}

impl<'r> TreeCursor<'r> {
    /// A cursor over the folder whose pages are `pages`.
    pub fn new(repo: &'r Repository, index: &'r Index, pages: &[Id]) -> Self {
        TreeCursor {
            repo,
            index,
            stack: vec![Level {
                name: String::new(),
                pages: pages.iter().copied().collect(),
                entries: VecDeque::new(),
            }],
        }
    }

    /// An empty cursor.
    pub fn empty(repo: &'r Repository, index: &'r Index) -> Self {
        Self::new(repo, index, &[])
    }

    /// The next file: its folders (below the cursor's start) and its node.
    pub fn next_file(&mut self) -> Result<Option<(Vec<String>, FileNode)>> {
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            match top.entries.pop_front() {
                Some(Entry::File(f)) => {
                    let dirs = self.stack[1..].iter().map(|l| l.name.clone()).collect();
                    return Ok(Some((dirs, f)));
                }
                Some(Entry::Dir(d)) => self.stack.push(Level {
                    name: d.name,
                    pages: d.trees.into(),
                    entries: VecDeque::new(),
                }),
                None => match top.pages.pop_front() {
                    Some(page) => top.entries = merged(self.repo.load_tree(self.index, &page)?),
                    None => {
                        self.stack.pop();
                    }
                },
            }
        }
    }
}

/// What [`walk`] shows: each tree blob it reads, and each file with its folders.
pub enum Visit<'a> {
    Tree(&'a Id),
    File(&'a [String], &'a FileNode),
}

/// Visits the tree `root` and everything below it, depth first. With `seen`, a tree blob already
/// in it is neither loaded nor visited again (its files were visited before): what liveness
/// needs when many snapshots share unchanged folders.
pub fn walk(
    repo: &Repository,
    index: &Index,
    root: &Id,
    mut seen: Option<&mut HashSet<Id>>,
    visit: &mut dyn FnMut(Visit<'_>) -> Result<()>,
) -> Result<()> {
    let mut path = Vec::new();
    walk_inner(repo, index, root, &mut seen, &mut path, visit)
}

fn walk_inner(
    repo: &Repository,
    index: &Index,
    id: &Id,
    seen: &mut Option<&mut HashSet<Id>>,
    path: &mut Vec<String>,
    visit: &mut dyn FnMut(Visit<'_>) -> Result<()>,
) -> Result<()> {
    if let Some(s) = seen.as_deref_mut() {
        if !s.insert(*id) {
            return Ok(());
        }
    }
    visit(Visit::Tree(id))?;
    let tree = repo.load_tree(index, id)?;
    for entry in merged(tree) {
        match entry {
            Entry::File(f) => visit(Visit::File(path, &f))?,
            Entry::Dir(d) => {
                path.push(d.name);
                for page in &d.trees {
                    walk_inner(repo, index, page, seen, path, visit)?;
                }
                path.pop();
            }
        }
    }
    Ok(())
}

/// Finds a file by its path (`a/b/c`) under the tree `root`.
pub fn find_file(
    repo: &Repository,
    index: &Index,
    root: &Id,
    path: &str,
) -> Result<Option<FileNode>> {
    let mut parts: Vec<&str> = path.split('/').collect();
    let name = parts.pop().unwrap_or_default();
    let mut pages = vec![*root];
    for part in parts {
        let mut next = None;
        for p in &pages {
            if let Some(d) = repo.load_tree(index, p)?.dir(part) {
                next = Some(d.trees.clone());
                break;
            }
        }
        match next {
            Some(n) => pages = n,
            None => return Ok(None),
        }
    }
    for p in &pages {
        if let Some(f) = repo.load_tree(index, p)?.file(name) {
            return Ok(Some(f.clone()));
        }
    }
    Ok(None)
}
