//! Durable nodes (`--data-dir`, issue 15), as processes: every node killed
//! at once and restarted keeps every acknowledged write; a torn log tail is
//! cut off and the node goes on; damage stops it with the file and offset;
//! a data dir is one node's, of one cluster, used by one process; a node
//! whose data dir was lost rejoins as a new member. Default settings except
//! where a test says why.

mod common;

use common::{client, dump, voters_are, Doozerd, DEADLINE};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Starts a durable node on `addr` (`127.0.0.1:0` for a new one) with `dir`.
fn durable(addr: &str, dir: &Path, extra: &[&str]) -> Doozerd {
    let mut args = vec!["-l", addr, "--data-dir", dir.to_str().unwrap()];
    args.extend_from_slice(extra);
    Doozerd::start(&args)
}

/// A three-node durable cluster: the nodes and their data dirs.
async fn durable_cluster(extra: &[&str]) -> (Vec<Doozerd>, Vec<tempfile::TempDir>) {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = vec![durable("127.0.0.1:0", dirs[0].path(), extra)];
    let seed = nodes[0].addr.clone();
    for d in &dirs[1..] {
        let mut args = vec!["-a", seed.as_str()];
        args.extend_from_slice(extra);
        nodes.push(durable("127.0.0.1:0", d.path(), &args));
    }
    voters_are(&seed, 3).await;
    (nodes, dirs)
}

/// Runs doozerd expecting it to fail at start-up; returns its stderr.
fn start_fails(args: &[&str]) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_doozerd"))
        .args(["-w", "false"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("doozerd {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "doozerd {args:?} should have failed: {err}");
    err
}

/// Writes through `addr` until one succeeds; returns its revision.
async fn write_until_ok(addr: &str, path: &str) -> i64 {
    let start = Instant::now();
    loop {
        if let Ok(c) = doozer_client::Client::connect(addr).await {
            if let Ok(rev) = c.set(path, -1, "x").await {
                return rev;
            }
        }
        assert!(start.elapsed() < DEADLINE * 3, "timed out writing {path} through {addr}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every node has applied `rev`.
async fn all_reach(addrs: &[String], rev: i64) {
    common::eventually(&format!("every node at rev {rev}"), || async {
        for a in addrs {
            match doozer_client::Client::connect(a).await {
                Ok(c) if c.rev().await.is_ok_and(|r| r >= rev) => {}
                _ => return false,
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_every_node_during_writes_loses_no_acknowledged_write() {
    let (mut nodes, dirs) = durable_cluster(&[]).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    // 8 clients, 10,000 writes in all, spread over the three nodes; every
    // acknowledgement is kept: path -> revision.
    let acked: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..8 {
        let (acked, addr) = (acked.clone(), addrs[w % 3].clone());
        writers.push(tokio::spawn(async move {
            let Ok(c) = doozer_client::Client::connect(&addr).await else { return };
            for i in 0..1250 {
                let path = format!("/d/{w}/{i}");
                match c.set(&path, 0, format!("{w}.{i}")).await {
                    Ok(rev) => {
                        acked.lock().unwrap().insert(path, rev);
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    common::eventually("half the writes acknowledged", || async { acked.lock().unwrap().len() >= 5000 }).await;
    // What each node has applied, at the latest: it must not answer from
    // less after the restart.
    let mut served = Vec::new();
    for a in &addrs {
        served.push(client(a).await.rev().await.unwrap());
    }
    for n in nodes.iter_mut() {
        n.kill();
    }
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    let last_acked = acked.values().copied().max().unwrap();
    println!("{} writes acknowledged before the kill, the last at rev {last_acked}", acked.len());

    let mut nodes: Vec<Doozerd> = addrs.iter().zip(&dirs).map(|(a, d)| durable(a, d.path(), &[])).collect();
    for (a, before) in addrs.iter().zip(&served) {
        let now = client(a).await.rev().await.unwrap();
        assert!(now >= *before, "{a} answered at rev {now} after the restart, {before} before it");
    }
    voters_are(&addrs[0], 3).await;
    // The same three members, under their old ids: nobody joined anew.
    let after = write_until_ok(&addrs[1], "/after/restart").await;
    all_reach(&addrs, after).await;
    let tree = dump(&addrs[0], after).await;
    for a in &addrs[1..] {
        assert_eq!(dump(a, after).await, tree, "the trees at {after} differ");
    }
    let found: BTreeMap<&str, i64> = tree.iter().map(|(p, rev, _)| (p.as_str(), *rev)).collect();
    for (path, rev) in &acked {
        assert_eq!(found.get(path.as_str()), Some(rev), "acknowledged {path} at {rev}");
    }
    // A watch from before the crash resumes with no gap: every acknowledged
    // write after `from` is told, in order.
    let from = last_acked - 500;
    let c = client(&addrs[2]).await;
    let mut rev = from;
    let mut told = BTreeMap::new();
    while rev <= last_acked {
        let e = c.wait("/d/**", rev).await.expect("wait from before the crash");
        told.insert(e.path.clone(), e.rev);
        rev = e.rev + 1;
    }
    for (path, rev) in acked.iter().filter(|(_, r)| **r >= from) {
        assert_eq!(told.get(path), Some(rev), "the watch from {from} missed {path} at {rev}");
    }
    nodes.iter_mut().for_each(Doozerd::kill);
}

/// The newest log segment in a data dir.
fn newest_segment(dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir.join("wal")).unwrap().map(|e| e.unwrap().path()).collect();
    segs.sort();
    segs.pop().expect("a segment")
}

/// Where the last frame of a segment begins and where it ends (format:
/// `consensus/wal.rs`; zeros after the frames are preallocated room).
fn last_frame(seg: &[u8]) -> (usize, usize) {
    let (mut at, mut last) = (16, 16);
    while let Some(head) = seg.get(at..at + 12) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len == 0 || at + 12 + len > seg.len() {
            break;
        }
        (last, at) = (at, at + 12 + len);
    }
    (last, at)
}

#[tokio::test]
async fn a_torn_log_tail_is_cut_off_and_damage_before_it_stops_the_node() {
    let (mut nodes, dirs) = durable_cluster(&[]).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let logs = tempfile::tempdir().unwrap();
    let c = client(&addrs[0]).await;
    for i in 0..200 {
        c.set(&format!("/t/{i}"), 0, "v").await.unwrap();
    }
    let restart = |i: usize, log: &str| {
        let args = ["-l", &addrs[i], "--data-dir", dirs[i].path().to_str().unwrap()];
        Doozerd::start_logged(&args, &logs.path().join(log))
    };
    // A torn tail, as a crash in the middle of a write leaves it: part of a
    // frame after the last whole one.
    nodes[2].kill();
    let seg = newest_segment(dirs[2].path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let (last, end) = last_frame(&bytes);
    let frame = bytes[last..end].to_vec();
    bytes[end..end + frame.len() - 5].copy_from_slice(&frame[..frame.len() - 5]);
    std::fs::write(&seg, &bytes).unwrap();
    nodes[2] = restart(2, "torn.log");
    let rev = write_until_ok(&addrs[0], "/t/after").await;
    all_reach(&addrs, rev).await;
    assert_eq!(dump(&addrs[2], rev).await, dump(&addrs[0], rev).await);
    let said = std::fs::read_to_string(logs.path().join("torn.log")).unwrap();
    assert!(said.contains("cut at byte"), "the cut is logged: {said}");
    voters_are(&addrs[0], 3).await;

    // A disk that lost the last write it had synced: the node's log goes
    // back, it had acknowledged what it lost, and the leader must catch it
    // up again rather than stop (openraft's loosen-follower-log-revert).
    nodes[2].kill();
    let seg = newest_segment(dirs[2].path());
    let (_, end) = last_frame(&std::fs::read(&seg).unwrap());
    std::fs::OpenOptions::new().write(true).open(&seg).unwrap().set_len(end as u64 - 7).unwrap();
    nodes[2] = restart(2, "reverted.log");
    let rev = write_until_ok(&addrs[0], "/t/reverted").await;
    all_reach(&addrs, rev).await;
    assert_eq!(dump(&addrs[2], rev).await, dump(&addrs[0], rev).await);
    assert!(nodes.iter_mut().all(|n| n.is_running()), "every node is still up");

    // Damage: a byte flipped early in the newest segment, a good frame after it.
    nodes[2].kill();
    let seg = newest_segment(dirs[2].path());
    let mut bytes = std::fs::read(&seg).unwrap();
    assert!(bytes.len() > 200, "the segment holds frames");
    bytes[40] ^= 0x55;
    std::fs::write(&seg, &bytes).unwrap();
    let err = start_fails(&["-l", &addrs[2], "--data-dir", dirs[2].path().to_str().unwrap()]);
    assert!(err.contains("is damaged at byte") && err.contains("empty its --data-dir"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[tokio::test]
async fn a_data_dir_belongs_to_one_process_and_one_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let mut one = durable("127.0.0.1:0", dir.path(), &["-c", "alpha"]);
    let err = start_fails(&["-l", "127.0.0.1:0", "--data-dir", d, "-c", "alpha"]);
    assert!(err.contains("in use by another doozerd"), "{err}");
    let addr = one.addr.clone();
    client(&addr).await.set("/kept", 0, "yes").await.unwrap();
    one.kill();
    let err = start_fails(&["-l", &addr, "--data-dir", d, "-c", "beta"]);
    assert!(err.contains("belongs to a node of cluster \"alpha\""), "{err}");
    let err = start_fails(&["-l", "127.0.0.1:0", "--data-dir", d, "-c", "alpha"]);
    assert!(err.contains("start it with -l"), "{err}");
    // Restarted as it was: the same node, its data there.
    let again = durable(&addr, dir.path(), &["-c", "alpha"]);
    let (body, _) = client(&again.addr).await.get("/kept", None).await.unwrap();
    assert_eq!(&body[..], b"yes");
}

#[tokio::test]
async fn a_lone_durable_node_keeps_its_data_and_watches_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = durable("127.0.0.1:0", dir.path(), &[]);
    let addr = node.addr.clone();
    let c = client(&addr).await;
    let first = c.set("/a", 0, "1").await.unwrap();
    // Enough writes that snapshots are taken and the log compacted behind them.
    let body = vec![b'x'; 4096];
    for i in 0..20_000 {
        c.set(&format!("/bulk/{}", i % 1000), -1, body.clone()).await.unwrap();
    }
    let last = c.rev().await.unwrap();
    node.kill();
    let node = durable(&addr, dir.path(), &[]);
    let c = client(&node.addr).await;
    assert_eq!(c.rev().await.unwrap(), last, "the same revision after the restart");
    assert_eq!(c.get("/a", None).await.unwrap(), (bytes::Bytes::from("1"), first));
    // A watch from a revision before the restart, inside the history window.
    let e = c.wait("/bulk/**", last - 10).await.unwrap();
    assert_eq!(e.rev, last - 10);
    let b = c.set("/b", 0, "2").await.unwrap();
    assert!(b > last, "a write after the restart at {b}, after {last}");
}

#[tokio::test]
async fn a_node_whose_data_dir_was_lost_rejoins_as_a_new_member() {
    // -timeout 3: the old member's slot is freed 3 s after it went quiet
    // instead of the default 60, so the new member takes it within the test.
    let (mut nodes, dirs) = durable_cluster(&["-timeout", "3"]).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let before: Vec<String> = common::roles(&addrs[0]).await.into_iter().map(|(id, _)| id).collect();
    nodes[2].kill();
    std::fs::remove_dir_all(dirs[2].path()).unwrap();
    nodes[2] = durable(&addrs[2], dirs[2].path(), &["-a", &addrs[0], "-timeout", "3"]);
    common::eventually("a new member in the old one's place", || async {
        let now: Vec<String> = common::roles(&addrs[0]).await.into_iter().map(|(id, _)| id).collect();
        now.len() == 3 && now.iter().filter(|id| !before.contains(id)).count() == 1
    })
    .await;
    voters_are(&addrs[0], 3).await;
    let rev = write_until_ok(&addrs[2], "/new/member").await;
    all_reach(&addrs, rev).await;
}

#[tokio::test]
async fn a_backup_restores_into_a_data_dir_and_survives_a_restart() {
    let src = Doozerd::start(&[]);
    let c = client(&src.addr).await;
    c.set("/saved", 0, "value").await.unwrap();
    let backup = tempfile::NamedTempFile::new().unwrap();
    let out = common::doozer(&src.uri(), &["backup", backup.path().to_str().unwrap()], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let dir = tempfile::tempdir().unwrap();
    let mut node = durable("127.0.0.1:0", dir.path(), &["--restore", backup.path().to_str().unwrap()]);
    let addr = node.addr.clone();
    let (body, rev) = client(&addr).await.get("/saved", None).await.unwrap();
    assert_eq!(&body[..], b"value");
    node.kill();
    let node = durable(&addr, dir.path(), &[]);
    assert_eq!(client(&node.addr).await.get("/saved", None).await.unwrap(), (body, rev));
    // The restored node's data dir now holds a member: restoring over it is refused.
    drop(node);
    let err = start_fails(&[
        "-l",
        &addr,
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--restore",
        backup.path().to_str().unwrap(),
    ]);
    assert!(err.contains("give an empty directory"), "{err}");
}

/// Writes `n` files under `prefix` through `addr`; returns path -> rev.
async fn write_some(addr: &str, prefix: &str, n: usize) -> BTreeMap<String, i64> {
    let c = client(addr).await;
    let mut out = BTreeMap::new();
    for i in 0..n {
        let path = format!("{prefix}/{i}");
        out.insert(path.clone(), c.set(&path, 0, "v").await.unwrap());
    }
    out
}

/// Every file in `written` is at `addr`, at its revision.
async fn holds(addr: &str, written: &BTreeMap<String, i64>) {
    let c = client(addr).await;
    for (path, rev) in written {
        let (_, at) = c.get(path, None).await.unwrap();
        assert_eq!(at, *rev, "{path} on {addr}");
    }
}

#[tokio::test]
async fn a_memory_only_survivor_of_three_is_forced_into_a_new_cluster() {
    let mut nodes = common::cluster(3, &[]).await;
    let survivor = nodes[0].uri();
    let addr = nodes[0].addr.clone();
    let written = write_some(&addr, "/mem", 50).await;
    // While a majority answers, it is refused and nothing changes.
    let out = common::doozer(&survivor, &["force-new-cluster"], b"");
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("a majority is reachable"), "{}", out.stderr);
    nodes[1].kill();
    nodes[2].kill();
    let out = common::doozer(&survivor, &["force-new-cluster"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.out().contains("becomes the only voter of a new cluster"), "{}", out.out());
    let out = common::doozer(&survivor, &["force-new-cluster", "yes"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rev = write_until_ok(&addr, "/after/recovery").await;
    holds(&addr, &written).await;
    // The others attach as usual, as new members.
    let others: Vec<Doozerd> = (0..2).map(|_| Doozerd::start(&["-a", &addr])).collect();
    voters_are(&addr, 3).await;
    let addrs = vec![addr.clone(), others[0].addr.clone(), others[1].addr.clone()];
    all_reach(&addrs, rev).await;
    holds(&others[1].addr, &written).await;
}

#[tokio::test]
async fn a_durable_survivor_of_three_is_forced_into_a_new_cluster_after_a_restart() {
    let (mut nodes, dirs) = durable_cluster(&[]).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let written = write_some(&addrs[0], "/dur", 50).await;
    nodes.iter_mut().for_each(Doozerd::kill);
    // With a majority back up, the flag is refused.
    let mut two = [durable(&addrs[1], dirs[1].path(), &[]), durable(&addrs[2], dirs[2].path(), &[])];
    let d0 = dirs[0].path().to_str().unwrap();
    let err = start_fails(&["-l", &addrs[0], "--data-dir", d0, "--force-new-cluster"]);
    assert!(err.contains("a majority is reachable"), "{err}");
    two.iter_mut().for_each(Doozerd::kill);
    // Alone for good: node 0 becomes a new cluster with its state.
    let node = durable(&addrs[0], dirs[0].path(), &["--force-new-cluster"]);
    let rev = write_until_ok(&node.addr, "/after/recovery").await;
    holds(&node.addr, &written).await;
    voters_are(&node.addr, 1).await;
    assert!(!dirs[0].path().join("recovered").exists(), "the image kept during recovery is gone");
    // And it is durable again: a restart keeps the new cluster.
    drop(node);
    let node = durable(&addrs[0], dirs[0].path(), &[]);
    assert!(client(&node.addr).await.rev().await.unwrap() >= rev);
    holds(&node.addr, &written).await;
}

/// The id of the member at `addr`, as the node at `asked` sees it.
async fn id_at(asked: &str, addr: &str) -> Option<String> {
    for (id, _) in common::roles(asked).await {
        if common::addr_of(asked, &id).await == addr {
            return Some(id);
        }
    }
    None
}

#[tokio::test]
async fn a_durable_node_removed_while_paused_starts_over_and_its_new_self_is_kept() {
    // -timeout 3: the paused member is removed 3 s after it went quiet
    // instead of the default 60, so the removal happens within the test.
    let (mut nodes, dirs) = durable_cluster(&["-timeout", "3"]).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let old = id_at(&addrs[0], &addrs[2]).await.unwrap();
    nodes[2].signal("STOP");
    common::eventually("the paused member removed", || async { id_at(&addrs[0], &addrs[2]).await.is_none() }).await;
    nodes[2].signal("CONT");
    common::eventually("the node back under a new id", || async {
        id_at(&addrs[0], &addrs[2]).await.is_some_and(|id| id != old)
    })
    .await;
    voters_are(&addrs[0], 3).await;
    let new = id_at(&addrs[0], &addrs[2]).await.unwrap();
    // Its data dir now holds its new self: a restart resumes as that one.
    nodes[2].kill();
    let meta = std::fs::read_to_string(dirs[2].path().join("meta")).unwrap();
    assert!(meta.contains(&format!("id {new}")), "{meta}");
    nodes[2] = durable(&addrs[2], dirs[2].path(), &["-timeout", "3"]);
    let rev = write_until_ok(&addrs[2], "/after/pause").await;
    all_reach(&addrs, rev).await;
    assert_eq!(id_at(&addrs[0], &addrs[2]).await, Some(new));
    voters_are(&addrs[0], 3).await;
}

#[tokio::test]
async fn durable_and_memory_only_members_mix() {
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes = vec![durable("127.0.0.1:0", dirs[0].path(), &[])];
    let seed = nodes[0].addr.clone();
    nodes.push(durable("127.0.0.1:0", dirs[1].path(), &["-a", &seed]));
    nodes.push(Doozerd::start(&["-a", &seed]));
    voters_are(&seed, 3).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    let written = write_some(&seed, "/mix", 20).await;
    let (durable_id, memory_id) = (id_at(&seed, &addrs[1]).await.unwrap(), id_at(&seed, &addrs[2]).await.unwrap());
    // The durable member comes back as itself; the memory-only one, killed
    // and started again, joins as a new member with fresh state.
    nodes[1].kill();
    nodes[1] = durable(&addrs[1], dirs[1].path(), &[]);
    nodes[2].kill();
    nodes[2] = Doozerd::start(&["-l", &addrs[2], "-a", &seed]);
    let rev = write_until_ok(&seed, "/mix/after").await;
    all_reach(&addrs, rev).await;
    assert_eq!(id_at(&seed, &addrs[1]).await, Some(durable_id));
    common::eventually("the memory-only node back under a new id", || async {
        id_at(&seed, &addrs[2]).await.is_some_and(|id| id != memory_id)
    })
    .await;
    for a in &addrs {
        holds(a, &written).await;
    }
}
