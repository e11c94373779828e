//! The Raft log and vote on disk, for `--data-dir` (issue 15): every change
//! the in-memory log (`storage::LogStore`) takes is also written, in the
//! same order, as a record of the write-ahead log (`wal`); opening the
//! directory replays the records into the state the log had.
//!
//! One thread owns the files and commits in groups: every record waiting
//! when it wakes goes into one frame and one fsync, so concurrent appends
//! share a sync. An append is reported flushed to openraft only once its
//! frame is synced, and a vote is saved only once synced, as Raft needs.
//!
//! The log on disk would grow for ever: a [`Record::Checkpoint`] (the whole
//! log as it is, written to a fresh segment) lets every older segment go.
//! The log store asks for one after a purge once the disk holds much more
//! than the log.
//!
//! The snapshot and the node's identity sit next to the log (`datadir`).

use super::types::{Entry, LogId, TypeConfig, Vote};
use super::wal::{Wal, WalError};
use openraft::storage::LogFlushed;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use tokio::sync::oneshot;

/// One change to the log, as written.
#[derive(Debug, Serialize, Deserialize)]
pub enum Record {
    Entries(Vec<Entry>),
    /// Entries from this index on are gone (a new leader's log differs).
    Truncate(u64),
    /// Entries up to this one are gone (a snapshot holds them).
    Purge(LogId),
    Vote(Vote),
    Committed(Option<LogId>),
    /// The whole log: what came before it is not needed.
    Checkpoint(Replayed),
}

/// The log's state, as replayed from disk (or checkpointed).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Replayed {
    pub entries: BTreeMap<u64, Entry>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
}

impl Replayed {
    fn take(&mut self, r: Record) {
        match r {
            Record::Entries(es) => {
                for e in es {
                    self.entries.insert(e.log_id.index, e);
                }
            }
            Record::Truncate(index) => {
                self.entries.split_off(&index);
            }
            Record::Purge(id) => {
                self.entries = self.entries.split_off(&(id.index + 1));
                self.purged = Some(id);
            }
            Record::Vote(v) => self.vote = Some(v),
            Record::Committed(c) => self.committed = c,
            Record::Checkpoint(all) => *self = all,
        }
    }
}

/// What to do once a record is synced.
pub enum Done {
    Nothing,
    /// openraft's append callback.
    Flushed(LogFlushed<TypeConfig>),
    Synced(oneshot::Sender<io::Result<()>>),
}

enum Job {
    Write(Vec<u8>, Done),
    /// Begin a fresh segment with this record, then drop the older ones.
    Checkpoint(Vec<u8>, oneshot::Sender<io::Result<()>>),
    /// Close the files and stop: told once they are closed.
    Stop(oneshot::Sender<()>),
}

/// A torn tail cut off on opening: the file, and the byte it was cut at.
pub type Torn = Option<(PathBuf, u64)>;

/// The log's files, written by a thread of their own.
pub struct Disk {
    jobs: mpsc::Sender<Job>,
    /// A record that needs no sync of its own (the commit index): it goes
    /// into the next frame written, the latest one only.
    lazy: Arc<parking_lot::Mutex<Option<Vec<u8>>>>,
    /// Frames synced so far (each a group of records).
    syncs: Arc<AtomicU64>,
    /// Bytes of records written since the last checkpoint.
    since_checkpoint: Arc<AtomicU64>,
}

impl Disk {
    /// Opens (or creates) the log in `dir` and replays it; the torn tail cut
    /// off, if any, is returned for the caller to log.
    pub fn open(dir: &Path) -> Result<(Disk, Replayed, Torn), WalError> {
        let (wal, found) = Wal::open_preallocated(dir, super::wal::SEGMENT_BYTES)?;
        let mut state = Replayed::default();
        for (i, bytes) in found.records.iter().enumerate() {
            let record: Record = postcard::from_bytes(bytes).map_err(|_| WalError::Damaged {
                file: dir.into(),
                offset: i as u64,
                what: "a record that does not decode (the offset is the record's number)",
            })?;
            state.take(record);
        }
        let (jobs, rx) = mpsc::channel();
        let syncs = Arc::new(AtomicU64::new(0));
        let since_checkpoint = Arc::new(AtomicU64::new(0));
        let lazy: Arc<parking_lot::Mutex<Option<Vec<u8>>>> = Arc::default();
        let (s, c, l) = (syncs.clone(), since_checkpoint.clone(), lazy.clone());
        std::thread::Builder::new()
            .name("doozer-wal".into())
            .spawn(move || write_loop(wal, rx, s, c, l))
            .map_err(|e| WalError::Io(dir.into(), e))?;
        Ok((Disk { jobs, lazy, syncs, since_checkpoint }, state, found.torn))
    }

    /// Writes `r` after every record written before it; `done` once synced.
    pub fn write(&self, r: &Record, done: Done) {
        let job = match postcard::to_allocvec(r) {
            Ok(bytes) => Job::Write(bytes, done),
            Err(e) => return finish(done, Err(io::Error::other(e.to_string()))),
        };
        if let Err(mpsc::SendError(Job::Write(_, done))) = self.jobs.send(job) {
            finish(done, Err(io::Error::other("the log's writer has stopped")));
        }
    }

    /// Writes `r` with the next frame, whenever that is, unless a later lazy
    /// record replaces it first: for what may lag on disk (the commit index:
    /// a restarted node that finds it behind learns it from the leader), so
    /// that it costs no fsync of its own. Each commit a fsync of its own
    /// doubled the syncs of one writer, every write waiting behind one.
    pub fn write_lazily(&self, r: &Record) {
        if let Ok(bytes) = postcard::to_allocvec(r) {
            *self.lazy.lock() = Some(bytes);
        }
    }

    /// Writes `r` and waits until it is synced.
    pub async fn write_synced(&self, r: &Record) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.write(r, Done::Synced(tx));
        rx.await.unwrap_or_else(|_| Err(io::Error::other("the log's writer has stopped")))
    }

    /// Replaces everything on disk by `state`, once every earlier record is
    /// written: older segments are deleted.
    pub async fn checkpoint(&self, state: Replayed) -> io::Result<()> {
        let bytes = postcard::to_allocvec(&Record::Checkpoint(state)).map_err(|e| io::Error::other(e.to_string()))?;
        let (tx, rx) = oneshot::channel();
        self.jobs.send(Job::Checkpoint(bytes, tx)).map_err(|_| io::Error::other("the log's writer has stopped"))?;
        rx.await.unwrap_or_else(|_| Err(io::Error::other("the log's writer has stopped")))
    }

    /// Closes the files once every earlier record is written; writes after
    /// this fail. A node that stops closes its log before another may open it.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.jobs.send(Job::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// Frames synced so far: each one fsync, for the writes in its group.
    pub fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Bytes of records written since the last checkpoint.
    pub fn bytes_since_checkpoint(&self) -> u64 {
        self.since_checkpoint.load(Ordering::Relaxed)
    }
}

fn finish(done: Done, result: io::Result<()>) {
    match done {
        Done::Nothing => {}
        Done::Flushed(cb) => cb.log_io_completed(result),
        Done::Synced(tx) => {
            let _ = tx.send(result);
        }
    }
}

/// Most record bytes gathered into one frame.
const GROUP_BYTES: usize = 16 << 20;

type Lazy = Arc<parking_lot::Mutex<Option<Vec<u8>>>>;

fn write_loop(mut wal: Wal, jobs: mpsc::Receiver<Job>, syncs: Arc<AtomicU64>, since: Arc<AtomicU64>, lazy: Lazy) {
    let mut next = None;
    loop {
        let Some(job) = next.take().or_else(|| jobs.recv().ok()) else { return };
        match job {
            Job::Stop(tx) => {
                drop(wal);
                let _ = tx.send(());
                return;
            }
            Job::Checkpoint(bytes, tx) => {
                let result = wal.rotate().and_then(|_| wal.append(&[&bytes])).and_then(|_| wal.remove_older_segments());
                since.store(0, Ordering::Relaxed);
                syncs.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(result);
            }
            Job::Write(bytes, done) => {
                let mut group = vec![(bytes, done)];
                let mut size = group[0].0.len();
                while size < GROUP_BYTES {
                    match jobs.try_recv() {
                        Ok(Job::Write(b, d)) => {
                            size += b.len();
                            group.push((b, d));
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let late = lazy.lock().take();
                let records: Vec<&[u8]> =
                    late.iter().map(Vec::as_slice).chain(group.iter().map(|(b, _)| b.as_slice())).collect();
                let result = wal.append(&records);
                since.fetch_add(size as u64, Ordering::Relaxed);
                syncs.fetch_add(1, Ordering::Relaxed);
                for (_, done) in group {
                    finish(done, result.as_ref().map(|_| ()).map_err(|e| io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::types::Proposal;
    use doozer_store::Command;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Proposal { id: None, cmd: Command::Nop, term: None }),
        }
    }

    fn indexes(s: &Replayed) -> Vec<u64> {
        s.entries.keys().copied().collect()
    }

    #[tokio::test]
    async fn the_log_comes_back_as_it_was_after_appends_truncates_purges_and_votes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (disk, state, torn) = Disk::open(dir.path()).unwrap();
            assert!(state.entries.is_empty() && torn.is_none());
            disk.write(&Record::Entries((1..=10).map(|i| entry(1, i)).collect()), Done::Nothing);
            disk.write(&Record::Truncate(8), Done::Nothing);
            disk.write(&Record::Entries(vec![entry(2, 8)]), Done::Nothing);
            disk.write(&Record::Purge(LogId::new(CommittedLeaderId::new(1, 1), 3)), Done::Nothing);
            disk.write(&Record::Committed(Some(LogId::new(CommittedLeaderId::new(2, 1), 8))), Done::Nothing);
            disk.write_synced(&Record::Vote(Vote::new(2, 1))).await.unwrap();
        }
        let (_, state, torn) = Disk::open(dir.path()).unwrap();
        assert!(torn.is_none());
        assert_eq!(indexes(&state), [4, 5, 6, 7, 8]);
        assert_eq!(state.entries[&8].log_id.leader_id.term, 2);
        assert_eq!(state.purged.map(|p| p.index), Some(3));
        assert_eq!(state.committed.map(|c| c.index), Some(8));
        assert_eq!(state.vote, Some(Vote::new(2, 1)));
    }

    #[tokio::test]
    async fn a_checkpoint_keeps_the_state_and_drops_the_segments_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let (disk, _, _) = Disk::open(dir.path()).unwrap();
        disk.write(&Record::Entries((1..=100).map(|i| entry(1, i)).collect()), Done::Nothing);
        disk.write_synced(&Record::Purge(LogId::new(CommittedLeaderId::new(1, 1), 90))).await.unwrap();
        assert!(disk.bytes_since_checkpoint() > 0);
        let now = replayed_copy(dir.path());
        disk.checkpoint(now).await.unwrap();
        assert_eq!(disk.bytes_since_checkpoint(), 0);
        assert!(disk.syncs() >= 2, "the purge and the checkpoint were synced");
        disk.write_synced(&Record::Entries(vec![entry(1, 101)])).await.unwrap();
        let segments = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(segments, 1, "the segments before the checkpoint are gone");
        drop(disk);
        let (_, state, _) = Disk::open(dir.path()).unwrap();
        assert_eq!(indexes(&state), (91..=101).collect::<Vec<_>>());
        assert_eq!(state.purged.map(|p| p.index), Some(90));
    }

    #[tokio::test]
    async fn appends_waiting_together_share_one_sync() {
        let dir = tempfile::tempdir().unwrap();
        let (wal, _) = Wal::open(dir.path()).unwrap();
        // 200 appends queued before the writer starts: one frame, one sync.
        let (jobs, rx) = mpsc::channel();
        let waits: Vec<_> = (1..=200)
            .map(|i| {
                let (tx, done) = oneshot::channel();
                let bytes = postcard::to_allocvec(&Record::Entries(vec![entry(1, i)])).unwrap();
                jobs.send(Job::Write(bytes, Done::Synced(tx))).unwrap();
                done
            })
            .collect();
        let (syncs, since) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let writer = {
            let syncs = syncs.clone();
            std::thread::spawn(move || write_loop(wal, rx, syncs, since, Lazy::default()))
        };
        for w in waits {
            w.await.unwrap().unwrap();
        }
        assert_eq!(syncs.load(Ordering::Relaxed), 1);
        drop(jobs);
        writer.join().unwrap();
        let (_, state, _) = Disk::open(dir.path()).unwrap();
        assert_eq!(state.entries.len(), 200);
    }

    /// The state on disk now, replayed from a copy of the files.
    fn replayed_copy(dir: &Path) -> Replayed {
        let copy = tempfile::tempdir().unwrap();
        for f in std::fs::read_dir(dir).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), copy.path().join(f.file_name())).unwrap();
        }
        Disk::open(copy.path()).unwrap().1
    }
}
