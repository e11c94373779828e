//! Backup, journal and restore through the real binaries: revisions survive,
//! a journal survives being killed, damaged files are refused, and a backup
//! taken from a follower under load is one consistent revision.

mod common;

use common::{client, cluster, dump, leader_index, Doozerd};
use std::process::Command;

/// A tree without /ctl (which a restored cluster rebuilds for its own members).
async fn data(addr: &str, rev: i64) -> Vec<(String, i64, bytes::Bytes)> {
    dump(addr, rev).await.into_iter().filter(|(p, _, _)| !p.starts_with("/ctl/")).collect()
}

fn run_doozer(uri: &str, args: &[&str]) -> common::Output {
    common::doozer(uri, args, b"")
}

/// Writes a mix of files, binary and empty bodies, deletes; returns the last revision.
async fn fill(addr: &str, n: usize) -> i64 {
    let c = client(addr).await;
    let mut last = 0;
    for i in 0..n {
        let path = format!("/data/d{}/f{}", i % 13, i % 101);
        last = if i % 9 == 4 {
            c.del(&path, -1).await.unwrap();
            c.rev().await.unwrap()
        } else {
            let body: Vec<u8> = (0..(i % 50)).map(|b| (b * 37 + i) as u8).collect();
            c.set(&path, -1, body).await.unwrap()
        };
    }
    last
}

#[tokio::test]
async fn backup_then_restore_keeps_files_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup");
    let d = Doozerd::start(&["-c", "prod"]);
    let last = fill(&d.addr, 500).await;
    let out = run_doozer(&d.uri(), &["backup", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rev: i64 = out.out().trim().parse().unwrap();
    assert!(rev >= last);
    let restored = Doozerd::start(&["--restore", file.to_str().unwrap()]);
    let c = client(&restored.addr).await;
    // Since the load only /ctl has changed, so the data now is the data at `rev`.
    let now = c.rev().await.unwrap();
    assert_eq!(data(&restored.addr, now).await, data(&d.addr, rev).await);
    // The cluster name comes from the backup; /ctl names only the new member.
    assert_eq!(c.get("/ctl/name", None).await.unwrap().0, "prod".as_bytes());
    let members = c.getdir_all("/ctl/node", None).await.unwrap();
    assert_eq!(members, vec![String::from_utf8(c.self_id().await.unwrap().to_vec()).unwrap()]);
    // The store was loaded at exactly `rev`: the next change is rev + 1.
    let next = c.wait("/**", rev + 1).await.unwrap();
    assert_eq!(next.rev, rev + 1);
    assert!(next.path.starts_with("/ctl/"), "{next:?}");
    // And it takes writes, and other nodes attach as usual.
    c.set("/after", 0, "x").await.unwrap();
    let joiner = Doozerd::start(&["-c", "prod", "-a", &restored.addr]);
    let now = c.rev().await.unwrap();
    assert_eq!(data(&joiner.addr, now).await, data(&restored.addr, now).await);
}

#[tokio::test]
async fn a_restored_tree_does_not_stay_in_the_raft_log() {
    // 2 MB of files: far below the log's bound (64 MB), so only the restore's
    // own compaction takes the Load entry (the whole tree) out of the log.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup");
    let d = Doozerd::start(&[]);
    let c = client(&d.addr).await;
    for i in 0..400 {
        c.set(&format!("/big/{i}"), 0, vec![b'x'; 5000]).await.unwrap();
    }
    assert_eq!(run_doozer(&d.uri(), &["backup", file.to_str().unwrap()]).code, 0);
    let restored = Doozerd::start(&["-w", "127.0.0.1:0", "--restore", file.to_str().unwrap()]);
    let web = restored.web.clone().expect("a web address");
    let http = reqwest::Client::new();
    let log_bytes = || async {
        let text = http.get(format!("http://{web}/metrics")).send().await.unwrap().text().await.unwrap();
        let line = text.lines().find_map(|l| l.strip_prefix("doozer_raft_log_bytes ")).map(str::to_string);
        line.and_then(|n| n.parse::<usize>().ok()).expect("doozer_raft_log_bytes in /metrics")
    };
    common::eventually("the Load entry to leave the log", || async { log_bytes().await < 100_000 }).await;
    let c = client(&restored.addr).await;
    assert_eq!(c.get("/big/399", None).await.unwrap().0, vec![b'x'; 5000]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_and_restarted_journal_restores_exactly_the_last_revision() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let d = Doozerd::start(&["-hist", "20000"]);
    fill(&d.addr, 50).await;
    let start_journal = || {
        Command::new(env!("CARGO_BIN_EXE_doozer"))
            .args(["-a", &d.uri(), "journal", journal.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut j = start_journal();
    common::wait_until("the journal's snapshot", || journal.exists());
    // 10,000 changes from 8 concurrent writers; the journal is killed halfway.
    let mut last = 0;
    for half in 0..2 {
        let writers: Vec<_> = (0..8)
            .map(|w| {
                let addr = d.addr.clone();
                tokio::spawn(async move {
                    let c = client(&addr).await;
                    let mut last = 0;
                    for i in 0..625 {
                        let path = format!("/j/{w}/{}", i % 17);
                        last = last.max(if i % 10 == 9 {
                            c.del(&path, -1).await.unwrap();
                            0
                        } else {
                            c.set(&path, -1, format!("{half}-{w}-{i}")).await.unwrap()
                        });
                    }
                    last
                })
            })
            .collect();
        for w in writers {
            last = last.max(w.await.unwrap());
        }
        if half == 0 {
            j.kill().unwrap();
            j.wait().unwrap();
            j = start_journal();
        }
    }
    last = last.max(client(&d.addr).await.rev().await.unwrap());
    common::wait_until("the journal to reach the last revision", || {
        std::fs::read(&journal)
            .ok()
            .and_then(|b| doozer_store::read_journal(&b).ok())
            .and_then(|j| j.records.last().map(|r| r.rev()))
            .is_some_and(|r| r >= last)
    });
    j.kill().unwrap();
    j.wait().unwrap();
    let restored = Doozerd::start(&["-hist", "20000", "--journal", journal.to_str().unwrap()]);
    assert_eq!(data(&restored.addr, last).await, data(&d.addr, last).await);
    let first_new = client(&restored.addr).await.wait("/**", last + 1).await.unwrap();
    assert_eq!(first_new.rev, last + 1);
    assert!(first_new.path.starts_with("/ctl/"));
}

#[tokio::test]
async fn damaged_backups_are_refused_with_the_offset() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup");
    let d = Doozerd::start(&[]);
    fill(&d.addr, 100).await;
    assert_eq!(run_doozer(&d.uri(), &["backup", file.to_str().unwrap()]).code, 0);
    let good = std::fs::read(&file).unwrap();
    let truncated = dir.path().join("truncated");
    std::fs::write(&truncated, &good[..good.len() - 100]).unwrap();
    let flipped = dir.path().join("flipped");
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x20;
    std::fs::write(&flipped, &bad).unwrap();
    for (f, why) in [(&truncated, "truncated"), (&flipped, "")] {
        let out = Command::new(env!("CARGO_BIN_EXE_doozerd"))
            .args(["-l", "127.0.0.1:0", "-w", "false", "--restore", f.to_str().unwrap()])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("at byte ") && stderr.contains(why), "{stderr}");
        assert!(!stderr.contains("serving"), "nothing started: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_from_a_follower_under_load_is_one_revision() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup");
    let nodes = cluster(3, &["-hist", "20000"]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    fill(&nodes[leader].addr, 2000).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (addr, stop) = (nodes[leader].addr.clone(), stop.clone());
        tokio::spawn(async move {
            let c = client(&addr).await;
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                c.set(&format!("/data/d{}/f{}", i % 13, i % 101), -1, format!("load {i}")).await.unwrap();
                i += 1;
            }
            i
        })
    };
    let uri = format!("doozer:?ca={}", nodes[follower].addr);
    let out = tokio::task::spawn_blocking(move || run_doozer(&uri, &["backup", file.to_str().unwrap()])).await.unwrap();
    let after = client(&nodes[leader].addr).await.rev().await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.unwrap();
    assert_eq!(out.code, 0, "{}", out.stderr);
    let b = doozer_store::read_backup(&std::fs::read(dir.path().join("backup")).unwrap()[..]).unwrap();
    let rev = b.tree.rev();
    assert!(after > rev, "writes went on while the backup ran (backup at {rev}, cluster at {after})");
    let in_backup: Vec<(String, i64, bytes::Bytes)> =
        b.tree.files().into_iter().map(|(p, f)| (p, f.rev, f.body.to_bytes())).collect();
    assert_eq!(in_backup, dump(&nodes[leader].addr, rev).await, "the backup is the tree at revision {rev}");
}

#[tokio::test]
async fn a_journal_that_fell_out_of_the_history_takes_a_fresh_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let d = Doozerd::start(&["-hist", "50"]);
    let c = client(&d.addr).await;
    c.set("/a", 0, "1").await.unwrap();
    // Runs the journal until `done(what it said on stderr)` holds, then stops it.
    let run_until = |what: &str, done: &dyn Fn(&str) -> bool| {
        let log = dir.path().join("journal.err");
        let mut child = Command::new(env!("CARGO_BIN_EXE_doozer"))
            .args(["-a", &d.uri(), "journal", journal.to_str().unwrap()])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        common::wait_until(what, || done(&std::fs::read_to_string(&log).unwrap_or_default()));
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::read_to_string(&log).unwrap()
    };
    let journal_reaches = |rev: i64| {
        std::fs::read(&journal)
            .ok()
            .and_then(|b| doozer_store::read_journal(&b).ok())
            .is_some_and(|j| j.torn.is_none() && j.records.last().is_some_and(|r| r.rev() >= rev))
    };
    // A first run records a snapshot.
    let start = c.rev().await.unwrap();
    run_until("the first snapshot", &|_| journal_reaches(start));
    // 200 changes while it is stopped: far more than the 50 revisions of history.
    let mut last = 0;
    for i in 0..200 {
        last = c.set(&format!("/b/{}", i % 7), -1, format!("{i}")).await.unwrap();
    }
    let said =
        run_until("a fresh snapshot", &|said| said.contains("appending a fresh snapshot") && journal_reaches(last));
    assert!(said.contains("no longer holds revision"), "{said}");
    // The journal restores to the current state: no silent gap.
    let j = doozer_store::read_journal(&std::fs::read(&journal).unwrap()).unwrap();
    let store = doozer_store::restore(None, Some(&j), doozer_store::HistoryLimits::default()).unwrap();
    assert_eq!(store.rev(), last);
    let restored: Vec<(String, i64, bytes::Bytes)> =
        store.current().files().into_iter().map(|(p, f)| (p, f.rev, f.body.to_bytes())).collect();
    assert_eq!(restored, dump(&d.addr, last).await);
}

/// The reported failure, reproduced with the default -hist: a journal following a
/// follower that is paused under fast small writes (so it catches up by a
/// snapshot) must stay restorable: it was left with a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_on_a_follower_that_catches_up_by_snapshot_stays_restorable() {
    let dir = tempfile::tempdir().unwrap();
    let journal = dir.path().join("journal");
    let nodes = cluster(3, &[]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let lagging = (0..3).find(|&i| i != leader).unwrap();
    let log = dir.path().join("journal.err");
    let mut child = Command::new(env!("CARGO_BIN_EXE_doozer"))
        .args(["-a", &nodes[lagging].uri(), "journal", journal.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let journal_reaches = |rev: i64| {
        std::fs::read(&journal)
            .ok()
            .and_then(|b| doozer_store::read_journal(&b).ok())
            .is_some_and(|j| j.torn.is_none() && j.records.last().is_some_and(|r| r.rev() >= rev))
    };
    let start = client(&nodes[leader].addr).await.set("/before", -1, "x").await.unwrap();
    common::wait_until("the journal's first entries", || journal_reaches(start));
    nodes[lagging].signal("STOP");
    common::flood(&nodes[leader].addr, "/w", 50, 64, 2.0).await;
    nodes[lagging].signal("CONT");
    let last = client(&nodes[leader].addr).await.set("/after", -1, "y").await.unwrap();
    let began = std::time::Instant::now();
    while !journal_reaches(last) {
        if began.elapsed() > common::DEADLINE {
            let _ = child.kill();
            panic!("the journal did not reach {last}; it said: {}", std::fs::read_to_string(&log).unwrap());
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let said = std::fs::read_to_string(&log).unwrap();
    let j = doozer_store::read_journal(&std::fs::read(&journal).unwrap()).unwrap();
    let store = doozer_store::restore(None, Some(&j), doozer_store::HistoryLimits::default())
        .unwrap_or_else(|e| panic!("the journal does not restore: {e}; the journal said: {said}"));
    assert!(store.rev() >= last);
    let restored: Vec<(String, i64, bytes::Bytes)> =
        store.snapshot(Some(last)).unwrap().files().into_iter().map(|(p, f)| (p, f.rev, f.body.to_bytes())).collect();
    assert_eq!(restored, dump(&nodes[leader].addr, last).await, "the journal holds the tree at {last}");
}

#[tokio::test]
async fn a_restore_keeps_the_leases_with_a_fresh_ttl_and_their_files_attached() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("backup");
    let d = Doozerd::start(&[]);
    let c = client(&d.addr).await;
    let held = c.grant(3).await.unwrap();
    c.set_leased("/svc/a", 0, "up", held).await.unwrap();
    let idle = c.grant(600).await.unwrap();
    c.set("/plain", 0, "x").await.unwrap();
    let out = run_doozer(&d.uri(), &["backup", file.to_str().unwrap()]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stderr.contains("2 leases"), "{}", out.stderr);
    drop(d);
    let restored = Doozerd::start(&["--restore", file.to_str().unwrap()]);
    let r = client(&restored.addr).await;
    let ids: Vec<i64> = r.leases().await.unwrap().iter().map(|l| l.id).collect();
    let mut want = vec![held, idle];
    want.sort();
    assert_eq!(ids, want);
    assert_eq!(r.lease_files(held).await.unwrap(), ["/svc/a"]);
    let info = r.lease_ttl(held).await.unwrap();
    assert!(matches!(info.remaining, Some(2..=3)), "counted afresh: {info:?}");
    // Its holder may keep it alive on the restored cluster; left alone it ends.
    assert_eq!(r.keep_alive(held).await.unwrap(), 3);
    common::eventually("the restored lease to expire", || async {
        r.get_file("/svc/a", None).await.unwrap().is_none()
    })
    .await;
    assert_eq!(r.get("/plain", None).await.unwrap().0, "x");
    assert!(r.lease_ttl(idle).await.is_ok());
}
