//! The versioned store: the current tree, its revision, and a bounded history of
//! past trees and events.

use crate::glob::Glob;
use crate::lease::{LeaseError, LeaseId, Leases};
use crate::path::{components, is_valid_path};
use crate::tree::{self, Dir, File, Lookup, Node};
use crate::Body;
use crate::{Rev, CLOBBER, DIR, MISSING};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;

/// A change to propose. Everything that alters the tree is one of these, so a
/// log of commands replayed in order rebuilds exactly the same store.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Write `body` at `path` if `rev` is CLOBBER or at least the file's revision.
    Set { path: String, rev: Rev, body: Body },
    /// Delete the file at `path` under the same revision rule.
    Del { path: String, rev: Rev },
    /// Consume a revision and change nothing (the protocol's NOP).
    Nop,
    /// Become the store in this encoded [`Image`](crate::Image): how a restored
    /// cluster starts. Only an empty store (revision 0) can be loaded.
    Load { image: Bytes },
    /// Several commands applied in order, each as if alone (its own revision
    /// and event): how concurrent writes share one consensus round. Shared,
    /// because the consensus layer copies log entries (to each follower, to
    /// the state machine) and a batch can hold hundreds of writes.
    Batch(Arc<[Command]>),
    /// Grant lease `id` for `ttl` seconds. Consumes no revision: nothing in
    /// the tree changes.
    Grant { id: LeaseId, ttl: u32 },
    /// End lease `id` and delete every file attached to it, each delete its
    /// own revision and event, all in this one command (so no node ever
    /// shows some of them gone). An expiry is a revoke.
    Revoke { id: LeaseId },
    /// A SET (same revision rule) that attaches the file to lease `lease`,
    /// which must be granted; the file goes when the lease does.
    SetLeased { path: String, rev: Rev, body: Body, lease: LeaseId },
}

impl Command {
    /// About how many bytes the command holds (paths, bodies, images), for
    /// the bounds that count bytes: batches, the Raft log, peer messages.
    pub fn bytes(&self) -> usize {
        const OVERHEAD: usize = 32;
        OVERHEAD
            + match self {
                Command::Set { path, body, .. } | Command::SetLeased { path, body, .. } => path.len() + body.len(),
                Command::Del { path, .. } => path.len(),
                Command::Nop => 0,
                Command::Load { image } => image.len(),
                Command::Batch(cmds) => cmds.iter().map(Command::bytes).sum(),
                Command::Grant { .. } | Command::Revoke { .. } => 0,
            }
    }
}

/// What a change did to a path.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Set,
    Del,
    Nop,
}

/// One revision's change, as WAIT reports it.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub rev: Rev,
    /// The changed file's full path; `/` for a NOP.
    pub path: Arc<str>,
    /// The new body; empty for deletes and NOPs.
    pub body: Body,
    pub kind: EventKind,
}

impl Event {
    /// A short digest of the event (FNV-1a 64 of revision, kind, path and
    /// body): equal on every node of a cluster, so a client that saw revision
    /// R can check that a node's history is the one it followed.
    pub fn fingerprint(&self) -> u64 {
        let mut h = crate::codec::Fnv::new();
        h.update(&self.rev.to_be_bytes());
        h.update(&[crate::codec::kind_byte(self.kind)]);
        h.update(self.path.as_bytes());
        h.update(&self.body);
        h.0
    }
}

/// Why a command failed or a read was refused; a failed command changes nothing.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    BadPath,
    RevMismatch,
    IsDir,
    NotDir,
    NoEnt,
    /// A Load into a store that is not empty, or of an image that does not decode.
    BadLoad,
    /// A lease command refused (or a SET under a lease that is not granted).
    Lease(LeaseError),
}

/// The result of applying one command.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The store moved to `event.rev`.
    Changed(Event),
    /// The command succeeded but there was nothing to change (deleting a missing
    /// file): no revision is consumed and no event is produced.
    Unchanged,
    /// The command was refused; nothing changed and no revision was consumed.
    Failed(StoreError),
    /// A batch's outcomes, one per command, in order.
    Batch(Vec<Outcome>),
}

/// Why a read at a revision cannot be answered now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadError {
    /// The revision has left the history window.
    TooLate,
    /// The revision has not happened yet; wait for it.
    Future(Rev),
}

/// How much history to keep: at most `revs` revisions and, beyond the newest
/// one, at most about `bytes` of paths and bodies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    pub revs: usize,
    pub bytes: usize,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits { revs: 2000, bytes: 256 << 20 }
    }
}

/// What STAT reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stat {
    File { rev: Rev, len: usize },
    Dir { entries: usize },
    Missing,
}

struct Entry {
    event: Event,
    /// The body the event's path had before it (`None`: no file), to undo it.
    prev: Option<Body>,
    cost: usize,
    /// The tree after this event, kept every [`KEEP_TREE_EVERY`] revisions.
    tree: Option<Dir>,
}

/// A write's effect on the tree, before it gets its revision.
struct Change {
    path: Arc<str>,
    body: Body,
    kind: EventKind,
    prev: Option<Body>,
}

/// How often the history keeps a whole tree. A tree at a past revision is
/// rebuilt from the nearest tree it can start from: a kept tree or the base
/// below it, with the events in between replayed, or a kept tree or the
/// current one above it, with the events in between undone; so at most half
/// this many events. Each kept tree shares every node with the current tree,
/// so the next write under a node copies it, and dropping the kept tree later
/// frees the copies: writes spread over many directories copy a leaf and its
/// branch nearly every time when trees are kept often. Every 256 revisions
/// this cost three-node writes 12% of their throughput against every 1,024
/// (measured: see docs/performance.md).
const KEEP_TREE_EVERY: Rev = 1024;

/// Memory per history entry besides its path and bodies: the event, its queue
/// slot, and its share of the tree nodes the kept trees hold. Measured at about
/// 0.6 KB per revision (body included) for random overwrites in a 10,000-file
/// tree (examples/history_cost.rs; 1.0 KB with a kept tree every 256
/// revisions, the figure kept here, erring high); used only to bound the
/// history's memory by `HistoryLimits::bytes`.
const ENTRY_OVERHEAD: usize = 1024;

/// The store: the current tree and its history window.
pub struct Store {
    limits: HistoryLimits,
    /// Granted leases and their files: current state only (no history).
    leases: Leases,
    rev: Rev,
    root: Dir,
    /// Entries for revisions `base.rev + 1 ..= rev`, oldest first; the first
    /// `hidden` of them are below the window (not readable), kept only until a
    /// newer kept tree becomes the base.
    history: VecDeque<Entry>,
    hidden: usize,
    /// A tree at or below the window's floor that every readable tree is rebuilt from.
    base: Snapshot,
    /// Estimated bytes of the readable entries.
    history_bytes: usize,
    /// Estimated bytes of the hidden entries: they count against the bound
    /// too, since they are in memory until dropped.
    hidden_bytes: usize,
    /// The last past tree rebuilt: reads at or just after the same revision
    /// (paging, a client reading at a fixed revision) start from it.
    recent: std::sync::Mutex<Option<Snapshot>>,
    /// [`KEEP_TREE_EVERY`], or less in tests.
    keep_tree_every: Rev,
}

impl Store {
    /// An empty store at revision 0.
    pub fn new(limits: HistoryLimits) -> Store {
        let limits = HistoryLimits { revs: limits.revs.max(1), ..limits };
        let base = Snapshot { rev: 0, root: Dir::new() };
        Store {
            limits,
            leases: Leases::new(),
            rev: 0,
            root: Dir::new(),
            history: VecDeque::new(),
            hidden: 0,
            history_bytes: 0,
            hidden_bytes: 0,
            base,
            recent: std::sync::Mutex::new(None),
            keep_tree_every: KEEP_TREE_EVERY,
        }
    }

    /// A store whose tree and revision are `base`'s, with no history yet.
    pub(crate) fn at(base: Snapshot, limits: HistoryLimits) -> Store {
        let mut store = Store::new(limits);
        store.rev = base.rev;
        store.root = base.root.clone();
        store.base = base;
        store
    }

    /// Every granted lease and the files attached to each.
    pub fn leases(&self) -> &Leases {
        &self.leases
    }

    pub(crate) fn set_leases(&mut self, leases: Leases) {
        self.leases = leases;
    }

    /// The tree just below the window and every event in it.
    pub(crate) fn history_parts(&self) -> (Snapshot, Vec<Event>) {
        let floor = self.oldest() - 1;
        let events = self.history.iter().skip(self.hidden).map(|e| e.event.clone()).collect();
        (Snapshot { rev: floor, root: self.tree_at(floor) }, events)
    }

    /// Keeps a whole tree every `n` revisions instead of every
    /// [`KEEP_TREE_EVERY`]: for tests, so short runs cross many kept trees.
    #[doc(hidden)]
    pub fn keep_tree_every(&mut self, n: Rev) {
        self.keep_tree_every = n.max(1);
    }

    /// The last revision applied.
    pub fn rev(&self) -> Rev {
        self.rev
    }

    /// The oldest revision still readable; `rev() + 1` while nothing has happened.
    pub fn oldest(&self) -> Rev {
        self.history.get(self.hidden).map_or(self.rev + 1, |e| e.event.rev)
    }

    /// History entries in memory, readable or not: for tests of the bounds.
    #[doc(hidden)]
    pub fn held_entries(&self) -> usize {
        self.history.len()
    }

    /// Number of revisions in the history window and the history's estimated
    /// bytes. The bytes count the entries below the window not dropped yet, too.
    pub fn history_size(&self) -> (usize, usize) {
        (self.history.len() - self.hidden, self.history_bytes + self.hidden_bytes)
    }

    /// Applies one command. Deterministic: the same commands in the same order
    /// give the same outcomes and revisions on every node.
    pub fn apply(&mut self, cmd: &Command) -> Outcome {
        let result = match cmd {
            Command::Set { path, rev, body } => {
                let done = self.set(path, *rev, body);
                // A SET without a lease: the file outlives any lease it had.
                if done.is_ok() {
                    self.leases.detach(path);
                }
                done
            }
            Command::Del { path, rev } => {
                let done = self.del(path, *rev);
                if matches!(done, Ok(Some(_))) {
                    self.leases.detach(path);
                }
                done
            }
            Command::SetLeased { path, rev, body, lease } => {
                if self.leases.get(*lease).is_none() {
                    return Outcome::Failed(StoreError::Lease(LeaseError::NotFound(*lease)));
                }
                let done = self.set(path, *rev, body);
                if done.is_ok() {
                    // Checked above: the lease is there.
                    let _ = self.leases.attach(path, *lease);
                }
                done
            }
            Command::Grant { id, ttl } => {
                return match self.leases.grant(*id, *ttl) {
                    Ok(()) => Outcome::Unchanged,
                    Err(e) => Outcome::Failed(StoreError::Lease(e)),
                };
            }
            Command::Revoke { id } => {
                return match self.leases.revoke(*id) {
                    Ok(files) => Outcome::Batch(
                        files.into_iter().map(|path| self.apply(&Command::Del { path, rev: CLOBBER })).collect(),
                    ),
                    Err(e) => Outcome::Failed(StoreError::Lease(e)),
                };
            }
            Command::Nop => {
                Ok(Some(Change { path: Arc::from("/"), body: Body::default(), kind: EventKind::Nop, prev: None }))
            }
            Command::Load { image } => return self.load(image),
            Command::Batch(cmds) => return Outcome::Batch(cmds.iter().map(|c| self.apply(c)).collect()),
        };
        match result {
            Err(e) => Outcome::Failed(e),
            Ok(None) => Outcome::Unchanged,
            Ok(Some(Change { path, body, kind, prev })) => {
                self.rev += 1;
                let event = Event { rev: self.rev, path, body, kind };
                self.record(event.clone(), prev);
                Outcome::Changed(event)
            }
        }
    }

    /// Applies a recorded event as the change that made it; it must land at
    /// exactly the event's revision.
    pub(crate) fn replay(&mut self, e: &Event) -> Result<(), crate::ImageError> {
        let cmd = match e.kind {
            EventKind::Set => Command::Set { path: e.path.to_string(), rev: CLOBBER, body: e.body.clone() },
            EventKind::Del => Command::Del { path: e.path.to_string(), rev: CLOBBER },
            EventKind::Nop => Command::Nop,
        };
        match self.apply(&cmd) {
            Outcome::Changed(got) if got.rev == e.rev => Ok(()),
            other => Err(crate::ImageError {
                offset: 0,
                what: format!("the change at revision {} does not replay: {other:?}", e.rev),
            }),
        }
    }

    /// Replaces an empty store with an image; revisions come with it, so there
    /// is no event of its own.
    fn load(&mut self, image: &Bytes) -> Outcome {
        if self.rev != 0 {
            return Outcome::Failed(StoreError::BadLoad);
        }
        let loaded = crate::Image::decode(image).and_then(|i| Store::from_image(&i, self.limits));
        match loaded {
            Ok(store) => {
                *self = store;
                Outcome::Unchanged
            }
            Err(_) => Outcome::Failed(StoreError::BadLoad),
        }
    }

    /// Checks the revision rule for a write at `names`; returns the target node.
    fn check_write<'a>(&'a self, path: &str, names: &[&str], rev: Rev) -> Result<Option<Node<'a>>, StoreError> {
        if !is_valid_path(path) {
            return Err(StoreError::BadPath);
        }
        if names.is_empty() {
            return Err(StoreError::IsDir);
        }
        let node = match tree::lookup(&self.root, names) {
            Lookup::UnderFile => return Err(StoreError::NotDir),
            Lookup::Missing => None,
            Lookup::Found(n) => Some(n),
        };
        revision_rule(node, rev)?;
        Ok(node)
    }

    /// SET, in place on the current tree once the revision rule allows it.
    fn set(&mut self, path: &str, rev: Rev, body: &Body) -> Result<Option<Change>, StoreError> {
        if !is_valid_path(path) {
            return Err(StoreError::BadPath);
        }
        let names: Vec<&str> = components(path).collect();
        if names.is_empty() {
            return Err(StoreError::IsDir);
        }
        // Stamped before the check: a refused write leaves its body stamped
        // but in no tree, and any later use at another revision copies it.
        let file = body.stamped(self.rev + 1);
        let allow = |node: Option<Node>| revision_rule(node, rev);
        let prev = tree::set_checked(&mut self.root, &names, file.clone(), allow).map_err(|e| match e {
            tree::SetError::NotDir => StoreError::NotDir,
            tree::SetError::Refused(e) => e,
        })?;
        Ok(Some(Change { path: Arc::from(path), body: file, kind: EventKind::Set, prev }))
    }

    /// DEL, in place; deleting a missing file changes nothing.
    fn del(&mut self, path: &str, rev: Rev) -> Result<Option<Change>, StoreError> {
        let names: Vec<&str> = components(path).collect();
        if self.check_write(path, &names, rev)?.is_none() {
            return Ok(None);
        }
        let Some(prev) = tree::del_mut(&mut self.root, &names) else {
            return Err(StoreError::NoEnt);
        };
        Ok(Some(Change { path: Arc::from(path), body: Body::default(), kind: EventKind::Del, prev: Some(prev) }))
    }

    /// Adds the event just applied to the history and moves the window.
    /// `prev` (what the path held before) counts in full although it is often
    /// an earlier event's body too: the bound errs on the safe side.
    fn record(&mut self, event: Event, prev: Option<Body>) {
        let prev_len = prev.as_ref().map_or(0, |b| b.len());
        let cost = event.path.len() + event.body.len() + prev_len + ENTRY_OVERHEAD;
        let tree = (event.rev % self.keep_tree_every == 0).then(|| self.root.clone());
        self.history_bytes += cost;
        self.history.push_back(Entry { event, prev, cost, tree });
        let hidden_before = self.hidden;
        loop {
            let readable = self.history.len() - self.hidden;
            let bytes = self.history_bytes + self.hidden_bytes;
            if readable <= self.limits.revs && (readable <= 1 || bytes <= self.limits.bytes) {
                break;
            }
            let cost = self.history[self.hidden].cost;
            self.history_bytes -= cost;
            self.hidden_bytes += cost;
            self.hidden += 1;
        }
        // The newest kept tree below the window becomes the base; what is older
        // goes. Entries hidden earlier hold no tree (it became the base then),
        // so only those hidden just now are looked at.
        if let Some(j) = (hidden_before..self.hidden).rev().find(|&i| self.history[i].tree.is_some()) {
            if let Some(root) = self.history[j].tree.clone() {
                self.base = Snapshot { rev: self.history[j].event.rev, root };
                let gone: usize = self.history.drain(..=j).map(|e| e.cost).sum();
                self.hidden -= j + 1;
                self.hidden_bytes -= gone;
            }
        }
        // Large bodies: hidden entries would take much of the bound from the
        // readable window until the next kept tree; rebuild the floor's tree
        // as the base instead (at most half of KEEP_TREE_EVERY events to replay).
        if self.hidden_bytes > self.limits.bytes / 4 {
            self.rebase();
        }
    }

    /// Makes the tree just below the window the base and drops every hidden entry.
    fn rebase(&mut self) {
        let floor = self.oldest() - 1;
        let root = self.tree_at(floor);
        self.base = Snapshot { rev: floor, root };
        self.history.drain(..self.hidden);
        self.hidden = 0;
        self.hidden_bytes = 0;
    }

    /// The tree at `rev`, between the base and now, rebuilt from the nearest
    /// tree on either side: replaying the events after one below it, or
    /// undoing the events down from one above it.
    fn tree_at(&self, rev: Rev) -> Dir {
        if rev >= self.rev {
            return self.root.clone();
        }
        // Positions count entries: the tree at position p is the one after the
        // first p entries (0: the base; history.len(): the current tree), and
        // entry i holds revision base.rev + 1 + i.
        let len = self.history.len();
        let at = usize::try_from(rev - self.base.rev).unwrap_or(0).min(len);
        let kept = |i: usize| self.history[i].tree.as_ref().map(|t| (i + 1, t));
        let mut below = (0..at).rev().find_map(kept).unwrap_or((0, &self.base.root));
        let mut above = (at..len).find_map(kept).unwrap_or((len, &self.root));
        let mut recent = self.recent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(r) = recent.as_ref().filter(|r| r.rev >= self.base.rev) {
            let p = usize::try_from(r.rev - self.base.rev).unwrap_or(0);
            if p <= at && p > below.0 {
                below = (p, &r.root);
            } else if p > at && p < above.0 {
                above = (p, &r.root);
            }
        }
        let mut tree;
        if at - below.0 <= above.0 - at {
            tree = below.1.clone();
            for e in self.history.range(below.0..at) {
                replay_into(&mut tree, &e.event);
            }
        } else {
            tree = above.1.clone();
            for e in self.history.range(at..above.0).rev() {
                undo_into(&mut tree, e);
            }
        }
        *recent = Some(Snapshot { rev, root: tree.clone() });
        tree
    }

    /// The tree as of `rev` (`None`: now). Revisions ≤ 0 read as revision 1, as
    /// in the original.
    pub fn snapshot(&self, rev: Option<Rev>) -> Result<Snapshot, ReadError> {
        let Some(rev) = rev else {
            return Ok(self.current());
        };
        let rev = rev.max(1);
        if rev > self.rev {
            return Err(ReadError::Future(rev));
        }
        if rev == self.rev {
            return Ok(self.current());
        }
        if rev < self.oldest() {
            return Err(ReadError::TooLate);
        }
        Ok(Snapshot { rev, root: self.tree_at(rev) })
    }

    /// The current tree.
    pub fn current(&self) -> Snapshot {
        Snapshot { rev: self.rev, root: self.root.clone() }
    }

    fn entry(&self, rev: Rev) -> Option<&Entry> {
        let index = rev.checked_sub(self.oldest())?;
        self.history.get(self.hidden + usize::try_from(index).ok()?)
    }

    /// The first event at or after `from` whose path matches `glob`, if it has
    /// already happened. Revisions ≤ 0 read as 1.
    pub fn first_event(&self, from: Rev, glob: &Glob) -> Result<Option<Event>, ReadError> {
        let from = from.max(1);
        if from > self.rev {
            return Ok(None);
        }
        if from < self.oldest() {
            return Err(ReadError::TooLate);
        }
        let skip = self.hidden + (from - self.oldest()) as usize;
        Ok(self.history.iter().skip(skip).map(|e| &e.event).find(|e| glob.matches(&e.path)).cloned())
    }

    /// Up to `max` events at or after `from` matching `glob`, oldest first, and
    /// the revision the scan got through: every matching event up to it is in
    /// the list, so a follower of the stream goes on from the next one.
    pub fn events_from(&self, from: Rev, glob: &Glob, max: usize) -> Result<(Vec<Event>, Rev), ReadError> {
        let from = from.max(1);
        if from > self.rev {
            return Ok((Vec::new(), from - 1));
        }
        if from < self.oldest() {
            return Err(ReadError::TooLate);
        }
        let skip = self.hidden + (from - self.oldest()) as usize;
        let mut out = Vec::new();
        for e in self.history.iter().skip(skip).map(|e| &e.event) {
            if out.len() == max {
                return Ok((out, e.rev - 1));
            }
            if glob.matches(&e.path) {
                out.push(e.clone());
            }
        }
        Ok((out, self.rev))
    }

    /// Up to `max` changes to files matching `glob` at or before revision
    /// `upto`, newest first, after passing over the `skip` newest: what
    /// `doozer log` prints. NOPs are not changes to a file and never match.
    /// Costs a scan of the history window below `upto`.
    pub fn events_before(&self, upto: Rev, glob: &Glob, skip: usize, max: usize) -> Result<Vec<Event>, ReadError> {
        if upto > self.rev {
            return Err(ReadError::Future(upto));
        }
        if upto < self.oldest() {
            return Err(ReadError::TooLate);
        }
        let readable = self.history.iter().skip(self.hidden).map(|e| &e.event);
        let changes = readable.rev().skip_while(|e| e.rev > upto).filter(|e| e.kind != EventKind::Nop);
        Ok(changes.filter(|e| glob.matches(&e.path)).skip(skip).take(max).cloned().collect())
    }

    /// The readable events after revision `rev`, oldest first.
    pub fn events_after(&self, rev: Rev) -> impl Iterator<Item = &Event> {
        self.history.iter().skip(self.hidden).map(|e| &e.event).filter(move |e| e.rev > rev)
    }

    /// The event that made revision `rev`, while it is in the history.
    pub fn event_at(&self, rev: Rev) -> Option<&Event> {
        self.entry(rev).map(|e| &e.event)
    }
}

/// May a write that names revision `rev` replace `node`? A directory is
/// never replaced; a file only by CLOBBER or a revision at least its own.
fn revision_rule(node: Option<Node>, rev: Rev) -> Result<(), StoreError> {
    let current = match node {
        None => MISSING,
        Some(Node::Dir(_)) => DIR,
        Some(Node::File(f)) => f.rev(),
    };
    if rev != CLOBBER && rev < current {
        return Err(StoreError::RevMismatch);
    }
    if let Some(Node::Dir(_)) = node {
        return Err(StoreError::IsDir);
    }
    Ok(())
}

/// Applies a recorded event to a tree, as the change that made it did.
fn replay_into(tree: &mut Dir, e: &Event) {
    let names: Vec<&str> = components(&e.path).collect();
    match e.kind {
        EventKind::Set => {
            let _ = tree::set_mut(tree, &names, e.body.stamped(e.rev));
        }
        EventKind::Del => {
            tree::del_mut(tree, &names);
        }
        EventKind::Nop => {}
    }
}

/// Takes `tree` from the revision of `e` back to the one before it.
fn undo_into(tree: &mut Dir, e: &Entry) {
    if e.event.kind == EventKind::Nop {
        return;
    }
    let names: Vec<&str> = components(&e.event.path).collect();
    match &e.prev {
        // Restored with its own revision stamp, so it reads as it did then.
        Some(prev) => {
            let _ = tree::set_mut(tree, &names, prev.clone());
        }
        // A file the event created: no empty directories stay behind, as
        // there were none before it (the tree never holds one).
        None => {
            tree::del_mut(tree, &names);
        }
    }
}

/// A read-only view of the tree at one revision. Cheap to clone and to keep:
/// it shares structure with the store.
#[derive(Clone)]
pub struct Snapshot {
    rev: Rev,
    root: Dir,
}

impl Snapshot {
    pub(crate) fn new(rev: Rev, root: Dir) -> Snapshot {
        Snapshot { rev, root }
    }

    /// Every file, depth first in byte order, with its path.
    pub fn files(&self) -> Vec<(String, File)> {
        let mut out = Vec::new();
        self.each_file(|path, body| out.push((path.to_string(), File::of(body))));
        out
    }

    /// Calls `f` with every file and its path, depth first in byte order,
    /// without collecting them (an image of a million files).
    pub fn each_file(&self, mut f: impl FnMut(&str, &Body)) {
        let mut prefix = String::from("/");
        visit_files(&self.root, &mut prefix, &mut f);
    }

    /// The revision this snapshot shows.
    pub fn rev(&self) -> Rev {
        self.rev
    }

    fn node(&self, path: &str) -> Option<Node<'_>> {
        if !is_valid_path(path) {
            return None;
        }
        let names: Vec<&str> = components(path).collect();
        if names.is_empty() {
            return None;
        }
        match tree::lookup(&self.root, &names) {
            Lookup::Found(n) => Some(n),
            _ => None,
        }
    }

    fn is_root(path: &str) -> bool {
        path == "/"
    }

    /// GET: the file at `path`, `None` if missing; a directory is ISDIR. A path
    /// that is not legal reads as missing, as in the original.
    pub fn get(&self, path: &str) -> Result<Option<File>, StoreError> {
        if Self::is_root(path) {
            return Err(StoreError::IsDir);
        }
        match self.node(path) {
            Some(Node::File(b)) => Ok(Some(File::of(b))),
            Some(Node::Dir(_)) => Err(StoreError::IsDir),
            None => Ok(None),
        }
    }

    /// GETDIR: the names in the directory at `path`, in byte order.
    pub fn getdir(&self, path: &str) -> Result<Vec<Arc<str>>, StoreError> {
        let dir = if Self::is_root(path) {
            &self.root
        } else {
            match self.node(path) {
                Some(Node::Dir(d)) => d,
                Some(Node::File(_)) => return Err(StoreError::NotDir),
                None => return Err(StoreError::NoEnt),
            }
        };
        Ok(dir.entries().map(|(name, _)| Arc::from(name)).collect())
    }

    /// STAT: a file's revision and length, a directory's entry count, or missing.
    pub fn stat(&self, path: &str) -> Stat {
        if Self::is_root(path) {
            return Stat::Dir { entries: self.root.len() };
        }
        match self.node(path) {
            Some(Node::File(f)) => Stat::File { rev: f.rev(), len: f.len() },
            Some(Node::Dir(d)) => Stat::Dir { entries: d.len() },
            None => Stat::Missing,
        }
    }

    /// WALK: every file matching `glob`, depth first with each directory's entries
    /// in byte order. Directories the glob cannot reach are not visited.
    pub fn walk(&self, glob: &Glob) -> Vec<(String, File)> {
        self.walk_first(glob, usize::MAX)
    }

    /// The first `max` files of [`Snapshot::walk`]: the scan stops there, so
    /// a page of a huge tree costs the page, not the tree.
    pub fn walk_first(&self, glob: &Glob, max: usize) -> Vec<(String, File)> {
        let mut out = Vec::new();
        let mut prefix = String::from("/");
        walk_dir(&self.root, glob, &mut prefix, &mut out, max);
        out
    }
}

fn visit_files(dir: &Dir, prefix: &mut String, f: &mut impl FnMut(&str, &Body)) {
    for (name, node) in dir.entries() {
        let len = prefix.len();
        prefix.push_str(name);
        match node {
            Node::File(b) => f(prefix, b),
            Node::Dir(d) => {
                prefix.push('/');
                visit_files(d, prefix, f);
            }
        }
        prefix.truncate(len);
    }
}

fn walk_dir(dir: &Dir, glob: &Glob, prefix: &mut String, out: &mut Vec<(String, File)>, max: usize) {
    for (name, node) in dir.entries() {
        if out.len() >= max {
            return;
        }
        let len = prefix.len();
        prefix.push_str(name);
        match node {
            Node::File(b) if glob.matches(prefix) => out.push((prefix.clone(), File::of(b))),
            Node::File(_) => {}
            Node::Dir(d) => {
                prefix.push('/');
                if glob.could_match_below(prefix) {
                    walk_dir(d, glob, prefix, out, max);
                }
            }
        }
        prefix.truncate(len);
    }
}
