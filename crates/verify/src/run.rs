//! One fault-injection run: start a cluster, run the workload, inject faults
//! on the seeded schedule, heal, settle, collect every node's final tree, and
//! check the history.

use crate::checks::{check, Report};
use crate::cluster::Cluster;
use crate::faults::{exited, Fault, Kind, Schedule};
use crate::history::{History, Record, Rev, WatchLog};
use crate::workload::{big_writer, client, dump, flood, follow, follow_on, reached, record, Clock, Nodes};
use doozer_client::Client;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub nodes: usize,
    pub duration: Duration,
    pub seed: u64,
    pub clients: usize,
    pub watchers: usize,
    pub keys: usize,
    pub kinds: Vec<Kind>,
    /// The nodes' -timeout, in seconds.
    pub member_timeout: f64,
    /// A writer of values near the 1 MiB limit runs beside the clients.
    pub big_values: bool,
    /// Election contenders making fenced writes (`election`), and as many lease keepers (`lease`).
    pub contenders: usize,
    /// Every node keeps its state on disk (`--data-dir`).
    pub durable: bool,
    /// Peer TLS, client TLS and client certificates on every node (`pki`).
    pub tls: bool,
}

/// What a run did and what the checkers found.
pub struct Outcome {
    pub report: Report,
    pub faults: Vec<String>,
    pub revisions: Rev,
    pub watch_events: usize,
    /// TOO_LATE answers the watchers were given (each a range they were not held to).
    pub watch_gaps: usize,
    /// Terms the election contenders led.
    pub terms: usize,
    /// Leases the lease keepers held, and how many of them the cluster ended.
    pub leases: (usize, usize),
    /// Where the nodes' logs are; kept when the run found anomalies.
    pub dir: Option<PathBuf>,
}

impl Outcome {
    /// One line of figures: operations, keys, revisions, watch events, faults, anomalies.
    pub fn summary(&self) -> String {
        let r = &self.report;
        format!(
            "ops={} keys={} revisions={} watch_events={} watch_too_late={} election_terms={} leases={} leases_ended={} faults={} anomalies={}",
            r.ops,
            r.keys,
            self.revisions,
            self.watch_events,
            self.watch_gaps,
            self.terms,
            self.leases.0,
            self.leases.1,
            self.faults.len(),
            r.anomalies.len()
        )
    }
}

const SETTLE: Duration = Duration::from_secs(90);

pub async fn run(doozerd: &Path, s: &Scenario) -> Result<Outcome, String> {
    let dir = tempfile::Builder::new().prefix("doozer-torture-").tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().to_path_buf();
    // On an error the node logs are kept for a look.
    run_in(doozerd, s, dir).await.map_err(|e| format!("{e} (node logs in {})", path.display()))
}

async fn run_in(doozerd: &Path, s: &Scenario, dir: tempfile::TempDir) -> Result<Outcome, String> {
    let keep_on_error = KeepOnError(Some(dir));
    let dir = keep_on_error.0.as_ref().map(|d| d.path().to_path_buf()).unwrap_or_default();
    // The default history (-hist 2000, --hist-bytes 256 MiB): the recorder
    // keeps up by keeping many WAITs in flight, and watchers that fall out of
    // the window are told so (TOO_LATE) and checked around the gap. Not the
    // defaults: -timeout (3 s unless asked: pauses and partitions then outlast
    // it, so removals and rejoins happen within a run) and --write-timeout 3
    // (below the clients' 5 s, so a stalled write is answered, not abandoned).
    let timeout = s.member_timeout.to_string();
    let mut args: Vec<String> =
        ["-timeout", &timeout, "-c", "torture", "--write-timeout", "3"].iter().map(|a| a.to_string()).collect();
    let mut opts = doozer_client::Options::default();
    if s.tls {
        let (flags, tls_opts) = crate::pki::make(&dir)?;
        args.extend(flags);
        opts = tls_opts;
    }
    let mut cluster = Cluster::start(doozerd, s.nodes, &args, &dir, s.durable).await?;
    cluster.opts = opts.clone();
    let nodes = Nodes::with_options(cluster.live(), opts);
    let clock = Clock::new();
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let (stop_tx, stop) = watch::channel(false);
    let (until_tx, until) = watch::channel(None);
    let recorder = tokio::spawn(record(nodes.clone(), 1, until.clone()));
    let big = s.big_values.then(|| tokio::spawn(big_writer(nodes.clone(), s.seed ^ 0xb16, stop.clone())));
    let parked: Parked = Arc::default();
    let watchers: Vec<_> =
        (0..s.watchers).map(|_| tokio::spawn(follow(nodes.clone(), "/k/**".into(), 1, until.clone()))).collect();
    let clients: Vec<_> = (0..s.clients)
        .map(|i| {
            tokio::spawn(client(
                i,
                s.seed ^ (i as u64 + 1),
                s.keys,
                nodes.clone(),
                clock,
                records.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let contenders: Vec<_> = (0..s.contenders)
        .map(|i| {
            tokio::spawn(crate::election::contender(i, s.seed ^ 0xe1ec7 ^ (i as u64 + 1), nodes.clone(), stop.clone()))
        })
        .collect();

    let keepers: Vec<_> = (0..s.contenders)
        .map(|i| {
            tokio::spawn(crate::lease::keeper(s.seed ^ 0x1ea5e ^ (i as u64 + 1), nodes.clone(), clock, stop.clone()))
        })
        .collect();

    let faults = inject(&mut cluster, &nodes, s, &parked, &until).await?;

    let _ = stop_tx.send(true);
    for c in clients {
        let _ = c.await;
    }
    let mut terms = 0;
    for c in contenders {
        terms += c.await.unwrap_or(0);
    }
    let mut leases = Vec::new();
    for k in keepers {
        leases.extend(k.await.unwrap_or_default());
    }
    if let Some(b) = big {
        let _ = b.await;
    }
    cluster.heal();
    // Back to full voter strength with nobody restarting anything.
    await_healthy(&mut cluster, &nodes, s.nodes)
        .await
        .map_err(|e| format!("after the last fault: {e}; faults:\n{}", faults.join("\n")))?;
    if s.contenders > 0 {
        // Contenders that died leave their claims for a lease's TTL.
        let ttl = Duration::from_secs(crate::election::TTL as u64);
        crate::election::claims_gone(&nodes, ttl * 2 + Duration::from_secs(10)).await;
    }
    let final_rev = settle(&mut cluster, &nodes).await?;
    let _ = until_tx.send(Some(final_rev));
    let log = recorder.await.map_err(|e| e.to_string())??.events;
    let mut watches = Vec::new();
    for w in watchers {
        watches.push(w.await.map_err(|e| e.to_string())??);
    }
    let parked: Vec<_> = std::mem::take(&mut *parked.lock());
    for w in parked {
        watches.push(w.await.map_err(|e| e.to_string())?);
    }
    let mut finals = Vec::new();
    for (_, addr) in cluster.live() {
        finals.push(dump(&nodes, &addr, final_rev).await?);
    }
    let watch_events = watches.iter().map(|w| w.events.len()).sum();
    let watch_gaps = watches.iter().map(|w| w.gaps.len()).sum();
    let records = std::mem::take(&mut *records.lock());
    let lease_counts = (leases.len(), leases.iter().filter(|l| l.ended.is_some()).count());
    let history = History {
        records,
        log: log.into_iter().take_while(|c| c.rev <= final_rev).collect(),
        watches,
        finals,
        final_rev,
        leases,
    };
    let report = check(&history);
    let dir = keep_on_error.finish(!report.ok());
    Ok(Outcome { report, faults, revisions: final_rev, watch_events, watch_gaps, terms, leases: lease_counts, dir })
}

/// Keeps the run's directory if the run ends early with an error.
struct KeepOnError(Option<tempfile::TempDir>);

impl KeepOnError {
    /// The run completed: keep the directory only if asked to.
    fn finish(mut self, keep: bool) -> Option<PathBuf> {
        let dir = self.0.take()?;
        keep.then(|| dir.keep())
    }
}

impl Drop for KeepOnError {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = d.keep();
        }
    }
}

/// Watchers parked on one node during a fault, collected at the end.
type Parked = Arc<Mutex<Vec<tokio::task::JoinHandle<WatchLog>>>>;

/// A flood of small writes to the leader, running until [`Load::stop`].
struct Load {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<usize>,
}

impl Load {
    async fn start(cluster: &mut Cluster) -> Option<Load> {
        let leader = leader_slot(cluster).await?;
        let (stop, rx) = watch::channel(false);
        let task = tokio::spawn(flood(cluster.opts.clone(), cluster.slots[leader].addr.clone(), 8, rx));
        Some(Load { stop, task })
    }

    /// Stops it; returns how many writes it made.
    async fn stop(load: Option<Load>) -> usize {
        let Some(l) = load else { return 0 };
        let _ = l.stop.send(true);
        l.task.await.unwrap_or(0)
    }
}

/// The `pick`-th slot that is not the leader's.
async fn follower(cluster: &mut Cluster, pick: usize) -> usize {
    let leader = leader_slot(cluster).await;
    let others: Vec<usize> = (0..cluster.slots.len()).filter(|&i| Some(i) != leader).collect();
    others[pick % others.len()]
}

/// Faults on the schedule until the run's time is up.
async fn inject(
    cluster: &mut Cluster,
    nodes: &Nodes,
    s: &Scenario,
    parked: &Parked,
    until: &watch::Receiver<Option<Rev>>,
) -> Result<Vec<String>, String> {
    let started = Instant::now();
    let mut schedule = Schedule::new(s.seed, s.kinds.clone());
    let mut done = Vec::new();
    let mut new_slots = 0;
    while started.elapsed() < s.duration {
        tokio::time::sleep(schedule.gap()).await;
        if s.kinds.is_empty() {
            continue;
        }
        // The next fault waits until the last one is repaired: a dead member
        // stays a voter until -timeout removes it, and a second loss before
        // then is a lost quorum, which Raft rightly does not heal by itself.
        await_healthy(cluster, nodes, s.nodes)
            .await
            .map_err(|e| format!("{e}; faults so far:\n{}", done.join("\n")))?;
        let leader = leader_slot(cluster).await;
        let fault = schedule.next(s.nodes, leader);
        done.push(format!("{:>6.1}s {fault:?}", started.elapsed().as_secs_f64()));
        match fault {
            Fault::Kill { slot, down } => {
                cluster.kill(slot);
                *nodes.lock() = cluster.live();
                tokio::time::sleep(down).await;
                cluster.restart(slot).await?;
            }
            Fault::KillAll { down } => {
                for i in 0..s.nodes {
                    cluster.kill(i);
                }
                *nodes.lock() = cluster.live();
                tokio::time::sleep(down).await;
                for i in 0..s.nodes {
                    cluster.restart(i).await?;
                }
            }
            Fault::Torn { slot, cut } => {
                cluster.kill(slot);
                *nodes.lock() = cluster.live();
                let left = cluster.tear_tail(slot, cut)?;
                cluster.restart(slot).await?;
                if let Some(last) = done.last_mut() {
                    last.push_str(&format!(": a torn frame of {left} bytes"));
                }
            }
            Fault::Pause { slot, hold } => {
                cluster.pause(slot);
                *nodes.lock() = cluster.live();
                tokio::time::sleep(hold).await;
                cluster.resume(slot);
            }
            Fault::Partition { cuts, hold, .. } => {
                cluster.cut(&cuts);
                tokio::time::sleep(hold).await;
                cluster.heal();
            }
            Fault::Lag { pick, hold } => {
                let slot = follower(cluster, pick).await;
                let addr = cluster.slots[slot].addr.clone();
                let from = match any_client(cluster).await {
                    Some(c) => c.rev().await.unwrap_or(0) + 1,
                    None => 1,
                };
                parked.lock().push(tokio::spawn(follow_on(nodes.clone(), addr, "/k/**".into(), from, until.clone())));
                // Let the parked watcher's WAIT be held before the pause.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let load = Load::start(cluster).await;
                cluster.pause(slot);
                *nodes.lock() = cluster.live();
                tokio::time::sleep(hold).await;
                cluster.resume(slot);
                tokio::time::sleep(Duration::from_secs(1)).await;
                let writes = Load::stop(load).await;
                if let Some(last) = done.last_mut() {
                    last.push_str(&format!(": slot {slot}, {writes} writes meanwhile"));
                }
            }
            Fault::Join { pick } => {
                let slot = follower(cluster, pick).await;
                let load = Load::start(cluster).await;
                cluster.kill(slot);
                *nodes.lock() = cluster.live();
                tokio::time::sleep(Duration::from_millis(300)).await;
                cluster.replace(slot).await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                let writes = Load::stop(load).await;
                if let Some(last) = done.last_mut() {
                    last.push_str(&format!(": slot {slot}, {writes} writes meanwhile"));
                }
            }
            Fault::Membership { pick, hold } => {
                if let Some(slot) = demote_one(cluster, pick).await {
                    tokio::time::sleep(hold).await;
                    new_slots += 1;
                    let path = format!("/ctl/cal/m{new_slots}");
                    let added = add_slot(cluster, &path).await;
                    if let Some(last) = done.last_mut() {
                        last.push_str(&format!(": emptied {slot}, added {path}: {added}"));
                    }
                }
            }
        }
        *nodes.lock() = cluster.live();
    }
    Ok(done)
}

/// How long the cluster may take to repair a fault.
const RECOVER: Duration = Duration::from_secs(60);

/// Waits until every slot's process is a voter (one of them the leader) and
/// no other member is left.
async fn await_healthy(cluster: &mut Cluster, nodes: &Nodes, n: usize) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let gone = exited(cluster);
        if !gone.is_empty() {
            return Err(format!("the process in slot(s) {gone:?} exited by itself"));
        }
        *nodes.lock() = cluster.live();
        // Healthy twice, a second apart, and every node caught up: a node
        // still catching up after a pause may yet be removed as silent, and
        // a second fault then would be two voters lost at once.
        if healthy(cluster, n).await && caught_up(cluster).await {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if healthy(cluster, n).await && caught_up(cluster).await {
                return Ok(());
            }
        }
        if start.elapsed() > RECOVER {
            return Err(format!("the cluster did not recover within {RECOVER:?}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn healthy(cluster: &mut Cluster, n: usize) -> bool {
    let live: Vec<String> = cluster.live().iter().map(|(i, _)| cluster.slots[*i].proxy.addr.to_string()).collect();
    if live.len() != n {
        return false;
    }
    let Some(c) = any_client(cluster).await else { return false };
    let Ok(Ok(members)) = tokio::time::timeout(Duration::from_secs(2), c.getdir_all("/ctl/node", None)).await else {
        return false;
    };
    if members.len() != n {
        return false;
    }
    for id in members {
        let role = text(&c, &format!("/ctl/node/{id}/role")).await;
        let addr = text(&c, &format!("/ctl/node/{id}/addr")).await;
        let voter = matches!(role.as_deref(), Some("leader" | "voter"));
        if !voter || !addr.is_some_and(|a| live.contains(&a)) {
            return false;
        }
    }
    true
}

/// True if every live node has applied, within a second, the revision one
/// of them has now.
async fn caught_up(cluster: &mut Cluster) -> bool {
    let Some(c) = any_client(cluster).await else { return false };
    let Ok(Ok(rev)) = tokio::time::timeout(Duration::from_secs(1), c.rev()).await else { return false };
    for (_, addr) in cluster.live() {
        let read =
            async { Client::connect_with(&addr, &cluster.opts).await.ok()?.get("/ctl/name", Some(rev)).await.ok() };
        if !matches!(tokio::time::timeout(Duration::from_secs(1), read).await, Ok(Some(_))) {
            return false;
        }
    }
    true
}

async fn any_client(cluster: &mut Cluster) -> Option<Client> {
    for (_, addr) in cluster.live() {
        if let Ok(Ok(c)) =
            tokio::time::timeout(Duration::from_secs(1), Client::connect_with(&addr, &cluster.opts)).await
        {
            return Some(c);
        }
    }
    None
}

async fn text(c: &Client, path: &str) -> Option<String> {
    let got = tokio::time::timeout(Duration::from_secs(2), c.get(path, None)).await.ok()?.ok()?;
    Some(String::from_utf8_lossy(&got.0).into_owned())
}

/// The slot of the leader named in /ctl/leader, if it can be found.
async fn leader_slot(cluster: &mut Cluster) -> Option<usize> {
    let c = any_client(cluster).await?;
    let id = text(&c, "/ctl/leader").await?;
    let addr = text(&c, &format!("/ctl/node/{id}/addr")).await?;
    cluster.slot_of(&addr)
}

/// Empties the slot of a voter that is not the leader (the `pick`-th of them).
async fn demote_one(cluster: &mut Cluster, pick: usize) -> Option<String> {
    let c = any_client(cluster).await?;
    let leader = text(&c, "/ctl/leader").await?;
    let mut held = Vec::new();
    for s in c.getdir_all("/ctl/cal", None).await.ok()? {
        let path = format!("/ctl/cal/{s}");
        let (body, rev) = c.get(&path, None).await.ok()?;
        if !body.is_empty() && body != leader.as_bytes() {
            held.push((path, rev));
        }
    }
    let (path, rev) = held.get(pick % held.len().max(1))?.clone();
    c.set(&path, rev, "").await.ok()?;
    Some(path)
}

async fn add_slot(cluster: &mut Cluster, path: &str) -> bool {
    match any_client(cluster).await {
        Some(c) => c.set(path, 0, "").await.is_ok(),
        None => false,
    }
}

/// Waits until the healed cluster takes a write and every node has applied
/// it; returns that write's revision.
async fn settle(cluster: &mut Cluster, nodes: &Nodes) -> Result<Rev, String> {
    let start = Instant::now();
    let mut final_rev = None;
    loop {
        if start.elapsed() > SETTLE {
            return Err(format!("the cluster did not settle within {SETTLE:?} of healing"));
        }
        *nodes.lock() = cluster.live();
        if final_rev.is_none() {
            if let Some(c) = any_client(cluster).await {
                if let Ok(Ok(rev)) = tokio::time::timeout(Duration::from_secs(5), c.set("/final", -1, "x")).await {
                    final_rev = Some(rev);
                }
            }
        }
        if let Some(rev) = final_rev {
            let mut all = true;
            for (_, addr) in cluster.live() {
                all &= reached(nodes, &addr, rev).await;
            }
            if all {
                return Ok(rev);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
