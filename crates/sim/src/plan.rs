//! A run's shape and its faults, all drawn from one seed.
//!
//! The shape: 3, 5 or 7 nodes; every node a voter, or the default three
//! `/ctl/cal` slots (the rest serve as non-voters); the default `-timeout`
//! (60 s) or a short one (see [`Plan::timeout`]); clients, keys, watchers.
//! The faults: partitions of every shape (a side against the rest, one node
//! alone, one-way), pauses (every link of a node held, then released, so
//! what it sent in between arrives late and in a burst), message loss on a
//! link (turmoil breaks the link at random, dropping what is on it, and
//! repairs it at random), latency spikes, crashes with restarts under a new
//! id, a node added while writes pour in, floods of writes while a node is
//! paused, an operator demoting a voter for a while, peer messages sent twice.
//! Each lasts a while; they overlap.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

#[derive(Clone, Debug)]
pub enum Fault {
    /// Nodes in `side` cannot reach the others (nor the others them).
    Partition { side: Vec<usize> },
    /// `from` cannot reach `to`; `to` still reaches `from`.
    OneWay { from: usize, to: usize },
    /// Every message to or from the node waits until the fault ends.
    Pause { node: usize },
    /// Messages between `a` and `b` are lost with this probability.
    Loss { a: usize, b: usize, rate: f64 },
    /// Messages take up to this long everywhere.
    Slow { max: Duration },
    /// The node stops; when the fault ends it starts again, empty, under a new id.
    Crash { node: usize },
    /// The clients' links to the node are cut.
    CutClients { node: usize },
    /// Small writes pour in through another node as fast as it takes them,
    /// while `away` is paused: it falls out of the leader's log and of the
    /// history window, and catches up by snapshot with a watcher's WAIT held
    /// on it.
    Flood { away: usize },
    /// An operator empties the node's `/ctl/cal` slot (the node becomes a
    /// non-voter and does not claim that slot again), then, when the fault
    /// ends, writes the node's id back (it votes again).
    Demote { node: usize },
    /// This share of peer messages (Raft's, forwarded writes, joins) is
    /// sent twice, the copy on a connection of its own, so it may overtake
    /// the original or trail it.
    Duplicate { share: f64 },
}

#[derive(Clone, Debug)]
pub struct Timed {
    pub at: Duration,
    pub lasts: Duration,
    pub fault: Fault,
}

#[derive(Clone, Debug)]
pub struct Plan {
    pub seed: u64,
    /// Nodes at the start.
    pub nodes: usize,
    /// A node added this far into the run (its host is there from the start, idle).
    pub grow_at: Option<Duration>,
    /// `/ctl/cal` slots.
    pub slots: usize,
    /// The members' `-timeout`. Half the seeds use the default, 60 s; the
    /// other half 3 s, so that pauses and partitions outlast it within a
    /// short schedule and removals and rejoins happen (as the process
    /// torture runs do).
    pub timeout: Duration,
    pub clients: usize,
    pub keys: usize,
    pub watchers: usize,
    /// Election contenders making fenced writes (`doozer_verify::election`),
    /// and as many lease keepers (`doozer_verify::lease`):
    /// two in half the seeds, drawn from a stream of their own so the rest
    /// of a seed's plan is what it was before they existed.
    pub contenders: usize,
    /// How long faults are injected.
    pub chaos: Duration,
    pub faults: Vec<Timed>,
}

impl Plan {
    pub fn new(seed: u64) -> Plan {
        let mut rng = SmallRng::seed_from_u64(seed);
        let nodes = [3, 3, 3, 5, 5, 7][rng.random_range(0..6)];
        let slots = if rng.random_bool(0.5) { nodes } else { 3 };
        let short = rng.random_bool(0.5);
        let timeout = if short { Duration::from_secs(3) } else { Duration::from_secs(60) };
        let chaos = Duration::from_secs(if short { rng.random_range(8..20) } else { rng.random_range(15..80) });
        let grow_at = rng.random_bool(0.2).then(|| chaos.mul_f64(rng.random_range(0.1..0.9)));
        let total = nodes + usize::from(grow_at.is_some());
        let mut faults = Vec::new();
        let mut at = Duration::from_millis(rng.random_range(500..3000));
        while at < chaos {
            let longest = if short { 6_000 } else { 75_000 };
            let lasts = Duration::from_millis(rng.random_range(200..longest.min(chaos.as_millis() as u64 + 1000)));
            faults.push(Timed { at, lasts, fault: fault(&mut rng, total) });
            at += Duration::from_millis(rng.random_range(300..if short { 4_000 } else { 10_000 }));
        }
        add_floods(seed, &mut faults);
        add_demotion(seed, nodes, chaos, short, &mut faults);
        add_duplication(seed, chaos, &mut faults);
        Plan {
            seed,
            nodes,
            grow_at,
            slots,
            timeout,
            clients: rng.random_range(2..6),
            keys: rng.random_range(2..6),
            watchers: rng.random_range(1..3),
            contenders: if SmallRng::seed_from_u64(seed ^ 0xe1ec7).random_bool(0.5) { 2 } else { 0 },
            chaos,
            faults,
        }
    }

    /// Every host a node may run on.
    pub fn hosts(&self) -> usize {
        self.nodes + usize::from(self.grow_at.is_some())
    }
}

/// A third of the pauses come with a flood. Drawn from a stream of their
/// own, so the other faults of a seed are what they were before floods
/// existed.
fn add_floods(seed: u64, faults: &mut Vec<Timed>) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xf100d);
    let floods: Vec<Timed> = faults
        .iter()
        .filter_map(|f| match f.fault {
            Fault::Pause { node } if rng.random_bool(1.0 / 3.0) => Some(Timed {
                at: f.at + Duration::from_millis(100),
                lasts: f.lasts.saturating_sub(Duration::from_millis(200)).clamp(Duration::from_millis(100), FLOOD_MAX),
                fault: Fault::Flood { away: node },
            }),
            _ => None,
        })
        .collect();
    faults.extend(floods);
    faults.sort_by_key(|f| f.at);
}

/// A third of the seeds have an operator demote a voter for a while (a slot
/// emptied, then written again). Drawn from a stream of its own, as floods.
fn add_demotion(seed: u64, nodes: usize, chaos: Duration, short: bool, faults: &mut Vec<Timed>) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xde307e);
    if !rng.random_bool(1.0 / 3.0) {
        return;
    }
    let at = chaos.mul_f64(rng.random_range(0.1..0.8));
    let lasts = Duration::from_millis(rng.random_range(500..if short { 5_000 } else { 30_000 }));
    // Which nodes hold slots is decided as the run goes; a node without one
    // is left as it is.
    let node = rng.random_range(0..nodes);
    faults.push(Timed { at, lasts, fault: Fault::Demote { node } });
    faults.sort_by_key(|f| f.at);
}

/// A third of the seeds send some peer messages twice for a while. Drawn
/// from a stream of its own, as floods.
fn add_duplication(seed: u64, chaos: Duration, faults: &mut Vec<Timed>) {
    let mut rng = SmallRng::seed_from_u64(seed ^ 0xd0b1e);
    if !rng.random_bool(1.0 / 3.0) {
        return;
    }
    let at = chaos.mul_f64(rng.random_range(0.0..0.7));
    let lasts = chaos.mul_f64(rng.random_range(0.1..0.5));
    faults.push(Timed { at, lasts, fault: Fault::Duplicate { share: rng.random_range(0.02..0.3) } });
    faults.sort_by_key(|f| f.at);
}

/// The longest flood: enough to pass the default history window (2,000
/// revisions) several times over.
const FLOOD_MAX: Duration = Duration::from_secs(8);

fn fault(rng: &mut SmallRng, n: usize) -> Fault {
    let node = rng.random_range(0..n);
    match rng.random_range(0..100) {
        0..20 => {
            let mut side: Vec<usize> = (0..n).filter(|_| rng.random_bool(0.5)).collect();
            if side.is_empty() || side.len() == n {
                side = vec![node];
            }
            Fault::Partition { side }
        }
        20..30 => Fault::OneWay { from: node, to: (node + rng.random_range(1..n)) % n },
        30..50 => Fault::Pause { node },
        50..62 => Fault::Loss { a: node, b: (node + rng.random_range(1..n)) % n, rate: rng.random_range(0.01..0.3) },
        62..70 => Fault::Slow { max: Duration::from_millis(rng.random_range(20..400)) },
        70..92 => Fault::Crash { node },
        _ => Fault::CutClients { node },
    }
}
