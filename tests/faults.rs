//! The CI variant of the fault-injection runs: three short scenarios against
//! real clusters, each checked for linearizability, lost writes, watch
//! completeness and identical final trees, with the default history window.
//! Each scenario has a fixed seed (CI must not be flaky); set
//! DOOZER_TORTURE_SEED to try another. Longer soaks with random seeds:
//! `doozer-torture --duration N`.

use doozer_verify::faults::Kind;
use doozer_verify::run::{run, Scenario};
use std::time::Duration;

/// One scenario at a time: they share two cores with everything else.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn seed(fixed: u64) -> u64 {
    std::env::var("DOOZER_TORTURE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(fixed)
}

async fn scenario(name: &str, fixed_seed: u64, nodes: usize, secs: u64, kinds: &[Kind]) {
    scenario_in(name, fixed_seed, nodes, secs, kinds, false, false).await
}

async fn scenario_in(name: &str, fixed_seed: u64, nodes: usize, secs: u64, kinds: &[Kind], durable: bool, tls: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    let s = Scenario {
        name: name.into(),
        nodes,
        duration: Duration::from_secs(secs),
        seed: seed(fixed_seed),
        clients: 6,
        watchers: 2,
        keys: 5,
        kinds: kinds.to_vec(),
        // Not the default 60 s: pauses and partitions outlast it, so nodes are
        // removed and rejoin by themselves within the run.
        member_timeout: 3.0,
        big_values: true,
        contenders: 2,
        durable,
        tls,
    };
    println!("scenario {name}: seed={} nodes={nodes} duration={secs}s", s.seed);
    let outcome = run(std::path::Path::new(env!("CARGO_BIN_EXE_doozerd")), &s)
        .await
        .unwrap_or_else(|e| panic!("scenario {name} (seed {}) did not complete: {e}", s.seed));
    for f in &outcome.faults {
        println!("  fault {f}");
    }
    let r = &outcome.report;
    println!("  {}", outcome.summary());
    assert!(r.ops > 1000, "the workload ran ({} ops)", r.ops);
    assert!(outcome.terms > 0, "the election contenders never led");
    assert!(outcome.leases.0 > 0, "the lease keepers never held a lease: the early-expiry check saw nothing");
    assert!(
        r.ok(),
        "scenario {name} (seed {}) found anomalies (node logs in {:?}):\n{}",
        s.seed,
        outcome.dir,
        r.anomalies.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kills_and_pauses_on_three_nodes() {
    scenario("kills-and-pauses", 20261201, 3, 15, &[Kind::Kill, Kind::Pause]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_and_membership_on_three_nodes() {
    scenario("partitions-and-membership", 20261202, 3, 15, &[Kind::Partition, Kind::Membership]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_on_five_nodes() {
    let all = [Kind::Kill, Kind::Pause, Kind::Partition, Kind::Membership, Kind::Lag, Kind::Join];
    scenario("everything", 20261203, 5, 20, &all).await;
}

/// Catch-up under load: followers paused while writes pour in (so they catch
/// up by a snapshot, with a watcher's WAIT held across it) and nodes joining
/// under the same load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_and_joining_under_load_on_three_nodes() {
    scenario("lag-and-join", 20261204, 3, 20, &[Kind::Lag, Kind::Join]).await;
}

/// Durable nodes (`--data-dir`): every node killed at once and restarted,
/// a node restarted with its newest log segment cut short, single kills
/// (restarted as the same member). Nothing acknowledged may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_nodes_killed_all_at_once_and_torn_on_three_nodes() {
    scenario_in("durable", 20261205, 3, 20, &[Kind::KillAll, Kind::Torn, Kind::Kill], true, false).await;
}

/// Every node with peer mutual TLS, client TLS and --client-ca: kills,
/// partitions (removals, then rejoins through TLS) and pauses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_nodes_killed_partitioned_and_paused_on_three_nodes() {
    scenario_in("tls", 20261206, 3, 15, &[Kind::Kill, Kind::Partition, Kind::Pause], false, true).await;
}
