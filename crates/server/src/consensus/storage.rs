//! Raft's storage: the log, the vote, and the state machine, which is the
//! node's store. By default all in memory, as Doozer always was: a process
//! that restarts has lost all of it and rejoins under a new id. A durable
//! log store ([`LogStore::durable`], `--data-dir`) also writes every change
//! of the log and vote to disk (`durable`) before it reports it done, and a
//! durable state machine writes each snapshot (`datadir`) before openraft
//! learns of it.

use super::datadir::DataDir;
use super::durable::{Disk, Done, Record, Replayed};
use super::types::*;
use super::wal::WalError;
use super::wire::Committed;
use crate::node::Node;
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine};
use openraft::{EntryPayload, RaftLogReader, RaftSnapshotBuilder};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

#[derive(Default)]
struct Log {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    /// What the entries hold, by [`entry_bytes`].
    bytes: usize,
}

/// An entry this large leaving the log gives its pages back at once
/// (written batches are kilobytes; a `Load` is the whole restored tree).
const RELEASE_AFTER: usize = 8 << 20;

/// About how many bytes an entry holds.
pub(crate) fn entry_bytes(e: &Entry) -> usize {
    const OVERHEAD: usize = 64;
    match &e.payload {
        EntryPayload::Normal(p) => OVERHEAD + p.cmd.bytes(),
        _ => OVERHEAD,
    }
}

impl Log {
    fn insert(&mut self, e: Entry) {
        self.bytes += entry_bytes(&e);
        if let Some(old) = self.entries.insert(e.log_id.index, e) {
            self.bytes -= entry_bytes(&old);
        }
    }

    fn forget(&mut self, gone: BTreeMap<u64, Entry>) {
        let sizes = gone.values().map(entry_bytes);
        let (sum, largest) = sizes.fold((0, 0), |(sum, largest), b| (sum + b, largest.max(b)));
        self.bytes -= sum;
        drop(gone);
        // A restored image (one entry of the whole tree) has left the log.
        if largest >= RELEASE_AFTER {
            crate::memory::release();
        }
    }
}

/// The Raft log and vote. Clones share the same log (one is the log reader).
#[derive(Clone)]
pub struct LogStore {
    log: Arc<Mutex<Log>>,
    /// Past this many bytes an append wakes [`LogStore::over_limit`]'s waiter.
    limit: usize,
    over: Arc<tokio::sync::Notify>,
    /// Where a durable log also writes every change.
    disk: Option<Arc<Disk>>,
}

/// A durable log writes a checkpoint (and drops older segments) after a
/// purge once the disk holds this many bytes more than twice the log.
const CHECKPOINT_SLACK: u64 = 64 << 20;

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self.log.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let log = self.log.lock();
        let last = log.entries.values().next_back().map(|e| e.log_id).or(log.purged);
        Ok(LogState { last_purged_log_id: log.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.log.lock().vote = Some(*vote);
        // Raft acts on a vote only once it survives a crash.
        if let Some(disk) = &self.disk {
            disk.write_synced(&Record::Vote(*vote)).await.map_err(|e| openraft::StorageIOError::write_vote(&e))?;
        }
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.log.lock().vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.log.lock().committed = committed;
        if let Some(disk) = &self.disk {
            disk.write_lazily(&Record::Committed(committed));
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.log.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let Some(disk) = &self.disk else {
            self.insert(entries);
            // Memory is the durable medium here: appended is flushed.
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let entries: Vec<Entry> = entries.into_iter().collect();
        self.insert(entries.iter().cloned());
        disk.write(&Record::Entries(entries), Done::Flushed(callback));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut log = self.log.lock();
            let gone = log.entries.split_off(&log_id.index);
            log.forget(gone);
        }
        self.record(Record::Truncate(log_id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut log = self.log.lock();
            let keep = log.entries.split_off(&(log_id.index + 1));
            let gone = std::mem::replace(&mut log.entries, keep);
            log.forget(gone);
            log.purged = Some(log_id);
        }
        self.record(Record::Purge(log_id));
        self.checkpoint_if_due().await.map_err(|e| openraft::StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

impl LogStore {
    /// An empty log that says when it holds more than `limit` bytes.
    pub fn new(limit: usize) -> LogStore {
        LogStore { log: Arc::default(), limit, over: Arc::default(), disk: None }
    }

    /// The log kept in `dir` as well, as it was left there; and the torn
    /// tail cut off, if there was one, for the caller to log.
    pub fn durable(dir: &std::path::Path, limit: usize) -> Result<(LogStore, Option<String>), WalError> {
        let (disk, state, torn) = Disk::open(dir)?;
        let mut log = Log { vote: state.vote, committed: state.committed, purged: state.purged, ..Log::default() };
        for e in state.entries.into_values() {
            log.insert(e);
        }
        let store =
            LogStore { log: Arc::new(Mutex::new(log)), limit, over: Arc::default(), disk: Some(Arc::new(disk)) };
        Ok((store, torn.map(|(file, at)| format!("{} cut at byte {at}", file.display()))))
    }

    fn insert(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut log = self.log.lock();
        for e in entries {
            log.insert(e);
        }
        if log.bytes > self.limit {
            self.over.notify_one();
        }
    }

    /// Writes `r` to disk, if the log is durable, after what came before.
    fn record(&self, r: Record) {
        if let Some(disk) = &self.disk {
            disk.write(&r, Done::Nothing);
        }
    }

    /// After a purge: once the disk holds much more than the log, the log as
    /// it is replaces it.
    async fn checkpoint_if_due(&self) -> std::io::Result<()> {
        let Some(disk) = &self.disk else { return Ok(()) };
        let state = {
            let log = self.log.lock();
            if disk.bytes_since_checkpoint() <= 2 * log.bytes as u64 + CHECKPOINT_SLACK {
                return Ok(());
            }
            Replayed { entries: log.entries.clone(), vote: log.vote, committed: log.committed, purged: log.purged }
        };
        disk.checkpoint(state).await
    }

    /// openraft restarts a node whose vote says it leads as that term's
    /// leader at once. A leader's entries go to followers before its own
    /// fsync completes, so a leader that crashed may have lost entries its
    /// followers hold; leading the same term again it would write other
    /// entries at their indexes, and logs with the same entry id would
    /// differ. With its vote read back as not yet granted, it starts as a
    /// follower, and any leadership comes from a new election. (A lone
    /// voter has no followers to differ from, and keeps its term.)
    pub fn forget_leadership(&self) {
        if let Some(v) = self.log.lock().vote.as_mut() {
            v.committed = false;
        }
    }

    /// The voters of the last membership in the log, if it holds one.
    pub fn voters(&self) -> Option<Vec<NodeId>> {
        let log = self.log.lock();
        log.entries.values().rev().find_map(|e| match &e.payload {
            EntryPayload::Membership(m) => Some(m.voter_ids().collect()),
            _ => None,
        })
    }

    /// The highest proposal id of `origin` in the log.
    pub fn highest_seq(&self, origin: NodeId) -> Option<u64> {
        let log = self.log.lock();
        log.entries
            .values()
            .filter_map(|e| match &e.payload {
                EntryPayload::Normal(p) => p.id.filter(|id| id.origin == origin).map(|id| id.seq),
                _ => None,
            })
            .max()
    }

    /// The entries from `index` on.
    pub fn entries_from(&self, index: u64) -> Vec<Entry> {
        self.log.lock().entries.range(index..).map(|(_, e)| e.clone()).collect()
    }

    /// True if the log holds nothing and has never been purged.
    pub fn is_empty(&self) -> bool {
        let log = self.log.lock();
        log.entries.is_empty() && log.purged.is_none()
    }

    /// The last entry purged, if any.
    pub fn purged(&self) -> Option<LogId> {
        self.log.lock().purged
    }

    /// Group commits (fsyncs) a durable log has made; `None` in memory.
    pub fn syncs(&self) -> Option<u64> {
        self.disk.as_ref().map(|d| d.syncs())
    }

    /// Closes a durable log's files (after Raft has stopped).
    pub async fn close(&self) {
        if let Some(disk) = &self.disk {
            disk.close().await;
        }
    }

    /// Woken when an append takes the log past its limit.
    pub fn over_limit(&self) -> Arc<tokio::sync::Notify> {
        self.over.clone()
    }

    /// Bytes the log's entries hold.
    pub fn bytes(&self) -> usize {
        self.log.lock().bytes
    }

    /// The last index to purge, at most `upto`, so that the entries left
    /// hold at most `keep` bytes; `None` if nothing need go.
    pub fn purge_point(&self, upto: u64, keep: usize) -> Option<u64> {
        let log = self.log.lock();
        let mut left = log.bytes;
        let mut point = None;
        for (index, e) in log.entries.range(..=upto) {
            if left <= keep {
                break;
            }
            left -= entry_bytes(e);
            point = Some(*index);
        }
        point
    }
}

/// The latest snapshot, shared by the state machine and its builders.
pub type CurrentSnapshot = Arc<Mutex<Option<(SnapshotMeta, SnapshotData)>>>;

/// The state machine: applies committed entries to the node's store.
pub struct StateMachine {
    node: Arc<Node>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    /// Each member's last applied proposal, so a resent one applies once.
    applied: Applied,
    current: CurrentSnapshot,
    builders: u64,
    /// A durable node's directory and this life's claim on it: each
    /// snapshot is written there before openraft learns it is taken.
    dir: Option<SnapshotDir>,
}

/// Where a durable node keeps its snapshot, and its claim on the directory.
#[derive(Clone)]
pub struct SnapshotDir {
    pub dir: Arc<DataDir>,
    pub life: u64,
}

impl SnapshotDir {
    /// Writes the snapshot to disk, off the runtime's workers.
    async fn write(&self, meta: &SnapshotMeta, data: &SnapshotData) -> Result<(), StorageError> {
        let (this, meta, data) = (self.clone(), meta.clone(), data.clone());
        crate::rt::blocking(move || this.dir.write_snapshot(this.life, &meta, &data))
            .await
            .and_then(|r| r)
            .map_err(|e| openraft::StorageIOError::write_snapshot(None, &e).into())
    }
}

impl StateMachine {
    pub fn new(node: Arc<Node>) -> StateMachine {
        StateMachine {
            node,
            last_applied: None,
            membership: StoredMembership::default(),
            applied: Applied::new(),
            current: Arc::default(),
            builders: 0,
            dir: None,
        }
    }

    /// A durable node's state machine, starting from the snapshot it had
    /// written (if any); the log after it is applied by openraft.
    pub fn durable(
        node: Arc<Node>,
        dir: SnapshotDir,
        snapshot: Option<(SnapshotMeta, SnapshotData)>,
    ) -> Result<StateMachine, String> {
        let sm = match &snapshot {
            Some((meta, data)) => StateMachine::from_snapshot(node, meta, data)?,
            None => StateMachine::new(node),
        };
        Ok(StateMachine { dir: Some(dir), ..sm })
    }

    /// A state machine whose node holds `data`, as of `meta`.
    pub fn from_snapshot(node: Arc<Node>, meta: &SnapshotMeta, data: &SnapshotData) -> Result<StateMachine, String> {
        let store = node.prepare(&data.image).map_err(|e| format!("the snapshot's image: {e}"))?;
        node.install(store);
        let sm = StateMachine {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            applied: data.applied.clone(),
            ..StateMachine::new(node)
        };
        *sm.current.lock() = Some((meta.clone(), data.clone()));
        Ok(sm)
    }

    /// The latest snapshot, as this state machine and its builders share it.
    pub fn snapshots(&self) -> CurrentSnapshot {
        self.current.clone()
    }

    /// Applies a proposal once: a resent one (same id) is answered with the
    /// outcome of its first application. One older than its origin's last
    /// was given up by its origin (its client was told it may or may not be
    /// applied) and is not applied now: that keeps "at most once" without
    /// remembering every id. One from a node that is no longer a member is
    /// not applied either: the record of what that node had applied went
    /// with it (the state machine forgets ex-members), so a proposal it
    /// sends again late (a removed node's old self still retrying) would
    /// otherwise be applied twice. Node ids are never reused, so an origin
    /// that is not a member never will be again.
    fn apply_proposal(&mut self, p: Proposal) -> Committed {
        if let Some(seen) = self.seen(&p) {
            return seen;
        }
        if p.id.is_some_and(|id| self.membership.membership().get_node(&id.origin).is_none()) {
            return Committed::NotMember;
        }
        let out: Committed = self.node.apply(&p.cmd).into();
        self.remember(&p, &out);
        out
    }

    /// [`StateMachine::apply_proposal`] for a Load (a restored cluster's first
    /// entry: the whole tree), which runs on a blocking thread.
    async fn apply_load(&mut self, p: Proposal) -> Result<Committed, StorageError> {
        if let Some(seen) = self.seen(&p) {
            return Ok(seen);
        }
        let (node, cmd) = (self.node.clone(), p.cmd.clone());
        let out: Committed = crate::rt::blocking(move || node.apply(&cmd)).await.map_err(storage_error)?.into();
        // Decoding freed its buffers; the image itself goes with the log entry.
        crate::memory::release();
        self.remember(&p, &out);
        Ok(out)
    }

    /// The answer to a proposal already applied (or given up by its origin).
    fn seen(&self, p: &Proposal) -> Option<Committed> {
        let id = p.id?;
        let (seq, out) = self.applied.get(&id.origin)?;
        match id.seq.cmp(seq) {
            std::cmp::Ordering::Equal => Some(out.clone()),
            std::cmp::Ordering::Less => Some(Committed::Unchanged),
            std::cmp::Ordering::Greater => None,
        }
    }

    fn remember(&mut self, p: &Proposal, out: &Committed) {
        if let Some(id) = p.id {
            self.applied.insert(id.origin, (id.seq, out.clone()));
        }
    }
}

fn storage_error(e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::read_snapshot(None, &e).into()
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Committed>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut out = Vec::new();
        for entry in entries {
            self.last_applied = Some(entry.log_id);
            out.push(match entry.payload {
                EntryPayload::Blank => Committed::Unchanged,
                // A lease expiry decided on one term's deadlines, committed in
                // a later term whose leader kept the lease alive, would end it
                // early (the simulator found one so, seed 302097).
                EntryPayload::Normal(p) if p.term.is_some_and(|t| t != entry.log_id.leader_id.term) => {
                    Committed::OutOfTerm
                }
                EntryPayload::Normal(p) if matches!(p.cmd, doozer_store::Command::Load { .. }) => {
                    self.apply_load(p).await?
                }
                EntryPayload::Normal(p) => self.apply_proposal(p),
                EntryPayload::Membership(m) => {
                    // Former members' proposals are never resent.
                    self.applied.retain(|id, _| m.get_node(id).is_some());
                    self.membership = StoredMembership::new(Some(entry.log_id), m);
                    Committed::Unchanged
                }
            });
        }
        Ok(out)
    }

    /// Takes the image now, between applies, so the snapshot is exactly the
    /// state at `last_applied` even though the builder runs later.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.builders += 1;
        let id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, self.builders),
            None => format!("none-{}", self.builders),
        };
        let meta =
            SnapshotMeta { last_log_id: self.last_applied, last_membership: self.membership.clone(), snapshot_id: id };
        let data = SnapshotData { image: self.node.image(), applied: self.applied.clone() };
        SnapshotBuilder { meta, data, current: self.current.clone(), dir: self.dir.clone() }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotData>, StorageError> {
        Ok(Box::new(SnapshotData { image: self.node.image(), applied: self.applied.clone() }))
    }

    /// Rebuilding the store from the image (up to the whole tree and its
    /// history) runs on a blocking thread, not on a runtime worker.
    async fn install_snapshot(&mut self, meta: &SnapshotMeta, data: Box<SnapshotData>) -> Result<(), StorageError> {
        let node = self.node.clone();
        let image = data.image.clone();
        let store =
            crate::rt::blocking(move || node.prepare(&image)).await.map_err(storage_error)?.map_err(storage_error)?;
        if let Some(dir) = &self.dir {
            dir.write(meta, &data).await?;
        }
        self.node.install(store);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.applied = data.applied.clone();
        *self.current.lock() = Some((meta.clone(), *data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let current = self.current.lock();
        Ok(current.as_ref().map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: Box::new(data.clone()) }))
    }
}

/// Applies `entries` in order, as openraft would have once they committed.
pub async fn apply_all(sm: &mut StateMachine, entries: Vec<Entry>) -> Result<(), StorageError> {
    sm.apply(entries).await.map(|_| ())
}

/// Hands over the image taken by `get_snapshot_builder`.
pub struct SnapshotBuilder {
    meta: SnapshotMeta,
    data: SnapshotData,
    current: CurrentSnapshot,
    dir: Option<SnapshotDir>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    /// A durable node's snapshot is on disk before openraft hears of it, so
    /// the log is never purged past what a durable snapshot holds.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        if let Some(dir) = &self.dir {
            dir.write(&self.meta, &self.data).await?;
        }
        *self.current.lock() = Some((self.meta.clone(), self.data.clone()));
        Ok(Snapshot { meta: self.meta.clone(), snapshot: Box::new(self.data.clone()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Limits, Node};
    use doozer_store::{Body, Command};

    fn proposal(origin: NodeId, seq: u64, path: &str) -> Proposal {
        let cmd = Command::Set { path: path.into(), rev: 0, body: Body::from("x") };
        Proposal { id: Some(WriteId { origin, seq }), cmd, term: None }
    }

    #[test]
    fn a_resent_proposal_is_applied_once_and_answered_as_the_first_time() {
        let node = Node::new("N".into(), Limits::default());
        let mut sm = members(&node, &[7, 8]);
        assert_eq!(sm.apply_proposal(proposal(7, 1, "/a")), Committed::Changed(1));
        // The same id again (its leader died before answering): not applied again.
        assert_eq!(sm.apply_proposal(proposal(7, 1, "/a")), Committed::Changed(1));
        assert_eq!(node.rev(), 1);
        // Another member's proposal with the same seq is its own.
        assert_eq!(sm.apply_proposal(proposal(8, 1, "/b")), Committed::Changed(2));
        assert_eq!(sm.apply_proposal(proposal(7, 2, "/c")), Committed::Changed(3));
        // One its origin gave up on (older than its last) is not applied.
        assert_eq!(sm.apply_proposal(proposal(7, 1, "/d")), Committed::Unchanged);
        assert_eq!(node.rev(), 3);
        // Without an id (a leader's own decision) it is applied as it comes.
        let own = Proposal { id: None, cmd: Command::Nop, term: None };
        assert_eq!(sm.apply_proposal(own.clone()), Committed::Changed(4));
        assert_eq!(sm.apply_proposal(own), Committed::Changed(5));
    }

    #[tokio::test]
    async fn a_decision_tied_to_a_term_is_applied_only_in_an_entry_of_that_term() {
        // Seed 302097: a lease expiry decided on term 1's deadlines was
        // committed in term 4, whose leader had kept the lease alive.
        let node = Node::new("N".into(), Limits::default());
        let mut sm = members(&node, &[7]);
        let entry = |term: u64, index: u64, decided: u64| Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(term, 7), index),
            payload: EntryPayload::Normal(Proposal { id: None, cmd: Command::Nop, term: Some(decided) }),
        };
        let out = sm.apply([entry(4, 1, 1), entry(4, 2, 4)]).await.unwrap();
        assert_eq!(out, [Committed::OutOfTerm, Committed::Changed(1)]);
        assert_eq!(node.rev(), 1);
    }

    #[tokio::test]
    async fn a_durable_log_keeps_its_vote_commit_truncation_and_purge_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let id = |term, index| openraft::LogId::new(openraft::CommittedLeaderId::new(term, 7), index);
        {
            let (mut log, torn) = LogStore::durable(dir.path(), 1 << 20).unwrap();
            assert!(torn.is_none());
            log.save_vote(&Vote::new(3, 7)).await.unwrap();
            log.save_committed(Some(id(3, 2))).await.unwrap();
            log.purge(id(1, 1)).await.unwrap();
            // The next synced write (a vote) follows every record before it.
            log.save_vote(&Vote::new_committed(4, 7)).await.unwrap();
        }
        let (mut log, _) = LogStore::durable(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(4, 7)));
        // Unless it was the lone voter, a restarted leader is elected again
        // rather than resuming its term.
        log.forget_leadership();
        assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(4, 7)));
        assert_eq!(log.read_committed().await.unwrap(), Some(id(3, 2)));
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(id(1, 1)));
    }

    thread_local! {
        static PURGES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn a_restored_tree_leaving_the_log_gives_its_pages_back_and_written_batches_do_not() {
        // Without a runtime the purge runs on this thread, so this thread's
        // count is this test's alone.
        crate::memory::on_release(|| PURGES.with(|p| p.set(p.get() + 1)));
        let entry = |index: u64, cmd: Command| Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 7), index),
            payload: EntryPayload::Normal(Proposal { id: None, cmd, term: None }),
        };
        let set = |i: u64| Command::Set { path: format!("/f{i}"), rev: 0, body: Body::from(vec![0u8; 4096]) };
        let mut log = Log::default();
        for i in 1..=3000 {
            log.insert(entry(i, set(i)));
        }
        log.insert(entry(3001, Command::Load { image: vec![0u8; RELEASE_AFTER].into() }));
        let gone = log.entries.split_off(&2001);
        let kept = std::mem::replace(&mut log.entries, gone);
        log.forget(kept);
        assert_eq!(PURGES.with(|p| p.get()), 0, "2000 small entries (8 MB in all) are not worth a purge");
        let rest = std::mem::take(&mut log.entries);
        log.forget(rest);
        assert_eq!(PURGES.with(|p| p.get()), 1, "the Load's image left the log");
        assert_eq!(log.bytes, 0);
    }

    /// A state machine whose membership is `ids`, all voters.
    fn members(node: &Arc<Node>, ids: &[NodeId]) -> StateMachine {
        let mut sm = StateMachine::new(node.clone());
        let nodes: BTreeMap<NodeId, Member> = ids.iter().map(|id| (*id, Member::default())).collect();
        let voters: std::collections::BTreeSet<NodeId> = ids.iter().copied().collect();
        sm.membership = StoredMembership::new(None, openraft::Membership::new(vec![voters], nodes));
        sm
    }

    #[test]
    fn a_proposal_from_a_node_that_is_no_longer_a_member_is_not_applied() {
        // Seed 47 of the simulator: a removed node's old self resent a write
        // the state machine had forgotten it applied.
        let node = Node::new("N".into(), Limits::default());
        let mut sm = members(&node, &[8]);
        assert_eq!(sm.apply_proposal(proposal(7, 1, "/a")), Committed::NotMember);
        assert_eq!(node.rev(), 0);
        assert_eq!(sm.apply_proposal(proposal(8, 1, "/b")), Committed::Changed(1));
    }
}
