//! The membership rules as pure functions of what a node observes: who is
//! silent, who to remove, which voters the slots ask for, which slot to
//! claim. No I/O, no clock, no openraft: [`super::duties`] gathers the
//! observations and carries the decisions out, so each rule can be read and
//! tested alone.
//!
//! The rules:
//! - a member is silent when the leader has not heard from it for longer
//!   than `-timeout`, counting from when this leader took office (a member
//!   just added, or one the new leader has not had time to hear from, is not
//!   judged on silence from before) and from when it last lost touch with a
//!   majority of the voters ([`in_touch`]): a leader cut off from everyone
//!   hears nobody, and that says nothing of the others (the simulator found
//!   a leader that had been cut off for a little longer than `-timeout`
//!   removing four live members the moment its links came back, seed 6773);
//!   a member whose address now answers as another node is gone at once;
//! - the leader never removes itself, and never so many voters at once that
//!   those left are not a majority of the voters before (one removal at a
//!   time would get there too, each needing a quorum; this keeps a leader
//!   that briefly hears nobody from emptying the cluster); nor a voter whose
//!   removal leaves voters without a live majority: with two of three
//!   voters silent, removing either leaves a pair that needs the other, so
//!   the change could never commit and, begun, blocks every later one (the
//!   simulator found this, seed 99); it waits until one is back. Live here
//!   means answered within the last two heartbeats ([`RECENT`]), not within
//!   `-timeout`: a voter dead for less than `-timeout` is not live;
//! - a voter change waits, too, until a majority of the new voters answered
//!   within [`RECENT`];
//! - the voters are the members named in non-empty slots; a change that
//!   would leave the live members short of a majority of the new voters
//!   waits (say, demoting a live voter while a dead one still holds a slot);
//! - a voter change left half done (Raft's joint configuration, when the
//!   leader that began it lost office before finishing) is finished to its
//!   target by the next leader before anything else changes: otherwise the
//!   cluster needs a majority of the old voters too, for good, and a dead
//!   old voter could never be removed (the simulator found this, seed 12);
//! - a member without a slot claims the first vacant one it never lost (an
//!   operator who empties a node's slot means to demote it);
//! - a member named in more than one slot keeps the first; the others are
//!   emptied, so that waiting nodes can claim them (the simulator found a
//!   cluster a voter short for good so, seed 184).

use super::types::NodeId;
pub use crate::ctl::Slot;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

/// What a leader knows of one member.
#[derive(Clone, Debug)]
pub struct Seen {
    pub id: NodeId,
    /// How long since it last answered; `None`: never, since this node runs.
    pub quiet_for: Option<Duration>,
    /// Its address now answers as another node.
    pub replaced: bool,
}

/// The members to remove now: silent for longer than `timeout` (counted from
/// at most `leading_for` ago: since this leader took office and was last out
/// of touch) or replaced, never `me`, never so many
/// voters that those left are not a majority of `voters`, and never a voter
/// whose removal (each is a change of its own, in order) leaves voters whose
/// live members are not a majority of them.
pub fn to_remove(
    me: NodeId,
    seen: &[Seen],
    voters: &BTreeSet<NodeId>,
    leading_for: Duration,
    timeout: Duration,
) -> Vec<NodeId> {
    let silent = |s: &Seen| {
        let quiet = s.quiet_for.map_or(leading_for, |q| q.min(leading_for));
        s.replaced || quiet > timeout
    };
    let mut out: Vec<NodeId> = seen.iter().filter(|s| s.id != me && silent(s)).map(|s| s.id).collect();
    let majority = voters.len() / 2 + 1;
    let live = voters.iter().filter(|v| heard_recently(me, seen.iter().find(|s| s.id == **v))).count();
    let mut voters_left = voters.len();
    out.retain(|id| {
        if !voters.contains(id) {
            return true;
        }
        // Those left must be a majority of the voters before, and their live
        // members a majority of them: else the change can never commit.
        let left = voters_left - 1;
        if voters_left <= majority || live < left / 2 + 1 {
            return false;
        }
        voters_left = left;
        true
    });
    out
}

/// How recently a voter must have answered to count on it for a voter
/// change to commit. Not `-timeout`: a voter that died a second ago is not
/// silent yet, and removing another on the strength of it leaves a pair
/// that can never commit the change (the simulator found this, seed 111:
/// one of three crashed, another partitioned, the leader removed the
/// partitioned one). A healthy member answers every heartbeat (250 ms), so
/// two heartbeats: at one second the simulator found a voter that had
/// crashed 0.7 s before counted on for an operator's demotion of another,
/// leaving a pair that needed the dead one (seed 10632). No bound closes
/// that window (a voter may die just after answering); see the known limits
/// in docs/reliability.md.
pub const RECENT: Duration = Duration::from_millis(500);

/// True if `s` answered within [`RECENT`] (or is `me`).
pub fn heard_recently(me: NodeId, s: Option<&Seen>) -> bool {
    match s {
        Some(s) if s.id == me => true,
        Some(s) => !s.replaced && s.quiet_for.is_some_and(|q| q <= RECENT),
        None => false,
    }
}

/// How recently a majority of the voters must have answered for the leader
/// to be in touch with the cluster: four heartbeats, the least election
/// timeout. Looser than [`RECENT`]: a slow link (answers late by a few
/// hundred milliseconds) must not keep a dead member from ever being judged.
pub const TOUCH: Duration = Duration::from_secs(1);

/// True if a majority of `voters` answered within [`TOUCH`] (`me` counting
/// as answered): the leader is not the one cut off.
pub fn in_touch(me: NodeId, seen: &[Seen], voters: &BTreeSet<NodeId>) -> bool {
    let answered = |v: &NodeId| {
        *v == me || seen.iter().any(|s| s.id == *v && !s.replaced && s.quiet_for.is_some_and(|q| q <= TOUCH))
    };
    voters.iter().filter(|v| answered(v)).count() > voters.len() / 2
}

/// The voters the slots ask for: the members named in non-empty slots.
pub fn wanted_voters(slots: &[Slot], by_name: &HashMap<&str, NodeId>) -> BTreeSet<NodeId> {
    slots.iter().filter_map(|s| by_name.get(s.holder.as_str()).copied()).collect()
}

/// Why the voters stay as they are.
#[derive(Debug, PartialEq, Eq)]
pub enum Keep {
    /// No slot names a member: the cluster is never left without voters.
    NoneWanted,
    /// They are already what the slots ask for.
    Matching,
    /// The live members would not be a majority of the new voters.
    NoLiveMajority { wanted: usize, live: usize },
}

/// The voter set to change to, or why not: `wanted` (see [`wanted_voters`])
/// unless it is empty, equal to `voters`, or its live members are not a
/// majority of it.
pub fn voter_change(
    wanted: &BTreeSet<NodeId>,
    voters: &BTreeSet<NodeId>,
    is_alive: impl Fn(NodeId) -> bool,
) -> Result<BTreeSet<NodeId>, Keep> {
    if wanted.is_empty() {
        return Err(Keep::NoneWanted);
    }
    if wanted == voters {
        return Err(Keep::Matching);
    }
    let live = wanted.iter().filter(|id| is_alive(**id)).count();
    if live < wanted.len() / 2 + 1 {
        return Err(Keep::NoLiveMajority { wanted: wanted.len(), live });
    }
    Ok(wanted.clone())
}

/// The voters to finish an interrupted change with: the newest of the
/// joint configuration's voter sets. `None` when no change is half done.
pub fn finish_change(joint: &[BTreeSet<NodeId>]) -> Option<BTreeSet<NodeId>> {
    (joint.len() > 1).then(|| joint.last().cloned()).flatten()
}

/// Slots naming a member that an earlier slot names already (an operator
/// wrote a voter's id into a second slot, or restored a demoted node that
/// had claimed another meanwhile): they give no vote, so they are emptied
/// for a waiting node. The first stays, as the member counts it its own.
pub fn extra_slots(slots: &[Slot]) -> Vec<&Slot> {
    let mut named = BTreeSet::new();
    slots.iter().filter(|s| !s.holder.is_empty() && !named.insert(s.holder.as_str())).collect()
}

/// The slot a member named `me` should claim: none if it holds one or votes
/// already, else the first vacant slot it never lost.
pub fn slot_to_claim<'a>(me: &str, slots: &'a [Slot], votes: bool, lost: &BTreeSet<String>) -> Option<&'a Slot> {
    if votes || slots.iter().any(|s| s.holder == me) {
        return None;
    }
    slots.iter().find(|s| s.holder.is_empty() && !lost.contains(&s.path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_half_done_voter_change_is_finished_to_its_target() {
        let (old, new) = (BTreeSet::from([1, 2]), BTreeSet::from([1, 2, 3]));
        assert_eq!(finish_change(&[old.clone(), new.clone()]), Some(new));
        assert_eq!(finish_change(&[old]), None);
        assert_eq!(finish_change(&[]), None);
    }

    const T: Duration = Duration::from_secs(60);

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn seen(id: NodeId, quiet: Option<u64>) -> Seen {
        Seen { id, quiet_for: quiet.map(s), replaced: false }
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    fn slot(n: u32, holder: &str) -> Slot {
        Slot { path: format!("/ctl/cal/{n}"), holder: holder.into(), rev: 1 }
    }

    #[test]
    fn a_member_silent_past_the_timeout_is_removed_and_the_leader_never() {
        let members = [seen(1, Some(0)), seen(2, Some(61)), seen(3, Some(0))];
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3]), s(3600), T), [2]);
        let me_silent = [seen(1, None), seen(2, Some(1))];
        assert_eq!(to_remove(1, &me_silent, &set(&[1, 2]), s(3600), T), Vec::<NodeId>::new());
    }

    #[test]
    fn silence_counts_from_when_this_leader_took_office() {
        // Never heard from (a learner just added, or a new leader): judged from taking office.
        let members = [seen(1, Some(0)), seen(2, None), seen(3, Some(0))];
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3]), s(30), T), Vec::<NodeId>::new());
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3]), s(61), T), [2]);
        // One quiet for longer than this leader has led is judged from taking office too.
        let members = [seen(1, Some(0)), seen(2, Some(500)), seen(3, Some(0))];
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3]), s(30), T), Vec::<NodeId>::new());
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3]), s(61), T), [2]);
    }

    #[test]
    fn a_leader_is_in_touch_while_a_majority_of_the_voters_answers() {
        let ms = |id, q: u64| Seen { id, quiet_for: Some(Duration::from_millis(q)), replaced: false };
        let voters = set(&[1, 2, 3]);
        assert!(in_touch(1, &[ms(2, 300), ms(3, 5000)], &voters));
        // Cut off (seed 6773): it heard nobody, which says nothing of the others.
        assert!(!in_touch(1, &[ms(2, 3000), ms(3, 3000)], &voters));
        assert!(!in_touch(1, &[seen(2, None), ms(3, 2000)], &voters));
        let replaced = Seen { id: 2, quiet_for: Some(Duration::ZERO), replaced: true };
        assert!(!in_touch(1, &[replaced, ms(3, 2000)], &voters));
        // Alone, a leader is always in touch; a non-voter leader needs a
        // majority of the voters.
        assert!(in_touch(1, &[], &set(&[1])));
        assert!(!in_touch(9, &[ms(2, 100)], &voters));
        assert!(in_touch(9, &[ms(2, 100), ms(3, 100)], &voters));
    }

    #[test]
    fn with_two_of_three_voters_silent_nobody_is_removed() {
        // Removing either leaves a pair that needs the other (seed 99).
        let members = [seen(1, Some(0)), seen(2, Some(99)), seen(3, Some(99))];
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3]), s(3600), T), Vec::<NodeId>::new());
    }

    #[test]
    fn a_voter_dead_for_less_than_the_timeout_is_not_counted_on() {
        // 3 died two seconds ago (not silent yet), 2 is silent: removing 2
        // would leave 1 and 3, and 3 will never answer (seed 111).
        let members = [seen(1, Some(0)), seen(2, Some(99)), seen(3, Some(2))];
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3]), s(3600), T), Vec::<NodeId>::new());
        let members = [seen(1, Some(0)), seen(2, Some(99)), seen(3, Some(0))];
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3]), s(3600), T), [2]);
    }

    #[test]
    fn a_replaced_member_goes_at_once() {
        let members = [seen(1, Some(0)), Seen { id: 2, quiet_for: Some(s(1)), replaced: true }, seen(3, Some(0))];
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3]), s(5), T), [2]);
    }

    #[test]
    fn never_so_many_voters_that_those_left_are_no_majority() {
        // Five voters, two silent: both go, three live voters are left.
        let members: Vec<Seen> = (1..=5).map(|id| seen(id, Some(if id <= 3 { 0 } else { 99 }))).collect();
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3, 4, 5]), s(3600), T), [4, 5]);
        // Five voters, three silent: each removal is a change of its own, and
        // removing one leaves four with two live: no majority, so none goes
        // (nor could the cluster commit anything: two of five).
        let members: Vec<Seen> = (1..=5).map(|id| seen(id, Some(if id <= 2 { 0 } else { 99 }))).collect();
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3, 4, 5]), s(3600), T), Vec::<NodeId>::new());
        // Five voters, four silent: whatever goes, those left have no live majority.
        let members: Vec<Seen> = (1..=5).map(|id| seen(id, Some(if id == 1 { 0 } else { 99 }))).collect();
        assert_eq!(to_remove(1, &members, &set(&[1, 2, 3, 4, 5]), s(3600), T), Vec::<NodeId>::new());
        // Non-voters are not limited.
        let members = [seen(1, Some(0)), seen(7, Some(99)), seen(8, Some(99))];
        assert_eq!(to_remove(1, &members, &set(&[1]), s(3600), T), [7, 8]);
    }

    #[test]
    fn the_voters_follow_the_slots() {
        let names: HashMap<&str, NodeId> = [("A", 1), ("B", 2), ("C", 3)].into_iter().collect();
        let slots = [slot(0, "A"), slot(1, ""), slot(2, "C"), slot(3, "GONE")];
        assert_eq!(wanted_voters(&slots, &names), set(&[1, 3]));
        let all_alive = |_| true;
        assert_eq!(voter_change(&set(&[1, 3]), &set(&[1, 2, 3]), all_alive), Ok(set(&[1, 3])));
        assert_eq!(voter_change(&set(&[1, 3]), &set(&[1, 3]), all_alive), Err(Keep::Matching));
        assert_eq!(voter_change(&BTreeSet::new(), &set(&[1]), all_alive), Err(Keep::NoneWanted));
    }

    #[test]
    fn no_voter_change_without_a_live_majority_of_the_new_voters() {
        // Demoting live 2 while dead 3 still holds a slot would leave {1, 3}: one live of two.
        let alive = |id| id != 3;
        assert_eq!(
            voter_change(&set(&[1, 3]), &set(&[1, 2, 3]), alive),
            Err(Keep::NoLiveMajority { wanted: 2, live: 1 })
        );
        // Once 3 is removed and its slot refilled by live 4, it goes ahead.
        assert_eq!(voter_change(&set(&[1, 4]), &set(&[1, 2]), alive), Ok(set(&[1, 4])));
    }

    #[test]
    fn the_voters_do_not_oscillate() {
        // Applying the change makes the next decision "matching": a fixed point.
        let alive = |_| true;
        let next = voter_change(&set(&[1, 2, 4]), &set(&[1, 2, 3]), alive).unwrap();
        assert_eq!(voter_change(&set(&[1, 2, 4]), &next, alive), Err(Keep::Matching));
    }

    #[test]
    fn a_member_named_in_two_slots_keeps_the_first() {
        let slots = [slot(0, "A"), slot(1, "B"), slot(2, "A"), slot(3, ""), slot(4, "B")];
        let extra: Vec<&str> = extra_slots(&slots).iter().map(|s| s.path.as_str()).collect();
        assert_eq!(extra, ["/ctl/cal/2", "/ctl/cal/4"]);
        assert!(extra_slots(&[slot(0, "A"), slot(1, ""), slot(2, "")]).is_empty());
    }

    #[test]
    fn a_member_claims_the_first_vacant_slot_it_never_lost() {
        let slots = [slot(0, "A"), slot(1, ""), slot(2, "")];
        let none = BTreeSet::new();
        assert_eq!(slot_to_claim("B", &slots, false, &none).map(|s| s.path.as_str()), Some("/ctl/cal/1"));
        let lost: BTreeSet<String> = ["/ctl/cal/1".to_string()].into();
        assert_eq!(slot_to_claim("B", &slots, false, &lost).map(|s| s.path.as_str()), Some("/ctl/cal/2"));
        assert_eq!(slot_to_claim("A", &slots, false, &none), None, "holds one");
        assert_eq!(slot_to_claim("B", &slots, true, &none), None, "votes already");
        let full = [slot(0, "A"), slot(1, "C")];
        assert_eq!(slot_to_claim("B", &full, false, &none), None);
    }
}
