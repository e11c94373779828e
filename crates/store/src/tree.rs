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

/// Puts `file` at `names` in place, parents created as needed. Nodes this tree
/// shares with others (older revisions) are copied on the way down; nodes it
/// alone holds are changed where they are, which is what makes a run of writes
/// between two kept trees cheap. The caller has checked the target.
pub(crate) fn set_mut(dir: &mut Dir, names: &[&str], file: File) -> Result<(), Conflict> {
    let Some((first, rest)) = names.split_first() else {
        return Ok(());
    };
    match dir.get_mut(*first) {
        Some(Node::File(f)) if rest.is_empty() => *f = file,
        Some(Node::File(_)) => return Err(Conflict::NotDir),
        Some(Node::Dir(d)) if !rest.is_empty() => return set_mut(d, rest, file),
        Some(Node::Dir(_)) => return Err(Conflict::NotDir),
        None if rest.is_empty() => {
            dir.insert(Arc::from(*first), Node::File(file));
        }
        None => {
            let mut below = Dir::new();
            set_mut(&mut below, rest, file)?;
            dir.insert(Arc::from(*first), Node::Dir(below));
        }
    }
    Ok(())
}

/// Removes the file at `names` in place, and the parents it leaves empty;
/// false if there was nothing to remove.
pub(crate) fn del_mut(dir: &mut Dir, names: &[&str]) -> bool {
    let Some((first, rest)) = names.split_first() else {
        return false;
    };
    if rest.is_empty() {
        return dir.remove(*first).is_some();
    }
    let emptied = match dir.get_mut(*first) {
        Some(Node::Dir(d)) => {
            if !del_mut(d, rest) {
                return false;
            }
            d.is_empty()
        }
        _ => return false,
    };
    if emptied {
        dir.remove(*first);
    }
    true
}
