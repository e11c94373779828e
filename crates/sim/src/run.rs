//! One seeded run: the cluster, the workload, the faults, the checks.
//!
//! Each node is a turmoil host running the real server
//! (`doozer_server::start` and `serve`, with doozerd's default flags but for
//! the plan's `-timeout` and `--cal-slots`, and no web side); the workload
//! (clients, watchers, the recorder, from `doozer-verify`) is a turmoil
//! client speaking the Doozer protocol to them through the simulated
//! network. This loop steps the simulation one tick at a time, starts and
//! ends faults at their virtual times, and checks at every step that no
//! node's term or applied index goes back. After the faults it heals everything and
//! restarts what crashed; the cluster must then, within [`LIVENESS`] of
//! virtual time, serve a write on every node and return to full voter
//! strength (every slot held by a running node, no ex-member left). Then
//! the history goes through every checker in `doozer_verify::checks`.
//!
//! Everything a run does is folded into a trace hash: two runs of one seed
//! must give the same one.

use crate::plan::{Fault, Plan, Timed};
use crate::world::Simulated;
use doozer_server::consensus::Consensus;
use doozer_server::rt;
use doozer_verify::history::{History, Record, Rev, WatchLog};
use doozer_verify::workload::{self, Clock, Nodes};
use parking_lot::Mutex;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// One step of virtual time.
const TICK: Duration = Duration::from_millis(2);
/// The client port of every node.
const PORT: u16 = 8046;
/// How long after the faults the cluster has to serve again and return to
/// full strength: beyond the members' `-timeout` (an ex-member is removed
/// only after it), this much.
pub const LIVENESS: Duration = Duration::from_secs(90);

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    /// A hash of everything the run did and saw.
    pub trace: u64,
    /// Virtual time the run covered.
    pub elapsed: Duration,
    /// Revisions written.
    pub revisions: Rev,
    pub operations: usize,
    /// Times a node found itself removed and rejoined under a new id: the
    /// cluster healing, but each one a member the leader judged silent (a
    /// seed that found a live member removed asserts how many it expects).
    pub rejoins: usize,
    /// Fenced writes the election contenders got committed.
    pub fenced: usize,
    /// Every broken promise, in words; empty if none.
    pub violations: Vec<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }
}

/// The trace: an FNV-1a hash of every line, and the lines if asked for.
#[derive(Default)]
pub struct Trace {
    hash: u64,
    pub lines: Option<Vec<String>>,
}

impl Trace {
    /// A trace that keeps its lines, to print.
    pub fn keeping_lines() -> Trace {
        Trace { hash: 0, lines: Some(Vec::new()) }
    }

    fn note(&mut self, at: Duration, line: String) {
        let h = format!("{} {line}\n", at.as_millis())
            .bytes()
            .fold(self.hash, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        self.hash = h;
        if let Some(lines) = &mut self.lines {
            lines.push(format!("{:>8}ms {line}", at.as_millis()));
        }
    }
}

fn host(i: usize) -> String {
    format!("n{i}")
}

fn addr(i: usize) -> String {
    format!("n{i}:{PORT}")
}

/// The node on each host, as its software last reported it.
type Handles = Vec<Rc<RefCell<Option<Arc<Consensus>>>>>;

/// Runs `plan`; with `verbose`, the trace lines are kept in `trace`.
pub fn run(plan: &Plan, trace: &mut Trace) -> Outcome {
    let world = Rc::new(Simulated::new(plan.seed.rotate_left(17) ^ 0x5eed));
    let _installed = rt::install(world.clone());
    trace.hash = 0xcbf2_9ce4_8422_2325;
    let mut sim = turmoil::Builder::new()
        .rng_seed(plan.seed)
        .simulation_duration(Duration::from_secs(24 * 3600))
        .tick_duration(TICK)
        .min_message_latency(Duration::ZERO)
        .max_message_latency(Duration::from_millis(10))
        .tcp_capacity(1 << 16)
        .build();
    let handles: Handles = (0..plan.hosts()).map(|_| Rc::default()).collect();
    let rejoins: Rc<Cell<usize>> = Rc::default();
    // Every host is there from the start (turmoil links hosts as they come);
    // the one that grows the cluster starts its node at `grow_at`.
    for (i, h) in handles.iter().enumerate() {
        sim.host(host(i), software(plan, i, h.clone(), rejoins.clone()));
    }
    let mut nodes = Nodes::with_options((0..plan.nodes).map(|i| (i, addr(i))).collect(), rt::client_options());
    nodes.recorder_depth = 8;
    let (phase_tx, phase) = watch::channel(false);
    let (ask_tx, ask_rx) = mpsc::unbounded_channel();
    let result: Rc<RefCell<Option<Result<History, String>>>> = Rc::default();
    {
        let (plan, nodes, result) = (plan.clone(), nodes.clone(), result.clone());
        sim.client("ctl", async move {
            let history = drive(&plan, nodes, phase, ask_rx).await;
            *result.borrow_mut() = Some(history);
            Ok(())
        });
    }
    let mut state =
        State { violations: Vec::new(), progress: BTreeMap::new(), seen: Vec::new(), applied: BTreeMap::new() };
    let mut active: Vec<(Duration, Timed)> = Vec::new();
    let mut pending: Vec<Timed> = plan.faults.iter().rev().cloned().collect();
    let mut grown = plan.grow_at.is_none();
    let mut healed: Option<Duration> = None;
    let mut strong = false;
    loop {
        let now = sim.elapsed();
        if !grown && plan.grow_at.is_some_and(|g| now >= g) {
            grown = true;
            let i = plan.nodes;
            nodes.lock().push((i, addr(i)));
            trace.note(now, format!("grow {}", host(i)));
        }
        while healed.is_none() && pending.last().is_some_and(|f| f.at <= now) {
            let Some(f) = pending.pop() else { break };
            // A memory-only node that crashes comes back empty, so a crash
            // while another node is down, not yet back in its slot, or cut
            // off could take a majority's state for good: that is losing the
            // cluster (disaster recovery), not a fault it must survive. Such
            // a crash is skipped. (Seed 111: a voter crashed 300 ms before
            // the leader removed another, silent behind a lossy link, and the
            // two left could never commit the removal.) So is an operator's
            // demotion then, which takes a voter away as surely (seed 10632:
            // a demotion 0.4 s after another voter crashed).
            let crashing = matches!(f.fault, Fault::Crash { .. } | Fault::Demote { .. });
            let impaired = active.iter().any(|(_, a)| !matches!(a.fault, Fault::Slow { .. }));
            if crashing && (impaired || !full_strength(plan, &handles, grown, false)) {
                trace.note(now, format!("skip {:?}", f.fault));
                continue;
            }
            trace.note(now, format!("start {:?}", f.fault));
            begin(&mut sim, plan, &handles, &world, &f, &ask_tx);
            active.push((now + f.lasts, f));
        }
        active.sort_by_key(|(end, _)| *end);
        while active.first().is_some_and(|(end, _)| *end <= now) {
            let (_, f) = active.remove(0);
            trace.note(now, format!("end {:?}", f.fault));
            end(&mut sim, plan, &world, &f.fault, trace, now);
        }
        if healed.is_none() && now >= plan.chaos {
            heal(&mut sim, plan, &handles, &mut active, grown);
            world.send_twice(0.0);
            trace.note(now, "heal".into());
            let _ = phase_tx.send(true);
            healed = Some(now);
        }
        observe(&handles, &mut state, trace, now);
        if let Some(h) = healed {
            strong = strong || full_strength(plan, &handles, grown, true);
            if now > h + plan.timeout + LIVENESS {
                state.violations.push(format!(
                    "liveness: {LIVENESS:?} past the -timeout after healing, the cluster {}; {}",
                    if result.borrow().is_none() {
                        "has not served the final write on every node"
                    } else {
                        "is not at full voter strength"
                    },
                    describe(&handles)
                ));
                break;
            }
        }
        match sim.step() {
            Ok(done) if done && strong => break,
            Ok(_) => {}
            Err(e) => {
                state.violations.push(format!("simulation: {e}"));
                break;
            }
        }
    }
    let elapsed = sim.elapsed();
    let mut outcome = Outcome {
        seed: plan.seed,
        trace: 0,
        elapsed,
        revisions: 0,
        operations: 0,
        rejoins: rejoins.get(),
        fenced: 0,
        violations: state.violations,
    };
    match result.borrow_mut().take() {
        None => {}
        Some(Err(e)) => outcome.violations.push(e),
        Some(Ok(history)) => {
            outcome.revisions = history.final_rev;
            outcome.operations = history.records.len();
            outcome.fenced = history.log.iter().filter(|c| c.path == doozer_verify::election::REGISTER).count();
            note_history(trace, &history, elapsed);
            let report = doozer_verify::checks::check(&history);
            if !report.ok() {
                outcome.violations.push(format!("history: {report:?}"));
            }
        }
    }
    outcome.trace = trace.hash;
    // Drop every node before the world goes.
    drop(sim);
    outcome
}

/// The software of host `i`: the real server, seeding the cluster (host 0's
/// first start) or attaching to the others; after a crash it starts again,
/// empty, under a new id. `handle` is kept up to date for the checks.
fn software(
    plan: &Plan,
    i: usize,
    handle: Rc<RefCell<Option<Arc<Consensus>>>>,
    rejoins: Rc<Cell<usize>>,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = turmoil::Result>>> {
    let starts = Rc::new(Cell::new(0u32));
    let (timeout, slots, hosts) = (plan.timeout, plan.slots, plan.hosts());
    let idle = if i >= plan.nodes { plan.grow_at } else { None };
    move || {
        let first = starts.get() == 0;
        starts.set(starts.get() + 1);
        let attach: Vec<String> =
            if i == 0 && first { Vec::new() } else { (0..hosts).filter(|&j| j != i).map(addr).collect() };
        let (handle, rejoins) = (handle.clone(), rejoins.clone());
        let wait = idle.filter(|_| first).unwrap_or_default();
        Box::pin(async move {
            tokio::time::sleep(wait).await;
            let settings = settings(i, timeout, slots, attach);
            let running = loop {
                match doozer_server::start(settings.clone()).await {
                    Ok(r) => break r,
                    Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
                }
            };
            *handle.borrow_mut() = Some(running.cluster.clone());
            let h = handle.clone();
            let rejoined = move |r: &doozer_server::Running| {
                *h.borrow_mut() = Some(r.cluster.clone());
                rejoins.set(rejoins.get() + 1);
            };
            doozer_server::serve(running, settings, std::future::pending(), rejoined).await;
            Ok(())
        })
    }
}

/// doozerd's defaults, but for the plan's `-timeout` and `--cal-slots`.
fn settings(i: usize, timeout: Duration, slots: usize, attach: Vec<String>) -> doozer_server::Settings {
    use clap::Parser;
    let timeout = timeout.as_secs_f64().to_string();
    let slots = slots.to_string();
    let listen = format!("0.0.0.0:{PORT}");
    let advertise = addr(i);
    let mut args = vec!["doozerd", "-l", &listen, "--advertise", &advertise, "-c", "sim"];
    args.extend(["--timeout", &timeout, "--cal-slots", &slots]);
    let cfg = doozer_server::config::Config::parse_from(args);
    let mut s = doozer_server::Settings::from_config(&cfg, "sim", Default::default());
    s.attach = attach;
    s.web = None;
    s
}

/// A node as the trace shows it: id, role, term, leader.
type View = (String, &'static str, u64, Option<String>);

/// What the checks remember between steps.
struct State {
    violations: Vec<String>,
    /// Each node's last (term, applied index).
    progress: BTreeMap<String, (u64, u64)>,
    /// Each host's last (id, role, term, leader), to trace changes.
    seen: Vec<Option<View>>,
    /// The leader (term, node) of each applied index seen.
    applied: BTreeMap<u64, (u64, u64)>,
}

/// At every step, for each node: its term and applied index never go back,
/// and the entry it last applied is the one every other node applied at
/// that index (Raft's state machine safety, sampled at every step).
///
/// Not "one leader per term": openraft 0.9 identifies a leader by (term,
/// node id), and a voter that voted for one candidate may still grant a
/// later one with a higher id in the same term, so two nodes can lead in
/// one term for a moment (seed 43 shows it). The older cannot commit: its
/// quorum has moved on. That nothing committed is lost or differs between
/// nodes is what the history checks hold the run to.
fn observe(handles: &Handles, state: &mut State, trace: &mut Trace, now: Duration) {
    state.seen.resize(handles.len(), None);
    for (i, h) in handles.iter().enumerate() {
        let Some(c) = h.borrow().clone() else { continue };
        let s = c.status();
        let applied = s.applied_index.unwrap_or(0);
        match state.progress.get(&s.id) {
            Some(&(term, index)) if s.term < term || applied < index => state.violations.push(format!(
                "at {now:?} node {} went back from term {term} applied {index} to term {} applied {applied}",
                s.id, s.term
            )),
            _ => {}
        }
        state.progress.insert(s.id.clone(), (s.term, applied));
        // State machine safety: an index applied anywhere holds the same
        // entry (the same leader wrote it) everywhere, so nothing committed
        // is ever lost or replaced.
        if let (Some(index), Some(by)) = (s.applied_index, s.applied_by) {
            match state.applied.get(&index) {
                Some(&other) if other != by => state.violations.push(format!(
                    "at {now:?} node {} applied entry {index} written by leader {by:?}; another node applied it from {other:?}",
                    s.id
                )),
                Some(_) => {}
                None => {
                    state.applied.insert(index, by);
                }
            }
        }
        let view = Some((s.id.clone(), s.role, s.term, s.leader.clone()));
        if state.seen[i] != view {
            trace.note(now, format!("n{i} {} {} term {} leader {:?}", s.id, s.role, s.term, s.leader));
            state.seen[i] = view;
        }
    }
}

/// Every slot held by a running node, every running node a member, no
/// ex-member left, no voter change under way, and every node agreeing on
/// all of it (one leader, the same voters, the same applied index): a paused
/// leader's own view is not enough.
/// With `applied`, also the same applied index everywhere (the end of a
/// run, writes stopped; mid-run, with writes in flight, that is rare).
fn full_strength(plan: &Plan, handles: &Handles, grown: bool, applied: bool) -> bool {
    let hosts = if grown { plan.hosts() } else { plan.nodes };
    let statuses: Vec<_> = handles.iter().take(hosts).filter_map(|h| h.borrow().as_ref().map(|c| c.status())).collect();
    if statuses.len() < hosts {
        return false;
    }
    let leaders: Vec<_> = statuses.iter().filter(|s| s.role == "leader").collect();
    let [leader] = leaders[..] else { return false };
    let mut ids: Vec<&String> = statuses.iter().map(|s| &s.id).collect();
    ids.sort();
    let mut members: Vec<&String> = leader.voters.iter().chain(&leader.learners).collect();
    members.sort();
    leader.voters.len() == plan.slots.min(hosts)
        && ids == members
        && statuses.iter().all(|s| {
            !s.changing
                && s.leader.as_ref() == Some(&leader.id)
                && s.voters == leader.voters
                && s.learners == leader.learners
                && (!applied || s.applied_index == leader.applied_index)
        })
}

/// Each node's view, in a line.
fn describe(handles: &Handles) -> String {
    let views: Vec<String> = handles
        .iter()
        .enumerate()
        .map(|(i, h)| match h.borrow().as_ref().map(|c| c.status()) {
            None => format!("n{i}: down"),
            Some(s) => format!(
                "n{i}: {} {} term {} applied {:?} voters {:?} learners {:?}{}",
                s.id,
                s.role,
                s.term,
                s.applied_index,
                s.voters,
                s.learners,
                if s.changing { " (changing)" } else { "" }
            ),
        })
        .collect();
    views.join("; ")
}

/// Every pair of hosts with one in `side` and the other not.
fn across<'a>(plan: &'a Plan, side: &'a [usize]) -> impl Iterator<Item = (String, String)> + 'a {
    side.iter().flat_map(move |a| (0..plan.hosts()).filter(|b| !side.contains(b)).map(move |b| (host(*a), host(b))))
}

/// Every link of `node`: to the other hosts and to the clients.
fn links_of(plan: &Plan, node: usize) -> impl Iterator<Item = (String, String)> + '_ {
    let others = (0..plan.hosts()).filter(move |&j| j != node).map(host);
    others.chain(["ctl".to_string()]).map(move |o| (host(node), o))
}

/// What a fault asks of the workload.
enum Ask {
    /// Park a watcher on this node.
    Park(String),
    /// Flood writes through a node other than `away` for this long.
    Flood { away: String, lasts: Duration },
    /// Empty the slot of the node with this id, for this long.
    Demote { id: String, lasts: Duration },
}

fn begin(
    sim: &mut turmoil::Sim,
    plan: &Plan,
    handles: &Handles,
    world: &Simulated,
    timed: &Timed,
    ask: &mpsc::UnboundedSender<Ask>,
) {
    match &timed.fault {
        Fault::Partition { side } => across(plan, side).for_each(|(a, b)| sim.partition(a, b)),
        Fault::OneWay { from, to } => sim.partition_oneway(host(*from), host(*to)),
        Fault::Pause { node } => {
            links_of(plan, *node).for_each(|(a, b)| sim.hold(a, b));
            // A watcher parked on the paused node: its WAIT is held across
            // the catch-up (perhaps by snapshot) that follows.
            let _ = ask.send(Ask::Park(addr(*node)));
        }
        Fault::Loss { a, b, rate } => sim.set_link_fail_rate(host(*a), host(*b), *rate),
        Fault::Slow { max } => sim.set_max_message_latency(*max),
        Fault::Crash { node } => {
            if sim.is_host_running(host(*node)) {
                sim.crash(host(*node));
                *handles[*node].borrow_mut() = None;
            }
        }
        Fault::CutClients { node } => sim.partition(host(*node), "ctl"),
        Fault::Flood { away } => {
            let _ = ask.send(Ask::Flood { away: addr(*away), lasts: timed.lasts });
        }
        Fault::Duplicate { share } => world.send_twice(*share),
        Fault::Demote { node } => {
            if let Some(id) = handles[*node].borrow().as_ref().map(|c| c.status().id) {
                let _ = ask.send(Ask::Demote { id, lasts: timed.lasts });
            }
        }
    }
}

fn end(sim: &mut turmoil::Sim, plan: &Plan, world: &Simulated, fault: &Fault, trace: &mut Trace, now: Duration) {
    match fault {
        Fault::Partition { side } => across(plan, side).for_each(|(a, b)| sim.repair(a, b)),
        Fault::OneWay { from, to } => sim.repair_oneway(host(*from), host(*to)),
        Fault::Pause { node } => {
            links_of(plan, *node).for_each(|(a, b)| sim.release(a, b));
        }
        Fault::Loss { a, b, .. } => sim.set_link_fail_rate(host(*a), host(*b), 0.0),
        Fault::Slow { .. } => sim.set_max_message_latency(Duration::from_millis(10)),
        Fault::Crash { node } => {
            if !sim.is_host_running(host(*node)) {
                sim.bounce(host(*node));
                trace.note(now, format!("restart n{node}"));
            }
        }
        Fault::CutClients { node } => sim.repair(host(*node), "ctl"),
        Fault::Duplicate { .. } => world.send_twice(0.0),
        Fault::Flood { .. } | Fault::Demote { .. } => {}
    }
}

/// Ends every fault: links healthy, held messages delivered, crashed nodes started.
fn heal(sim: &mut turmoil::Sim, plan: &Plan, handles: &Handles, active: &mut Vec<(Duration, Timed)>, grown: bool) {
    active.clear();
    let hosts = if grown { plan.hosts() } else { plan.nodes };
    let mut names: Vec<String> = (0..hosts).map(host).collect();
    names.push("ctl".into());
    for (k, a) in names.iter().enumerate() {
        for b in &names[k + 1..] {
            sim.release(a.as_str(), b.as_str());
            sim.set_link_fail_rate(a.as_str(), b.as_str(), 0.0);
        }
    }
    sim.set_max_message_latency(Duration::from_millis(10));
    for (i, h) in handles.iter().enumerate().take(hosts) {
        if !sim.is_host_running(host(i)) {
            *h.borrow_mut() = None;
            sim.bounce(host(i));
        }
    }
}

/// The workload: clients and watchers until the faults end, then the
/// final write, the recorder's log up to it and every node's tree.
async fn drive(
    plan: &Plan,
    nodes: Nodes,
    mut healed: watch::Receiver<bool>,
    mut asks: mpsc::UnboundedReceiver<Ask>,
) -> Result<History, String> {
    let clock = Clock::new();
    let records: Arc<Mutex<Vec<Record>>> = Arc::default();
    let (stop_tx, stop) = watch::channel(false);
    let (until_tx, until) = watch::channel(None);
    let recorder = tokio::spawn(workload::record(nodes.clone(), 1, until.clone()));
    let watchers: Vec<_> = (0..plan.watchers)
        .map(|_| tokio::spawn(workload::follow(nodes.clone(), "/k/**".into(), 1, until.clone())))
        .collect();
    let clients: Vec<_> = (0..plan.clients)
        .map(|i| {
            let seed = plan.seed ^ (i as u64 + 1);
            let (nodes, records, stop) = (nodes.clone(), records.clone(), stop.clone());
            tokio::spawn(workload::client(i, seed, plan.keys, nodes, clock, records, stop))
        })
        .collect();
    let contenders: Vec<_> = (0..plan.contenders)
        .map(|i| {
            let seed = plan.seed ^ 0xe1ec7 ^ (i as u64 + 1);
            tokio::spawn(doozer_verify::election::contender(i, seed, nodes.clone(), stop.clone()))
        })
        .collect();
    let keepers: Vec<_> = (0..plan.contenders)
        .map(|i| {
            let seed = plan.seed ^ 0x1ea5e ^ (i as u64 + 1);
            tokio::spawn(doozer_verify::lease::keeper(seed, nodes.clone(), clock, stop.clone()))
        })
        .collect();
    let (mut parked, mut floods) = (Vec::new(), Vec::new());
    loop {
        tokio::select! {
            biased;
            _ = healed.wait_for(|h| *h) => break,
            Some(ask) = asks.recv() => match ask {
                Ask::Park(a) => {
                    let from = any_rev(&nodes).await.unwrap_or(1);
                    parked.push(tokio::spawn(workload::follow_on(nodes.clone(), a, "/k/**".into(), from, until.clone())));
                }
                Ask::Flood { away, lasts } => floods.push(tokio::spawn(flood(nodes.clone(), away, lasts, stop.clone()))),
                Ask::Demote { id, lasts } => floods.push(tokio::spawn(demote(plan.slots, nodes.clone(), id, lasts, stop.clone()))),
            },
        }
    }
    let _ = stop_tx.send(true);
    for c in clients {
        let _ = c.await;
    }
    for f in floods {
        let _ = f.await;
    }
    for c in contenders {
        let _ = c.await;
    }
    let mut leases = Vec::new();
    for k in keepers {
        leases.extend(k.await.unwrap_or_default());
    }
    if plan.contenders > 0 {
        // Contenders that died leave their claims for a lease's TTL.
        let ttl = Duration::from_secs(doozer_verify::election::TTL as u64);
        doozer_verify::election::claims_gone(&nodes, ttl * 2 + Duration::from_secs(10)).await;
    }
    tracing::debug!("clients stopped");
    let final_rev = workload::settle(&nodes).await;
    tracing::debug!(final_rev, "settled");
    let _ = until_tx.send(Some(final_rev));
    let log = recorder.await.map_err(|e| e.to_string())??.events;
    tracing::debug!("recorded");
    let mut watches: Vec<WatchLog> = Vec::new();
    for w in watchers {
        watches.push(w.await.map_err(|e| e.to_string())??);
    }
    for w in parked {
        watches.push(w.await.map_err(|e| e.to_string())?);
    }
    tracing::debug!("watchers done");
    let mut finals = Vec::new();
    let live: Vec<String> = nodes.lock().iter().map(|(_, a)| a.clone()).collect();
    for a in live {
        finals.push(workload::dump(&nodes, &a, final_rev).await?);
    }
    let records = std::mem::take(&mut *records.lock());
    Ok(History {
        records,
        log: log.into_iter().take_while(|c| c.rev <= final_rev).collect(),
        watches,
        finals,
        final_rev,
        leases,
    })
}

/// Eight connections writing to `/load/*` through the first node other than
/// `away`, for `lasts` or until the clients stop.
async fn flood(nodes: Nodes, away: String, lasts: Duration, mut stop: watch::Receiver<bool>) -> usize {
    let Some(through) = nodes.lock().iter().map(|(_, a)| a.clone()).find(|a| *a != away) else { return 0 };
    let (halt, halted) = watch::channel(false);
    let writes = tokio::spawn(workload::flood(nodes.opts.clone(), through, 8, halted));
    tokio::select! {
        _ = tokio::time::sleep(lasts) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    let _ = halt.send(true);
    writes.await.unwrap_or(0)
}

/// As an operator would: empties the `/ctl/cal` slot `id` holds (rev-checked;
/// given up when the faults end), and after `lasts` (or when the faults
/// end) writes `id` back into it while it is empty (until that is done: the
/// cluster is at full strength again only then). Each step is tried through
/// every node in turn; an emptying whose answer was lost counts as done if
/// the slot is found empty.
async fn demote(slots: usize, nodes: Nodes, id: String, lasts: Duration, mut stop: watch::Receiver<bool>) -> usize {
    // The slot, and its revision when `id` was seen holding it.
    let tried: Arc<Mutex<Option<(String, Rev)>>> = Arc::default();
    let healed = stop.clone();
    let emptied = retry(&nodes, Some(healed), |c| {
        let (id, tried) = (id.clone(), tried.clone());
        async move {
            for k in 0..slots {
                let path = format!("/ctl/cal/{k}");
                let (body, rev) = c.get(&path, None).await.ok()?;
                if body == id.as_bytes() {
                    *tried.lock() = Some((path.clone(), rev));
                    c.set(&path, rev, "").await.ok()?;
                    return Some(Some((path, rev)));
                }
            }
            // It holds no slot (any more: perhaps the answer to an emptying was lost).
            Some(tried.lock().clone())
        }
    })
    .await;
    tracing::debug!(?emptied, "operator emptied a slot");
    let Some(Some((path, held))) = emptied else { return 0 };
    tokio::select! {
        _ = tokio::time::sleep(lasts) => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    let restored = retry(&nodes, None, |c| {
        let (path, id) = (path.clone(), id.clone());
        async move {
            let (body, rev) = c.get(&path, None).await.ok()?;
            if rev <= held {
                // A node that has not seen the emptying yet.
                return None;
            }
            // Taken meanwhile by a node waiting for a slot, or restored.
            if !body.is_empty() {
                return Some(());
            }
            let _ = c.set(&path, rev, id).await;
            None
        }
    })
    .await;
    usize::from(restored.is_some())
}

/// Runs `step` against each live node in turn until it gives `Some`, or
/// until `until` turns true; a pause between rounds.
async fn retry<T, F, Fut>(nodes: &Nodes, until: Option<watch::Receiver<bool>>, step: F) -> Option<T>
where
    F: Fn(doozer_client::Client) -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    while !until.as_ref().is_some_and(|u| *u.borrow()) {
        let live: Vec<String> = nodes.lock().iter().map(|(_, a)| a.clone()).collect();
        for a in live {
            let attempt = async { step(doozer_client::Client::connect_with(&a, &nodes.opts).await.ok()?).await };
            if let Ok(Some(done)) = tokio::time::timeout(Duration::from_secs(3), attempt).await {
                return Some(done);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

async fn any_rev(nodes: &Nodes) -> Option<Rev> {
    let live: Vec<String> = nodes.lock().iter().map(|(_, a)| a.clone()).collect();
    for a in live {
        let ask = async { doozer_client::Client::connect_with(&a, &nodes.opts).await.ok()?.rev().await.ok() };
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(1), ask).await {
            return Some(r);
        }
    }
    None
}

/// Folds what the workload saw into the trace.
fn note_history(trace: &mut Trace, h: &History, at: Duration) {
    for r in &h.records {
        trace.note(at, format!("{} n{} {:?} {:?} {} {}", r.client, r.node, r.op, r.ret, r.invoked, r.completed));
    }
    for c in &h.log {
        trace.note(at, format!("log {c:?}"));
    }
    for w in &h.watches {
        trace.note(at, format!("watch {} from {} events {} gaps {:?}", w.glob, w.from, w.events.len(), w.gaps));
    }
    trace.note(at, format!("final {}", h.final_rev));
}
