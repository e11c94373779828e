//! The persistent tree: directories are `imbl::OrdMap`s, so a changed tree shares
//! every untouched directory with the tree it came from, and keeping one tree per
//! revision costs only the path from the root to the changed file.
//!
//! Directories are implicit: `set` creates missing parents and `del` removes
//! directories it leaves empty, up to but not including the root.

use bytes::Bytes;
use imbl::OrdMap;
use std::sync::Arc;

/// A file: its body and the revision of the change that last wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub body: Bytes,
    pub rev: i64,
}

/// A directory's entries, sorted by name in byte order.
pub(crate) type Dir = OrdMap<Arc<str>, Node>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Node {
    File(File),
    Dir(Dir),
}

/// Why a path cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// A component above the target is a file.
    NotDir,
}

/// What is at a path, seen from the root.
pub(crate) enum Lookup<'a> {
    Found(&'a Node),
    Missing,
    /// A component above the target is a file.
    UnderFile,
}

pub(crate) fn lookup<'a>(root: &'a Dir, names: &[&str]) -> Lookup<'a> {
    let Some((last, parents)) = names.split_last() else {
        return Lookup::Missing; // callers handle the root themselves
    };
    let mut dir = root;
    for name in parents {
        match dir.get(*name) {
            Some(Node::Dir(d)) => dir = d,
            Some(Node::File(_)) => return Lookup::UnderFile,
            None => return Lookup::Missing,
        }
    }
    match dir.get(*last) {
        Some(node) => Lookup::Found(node),
        None => Lookup::Missing,
    }
}

/// A new tree with `file` at `names`, parents created as needed. The caller has
/// checked that the target is not a directory.
pub(crate) fn set(dir: &Dir, names: &[&str], file: File) -> Result<Dir, Conflict> {
    let Some((first, rest)) = names.split_first() else {
        return Ok(dir.clone());
    };
    let child = if rest.is_empty() {
        Node::File(file)
    } else {
        let below = match dir.get(*first) {
            Some(Node::Dir(d)) => set(d, rest, file)?,
            Some(Node::File(_)) => return Err(Conflict::NotDir),
            None => set(&Dir::new(), rest, file)?,
        };
        Node::Dir(below)
    };
    Ok(dir.update(Arc::from(*first), child))
}

/// A new tree without the file at `names`, with emptied parents removed.
/// `None` if there was nothing to delete.
pub(crate) fn del(dir: &Dir, names: &[&str]) -> Option<Dir> {
    let (first, rest) = names.split_first()?;
    if rest.is_empty() {
        return dir.get(*first).is_some().then(|| dir.without(*first));
    }
    let Some(Node::Dir(d)) = dir.get(*first) else {
        return None;
    };
    let below = del(d, rest)?;
    Some(if below.is_empty() { dir.without(*first) } else { dir.update(Arc::from(*first), Node::Dir(below)) })
}
