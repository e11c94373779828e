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
    set_checked(dir, names, file, |_| Ok::<(), Conflict>(())).map_err(|e| match e {
        SetError::NotDir | SetError::Refused(_) => Conflict::NotDir,
    })
}

/// `file` at `names` below a new directory (or itself, for no names).
fn fresh(names: &[&str], file: File) -> Node {
    match names.split_first() {
        None => Node::File(file),
        Some((first, rest)) => Node::Dir(Dir::unit(Arc::from(*first), fresh(rest, file))),
    }
}

/// Why [`set_checked`] did not write.
pub(crate) enum SetError<E> {
    /// A component above the target is a file.
    NotDir,
    /// `allow` refused what is at the target.
    Refused(E),
}

/// Like [`set_mut`], but first asks `allow` about what is at the target now
/// (`None`: nothing): the check and the write take one walk down the tree.
/// A refusal leaves the tree's contents as they were.
pub(crate) fn set_checked<E>(
    dir: &mut Dir,
    names: &[&str],
    file: File,
    allow: impl FnOnce(Option<&Node>) -> Result<(), E>,
) -> Result<(), SetError<E>> {
    let Some((first, rest)) = names.split_first() else {
        return Ok(());
    };
    match dir.get_mut(*first) {
        Some(node) if rest.is_empty() => {
            allow(Some(node)).map_err(SetError::Refused)?;
            match node {
                Node::File(f) => *f = file,
                Node::Dir(_) => return Err(SetError::NotDir),
            }
        }
        Some(Node::File(_)) => return Err(SetError::NotDir),
        Some(Node::Dir(d)) => return set_checked(d, rest, file, allow),
        None => {
            allow(None).map_err(SetError::Refused)?;
            dir.insert(Arc::from(*first), fresh(rest, file));
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
