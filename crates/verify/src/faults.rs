//! Faults on a schedule drawn from a seed: the same seed gives the same
//! sequence of faults, targets and durations (the processes' own timing still
//! varies). One fault at a time; each is healed before the next.

use crate::cluster::Cluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// SIGKILL a node (the leader included), then restart it: under a new id
    /// with -a, or in a durable cluster as the same member from its data dir.
    Kill,
    /// Durable clusters: SIGKILL every node at once, then restart them all.
    KillAll,
    /// Durable clusters: SIGKILL a node, leave a torn frame at the end of
    /// its newest log segment (a write cut short by the crash), restart it.
    Torn,
    /// SIGSTOP a node for 1-5 s (past the election timeout, sometimes past -timeout), then SIGCONT.
    Pause,
    /// Cut the network: majority/minority, an isolated leader, or a bridge.
    Partition,
    /// Empty a voter's /ctl/cal slot, then add a new slot.
    Membership,
    /// SIGSTOP a follower for 3-6 s while a flood of small writes goes to the
    /// leader, so that it catches up by a snapshot; a watcher is parked on it.
    Lag,
    /// SIGKILL a follower and start a new node in its place while a flood
    /// of writes goes to the leader: it joins and catches up under load.
    Join,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "kill" => Kind::Kill,
            "killall" => Kind::KillAll,
            "torn" => Kind::Torn,
            "pause" => Kind::Pause,
            "partition" => Kind::Partition,
            "membership" => Kind::Membership,
            "lag" => Kind::Lag,
            "join" => Kind::Join,
            _ => return None,
        })
    }
}

/// Draws faults from a seeded generator.
pub struct Schedule {
    rng: StdRng,
    kinds: Vec<Kind>,
}

/// One fault, fully decided before it is applied.
#[derive(Clone, Debug)]
pub enum Fault {
    Kill {
        slot: usize,
        down: Duration,
    },
    KillAll {
        down: Duration,
    },
    /// `cut` picks how many bytes of the torn frame are missing.
    Torn {
        slot: usize,
        cut: u64,
    },
    Pause {
        slot: usize,
        hold: Duration,
    },
    Partition {
        name: &'static str,
        cuts: Vec<(usize, usize)>,
        hold: Duration,
    },
    /// Slot to empty is chosen at run time among non-leader voters (by index among them).
    Membership {
        pick: usize,
        hold: Duration,
    },
    /// The follower is the `pick`-th non-leader slot.
    Lag {
        pick: usize,
        hold: Duration,
    },
    Join {
        pick: usize,
    },
}

fn millis(rng: &mut StdRng, lo: u64, hi: u64) -> Duration {
    Duration::from_millis(rng.random_range(lo..hi))
}

impl Schedule {
    pub fn new(seed: u64, kinds: Vec<Kind>) -> Schedule {
        Schedule { rng: StdRng::seed_from_u64(seed), kinds }
    }

    /// The pause before the next fault.
    pub fn gap(&mut self) -> Duration {
        millis(&mut self.rng, 1000, 3000)
    }

    /// The next fault for a cluster of `n` slots whose leader is `leader`.
    pub fn next(&mut self, n: usize, leader: Option<usize>) -> Fault {
        let kind = self.kinds[self.rng.random_range(0..self.kinds.len())];
        let rng = &mut self.rng;
        match kind {
            Kind::Kill => Fault::Kill { slot: rng.random_range(0..n), down: millis(rng, 200, 2000) },
            Kind::KillAll => Fault::KillAll { down: millis(rng, 200, 2000) },
            Kind::Torn => Fault::Torn { slot: rng.random_range(0..n), cut: rng.random() },
            Kind::Pause => Fault::Pause { slot: rng.random_range(0..n), hold: millis(rng, 1000, 5000) },
            Kind::Membership => Fault::Membership { pick: rng.random_range(0..n), hold: millis(rng, 1000, 4000) },
            Kind::Lag => Fault::Lag { pick: rng.random_range(0..n), hold: millis(rng, 3000, 6000) },
            Kind::Join => Fault::Join { pick: rng.random_range(0..n) },
            Kind::Partition => {
                let hold = millis(rng, 1500, 5000);
                let mut order: Vec<usize> = (0..n).collect();
                for i in (1..n).rev() {
                    order.swap(i, rng.random_range(0..=i));
                }
                match rng.random_range(0..3) {
                    0 => {
                        let minority = &order[..(n - 1) / 2];
                        let majority = &order[(n - 1) / 2..];
                        Fault::Partition { name: "majority/minority", cuts: between(minority, majority), hold }
                    }
                    1 => {
                        let l = leader.unwrap_or(order[0]);
                        let rest: Vec<usize> = (0..n).filter(|&i| i != l).collect();
                        Fault::Partition { name: "isolated leader", cuts: between(&[l], &rest), hold }
                    }
                    _ => {
                        // order[0] is the bridge; the others split in two halves that only reach it.
                        let others = &order[1..];
                        let (a, b) = others.split_at(others.len() / 2);
                        Fault::Partition { name: "bridge", cuts: between(a, b), hold }
                    }
                }
            }
        }
    }
}

fn between(a: &[usize], b: &[usize]) -> Vec<(usize, usize)> {
    a.iter().flat_map(|&x| b.iter().map(move |&y| (x, y))).collect()
}

/// The slots whose process has exited although the harness did not kill it:
/// a node must never leave by itself (a removed node rejoins).
pub fn exited(c: &mut Cluster) -> Vec<usize> {
    (0..c.slots.len()).filter(|&i| !c.is_running(i)).collect()
}
