//! Partitions made with the fault-injection proxies (doozer-verify), for
//! properties checked directly rather than through a random schedule.

mod common;

use doozer_verify::cluster::Cluster;
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
        Cluster::start(std::path::Path::new(env!("CARGO_BIN_EXE_doozerd")), 3, &args, dir.path()).await.unwrap();
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
