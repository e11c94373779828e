//! Partitions made with the fault-injection proxies (doozer-verify), for
//! properties checked directly rather than through a random schedule.

mod common;

use doozer_verify::cluster::Cluster;
use futures_util::FutureExt;
use std::time::{Duration, Instant};

async fn text(addr: &str, path: &str) -> Option<String> {
    let c = doozer_client::Client::connect(addr).await.ok()?;
    let (body, rev) = c.get(path, None).await.ok()?;
    (rev > 0).then(|| String::from_utf8_lossy(&body).into_owned())
}

/// The member ids (/ctl/node) as the node at `addr` sees them.
async fn members(addr: &str) -> Vec<String> {
    let Ok(c) = doozer_client::Client::connect(addr).await else { return vec![] };
    c.getdir_all("/ctl/node", None).await.unwrap_or_default()
}

/// An isolated leader that stays cut off past -timeout must not remove the
/// members of the majority when the partition heals: it sees them as silent,
/// but it is no longer the leader, and its decisions must not be carried out
/// by the new one. (It found exactly that: its writes were forwarded.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leader_removes_nobody_from_the_majority() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> =
        ["-timeout", "2", "--write-timeout", "2", "-c", "p"].iter().map(|s| s.to_string()).collect();
    let cluster =
        Cluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_doozerd")), 3, &args, dir.path(), false).await.unwrap();
    let seed = cluster.slots[0].addr.clone();
    common::eventually("3 voters", || async {
        let mut voters = 0;
        for id in members(&seed).await {
            if matches!(text(&seed, &format!("/ctl/node/{id}/role")).await.as_deref(), Some("leader" | "voter")) {
                voters += 1;
            }
        }
        voters == 3
    })
    .await;
    let leader_id = text(&seed, "/ctl/leader").await.unwrap();
    let leader_addr = text(&seed, &format!("/ctl/node/{leader_id}/addr")).await.unwrap();
    let leader = cluster.slot_of(&leader_addr).unwrap();
    let majority: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    let at = cluster.slots[majority[0]].addr.clone();
    let majority_ids: Vec<String> = {
        let mut ids = vec![];
        for id in members(&at).await {
            let addr = text(&at, &format!("/ctl/node/{id}/addr")).await.unwrap_or_default();
            if majority.iter().any(|&i| cluster.slots[i].proxy.addr.to_string() == addr) {
                ids.push(id);
            }
        }
        ids
    };
    assert_eq!(majority_ids.len(), 2);
    // Cut the leader off for well past -timeout, then heal.
    cluster.cut(&[(leader, majority[0]), (leader, majority[1])]);
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.heal();
    // Give the old leader every chance to act on its stale view.
    let until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < until {
        for id in &majority_ids {
            assert!(
                text(&at, &format!("/ctl/node/{id}/addr")).await.is_some(),
                "majority member {id} lost its /ctl/node files"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Both keep their slots; the writes go on.
    let c = doozer_client::Client::connect(&at).await.unwrap();
    let mut holders = vec![];
    for s in c.getdir_all("/ctl/cal", None).await.unwrap() {
        holders.push(String::from_utf8_lossy(&c.get(&format!("/ctl/cal/{s}"), None).await.unwrap().0).into_owned());
    }
    for id in &majority_ids {
        assert!(holders.contains(id), "{id} kept its slot: {holders:?}");
    }
    c.set("/still", -1, "writable").await.unwrap();
}

/// A node cut off from the other two for twice `-timeout` is removed by the
/// majority; when the partition heals it rejoins by itself under a new id
/// and the cluster is back to three voters, with no restart by anyone.
/// (`-timeout 5`, not the default 60, so the partition need not last two minutes.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_node_comes_back_as_a_new_member_when_the_partition_heals() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = ["-timeout", "5", "-c", "p"].iter().map(|s| s.to_string()).collect();
    let mut cluster =
        Cluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_doozerd")), 3, &args, dir.path(), false).await.unwrap();
    let seed = cluster.slots[0].addr.clone();
    let voters = |at: String| async move {
        let mut n = 0;
        for id in members(&at).await {
            if matches!(text(&at, &format!("/ctl/node/{id}/role")).await.as_deref(), Some("leader" | "voter")) {
                n += 1;
            }
        }
        n
    };
    common::eventually("3 voters", || voters(seed.clone()).map(|n| n == 3)).await;
    let cut = 2;
    let at = cluster.slots[0].addr.clone();
    let advertised = cluster.slots[cut].proxy.addr.to_string();
    let id_of_cut = |at: String, advertised: String| async move {
        for id in members(&at).await {
            if text(&at, &format!("/ctl/node/{id}/addr")).await.as_deref() == Some(advertised.as_str()) {
                return Some(id);
            }
        }
        None
    };
    let old = id_of_cut(at.clone(), advertised.clone()).await.unwrap();
    cluster.cut(&[(cut, 0), (cut, 1)]);
    common::eventually("the cut-off node removed", || {
        let at = at.clone();
        let old = old.clone();
        async move { !members(&at).await.contains(&old) }
    })
    .await;
    cluster.heal();
    let start = Instant::now();
    loop {
        let back = id_of_cut(at.clone(), advertised.clone()).await.filter(|id| *id != old);
        if back.is_some() && voters(at.clone()).await == 3 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "the cluster did not return to three voters");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(cluster.is_running(cut), "the removed node must not exit");
    let rev = doozer_client::Client::connect(&at).await.unwrap().set("/after", -1, "heal").await.unwrap();
    let c = doozer_client::Client::connect(&cluster.slots[cut].addr).await.unwrap();
    assert_eq!(c.get("/after", Some(rev)).await.unwrap().0, "heal".as_bytes());
}
