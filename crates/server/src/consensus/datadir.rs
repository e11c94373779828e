//! A durable node's data directory (`--data-dir`, issue 15): who the node
//! is, its latest snapshot, and its write-ahead log (`wal/`, see `durable`).
//! It belongs to one node of one cluster, and to one process at a time.
//!
//! Not here: what the log records mean (`durable`), when snapshots are
//! taken (openraft and `Consensus::bound_log`).
//!
//! Layout and formats, version 1:
//! ```text
//! DIR/lock       held (flock) by the process using the directory
//! DIR/meta       text: "doozer-data-dir 1", then "cluster NAME", "id ID",
//!                "addr HOST:PORT", one per line
//! DIR/snapshot   "DZSNAP\0\x01", head length u32, head (postcard: Raft's
//!                snapshot meta and the applied proposals), the store image
//!                (doozer-store's image format), crc32 of all before it u32
//! DIR/wal/       the log's segments (see `wal`)
//! DIR/recovered  only between forcing a new cluster and its seeding: the
//!                store image it starts from (the image format)
//! ```
//! `meta` and `snapshot` are replaced whole: written to a temporary file,
//! fsynced, renamed over the old one, and the directory fsynced, so a crash
//! leaves the old file or the new, never half of one. A snapshot is on disk
//! before `build_snapshot` or `install_snapshot` returns, so openraft never
//! purges log entries that no durable snapshot holds.

use super::storage::LogStore;
use super::types::{Applied, NodeId, SnapshotData, SnapshotMeta};
use doozer_store::Image;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::warn;

const META_HEAD: &str = "doozer-data-dir 1";
const SNAP_MAGIC: &[u8; 8] = b"DZSNAP\0\x01";
/// Most bytes a snapshot's head (meta and applied proposals) may take.
const MAX_SNAP_HEAD: usize = 64 << 20;

/// Who a data directory's node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    pub cluster: String,
    /// The node's Doozer id.
    pub id: String,
    /// The address the cluster knows the node by.
    pub addr: String,
}

/// An open data directory, locked against a second process while it lives.
///
/// One process may run several lives of its node in turn (a removed node
/// rejoins under a new id): each life claims the directory
/// ([`DataDir::claim`]), and a snapshot write from an earlier life, still
/// under way when the directory was wiped for the next, is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
    /// The life that may write; bumped by `claim` and `wipe`.
    life: parking_lot::Mutex<u64>,
}

#[derive(Serialize, Deserialize)]
struct SnapHead {
    meta: SnapshotMeta,
    applied: Applied,
}

impl DataDir {
    /// Opens `path` (created if missing) and locks it.
    pub fn open(path: &Path) -> Result<DataDir, String> {
        fs::create_dir_all(path).map_err(|e| format!("cannot create --data-dir {}: {e}", path.display()))?;
        let lock_path = path.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => Ok(DataDir { path: path.into(), _lock: lock, life: Default::default() }),
            Err(fs::TryLockError::WouldBlock) => Err(format!(
                "--data-dir {} is in use by another doozerd; give each node a directory of its own",
                path.display()
            )),
            Err(fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", lock_path.display())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the write-ahead log lives.
    pub fn wal(&self) -> PathBuf {
        self.path.join("wal")
    }

    /// The node this directory belongs to; `None` if it belongs to none yet.
    pub fn meta(&self) -> Result<Option<Meta>, String> {
        let file = self.path.join("meta");
        let text = match fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        parse_meta(&text).map(Some).ok_or_else(|| {
            format!("{} is not a doozerd data dir's meta file (version 1); is --data-dir right?", file.display())
        })
    }

    /// Makes this directory `meta`'s node's.
    pub fn write_meta(&self, meta: &Meta) -> io::Result<()> {
        let text = format!("{META_HEAD}\ncluster {}\nid {}\naddr {}\n", meta.cluster, meta.id, meta.addr);
        self.replace("meta", text.as_bytes())
    }

    /// The latest snapshot, if one was written.
    pub fn read_snapshot(&self) -> Result<Option<(SnapshotMeta, SnapshotData)>, String> {
        let file = self.path.join("snapshot");
        let bytes = match fs::read(&file) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        decode_snapshot(&bytes).map(Some).map_err(|what| {
            format!(
                "{} is damaged ({what}); this node's data cannot be trusted: empty its --data-dir and start it \
                 again, and it rejoins as a new member",
                file.display()
            )
        })
    }

    /// Makes the caller the directory's current life; earlier lives' writes
    /// are dropped from now on.
    pub fn claim(&self) -> u64 {
        let mut life = self.life.lock();
        *life += 1;
        *life
    }

    /// Replaces the snapshot on disk (blocking: the image may be large), if
    /// `life` is still the directory's.
    pub fn write_snapshot(&self, life: u64, meta: &SnapshotMeta, data: &SnapshotData) -> io::Result<()> {
        let bytes = encode_snapshot(meta, data)?;
        let current = self.life.lock();
        if *current != life {
            return Err(io::Error::other("this node's data dir now belongs to its next life"));
        }
        self.replace("snapshot", &bytes)
    }

    /// Forgets the node: its meta, snapshot and log go (the lock stays held).
    /// Its log must be closed first.
    pub fn wipe(&self) -> io::Result<()> {
        let mut life = self.life.lock();
        *life += 1;
        for name in ["meta", "snapshot", "meta.tmp", "snapshot.tmp"] {
            match fs::remove_file(self.path.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        match fs::remove_dir_all(self.wal()) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        sync_dir(&self.path)
    }

    /// Keeps a forced new cluster's image (see `recover`) until the new
    /// cluster holds it: a crash in between finishes the recovery on restart.
    pub fn keep_recovered(&self, image: &[u8]) -> io::Result<()> {
        self.replace("recovered", image)
    }

    /// The image of a forced new cluster not yet started, if any.
    pub fn recovered(&self) -> Option<bytes::Bytes> {
        fs::read(self.path.join("recovered")).ok().map(bytes::Bytes::from)
    }

    /// The forced new cluster holds its image: the copy goes.
    pub fn forget_recovered(&self) {
        let _ = fs::remove_file(self.path.join("recovered"));
    }

    /// Writes `name` whole: a temporary file, fsynced, renamed over it.
    fn replace(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let tmp = self.path.join(format!("{name}.tmp"));
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, self.path.join(name))?;
        sync_dir(&self.path)
    }
}

/// What a data directory holds for the node starting on it: the node it
/// belongs to (none: a new node starts on it), the log, the snapshot.
pub struct Saved {
    pub(super) dir: Arc<DataDir>,
    pub(super) meta: Option<Meta>,
    pub(super) log: LogStore,
    pub(super) snapshot: Option<(SnapshotMeta, SnapshotData)>,
}

impl Saved {
    /// Reads `dir` for a node of `cluster`. A directory whose node never got
    /// as far as a log entry starts over as a new node.
    pub fn load(dir: Arc<DataDir>, cluster: &str) -> Result<Saved, String> {
        let meta = dir.meta()?;
        if let Some(m) = meta.as_ref().filter(|m| m.cluster != cluster) {
            return Err(format!(
                "--data-dir {} belongs to a node of cluster {:?}, not {cluster:?}: start with -c {} or give an empty directory",
                dir.path.display(),
                m.cluster,
                m.cluster
            ));
        }
        let snapshot = dir.read_snapshot()?;
        let (log, torn) = LogStore::durable(&dir.wal(), super::MAX_LOG_BYTES).map_err(|e| e.to_string())?;
        if let Some(torn) = torn {
            warn!("{torn}: a write the crash left half done, never acknowledged");
        }
        let holds = snapshot.is_some() || !log.is_empty();
        let meta = match (meta, holds) {
            (Some(m), true) => Some(m),
            (Some(_), false) => None,
            (None, false) => None,
            (None, true) => {
                return Err(format!(
                    "--data-dir {} holds a log but no meta file; empty it and start again, and the node rejoins as a new member",
                    dir.path.display()
                ))
            }
        };
        let snapped = snapshot.as_ref().and_then(|(m, _)| m.last_log_id);
        if log.purged() > snapped {
            return Err(format!(
                "{}: the log was compacted past the snapshot; this node's data cannot be trusted: empty its --data-dir                  and start it again, and it rejoins as a new member",
                dir.path.display()
            ));
        }
        let voters = log
            .voters()
            .or_else(|| snapshot.as_ref().map(|(m, _)| m.last_membership.membership().voter_ids().collect()));
        let me = meta.as_ref().map(|m| super::raft_id(&m.id));
        if voters.is_none_or(|v| me.is_none_or(|me| v != [me])) {
            log.forget_leadership();
        }
        Ok(Saved { dir, meta, log, snapshot })
    }

    /// The highest proposal id of `origin` the snapshot or the log holds.
    pub fn highest_seq(&self, origin: NodeId) -> Option<u64> {
        let snapped = self.snapshot.as_ref().and_then(|(_, d)| d.applied.get(&origin)).map(|(seq, _)| *seq);
        let logged = self.log.highest_seq(origin);
        snapped.max(logged)
    }

    /// The node to resume, if the directory holds one: its id and address.
    pub fn node(&self) -> Option<(&str, &str)> {
        self.meta.as_ref().map(|m| (m.id.as_str(), m.addr.as_str()))
    }
}

fn parse_meta(text: &str) -> Option<Meta> {
    let mut lines = text.lines();
    if lines.next()? != META_HEAD {
        return None;
    }
    let mut field = |key: &str| lines.next()?.strip_prefix(key)?.strip_prefix(' ').map(String::from);
    let cluster = field("cluster")?;
    let id = field("id")?;
    let addr = field("addr")?;
    Some(Meta { cluster, id, addr })
}

fn encode_snapshot(meta: &SnapshotMeta, data: &SnapshotData) -> io::Result<Vec<u8>> {
    let head = SnapHead { meta: meta.clone(), applied: data.applied.clone() };
    let head = postcard::to_allocvec(&head).map_err(|e| io::Error::other(e.to_string()))?;
    let mut out = SNAP_MAGIC.to_vec();
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    data.image.encode(&mut out);
    let sum = crc32fast::hash(&out);
    out.extend_from_slice(&sum.to_le_bytes());
    Ok(out)
}

fn decode_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, SnapshotData), String> {
    let body_len = bytes.len().checked_sub(4).ok_or("cut short")?;
    let (body, sum) = bytes.split_at(body_len);
    if crc32fast::hash(body).to_le_bytes() != sum {
        return Err("its checksum does not match".into());
    }
    let rest = body.strip_prefix(SNAP_MAGIC).ok_or("not a snapshot of this version")?;
    let len = rest.get(..4).ok_or("cut short")?;
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_SNAP_HEAD {
        return Err("a head longer than allowed".into());
    }
    let head = rest.get(4..4 + len).ok_or("cut short")?;
    let head: SnapHead = postcard::from_bytes(head).map_err(|e| format!("a head that does not decode: {e}"))?;
    let image = Image::decode(&rest[4 + len..]).map_err(|e| format!("an image that does not decode: {e}"))?;
    Ok((head.meta, SnapshotData { image, applied: head.applied }))
}

pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{Limits, Node};
    use doozer_store::{Body, Command};

    fn snapshot() -> (SnapshotMeta, SnapshotData) {
        let node = Node::new("N".into(), Limits::default());
        node.apply(&Command::Set { path: "/a".into(), rev: 0, body: Body::from("1") });
        let meta = SnapshotMeta { last_log_id: None, last_membership: Default::default(), snapshot_id: "s1".into() };
        (meta, SnapshotData { image: node.image(), applied: Applied::new() })
    }

    #[test]
    fn meta_and_snapshot_come_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        assert_eq!(d.meta().unwrap(), None);
        let meta = Meta { cluster: "c".into(), id: "ID".into(), addr: "127.0.0.1:1".into() };
        d.write_meta(&meta).unwrap();
        assert_eq!(d.meta().unwrap(), Some(meta));
        assert!(d.read_snapshot().unwrap().is_none());
        let (m, s) = snapshot();
        let life = d.claim();
        d.write_snapshot(life, &m, &s).unwrap();
        let (m2, s2) = d.read_snapshot().unwrap().unwrap();
        assert_eq!(m2.snapshot_id, "s1");
        let mut a = Vec::new();
        let mut b = Vec::new();
        s.image.encode(&mut a);
        s2.image.encode(&mut b);
        assert_eq!(a, b);
        d.wipe().unwrap();
        assert_eq!(d.meta().unwrap(), None);
        assert!(d.read_snapshot().unwrap().is_none());
        // A write from the life before the wipe is dropped.
        assert!(d.write_snapshot(life, &m, &s).is_err());
        assert!(d.read_snapshot().unwrap().is_none());
    }

    #[test]
    fn a_second_open_of_the_same_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _held = DataDir::open(dir.path()).unwrap();
        let err = DataDir::open(dir.path()).unwrap_err();
        assert!(err.contains("in use by another doozerd"), "{err}");
    }

    #[test]
    fn every_flipped_byte_and_every_cut_of_a_snapshot_is_found() {
        let (m, s) = snapshot();
        let bytes = encode_snapshot(&m, &s).unwrap();
        assert!(decode_snapshot(&bytes).is_ok());
        for at in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[at] ^= 0x40;
            assert!(decode_snapshot(&bad).is_err(), "flipped byte {at}");
            assert!(decode_snapshot(&bytes[..at]).is_err(), "cut at {at}");
        }
    }

    #[test]
    fn a_meta_file_of_another_kind_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::open(dir.path()).unwrap();
        fs::write(dir.path().join("meta"), "something else\n").unwrap();
        assert!(d.meta().unwrap_err().contains("is not a doozerd data dir"));
    }
}
