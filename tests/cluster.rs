//! Multi-process clusters on 127.0.0.1 with free ports: forming, replication,
//! leader loss, restarts under new ids, pauses, and watches across failover.
//! Timings printed here are measurements; the assertions only use generous
//! deadlines.

mod common;

use common::{addr_of, client, cluster, dump, leader_index, roles, voters_are, Doozerd};
use doozer_proto::ErrCode;
use std::time::Instant;

/// Writes through the node at `addr` until one succeeds; returns its revision.
async fn write_until_ok(addr: &str, path: &str, body: &str) -> i64 {
    let start = Instant::now();
    loop {
        if let Ok(c) = doozer_client::Client::connect(addr).await {
            if let Ok(rev) = c.set(path, -1, body.to_string()).await {
                return rev;
            }
        }
        assert!(start.elapsed() < common::DEADLINE, "timed out writing {path} through {addr}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The id of the member that runs at `addr`, as the node at `asked` sees it.
async fn id_at(asked: &str, addr: &str) -> String {
    for (id, _) in roles(asked).await {
        if addr_of(asked, &id).await == addr {
            return id;
        }
    }
    panic!("no member at {addr}");
}

/// All `addrs` reach revision `rev` and hold identical trees there.
async fn identical_at(addrs: &[String], rev: i64) {
    let first = dump(&addrs[0], rev).await;
    assert!(!first.is_empty());
    for a in &addrs[1..] {
        assert_eq!(dump(a, rev).await, first, "tree at {rev} on {a} differs from {}", addrs[0]);
    }
}

#[tokio::test]
async fn three_nodes_form_replicate_and_agree() {
    let nodes = cluster(3, &[]).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    // A write on any node is readable on every node at its revision.
    let mut revs = vec![];
    for (i, a) in addrs.iter().enumerate() {
        let rev = client(a).await.set(&format!("/repl/{i}"), 0, format!("via {i}")).await.unwrap();
        revs.push(rev);
        for b in &addrs {
            let (body, file_rev) = client(b).await.get(&format!("/repl/{i}"), Some(rev)).await.unwrap();
            assert_eq!((body.as_ref(), file_rev), (format!("via {i}").as_bytes(), rev));
        }
    }
    // CAS is decided once, cluster-wide: of two racing creates exactly one wins.
    let (a, b) = (client(&addrs[1]).await, client(&addrs[2]).await);
    let (ra, rb) = tokio::join!(a.set("/race", 0, "a"), b.set("/race", 0, "b"));
    assert!(ra.is_ok() != rb.is_ok(), "exactly one create wins: {ra:?} {rb:?}");
    let loser = if ra.is_ok() { rb } else { ra };
    assert_eq!(loser.unwrap_err().code(), Some(ErrCode::RevMismatch));
    // Every node reports the same revision and the same tree.
    let last = client(&addrs[0]).await.rev().await.unwrap();
    identical_at(&addrs, last).await;
    // The members table: a leader, two voters, each at the same applied revision.
    let out = common::doozer(&format!("doozer:?ca={}", addrs[2]), &["members"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let table = out.out();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    assert!(lines[0].starts_with("ID"));
    assert!(lines[1].contains(" leader "), "{table}");
    assert!(lines[2].contains(" voter ") && lines[3].contains(" voter "), "{table}");
}

#[tokio::test]
async fn leader_killed_writes_resume_on_survivors() {
    let mut nodes = cluster(3, &[]).await;
    let before = client(&nodes[0].addr).await.set("/before", 0, "x").await.unwrap();
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let survivors: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let killed_at = Instant::now();
    nodes[leader].kill();
    let rev = write_until_ok(&nodes[survivors[0]].addr, "/after", "y").await;
    println!("writes resumed {:?} after the leader was killed", killed_at.elapsed());
    assert!(rev > before);
    let new_leader = leader_index(&nodes, &survivors).await;
    assert_ne!(new_leader, leader);
    let addrs: Vec<String> = survivors.iter().map(|&i| nodes[i].addr.clone()).collect();
    identical_at(&addrs, rev).await;
    // Both survivors still write and read.
    for a in &addrs {
        let r = client(a).await.set("/both", -1, a.clone()).await.unwrap();
        assert_eq!(client(&addrs[0]).await.get("/both", Some(r)).await.unwrap().0, a.as_bytes());
    }
}

/// With the default -timeout (60 s): the dead member is replaced as soon as
/// its address answers as another node, not after a minute as a non-voter.
#[tokio::test]
async fn restarted_node_rejoins_under_a_new_id_and_replaces_the_dead_member() {
    let mut nodes = cluster(3, &[]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let victim = (0..3).find(|&i| i != leader).unwrap();
    let live = (0..3).find(|&i| i != leader && i != victim).unwrap();
    let old = roles(&nodes[leader].addr).await;
    let victim_id = id_at(&nodes[leader].addr, &nodes[victim].addr).await;
    nodes[victim].kill();
    // Restart it at the same address (a new process, so a new id), attached
    // through a live non-leader member. Peers still send the dead id's traffic
    // to that address; the new node must refuse it.
    let restarted = Doozerd::start(&["-l", &nodes[victim].addr.clone(), "-a", &nodes[live].addr]);
    nodes.push(restarted);
    let seen_from = nodes[leader].addr.clone();
    voters_are(&seen_from, 3).await;
    let now = roles(&seen_from).await;
    let ids: Vec<&str> = now.iter().map(|(id, _)| id.as_str()).collect();
    assert!(!ids.contains(&victim_id.as_str()), "the dead member {victim_id} is gone: {now:?}");
    let gone = client(&seen_from).await.stat(&format!("/ctl/node/{victim_id}"), None).await.unwrap();
    assert_eq!(gone, (0, 0), "the dead member's /ctl/node files are deleted");
    let new_ids: Vec<&str> = ids.iter().copied().filter(|id| !old.iter().any(|(o, _)| o == id)).collect();
    assert_eq!(new_ids.len(), 1, "the restarted node joined under a new id: {now:?}");
    assert_eq!(addr_of(&seen_from, new_ids[0]).await, nodes[3].addr);
    // Its slot holds the new id, and the dead member's files are deleted.
    let c = client(&seen_from).await;
    let slots = c.getdir_all("/ctl/cal", None).await.unwrap();
    let mut holders = vec![];
    for s in slots {
        holders.push(String::from_utf8_lossy(&c.get(&format!("/ctl/cal/{s}"), None).await.unwrap().0).into_owned());
    }
    assert!(holders.iter().any(|h| h == new_ids[0]), "{holders:?}");
    // The new member has the whole tree.
    let rev = c.set("/check", -1, "c").await.unwrap();
    identical_at(&[seen_from.clone(), nodes[3].addr.clone(), nodes[live].addr.clone()], rev).await;
}

#[tokio::test]
async fn paused_node_catches_up() {
    let nodes = cluster(3, &[]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let paused = (0..3).find(|&i| i != leader).unwrap();
    nodes[paused].signal("STOP");
    let c = client(&nodes[leader].addr).await;
    let mut last = 0;
    for i in 0..200 {
        last = c.set(&format!("/p/{}", i % 10), -1, format!("{i}")).await.unwrap();
    }
    nodes[paused].signal("CONT");
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    // A read at `last` on the paused node waits until it has caught up.
    let (body, _) = client(&nodes[paused].addr).await.get("/p/9", Some(last)).await.unwrap();
    assert_eq!(body, "199".as_bytes());
    identical_at(&addrs, last).await;
}

#[tokio::test]
async fn five_nodes_survive_two_failures() {
    let mut nodes = cluster(5, &[]).await;
    let leader = leader_index(&nodes, &[0, 1, 2, 3, 4]).await;
    let other = (0..5).find(|&i| i != leader).unwrap();
    nodes[leader].kill();
    nodes[other].kill();
    let live: Vec<usize> = (0..5).filter(|&i| i != leader && i != other).collect();
    let rev = write_until_ok(&nodes[live[0]].addr, "/survived", "yes").await;
    for &i in &live[1..] {
        client(&nodes[i].addr).await.set(&format!("/from/{i}"), 0, "ok").await.unwrap();
    }
    let last = client(&nodes[live[0]].addr).await.rev().await.unwrap();
    assert!(last > rev);
    let addrs: Vec<String> = live.iter().map(|&i| nodes[i].addr.clone()).collect();
    identical_at(&addrs, last).await;
}

#[tokio::test]
async fn a_client_reads_its_own_writes_on_the_follower_it_wrote_through() {
    let nodes = cluster(3, &[]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let c = client(&nodes[follower].addr).await;
    // The follower answers a forwarded write only once it has applied it
    // itself: a read right after, on the same node, always sees it.
    for i in 0..300 {
        let rev = c.set("/ryw", -1, format!("{i}")).await.unwrap();
        assert_eq!(c.get("/ryw", None).await.unwrap(), (format!("{i}").into(), rev), "write {i}");
        assert!(c.rev().await.unwrap() >= rev);
    }
}

#[tokio::test]
async fn no_quorum_writes_fail_with_a_reason_and_reads_go_on() {
    let mut nodes = cluster(3, &["--write-timeout", "1.5"]).await;
    let rev = client(&nodes[2].addr).await.set("/k", 0, "v").await.unwrap();
    nodes[0].kill();
    nodes[1].kill();
    let c = client(&nodes[2].addr).await;
    let err = c.set("/k", -1, "w").await.unwrap_err();
    assert_eq!(err.code(), Some(ErrCode::Other), "{err}");
    assert!(err.to_string().contains("no quorum"), "{err}");
    // Proposed but not known to be committed: the answer says it may still be
    // applied, in words for old clients and in the extension field for new ones.
    assert!(err.to_string().contains("may still be applied"), "{err}");
    assert!(err.may_have_applied(), "{err:?}");
    assert_eq!(c.get("/k", None).await.unwrap(), ("v".into(), rev));
}

/// Starts a node attaching to `seed` that must fail; its stderr.
fn attach_fails(seed: &Doozerd, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doozerd"))
        .args(["-l", "127.0.0.1:0", "-w", "false", "-a", &seed.addr])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn attach_checks_the_cluster_name() {
    let seed = Doozerd::start(&["-c", "blue"]);
    let stderr = attach_fails(&seed, &["-c", "green"], &[]);
    assert!(stderr.contains("cluster name mismatch"), "{stderr}");
}

#[tokio::test]
async fn a_late_joiner_catches_up_by_snapshot_with_history() {
    let seed = Doozerd::start(&[]);
    let c = client(&seed.addr).await;
    // Enough entries that the leader has snapshotted and purged its log.
    let mut last = 0;
    for i in 0..3000 {
        last = c.set(&format!("/bulk/{}", i % 50), -1, format!("{i}")).await.unwrap();
    }
    let joiner = Doozerd::start(&["-a", &seed.addr]);
    let j = client(&joiner.addr).await;
    assert_eq!(j.get("/bulk/49", Some(last)).await.unwrap().0, "2999".as_bytes());
    identical_at(&[seed.addr.clone(), joiner.addr.clone()], last).await;
    // WAIT from a recent revision is answered from the joiner's history.
    let e = j.wait("/bulk/**", last - 100).await.unwrap();
    assert_eq!(e.rev, last - 100);
}

#[tokio::test]
async fn watch_on_a_follower_sees_every_revision_across_a_leader_change() {
    let mut nodes = cluster(3, &[]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let (watch_at, write_at) = (nodes[followers[0]].addr.clone(), nodes[followers[1]].addr.clone());
    let start = client(&watch_at).await.rev().await.unwrap() + 1;
    let watcher = client(&watch_at).await;
    let watch = tokio::spawn(async move {
        let mut next = start;
        let mut seen = vec![];
        while seen.last() != Some(&"done".to_string()) {
            let e = watcher.wait("/w/**", next).await.unwrap();
            next = e.rev + 1;
            seen.push(String::from_utf8_lossy(&e.body).into_owned());
            seen.dedup();
        }
        seen
    });
    let writer = client(&write_at).await;
    let mut acked = vec![];
    for i in 0..50 {
        acked.push(writer.set("/w/x", -1, format!("{i}")).await.unwrap());
    }
    nodes[leader].kill();
    for i in 50..100 {
        // Writes during the election may fail with a reason; keep going until each lands.
        let body = format!("{i}");
        let rev = write_until_ok(&write_at, "/w/x", &body).await;
        acked.push(rev);
    }
    writer.set("/w/x", -1, "done").await.unwrap();
    let seen = tokio::time::timeout(common::DEADLINE, watch).await.unwrap().unwrap();
    // Every acknowledged value, in order, and nothing that was never written.
    let want: Vec<String> = (0..100).map(|i| i.to_string()).chain(["done".to_string()]).collect();
    assert_eq!(seen, want);
    assert!(acked.windows(2).all(|w| w[0] < w[1]));
}

/// The bodies of `doozer watch` records in `out` (`<path> <rev> <kind> <len>\n<body>\n`).
fn bodies(out: &[u8]) -> Vec<String> {
    let mut rest = out;
    let mut found = vec![];
    while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
        let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
        let Some(len) = header.rsplit(' ').next().and_then(|l| l.parse::<usize>().ok()) else { break };
        if rest.len() < nl + 1 + len + 1 {
            break;
        }
        found.push(String::from_utf8_lossy(&rest[nl + 1..nl + 1 + len]).into_owned());
        rest = &rest[nl + 1 + len + 1..];
    }
    found
}

#[tokio::test]
async fn cli_watch_moves_to_another_node_and_misses_nothing() {
    let mut nodes = cluster(3, &[]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let followers: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // The watch starts on a follower; the writer uses the other follower.
    let (first, writer_at) = (followers[0], followers[1]);
    let order = [first, leader, writer_at];
    let uri =
        format!("doozer:?{}", order.iter().map(|&i| format!("ca={}", nodes[i].addr)).collect::<Vec<_>>().join("&"));
    let from = client(&nodes[writer_at].addr).await.rev().await.unwrap() + 1;
    let watch = common::WatchProcess::start(&uri, &["-r", &from.to_string(), "watch", "/f/**"]);
    let saw = |n: usize| {
        let watch = &watch;
        move || {
            let mut b = bodies(&watch.output());
            b.dedup();
            b.len() >= n
        }
    };
    let w = client(&nodes[writer_at].addr).await;
    for i in 0..10 {
        w.set("/f/x", -1, i.to_string()).await.unwrap();
    }
    common::wait_until("the first 10 records", saw(10));
    // The watched node stops answering: the watch moves to the next address.
    nodes[first].signal("STOP");
    for i in 10..20 {
        w.set("/f/x", -1, i.to_string()).await.unwrap();
    }
    common::wait_until("20 records after a pause", saw(20));
    nodes[first].signal("CONT");
    // Now the node it moved to (the leader) dies.
    nodes[leader].kill();
    for i in 20..30 {
        write_until_ok(&nodes[writer_at].addr, "/f/x", &i.to_string()).await;
    }
    common::wait_until("30 records after a kill", saw(30));
    let mut got = bodies(&watch.output());
    drop(watch);
    // A write retried after an unknown outcome may have landed twice in a row.
    got.dedup();
    let want: Vec<String> = (0..30).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "every change once, in order, across two moves");
}

async fn role_of(asked: &str, id: &str) -> String {
    roles(asked).await.into_iter().find(|(i, _)| i == id).map(|(_, r)| r).unwrap_or_default()
}

async fn set_slot(addr: &str, slot: &str, holder: &str) {
    let c = client(addr).await;
    let (_, rev) = c.get(slot, None).await.unwrap();
    c.set(slot, rev, holder.to_string()).await.unwrap();
}

#[tokio::test]
async fn operators_move_voters_with_slots() {
    // Three slots, four nodes: the fourth waits as a non-voter.
    let mut nodes = cluster(3, &[]).await;
    nodes.push(Doozerd::start(&["-a", &nodes[0].addr]));
    let at = nodes[0].addr.clone();
    common::eventually("a non-voter", || async { roles(&at).await.iter().any(|(_, r)| r == "non-voter") }).await;
    let waiting = roles(&at).await.into_iter().find(|(_, r)| r == "non-voter").unwrap().0;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let demoted_index = (0..3).find(|&i| i != leader).unwrap();
    let demoted = id_at(&at, &nodes[demoted_index].addr).await;
    let c = client(&at).await;
    let mut slot = String::new();
    for s in c.getdir_all("/ctl/cal", None).await.unwrap() {
        if c.get(&format!("/ctl/cal/{s}"), None).await.unwrap().0 == demoted.as_bytes() {
            slot = format!("/ctl/cal/{s}");
        }
    }
    // Emptying its slot demotes the holder; the waiting node takes the slot.
    set_slot(&at, &slot, "").await;
    common::eventually("the waiting node promoted", || async { role_of(&at, &waiting).await == "voter" }).await;
    common::eventually("the holder demoted", || async { role_of(&at, &demoted).await == "non-voter" }).await;
    assert_eq!(c.get(&slot, None).await.unwrap().0, waiting.as_bytes());
    // A new slot is claimed by the demoted node (it only gives up the slot it lost).
    c.set("/ctl/cal/3", 0, "").await.unwrap();
    common::eventually("four voters", || async {
        let r = roles(&at).await;
        r.len() == 4 && r.iter().all(|(_, role)| role == "voter" || role == "leader")
    })
    .await;
    assert_eq!(c.get("/ctl/cal/3", None).await.unwrap().0, demoted.as_bytes());
    // Writes go on through every node.
    for n in &nodes {
        client(&n.addr).await.set("/ok", -1, n.addr.clone()).await.unwrap();
    }
}

/// `-timeout 2` so that the pause outlasts it quickly.
#[tokio::test]
async fn a_node_removed_while_paused_rejoins_under_a_new_id_when_it_wakes() {
    let mut nodes = cluster(3, &["-timeout", "2"]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let victim = (0..3).find(|&i| i != leader).unwrap();
    let id = id_at(&nodes[leader].addr, &nodes[victim].addr).await;
    nodes[victim].signal("STOP");
    let at = nodes[leader].addr.clone();
    common::eventually("the paused node removed", || async { !roles(&at).await.iter().any(|(i, _)| *i == id) }).await;
    let rev = client(&at).await.set("/while-away", -1, "x").await.unwrap();
    nodes[victim].signal("CONT");
    // Back to three voters with nobody touching it: the woken node joined
    // again under a new id, on its old address, and claimed the vacant slot.
    voters_are(&at, 3).await;
    let new_id = id_at(&at, &nodes[victim].addr).await;
    assert_ne!(new_id, id, "the old id is never used again");
    assert!(nodes[victim].is_running(), "the removed node did not exit");
    let (body, _) = client(&nodes[victim].addr).await.get("/while-away", Some(rev)).await.unwrap();
    assert_eq!(body, "x".as_bytes(), "it serves the cluster's state again");
}

#[tokio::test]
async fn dialing_passes_over_a_hung_node() {
    let nodes = cluster(3, &[]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let hung = (0..3).find(|&i| i != leader).unwrap();
    client(&nodes[leader].addr).await.set("/d", 0, "here").await.unwrap();
    nodes[hung].signal("STOP");
    let uri = format!("doozer:?ca={}&ca={}", nodes[hung].addr, nodes[leader].addr);
    let out = common::doozer(&uri, &["get", "/d"], b"");
    nodes[hung].signal("CONT");
    assert_eq!((out.code, out.out().as_str()), (0, "here"), "{}", out.stderr);
}

/// The reported failure, reproduced with the default -hist: a WAIT held on a
/// follower that is paused while the leader's log moves far past it must be
/// answered with exactly the first event it asked for or TOO_LATE, never a
/// later event (it was answered tens of thousands of revisions later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_wait_across_a_snapshot_catch_up_never_skips_events() {
    let nodes = cluster(3, &[]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let lagging = (0..3).find(|&i| i != leader).unwrap();
    // WAIT then REV on one connection: the server reads them in order, so
    // the REV's answer means the WAIT is held.
    let mut raw = common::Raw::connect(&nodes[lagging].addr).await;
    let from = raw.call(common::req(doozer_proto::Verb::Rev, 1)).await.rev.unwrap() + 1;
    raw.send(&doozer_proto::Request { rev: Some(from), ..common::path(doozer_proto::Verb::Wait, 2, "/w/**") }).await;
    assert_eq!(raw.call(common::req(doozer_proto::Verb::Rev, 3)).await.tag, Some(3), "the WAIT is held");
    let held = tokio::spawn(async move { raw.recv().await });
    nodes[lagging].signal("STOP");
    let (first, last) = common::flood(&nodes[leader].addr, "/w", 50, 64, 3.0).await;
    nodes[lagging].signal("CONT");
    assert!(last - first > 4000, "the flood must move well past the history window ({first}..{last})");
    let answer = tokio::time::timeout(common::DEADLINE, held).await.expect("the held WAIT is answered").unwrap();
    assert_eq!(answer.tag, Some(2));
    match answer.err_code {
        None => assert_eq!(answer.rev, Some(first), "the held WAIT got a later event than the first after {from}"),
        Some(code) => assert_eq!(code, ErrCode::TooLate as i32, "{answer:?}"),
    }
    // And the follower has caught up with everything.
    let (body, _) = client(&nodes[lagging].addr).await.get("/w/0", Some(last)).await.unwrap();
    assert_eq!(body, "v".as_bytes());
}

/// 64 clients writing 1 MiB values at once: batches are bounded by bytes, so
/// no peer message goes past its limit (an AppendEntries could carry 16 × 256
/// MiB, and the followers looked unreachable and were removed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_from_many_clients_keep_every_follower() {
    let nodes = cluster(3, &[]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let value = bytes::Bytes::from(vec![1u8; 1 << 20]);
    let (_, last) = common::flood_with(&nodes[leader].addr, "/big", 20, 64, 3.0, value).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    for a in &addrs {
        let (body, _) = client(a).await.get("/big/0", Some(last)).await.unwrap();
        assert_eq!(body.len(), 1 << 20);
    }
    voters_are(&addrs[leader], 3).await;
}

/// Writes through followers while the leader is killed, three times over:
/// each is answered normally after the stall, none with "may or may not have
/// been applied", and none is applied twice (each is a create-only SET, which
/// a second application would answer REV_MISMATCH). Default settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_through_followers_survive_leader_kills_exactly_once() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut nodes = cluster(3, &[]).await;
    let mut answered = Vec::new();
    for round in 0..3 {
        let live: Vec<usize> = (0..3).collect();
        let leader = leader_index(&nodes, &live).await;
        let followers: Vec<usize> = live.iter().copied().filter(|&i| i != leader).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for (k, &f) in followers.iter().enumerate() {
            for w in 0..4 {
                let c = client(&nodes[f].addr).await;
                let stop = stop.clone();
                writers.push(tokio::spawn(async move {
                    let mut out = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::SeqCst) {
                        let path = format!("/once/{round}/{k}/{w}/{i}");
                        let r = c.set(&path, 0, path.clone()).await.map_err(|e| (e.code(), e.to_string()));
                        out.push((path, r));
                        i += 1;
                    }
                    out
                }));
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let addr = nodes[leader].addr.clone();
        nodes[leader].kill();
        // Writes commit again under a new leader, then a little more load.
        write_until_ok(&nodes[followers[0]].addr, &format!("/once/{round}/probe"), "p").await;
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        stop.store(true, Ordering::SeqCst);
        for w in writers {
            answered.extend(w.await.unwrap());
        }
        // The killed node comes back at its address; it replaces its old self at once.
        nodes[leader] = Doozerd::start(&["-l", &addr, "-a", &nodes[followers[0]].addr]);
        voters_are(&nodes[followers[0]].addr, 3).await;
    }
    let failed: Vec<_> = answered.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} writes failed: {:?}",
        failed.len(),
        answered.len(),
        &failed[..failed.len().min(5)]
    );
    let c = client(&nodes[0].addr).await;
    let last = c.rev().await.unwrap();
    for (path, r) in &answered {
        let rev = *r.as_ref().unwrap();
        let (body, at) = c.get(path, Some(last)).await.unwrap();
        assert_eq!((body, at), (path.as_bytes().to_vec().into(), rev), "{path}");
    }
    println!("{} writes through followers across 3 leader kills, each applied once", answered.len());
}

/// The client library's `Cluster`: a call whose node is killed, or hangs,
/// goes to the next address by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_handle_moves_past_dead_and_hung_nodes() {
    let mut nodes = cluster(3, &[]).await;
    let uri = format!("doozer:?ca={}&ca={}&ca={}", nodes[0].addr, nodes[1].addr, nodes[2].addr);
    let c = doozer_client::Cluster::connect(&uri).await.unwrap();
    let r = c.set("/c", 0, "one").await.unwrap();
    assert_eq!(c.client().await.unwrap().addr(), nodes[0].addr);
    nodes[0].kill();
    // Reads are sent again on the next node; writes go once the cluster has a leader.
    assert_eq!(c.get("/c", Some(r)).await.unwrap().0, "one");
    assert_eq!(c.client().await.unwrap().addr(), nodes[1].addr);
    let r2 = c.set("/c", r, "two").await.unwrap();
    // Hung: accepts connections, answers nothing. The call moves on.
    nodes[1].signal("STOP");
    let stat = format!("/proc/{}/stat", nodes[1].pid());
    common::wait_until("the node to be stopped", || {
        std::fs::read_to_string(&stat).is_ok_and(|s| s.rsplit(") ").next().is_some_and(|r| r.starts_with('T')))
    });
    let started = std::time::Instant::now();
    let read = tokio::time::timeout(common::DEADLINE, c.get("/c", Some(r2))).await.expect("not held by the hung node");
    assert_eq!(read.unwrap().0, "two");
    eprintln!("moved past a hung node in {:?}", started.elapsed());
    assert_eq!(c.client().await.unwrap().addr(), nodes[2].addr);
    nodes[1].signal("CONT");
}

#[tokio::test]
async fn attach_with_another_secret_is_refused_without_sending_it() {
    let seed = Doozerd::start_env(&[], &[("DOOZER_RWSECRET", "right")]);
    let stderr = attach_fails(&seed, &[], &[("DOOZER_RWSECRET", "wrong")]);
    assert!(stderr.contains("does not know this cluster's secret"), "{stderr}");
}

#[tokio::test]
async fn a_peer_of_protocol_0_is_told_to_upgrade_and_the_node_goes_on() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let seed = Doozerd::start(&[]);
    let mut s = tokio::net::TcpStream::connect(&seed.addr).await.unwrap();
    // Protocol 0's magic, then its hello: postcard of ("", "", None).
    s.write_all(&[0xFF, b'D', b'Z', b'P', 0, 0, 0, 3, 0, 0, 0]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), s.read_to_end(&mut answer)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&answer);
    assert!(text.contains("refuse protocol 0") && text.contains("upgrade this node"), "{text}");
    // The refusal costs the node nothing.
    client(&seed.addr).await.set("/still", 0, "here").await.unwrap();
}
