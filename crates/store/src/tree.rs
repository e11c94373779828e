//! The persistent tree: directories are `imbl::OrdMap`s, so a changed tree shares
//! every untouched directory with the tree it came from, and keeping one tree per
//! revision costs only the path from the root to the changed file.
//!
//! Directories are implicit: `set` creates missing parents and `del` removes
//! directories it leaves empty, up to but not including the root.
//!
//! A directory keeps its files and its subdirectories in two maps, merged by
//! name when listed: a file's slot is then a name (16 bytes) and a body (8,
//! the body carrying its revision), which is what keeps a file under 250
//! bytes of memory.

use crate::{Body, Rev};
use imbl::OrdMap;
use std::borrow::Borrow;
use std::cmp::Ordering;
use std::iter::Peekable;
use std::sync::Arc;

/// A file: its body and the revision of the change that last wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct File {
    pub body: Body,
    pub rev: Rev,
}

impl File {
    pub(crate) fn of(body: &Body) -> File {
        File { body: body.clone(), rev: body.rev() }
    }
}

/// A directory's entries; a name is in at most one of the two maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Dir {
    files: OrdMap<Name, Body>,
    dirs: OrdMap<Name, Dir>,
}

/// What a name in a directory is.
#[derive(Clone, Copy)]
pub(crate) enum Node<'a> {
    File(&'a Body),
    Dir(&'a Dir),
}

impl Dir {
    pub(crate) fn new() -> Dir {
        Dir::default()
    }

    pub(crate) fn len(&self) -> usize {
        self.files.len() + self.dirs.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty() && self.dirs.is_empty()
    }

    pub(crate) fn get(&self, name: &str) -> Option<Node<'_>> {
        let key = name.as_bytes();
        match self.files.get(key) {
            Some(b) => Some(Node::File(b)),
            None => self.dirs.get(key).map(Node::Dir),
        }
    }

    /// Every entry in byte order of names.
    pub(crate) fn entries(&self) -> Entries<'_> {
        Entries { files: self.files.iter().peekable(), dirs: self.dirs.iter().peekable() }
    }
}

type FileIter<'a> = imbl::ordmap::Iter<'a, Name, Body, imbl::shared_ptr::DefaultSharedPtr>;
type DirIter<'a> = imbl::ordmap::Iter<'a, Name, Dir, imbl::shared_ptr::DefaultSharedPtr>;

/// A directory's files and subdirectories merged in name order.
pub(crate) struct Entries<'a> {
    files: Peekable<FileIter<'a>>,
    dirs: Peekable<DirIter<'a>>,
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a str, Node<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let file_first = match (self.files.peek(), self.dirs.peek()) {
            (Some((f, _)), Some((d, _))) => f < d,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if file_first {
            self.files.next().map(|(n, b)| (n.as_str(), Node::File(b)))
        } else {
            self.dirs.next().map(|(n, d)| (n.as_str(), Node::Dir(d)))
        }
    }
}

/// The longest name kept inside its tree slot rather than in an allocation.
const INLINE: usize = 14;

/// One path component as a directory keys it: 16 bytes in the slot. Short
/// names (nearly all of them) live in the slot itself; a longer one is shared
/// behind a thin pointer, so that the slot stays small.
#[derive(Clone, Debug)]
pub(crate) enum Name {
    Inline { len: u8, bytes: [u8; INLINE] },
    Shared(Arc<String>),
}

impl Name {
    pub(crate) fn new(name: &str) -> Name {
        if name.len() > INLINE {
            return Name::Shared(Arc::new(name.to_string()));
        }
        let mut bytes = [0; INLINE];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Name::Inline { len: name.len() as u8, bytes }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Name::Shared(s) => s.as_bytes(),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Made from a whole `&str`, so always UTF-8.
            Name::Inline { .. } => std::str::from_utf8(self.as_bytes()).unwrap_or_default(),
            Name::Shared(s) => s,
        }
    }
}

// Names compare as their bytes, which is the order directories list in and
// what lets a `&[u8]` look a name up.
impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// Why a path cannot be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conflict {
    /// A component above the target is a file.
    NotDir,
}

/// What is at a path, seen from the root.
pub(crate) enum Lookup<'a> {
    Found(Node<'a>),
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
        match dir.get(name) {
            Some(Node::Dir(d)) => dir = d,
            Some(Node::File(_)) => return Lookup::UnderFile,
            None => return Lookup::Missing,
        }
    }
    match dir.get(last) {
        Some(node) => Lookup::Found(node),
        None => Lookup::Missing,
    }
}

/// Puts `body` (stamped with its revision) at `names` in place, parents
/// created as needed. Nodes this tree shares with others (older revisions)
/// are copied on the way down; nodes it alone holds are changed where they
/// are, which is what makes a run of writes between two kept trees cheap.
/// The caller has checked the target. Returns the body it replaced, if any.
pub(crate) fn set_mut(dir: &mut Dir, names: &[&str], body: Body) -> Result<Option<Body>, Conflict> {
    set_checked(dir, names, body, |_| Ok::<(), Conflict>(())).map_err(|e| match e {
        SetError::NotDir | SetError::Refused(_) => Conflict::NotDir,
    })
}

/// A new directory chain holding `body` at `names` (at least one name).
fn fresh(names: &[&str], body: Body) -> Dir {
    let mut dir = Dir::new();
    match names.split_first() {
        Some((name, [])) => {
            dir.files.insert(Name::new(name), body);
        }
        Some((name, rest)) => {
            dir.dirs.insert(Name::new(name), fresh(rest, body));
        }
        None => {}
    }
    dir
}

/// Why [`set_checked`] did not write.
pub(crate) enum SetError<E> {
    /// A component above the target is a file, or the target is a directory.
    NotDir,
    /// `allow` refused what is at the target.
    Refused(E),
}

/// Like [`set_mut`], but first asks `allow` about what is at the target now
/// (`None`: nothing): the check and the write take one walk down the tree.
/// A refusal leaves the tree's contents as they were. Returns the body it
/// replaced, if any (the history keeps it to undo the write).
pub(crate) fn set_checked<E>(
    dir: &mut Dir,
    names: &[&str],
    body: Body,
    allow: impl FnOnce(Option<Node>) -> Result<(), E>,
) -> Result<Option<Body>, SetError<E>> {
    let Some((first, rest)) = names.split_first() else {
        return Ok(None);
    };
    let key = first.as_bytes();
    if rest.is_empty() {
        if let Some(d) = dir.dirs.get(key) {
            allow(Some(Node::Dir(d))).map_err(SetError::Refused)?;
            return Err(SetError::NotDir);
        }
        return match dir.files.get_mut(key) {
            Some(b) => {
                allow(Some(Node::File(b))).map_err(SetError::Refused)?;
                Ok(Some(std::mem::replace(b, body)))
            }
            None => {
                allow(None).map_err(SetError::Refused)?;
                dir.files.insert(Name::new(first), body);
                Ok(None)
            }
        };
    }
    if dir.files.contains_key(key) {
        return Err(SetError::NotDir);
    }
    match dir.dirs.get_mut(key) {
        Some(d) => set_checked(d, rest, body, allow),
        None => {
            allow(None).map_err(SetError::Refused)?;
            dir.dirs.insert(Name::new(first), fresh(rest, body));
            Ok(None)
        }
    }
}

/// Removes the file at `names` in place, and the parents it leaves empty;
/// returns its body, or `None` if there was no file to remove.
pub(crate) fn del_mut(dir: &mut Dir, names: &[&str]) -> Option<Body> {
    let (first, rest) = names.split_first()?;
    let key = first.as_bytes();
    if rest.is_empty() {
        return dir.files.remove(key);
    }
    let d = dir.dirs.get_mut(key)?;
    let removed = del_mut(d, rest)?;
    if d.is_empty() {
        dir.dirs.remove(key);
    }
    Some(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Beyond its body, a file's memory is mostly its B-tree slot: keep it at 24 bytes.
    #[test]
    fn a_file_slot_is_small() {
        assert_eq!(std::mem::size_of::<(Name, Body)>(), 24);
    }

    #[test]
    fn entries_merge_files_and_directories_in_name_order() {
        let mut root = Dir::new();
        for path in ["/b", "/a/x", "/c/y", "/ab", "/d"] {
            let names: Vec<&str> = path.split('/').filter(|n| !n.is_empty()).collect();
            assert!(set_mut(&mut root, &names, Body::from("v")).is_ok());
        }
        let listed: Vec<(&str, bool)> = root.entries().map(|(n, node)| (n, matches!(node, Node::Dir(_)))).collect();
        assert_eq!(listed, [("a", true), ("ab", false), ("b", false), ("c", true), ("d", false)]);
        assert_eq!(root.len(), 5);
        assert_eq!(del_mut(&mut root, &["a", "x"]).map(|b| b.to_vec()), Some(b"v".to_vec()));
        assert!(root.get("a").is_none(), "an emptied directory goes");
        assert!(del_mut(&mut root, &["c"]).is_none(), "a directory is not a file to delete");
    }

    #[test]
    fn names_keep_their_bytes_and_order() {
        let names = ["", "a", "abcdefghijklmn", "abcdefghijklmno", "b", "0", "00"];
        for n in names {
            assert_eq!(Name::new(n).as_str(), n);
        }
        let mut sorted: Vec<Name> = names.iter().map(|n| Name::new(n)).collect();
        sorted.sort();
        let mut want = names.to_vec();
        want.sort();
        assert_eq!(sorted.iter().map(Name::as_str).collect::<Vec<_>>(), want);
    }
}
