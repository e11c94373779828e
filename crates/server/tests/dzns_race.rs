//! The DzNS boot race, in process: however the boots of many nodes of one
//! cluster interleave, exactly one becomes the seed and every other attaches
//! through the winner. A stress test of the property: the defect it guards
//! against (the listing and the race file read at different revisions, so a
//! node that looked before the winner registered could win again after it)
//! needs an interleaving this loop does not reliably produce; tests/dzns.rs,
//! three real processes booting at once, caught it about one run in three
//! under load.

use doozer_server::dzns::{boot, Boot};
use doozer_server::Settings;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exactly_one_node_wins_the_boot_race() {
    let dzns = doozer_server::start(Settings::local()).await.unwrap();
    let uri = format!("doozer:?ca={}", dzns.addr);
    for round in 0..20 {
        let cluster = format!("app{round}");
        let racers = (0..6).map(|i| {
            let (uri, cluster) = (uri.clone(), cluster.clone());
            tokio::spawn(async move {
                let id = format!("NODE{round}X{i}");
                let addr = format!("10.0.{round}.{i}:8046");
                (addr.clone(), boot(&uri, "", &cluster, &id, &addr).await.unwrap())
            })
        });
        let mut results = Vec::new();
        for r in racers {
            results.push(r.await.unwrap());
        }
        let seeds: Vec<&String> = results.iter().filter(|(_, b)| *b == Boot::Seed).map(|(a, _)| a).collect();
        assert_eq!(seeds.len(), 1, "round {round}: one seed, not {seeds:?}");
        for (addr, b) in &results {
            if let Boot::Attach(addrs) = b {
                assert_eq!(&addrs[0], seeds[0], "round {round}: {addr} attaches through the winner first");
            }
        }
    }
    dzns.stop().await;
}
