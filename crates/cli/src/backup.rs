//! `doozer backup` and `doozer journal`: a consistent snapshot at one
//! revision, and a journal that follows every change after it. Formats in
//! doozer-store's `backup` module; restoring is `doozerd --restore`.

use crate::commands::{dial, start_rev, watch_from};
use crate::flags::Flags;
use crate::Failure;
use doozer_client::{Client, ErrCode, Watch};
use doozer_store::{journal_change, journal_header, journal_snapshot, read_journal, BackupWriter, Event, EventKind};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::time::Duration;

/// WALKs kept in flight at once: a backup streams, it does not wait a round trip per file.
const WINDOW: usize = 64;

fn io_err(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure::Message(format!("{what}: {e}"))
}

/// Every file at `rev`, in order, handed to `each` as it arrives. WALK at a
/// fixed revision is one consistent tree however long it takes (the server
/// keeps the listing for the connection).
async fn walk_all(
    c: &Client,
    rev: i64,
    mut each: impl FnMut(doozer_client::Event) -> Result<(), Failure>,
) -> Result<u64, Failure> {
    let mut offset = 0usize;
    loop {
        let calls: Vec<_> = (offset..offset + WINDOW)
            .map(|o| {
                let c = c.clone();
                tokio::spawn(async move { c.walk("/**", o as i32, Some(rev)).await })
            })
            .collect();
        for call in calls {
            match call.await.map_err(|e| Failure::Message(e.to_string()))? {
                Ok(e) => each(e)?,
                Err(e) if e.code() == Some(ErrCode::Range) => return Ok(offset as u64),
                Err(e) => return Err(e.into()),
            }
            offset += 1;
        }
    }
}

async fn cluster_name(c: &Client, rev: i64) -> Result<String, Failure> {
    let (name, _) = c.get("/ctl/name", Some(rev)).await?;
    Ok(String::from_utf8_lossy(&name).into_owned())
}

/// `doozer backup FILE`: the tree at the current revision (or -r), to FILE or
/// "-" for stdout. A file is written beside FILE and renamed when complete.
pub async fn backup(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let c = dial(&flags).await?;
    let rev = start_rev(&c, &flags).await?;
    let name = cluster_name(&c, rev).await?;
    let target = &args[0];
    if target == "-" {
        let mut w =
            BackupWriter::new(BufWriter::new(std::io::stdout().lock()), &name, rev).map_err(io_err("stdout"))?;
        walk_all(&c, rev, |e| w.file(&e.path, e.rev, &e.body).map_err(io_err("stdout"))).await?;
        write_leases(&c, &mut w, "stdout").await?;
        w.finish().map_err(io_err("stdout"))?;
        return Ok(());
    }
    let tmp = format!("{target}.partial");
    let file = File::create(&tmp).map_err(io_err(&tmp))?;
    let mut w = BackupWriter::new(BufWriter::new(file), &name, rev).map_err(io_err(&tmp))?;
    let files = walk_all(&c, rev, |e| w.file(&e.path, e.rev, &e.body).map_err(io_err(&tmp))).await?;
    let leases = write_leases(&c, &mut w, &tmp).await?;
    let file = w.finish().map_err(io_err(&tmp))?.into_inner().map_err(|e| Failure::Message(format!("{tmp}: {e}")))?;
    file.sync_all().map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, target).map_err(io_err(target))?;
    eprintln!("backed up revision {rev}: {files} files and {leases} leases to {target}");
    crate::output::Out { json: flags.json }.rev(None, rev)?;
    Ok(())
}

/// The lease table as it is now (after the walk): each lease with its files.
/// A server without leases has none to back up.
async fn write_leases<W: Write>(c: &Client, w: &mut BackupWriter<W>, what: &str) -> Result<usize, Failure> {
    let leases = match c.leases().await {
        Ok(l) => l,
        Err(e) if e.code() == Some(ErrCode::UnknownVerb) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut written = 0;
    for l in leases {
        let files = match c.lease_files(l.id).await {
            Ok(f) => f,
            // Ended since it was listed.
            Err(e) if e.code() == Some(ErrCode::NoEnt) => continue,
            Err(e) => return Err(e.into()),
        };
        let ttl = u32::try_from(l.granted).unwrap_or(u32::MAX);
        w.lease(l.id as u64, ttl, &files).map_err(io_err(what))?;
        written += 1;
    }
    Ok(written)
}

/// A snapshot record of the tree at the current revision; returns that
/// revision. A node that is catching up may move its history window past
/// the revision while the walk goes on (TOO_LATE): then it starts again at
/// the node's new revision.
async fn snapshot_record(c: &Client) -> Result<(i64, Vec<u8>), Failure> {
    let mut tries = 0;
    loop {
        let rev = c.rev().await?;
        let mut files = Vec::new();
        let walked = walk_all(c, rev, |e| {
            files.push((e.path, e.rev, e.body));
            Ok(())
        })
        .await;
        match walked {
            Ok(_) => {
                let rec = journal_snapshot(rev, files.iter().map(|(p, r, b)| (p.as_str(), *r, &b[..])));
                return Ok((rev, rec));
            }
            Err(Failure::Error(e)) if e.code() == Some(ErrCode::TooLate) && tries < 10 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// How often unsynced journal entries are flushed to disk at the latest.
const SYNC_EVERY: Duration = Duration::from_millis(50);
const SYNC_ENTRIES: usize = 256;

/// `doozer journal FILE`: appends every change to FILE, starting with a
/// snapshot; restarted, it resumes after the last whole entry.
pub async fn journal(flags: Flags, args: Vec<String>) -> Result<(), Failure> {
    let path = &args[0];
    let c = dial(&flags).await?;
    let mut next = match std::fs::read(path) {
        Ok(bytes) => resume(path, &bytes)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let name = cluster_name(&c, c.rev().await?).await?;
            let (rev, rec) = snapshot_record(&c).await?;
            let mut f = File::create(path).map_err(io_err(path))?;
            f.write_all(&journal_header(&name)).and_then(|_| f.write_all(&rec)).map_err(io_err(path))?;
            f.sync_all().map_err(io_err(path))?;
            eprintln!("journal {path}: snapshot at revision {rev}");
            rev + 1
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let mut file = OpenOptions::new().append(true).open(path).map_err(io_err(path))?;
    let mut watch = watch_from(&flags, c.clone(), "/**", next)?;
    let mut unsynced = 0usize;
    loop {
        let got = if unsynced > 0 {
            match tokio::time::timeout(SYNC_EVERY, watch.next()).await {
                Ok(r) => r,
                Err(_) => {
                    file.sync_data().map_err(io_err(path))?;
                    unsynced = 0;
                    continue;
                }
            }
        } else {
            watch.next().await
        };
        match got {
            // `/**` matches every revision's event, NOPs included: a jump means
            // the node skipped changes (a server without the catch-up fix),
            // and a journal with a gap cannot be restored.
            Ok(e) if e.rev != next => {
                eprintln!(
                    "journal {path}: expected revision {next} but the cluster sent {}: changes were missed; \
                     appending a fresh snapshot",
                    e.rev
                );
                (next, watch) = fresh_snapshot(&flags, &mut file, path).await?;
                unsynced = 0;
            }
            Ok(e) => {
                let kind = if e.is_set() {
                    EventKind::Set
                } else if e.is_del() {
                    EventKind::Del
                } else {
                    EventKind::Nop
                };
                let event =
                    Event { rev: e.rev, path: e.path.as_str().into(), body: doozer_store::Body::from(&e.body), kind };
                file.write_all(&journal_change(&event)).map_err(io_err(path))?;
                next = e.rev + 1;
                unsynced += 1;
                if unsynced >= SYNC_ENTRIES {
                    file.sync_data().map_err(io_err(path))?;
                    unsynced = 0;
                }
            }
            Err(e) if e.code() == Some(ErrCode::TooLate) => {
                eprintln!(
                    "journal {path}: the cluster's history no longer holds revision {next}; appending a fresh snapshot"
                );
                (next, watch) = fresh_snapshot(&flags, &mut file, path).await?;
                unsynced = 0;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Appends a snapshot of the current tree (synced) and returns the revision
/// to follow from and a watch from there.
async fn fresh_snapshot(flags: &Flags, file: &mut File, path: &str) -> Result<(i64, Watch), Failure> {
    let c = dial(flags).await?;
    let (rev, rec) = snapshot_record(&c).await?;
    file.write_all(&rec).and_then(|_| file.sync_data()).map_err(io_err(path))?;
    eprintln!("journal {path}: snapshot at revision {rev}");
    Ok((rev + 1, watch_from(flags, c, "/**", rev + 1)?))
}

/// Checks an existing journal, cuts off a torn last entry, and returns the
/// revision to follow from.
fn resume(path: &str, bytes: &[u8]) -> Result<i64, Failure> {
    let j = read_journal(bytes).map_err(|e| Failure::Message(format!("{path}: {e}; not appending to it")))?;
    if let Some(torn) = &j.torn {
        eprintln!("journal {path}: dropping an incomplete last entry ({torn})");
        let f = OpenOptions::new().write(true).open(path).map_err(io_err(path))?;
        f.set_len(j.valid_len as u64).and_then(|_| f.sync_all()).map_err(io_err(path))?;
    }
    let last =
        j.records.last().map(|r| r.rev()).ok_or_else(|| Failure::Message(format!("{path}: the journal is empty")))?;
    eprintln!("journal {path}: resuming after revision {last}");
    Ok(last + 1)
}
