//! When leases run out: the leader's clock over the replicated lease table
//! (issue 14). Pure: every method takes the time, so each rule is tested
//! alone; the leader's duties feed it and propose what it says.
//!
//! The rules, as etcd's lessor has them:
//! - only the leader keeps deadlines; they are not replicated (a keep-alive
//!   is not a write);
//! - a leader taking office gives every lease a full TTL from then, so no
//!   leader change makes a lease expire early (it may make one live longer,
//!   by at most one TTL);
//! - a lease granted while this node leads is due one TTL after this node
//!   first sees it; a keep-alive moves it to one TTL from the keep-alive;
//! - a lease past its deadline is expired by proposing its revoke, as the
//!   leader, so a deposed leader cannot get it carried out; until the revoke
//!   commits the lease is still granted, and a keep-alive then is refused
//!   (it came too late).
//!
//! Not here: the lease table itself (`doozer_store::Leases`), the proposing.

use doozer_store::LeaseId;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::time::Instant;

/// A lease's deadline, and whether its revoke has been proposed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Due {
    at: Instant,
    ttl: Duration,
    expiring: bool,
}

/// The deadlines of the leases this node knows of, while it leads.
#[derive(Default, Debug)]
pub struct Lessor {
    due: BTreeMap<LeaseId, Due>,
    /// The term these deadlines were kept in.
    term: u64,
}

impl Lessor {
    /// Starts afresh if `term` is not the one the deadlines were kept in: a
    /// node that lost office and won it back did not see the keep-alives
    /// sent to the leader between.
    pub fn for_term(&mut self, term: u64) {
        if term != self.term {
            self.due.clear();
            self.term = term;
        }
    }

    /// Takes one lease the store has (TTL in seconds), as [`Lessor::sync`]
    /// does for all: due a TTL from `now` if it was not known.
    pub fn know(&mut self, id: LeaseId, ttl: u32, now: Instant) {
        let ttl = Duration::from_secs(u64::from(ttl));
        self.due.entry(id).or_insert(Due { at: now + ttl, ttl, expiring: false });
    }

    /// Takes the leases as the store has them now (id, TTL in seconds): new
    /// ones are due a TTL from `now`, gone ones are forgotten. A leader
    /// taking office starts from an empty lessor, so every lease gets a full
    /// TTL.
    pub fn sync(&mut self, leases: impl IntoIterator<Item = (LeaseId, u32)>, now: Instant) {
        let mut next = BTreeMap::new();
        for (id, ttl) in leases {
            let ttl = Duration::from_secs(u64::from(ttl));
            let due = self.due.get(&id).copied().unwrap_or(Due { at: now + ttl, ttl, expiring: false });
            next.insert(id, due);
        }
        self.due = next;
    }

    /// A keep-alive for `id`: its deadline moves to a TTL from `now`, and the
    /// TTL is returned. `None` if the lease is unknown or already expiring.
    pub fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Option<Duration> {
        let due = self.due.get_mut(&id).filter(|d| !d.expiring && d.at > now)?;
        due.at = now + due.ttl;
        Some(due.ttl)
    }

    /// How long `id` has left, and its TTL; `None` if unknown. Zero left
    /// once due.
    pub fn time(&self, id: LeaseId, now: Instant) -> Option<(Duration, Duration)> {
        self.due.get(&id).map(|d| (d.at.saturating_duration_since(now), d.ttl))
    }

    /// How long `id` has left; `None` if unknown. Zero once due.
    #[cfg(test)]
    pub fn remaining(&self, id: LeaseId, now: Instant) -> Option<Duration> {
        self.time(id, now).map(|(left, _)| left)
    }

    /// The leases due by `now` whose revoke is not yet proposed, marked as
    /// being revoked; the caller proposes each revoke.
    pub fn expire(&mut self, now: Instant) -> Vec<LeaseId> {
        let mut out = Vec::new();
        for (id, due) in self.due.iter_mut() {
            if !due.expiring && due.at <= now {
                due.expiring = true;
                out.push(*id);
            }
        }
        out
    }

    /// A proposed revoke failed (this node may no longer lead, or no quorum):
    /// `id` may be expired again at the next look.
    pub fn retry(&mut self, id: LeaseId) {
        if let Some(due) = self.due.get_mut(&id) {
            due.expiring = false;
        }
    }

    /// Forgets every deadline: this node stopped leading.
    pub fn clear(&mut self) {
        self.due.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_new_leader_gives_every_lease_a_full_ttl() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.sync([(1, 10), (2, 3)], t0 + s(100));
        assert_eq!(l.remaining(1, t0 + s(100)), Some(s(10)));
        assert_eq!(l.remaining(2, t0 + s(101)), Some(s(2)));
        assert!(l.expire(t0 + s(102)).is_empty());
        assert_eq!(l.expire(t0 + s(103)), [2]);
    }

    #[test]
    fn a_keep_alive_moves_the_deadline_and_a_late_one_is_refused() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.sync([(7, 5)], t0);
        assert_eq!(l.keep_alive(7, t0 + s(4)), Some(s(5)));
        assert!(l.expire(t0 + s(8)).is_empty(), "kept alive at 4 s: due at 9 s");
        assert_eq!(l.expire(t0 + s(9)), [7]);
        assert_eq!(l.keep_alive(7, t0 + s(9)), None, "expiring: too late");
        assert_eq!(l.keep_alive(8, t0), None, "unknown");
    }

    #[test]
    fn an_expiry_is_proposed_once_and_again_after_a_failure() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.sync([(1, 1)], t0);
        assert_eq!(l.expire(t0 + s(2)), [1]);
        assert!(l.expire(t0 + s(3)).is_empty());
        l.retry(1);
        assert_eq!(l.expire(t0 + s(3)), [1]);
    }

    #[test]
    fn sync_keeps_known_deadlines_and_forgets_revoked_leases() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.sync([(1, 10)], t0);
        l.sync([(1, 10), (2, 10)], t0 + s(5));
        assert_eq!(l.remaining(1, t0 + s(5)), Some(s(5)), "not renewed by a sync");
        assert_eq!(l.remaining(2, t0 + s(5)), Some(s(10)));
        l.sync([(2, 10)], t0 + s(6));
        assert_eq!(l.remaining(1, t0 + s(6)), None);
        l.clear();
        assert_eq!(l.remaining(2, t0 + s(6)), None);
    }

    #[test]
    fn one_lease_known_at_once_gets_a_full_ttl_and_keeps_its_deadline_after() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.know(3, 10, t0);
        l.know(3, 10, t0 + s(4));
        assert_eq!(l.time(3, t0 + s(4)), Some((s(6), s(10))));
    }

    #[test]
    fn a_new_term_starts_every_deadline_afresh() {
        let t0 = Instant::now();
        let mut l = Lessor::default();
        l.for_term(4);
        l.sync([(1, 10)], t0);
        l.for_term(4);
        assert_eq!(l.remaining(1, t0), Some(s(10)));
        // Office lost and won back: the keep-alives between went elsewhere.
        l.for_term(6);
        assert_eq!(l.remaining(1, t0), None);
        l.sync([(1, 10)], t0 + s(8));
        assert_eq!(l.remaining(1, t0 + s(8)), Some(s(10)));
    }
}
