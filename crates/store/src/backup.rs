//! Backup and journal files: what `doozer backup` and `doozer journal` write
//! and `doozerd --restore` reads. Both keep every file's revision, so a
//! restored cluster has exactly the revisions the clients knew.
//!
//! Integers are big-endian; a string or body is a u32 length and its bytes;
//! checksums are FNV-1a 64 over the bytes they follow.
//!
//! Backup, version 1 (streamed: written and read a file at a time):
//! ```text
//! "DZBACKU1", cluster name, revision i64
//! per file: 0x01, path, file revision i64, body      (depth first, byte order)
//! per lease: 0x02, id u64, ttl u32, file count u64, per file: path
//! 0x00, file count u64, checksum u64 (of everything before it)
//! ```
//! Lease records (after the files, only when leases were granted) hold the
//! lease table as it was when the backup ended; a restored cluster grants
//! each lease again with its TTL counted afresh from its first leader, and
//! attaches the files of the backup that the lease had (files the backup does
//! not hold are skipped). Readers before leases stop at a lease record:
//! "unknown record kind 2".
//! Journal, version 1 (append-only):
//! ```text
//! "DZJOURN1", cluster name, checksum u64 (of the header)
//! per record: length u32, kind u8, payload, checksum u64 (of kind and payload)
//!   kind 1, a change: revision i64, event u8 (1 set, 2 del, 3 nop), path, body
//!   kind 2, a snapshot: revision i64, file count u64, per file: path, revision i64, body
//! ```
//! A journal's first record is a snapshot; the changes after it are
//! consecutive. A later snapshot means the journal lost the cluster's history
//! and started again from a fresh snapshot. A torn last record (a crash while
//! appending) is reported and dropped on resume; damage anywhere else is an error.

use crate::codec::{add_file, kind_byte, kind_from_byte, put_bytes, read_tree, Fnv, Input, MAX_RECORD};
use crate::image::ImageError;
use crate::lease::{LeaseId, Leases};
use crate::store::{Event, HistoryLimits, Snapshot, Store};
use crate::tree::{self, Dir};
use crate::{Body, Rev};
use std::io::{self, Read, Write};

pub const BACKUP_MAGIC: &[u8; 8] = b"DZBACKU1";
pub const JOURNAL_MAGIC: &[u8; 8] = b"DZJOURN1";

/// Writes a backup a file at a time.
pub struct BackupWriter<W: Write> {
    w: W,
    hash: Fnv,
    count: u64,
}

impl<W: Write> BackupWriter<W> {
    pub fn new(w: W, cluster: &str, rev: Rev) -> io::Result<BackupWriter<W>> {
        let mut b = BackupWriter { w, hash: Fnv::new(), count: 0 };
        let mut head = BACKUP_MAGIC.to_vec();
        put_bytes(&mut head, cluster.as_bytes());
        head.extend_from_slice(&rev.to_be_bytes());
        b.put(&head)?;
        Ok(b)
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hash.update(bytes);
        self.w.write_all(bytes)
    }

    pub fn file(&mut self, path: &str, rev: Rev, body: &[u8]) -> io::Result<()> {
        let mut rec = vec![1u8];
        put_bytes(&mut rec, path.as_bytes());
        rec.extend_from_slice(&rev.to_be_bytes());
        put_bytes(&mut rec, body);
        self.count += 1;
        self.put(&rec)
    }

    /// A lease and its files (after every file).
    pub fn lease(&mut self, id: LeaseId, ttl: u32, files: &[String]) -> io::Result<()> {
        let mut rec = vec![2u8];
        rec.extend_from_slice(&id.to_be_bytes());
        rec.extend_from_slice(&ttl.to_be_bytes());
        rec.extend_from_slice(&(files.len() as u64).to_be_bytes());
        for f in files {
            put_bytes(&mut rec, f.as_bytes());
        }
        self.put(&rec)
    }

    /// Writes the trailer; returns the inner writer (flushed).
    pub fn finish(mut self) -> io::Result<W> {
        let mut end = vec![0u8];
        end.extend_from_slice(&self.count.to_be_bytes());
        self.put(&end)?;
        let sum = self.hash.0;
        self.w.write_all(&sum.to_be_bytes())?;
        self.w.flush()?;
        Ok(self.w)
    }
}

/// A whole backup: the tree at one revision, the cluster's name, and the
/// leases with the backed-up files attached to them.
#[derive(Clone)]
pub struct Backup {
    pub cluster: String,
    pub tree: Snapshot,
    pub leases: Leases,
}

/// Reads and checks a whole backup.
pub fn read_backup<R: Read>(r: R) -> Result<Backup, ImageError> {
    let mut input = Input::new(r);
    if input.take(8)? != BACKUP_MAGIC {
        return Err(ImageError { offset: 0, what: "not a Doozer backup (or an unknown version)".into() });
    }
    let cluster = input.string("the cluster name")?;
    let rev = input.i64()?;
    let mut root = Dir::new();
    let mut count = 0u64;
    let mut leases = Leases::new();
    let (mut path, mut body) = (Vec::new(), Vec::new());
    loop {
        let at = input.at;
        match input.u8()? {
            0 => break,
            1 => {
                let path = input.path_into(&mut path)?;
                let file_rev = input.i64()?;
                input.chunk_into(&mut body)?;
                add_file(&mut root, path, file_rev, &body, rev, at)?;
                count += 1;
            }
            2 => read_lease(&mut input, &mut leases, &root, at)?,
            k => return Err(ImageError { offset: at, what: format!("unknown record kind {k}") }),
        }
    }
    let at = input.at;
    if input.u64()? != count {
        return Err(ImageError { offset: at, what: "the file count does not match the files".into() });
    }
    input.check_sum()?;
    let mut rest = [0u8; 1];
    if input.r.read(&mut rest).map_err(|e| input.err(e.to_string()))? != 0 {
        return Err(input.err("trailing bytes after the end of the backup"));
    }
    Ok(Backup { cluster, tree: Snapshot::new(rev, root), leases })
}

/// One lease record: granted through [`Leases`]' own checks; its files that
/// the backup holds attached.
fn read_lease<R: Read>(input: &mut Input<R>, leases: &mut Leases, root: &Dir, at: usize) -> Result<(), ImageError> {
    let bad = |what: String| ImageError { offset: at, what };
    let id = input.u64()?;
    let ttl = input.u32()?;
    leases.grant(id, ttl).map_err(|e| bad(format!("a lease record: {e}")))?;
    for _ in 0..input.u64()? {
        let path = input.path()?;
        let names: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        if matches!(tree::lookup(root, &names), tree::Lookup::Found(tree::Node::File(_))) {
            leases.attach(&path, id).map_err(|e| bad(format!("a lease record: {e}")))?;
        }
    }
    Ok(())
}

/// One journal record.
#[derive(Clone)]
pub enum Record {
    Snapshot(Snapshot),
    Change(Event),
}

impl Record {
    pub fn rev(&self) -> Rev {
        match self {
            Record::Snapshot(s) => s.rev(),
            Record::Change(e) => e.rev,
        }
    }
}

/// The journal's header bytes.
pub fn journal_header(cluster: &str) -> Vec<u8> {
    let mut head = JOURNAL_MAGIC.to_vec();
    put_bytes(&mut head, cluster.as_bytes());
    let mut h = Fnv::new();
    h.update(&head);
    head.extend_from_slice(&h.0.to_be_bytes());
    head
}

fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 13);
    out.extend_from_slice(&((payload.len() + 1) as u32).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(payload);
    let mut h = Fnv::new();
    h.update(&[kind]);
    h.update(payload);
    out.extend_from_slice(&h.0.to_be_bytes());
    out
}

/// A change record's bytes.
pub fn journal_change(e: &Event) -> Vec<u8> {
    let mut p = e.rev.to_be_bytes().to_vec();
    p.push(kind_byte(e.kind));
    put_bytes(&mut p, e.path.as_bytes());
    put_bytes(&mut p, &e.body);
    record(1, &p)
}

/// A snapshot record's bytes, for the tree at `rev` given as (path, file rev, body).
pub fn journal_snapshot<'a>(rev: Rev, files: impl ExactSizeIterator<Item = (&'a str, Rev, &'a [u8])>) -> Vec<u8> {
    let mut p = rev.to_be_bytes().to_vec();
    p.extend_from_slice(&(files.len() as u64).to_be_bytes());
    for (path, file_rev, body) in files {
        put_bytes(&mut p, path.as_bytes());
        p.extend_from_slice(&file_rev.to_be_bytes());
        put_bytes(&mut p, body);
    }
    record(2, &p)
}

/// A journal as read: its records, how many bytes of it are whole, and why
/// reading stopped early if the last record was torn.
pub struct Journal {
    pub cluster: String,
    pub records: Vec<Record>,
    pub valid_len: usize,
    pub torn: Option<ImageError>,
}

/// Reads a journal. A damaged or incomplete final record is reported in
/// `torn`; damage followed by more records is an error.
pub fn read_journal(bytes: &[u8]) -> Result<Journal, ImageError> {
    let mut input = Input::new(bytes);
    if input.take(8)? != JOURNAL_MAGIC {
        return Err(ImageError { offset: 0, what: "not a Doozer journal (or an unknown version)".into() });
    }
    let cluster = input.string("the cluster name")?;
    input.check_sum()?;
    let mut j = Journal { cluster, records: Vec::new(), valid_len: input.at, torn: None };
    while input.at < bytes.len() {
        let start = input.at;
        match read_record(&mut input) {
            Ok(r) => {
                let expected = j.records.last().map(|p| p.rev() + 1);
                let fits = match (&r, expected) {
                    (Record::Snapshot(_), _) => true,
                    (Record::Change(e), Some(next)) => e.rev == next,
                    (Record::Change(_), None) => false,
                };
                if !fits {
                    let what = match expected {
                        None => "the journal does not start with a snapshot".to_string(),
                        Some(next) => format!("revision {} follows {}: revisions are missing", r.rev(), next - 1),
                    };
                    return Err(ImageError { offset: start, what });
                }
                j.records.push(r);
                j.valid_len = input.at;
            }
            Err(e) => {
                // Torn only if nothing whole could follow: a record that claims
                // to run past the end, or damage in the last bytes.
                let claimed =
                    bytes.get(start..start + 4).map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize);
                let last = claimed.is_none_or(|n| start + 4 + n + 8 >= bytes.len());
                if last {
                    j.torn = Some(e);
                    return Ok(j);
                }
                return Err(e);
            }
        }
    }
    Ok(j)
}

fn read_record(input: &mut Input<&[u8]>) -> Result<Record, ImageError> {
    let len = input.u32()? as usize;
    if len == 0 || len > MAX_RECORD {
        return Err(input.err(format!("a record of {len} bytes is not plausible")));
    }
    input.hash = Fnv::new();
    let body_start = input.at;
    let kind = input.u8()?;
    let rec = match kind {
        1 => {
            let rev = input.i64()?;
            let at = input.at;
            let ev = kind_from_byte(input.u8()?, at)?;
            let path = input.string("a path")?;
            let body = input.chunk()?;
            Record::Change(Event { rev, path: path.into(), body: Body::from(body), kind: ev })
        }
        2 => {
            let rev = input.i64()?;
            let root = read_tree(input, rev)?;
            Record::Snapshot(Snapshot::new(rev, root))
        }
        k => return Err(ImageError { offset: body_start, what: format!("unknown record kind {k}") }),
    };
    if input.at - body_start != len {
        return Err(ImageError { offset: body_start, what: "the record's length does not match its contents".into() });
    }
    input.check_sum()?;
    Ok(rec)
}

/// The store a backup and a journal describe: the backup's tree, then every
/// journal record after it (a snapshot replaces the state; changes apply in
/// order). Revisions and file revisions come out exactly as recorded.
pub fn restore(backup: Option<&Backup>, journal: Option<&Journal>, limits: HistoryLimits) -> Result<Store, ImageError> {
    let records = journal.map(|j| j.records.as_slice()).unwrap_or_default();
    let mut store = match backup {
        Some(b) => {
            let mut store = Store::at(b.tree.clone(), limits);
            store.set_leases(b.leases.clone());
            store
        }
        None => match records.first() {
            Some(Record::Snapshot(s)) => Store::at(s.clone(), limits),
            _ => {
                return Err(ImageError { offset: 0, what: "nothing to restore: no backup and an empty journal".into() })
            }
        },
    };
    for r in records {
        match r {
            Record::Snapshot(s) if s.rev() >= store.rev() => store = Store::at(s.clone(), limits),
            Record::Snapshot(_) => {}
            Record::Change(e) if e.rev <= store.rev() => {}
            Record::Change(e) if e.rev > store.rev() + 1 => {
                let what = format!("the journal has no revisions {}..{} after the backup", store.rev() + 1, e.rev - 1);
                return Err(ImageError { offset: 0, what });
            }
            Record::Change(e) => store.replay(e)?,
        }
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Command, EventKind};
    use crate::tree::File;
    use crate::Glob;

    fn sample(n: usize) -> Store {
        let mut s = Store::new(HistoryLimits { revs: 50, bytes: usize::MAX });
        for i in 0..n {
            let path = format!("/d{}/f{}", i % 4, i % 9);
            if i % 7 == 3 {
                s.apply(&Command::Del { path, rev: -1 });
            } else if i % 11 == 5 {
                s.apply(&Command::Nop);
            } else {
                s.apply(&Command::Set { path, rev: -1, body: Body::from(vec![i as u8; i % 5]) });
            }
        }
        s
    }

    fn backup_of(s: &Store) -> Vec<u8> {
        let mut w = BackupWriter::new(Vec::new(), "prod", s.rev()).unwrap();
        for (path, f) in s.current().files() {
            w.file(&path, f.rev, &f.body).unwrap();
        }
        w.finish().unwrap()
    }

    fn dump(s: &Store) -> Vec<(String, File)> {
        s.current().walk(&Glob::parse("/**").unwrap())
    }

    #[test]
    fn backup_round_trips() {
        let s = sample(100);
        let b = read_backup(&backup_of(&s)[..]).unwrap();
        assert_eq!((b.cluster.as_str(), b.tree.rev()), ("prod", s.rev()));
        let t = restore(Some(&b), None, HistoryLimits::default()).unwrap();
        assert_eq!((t.rev(), dump(&t)), (s.rev(), dump(&s)));
    }

    #[test]
    fn a_backup_keeps_the_leases_and_only_the_files_it_holds() {
        let mut s = sample(40);
        s.apply(&Command::Grant { id: 7, ttl: 30 });
        s.apply(&Command::Grant { id: 9, ttl: 5 });
        s.apply(&Command::SetLeased { path: "/svc/a".into(), rev: 0, body: Body::from(b"up".to_vec()), lease: 7 });
        let mut w = BackupWriter::new(Vec::new(), "prod", s.rev()).unwrap();
        for (path, f) in s.current().files() {
            w.file(&path, f.rev, &f.body).unwrap();
        }
        // A file attached after the walk (not in the backup) is skipped.
        w.lease(7, 30, &["/svc/a".into(), "/svc/later".into()]).unwrap();
        w.lease(9, 5, &[]).unwrap();
        let bytes = w.finish().unwrap();
        let b = read_backup(&bytes[..]).unwrap();
        let t = restore(Some(&b), None, HistoryLimits::default()).unwrap();
        assert_eq!(t.leases(), s.leases());
        assert_eq!(t.leases().lease_of("/svc/a"), Some(7));
        // A revoke on the restored store deletes the file, as before.
        let mut t = t;
        assert!(matches!(t.apply(&Command::Revoke { id: 7 }), crate::Outcome::Batch(d) if d.len() == 1));
        assert!(t.current().get("/svc/a").unwrap().is_none());
        // A lease record that breaks the lease rules is refused with its offset.
        let mut w = BackupWriter::new(Vec::new(), "prod", s.rev()).unwrap();
        w.lease(0, 30, &[]).unwrap();
        assert!(read_backup(&w.finish().unwrap()[..]).err().is_some_and(|e| e.what.contains("lease")));
    }

    #[test]
    fn every_truncation_and_bit_flip_of_a_backup_is_rejected() {
        let bytes = backup_of(&sample(30));
        for len in 0..bytes.len() {
            let e = read_backup(&bytes[..len]).err().unwrap_or_else(|| panic!("truncated to {len} accepted"));
            assert!(e.offset <= len, "{e}");
        }
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(read_backup(&b[..]).is_err(), "flip at {i} accepted");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(read_backup(&longer[..]).err().unwrap().what.contains("trailing"));
        assert!(read_backup(&b"DZBACKU2"[..]).err().unwrap().what.contains("unknown version"));
    }

    fn journal_of(s: &Store, base: Rev) -> Vec<u8> {
        let mut j = journal_header("prod");
        let snap = s.snapshot(Some(base)).unwrap();
        let files = snap.files();
        j.extend(journal_snapshot(base, files.iter().map(|(p, f)| (p.as_str(), f.rev, &f.body[..]))));
        let all = Glob::parse("/**").unwrap();
        let mut next = base + 1;
        while let Ok(Some(e)) = s.first_event(next, &all) {
            j.extend(journal_change(&e));
            next = e.rev + 1;
        }
        j
    }

    #[test]
    fn backup_plus_journal_restores_the_last_revision() {
        let s = sample(120);
        let base = s.rev() - 40;
        let old = {
            let snap = s.snapshot(Some(base)).unwrap();
            let mut w = BackupWriter::new(Vec::new(), "prod", base).unwrap();
            for (p, f) in snap.files() {
                w.file(&p, f.rev, &f.body).unwrap();
            }
            read_backup(&w.finish().unwrap()[..]).unwrap()
        };
        let j = read_journal(&journal_of(&s, base - 5)).unwrap();
        assert!(j.torn.is_none());
        let t = restore(Some(&old), Some(&j), HistoryLimits { revs: 50, bytes: usize::MAX }).unwrap();
        assert_eq!((t.rev(), dump(&t)), (s.rev(), dump(&s)));
        // The journal alone (it starts with a snapshot) restores too.
        let alone = restore(None, Some(&j), HistoryLimits::default()).unwrap();
        assert_eq!(dump(&alone), dump(&s));
        // A backup newer than the journal's end still restores to the backup.
        let newer = read_backup(&backup_of(&s)[..]).unwrap();
        assert_eq!(restore(Some(&newer), Some(&j), HistoryLimits::default()).unwrap().rev(), s.rev());
    }

    #[test]
    fn a_torn_tail_is_dropped_and_damage_elsewhere_refused() {
        let s = sample(60);
        let bytes = journal_of(&s, s.rev() - 20);
        let whole = read_journal(&bytes).unwrap();
        for cut in 1..30 {
            let j = read_journal(&bytes[..bytes.len() - cut]).unwrap();
            assert!(j.torn.is_some(), "cut {cut}");
            assert_eq!(j.records.len(), whole.records.len() - 1, "cut {cut}");
            assert!(j.valid_len < bytes.len() - cut);
        }
        // A flipped byte inside an early record is corruption, not a torn tail.
        let mut flipped = bytes.clone();
        let header = journal_header("prod").len();
        flipped[header + 20] ^= 0x40;
        assert!(read_journal(&flipped).is_err());
        // A journal with a missing revision is refused.
        let mut gap = journal_header("prod");
        gap.extend(journal_snapshot(5, std::iter::empty()));
        gap.extend(journal_change(&Event { rev: 7, path: "/x".into(), body: Body::default(), kind: EventKind::Set }));
        assert!(read_journal(&gap).err().unwrap().what.contains("missing"));
    }
}
