//! Membership follows `/ctl/cal`, as in the original, but through Raft. This
//! module observes and acts; the decisions themselves (who is silent, who to
//! remove, which voters, which slot to claim) are the pure functions of
//! `rules`, unit-tested there.
//!
//! - The leader makes the voters exactly the members named in non-empty
//!   `/ctl/cal/*` slots (emptying a slot demotes its holder; filling one
//!   promotes). It never shrinks the voters to nothing, and never to a set
//!   whose live members are not a majority of it.
//! - A member that is not a voter claims a vacant slot with a rev-checked SET,
//!   so of several waiting nodes exactly one wins each slot.
//! - The leader removes a member it has not heard from for `-timeout`: it
//!   takes it out of the membership, then empties the member's slot and
//!   deletes `/ctl/node/<id>`. Each step must commit, so a leader cut off from the
//!   majority cannot remove anyone, and no removal can cost the quorum it needs.
//! - A member whose address now answers as another node (its process was
//!   restarted in place, under a new id) is gone for good: the leader removes
//!   it at once, without waiting out `-timeout`, so the new node can claim
//!   its slot.
//! - A node that finds itself removed stops taking part; doozerd then joins
//!   again under a new id (see `serve_until_shutdown` in the crate root).
//! - The leader's own decisions (removals, tidying) are written by it as
//!   leader and never forwarded, so a deposed leader that has not noticed yet
//!   cannot get the new leader to carry them out.
//! - A voter change a former leader left half done (joint) is finished.
//! - Leases past their deadline are revoked (`leases`, `lessor`).
//! - Left-overs of an interrupted removal are repaired: slots held by
//!   non-members are emptied, their `/ctl/node` files deleted, and a member
//!   whose files are missing writes them again. A member named in two slots
//!   keeps the first.

use super::network::Target;
use super::rules::{self, Seen, Slot};
use super::types::{Metrics, NodeId};
use super::wire::{PeerRequest, PeerResponse};
use super::{Committed, Consensus};
use crate::ctl;
use doozer_store::Body;
use doozer_store::Command;
use openraft::{ChangeMembers, ServerState};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

const TICK: Duration = Duration::from_millis(250);
/// How long without replication before a node asks whether it is still a member.
const SILENCE: Duration = Duration::from_secs(2);
const CHECK_EVERY: Duration = Duration::from_secs(2);

/// The slot this node holds, and the slots it held and lost: an operator who
/// empties a node's slot means to demote it, so the node does not take that
/// slot back (another waiting node may; writing its id there restores it).
#[derive(Default)]
struct Claims {
    held: Option<String>,
    lost: BTreeSet<String>,
}

pub fn spawn(c: Arc<Consensus>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leading_since: Option<Instant> = None;
        let mut touch_since: Option<Instant> = None;
        let mut was_member = false;
        let mut claims = Claims::default();
        let mut last_check = Instant::now();
        // The other members, as last seen while this node was one of them.
        let mut peers: Vec<(Option<NodeId>, String)> = Vec::new();
        loop {
            tick.tick().await;
            let m = c.raft.metrics().borrow().clone();
            if m.running_state.is_err() || m.state == ServerState::Shutdown {
                return;
            }
            c.bound_log(&m).await;
            let member = m.membership_config.membership().get_node(&c.id).is_some();
            if was_member && !member {
                // This node's own view is not enough: a new leader may have cut
                // from its log the uncommitted entry that added it, and add it
                // again (the simulator found a node shutting itself down so,
                // seed 399). The leader decides.
                if last_check.elapsed() > CHECK_EVERY {
                    last_check = Instant::now();
                    if c.leader_says_not_member(&peers).await {
                        info!("this node was removed from the cluster");
                        c.node.set_removed();
                        c.shutdown().await;
                        return;
                    }
                }
                continue;
            }
            if member {
                peers = c.peers(&m);
            }
            was_member |= member;
            // Until its own /ctl files are written the node has no duties.
            if !c.node.is_ready() {
                continue;
            }
            c.track_slot(&mut claims);
            c.publish_writable(&m, &claims).await;
            if c.leads(&m) {
                // Silence is judged only over time this leader led and was
                // in touch with a majority (see `rules`).
                let since = *leading_since.get_or_insert_with(Instant::now);
                let since = since.max(c.in_touch_since(&m, &mut touch_since));
                c.lead(since).await;
                c.expire_leases().await;
                // A leader whose slot was emptied leads on as a non-voter
                // (openraft 0.9 does not step down): it claims a vacant slot
                // as any non-voter would, or the slot stays vacant for good
                // (the simulator found a cluster a voter short so, seed 1143).
                c.claim_slot(&c.metrics(), &claims).await;
            } else {
                leading_since = None;
                touch_since = None;
                // A later term starts every lease afresh.
                c.forget_deadlines();
                if member {
                    c.reregister().await;
                    c.claim_slot(&m, &claims).await;
                }
                let due = last_check.elapsed() > CHECK_EVERY;
                if due {
                    last_check = Instant::now();
                }
                if was_member && due && c.removed_by_leader(&m).await {
                    info!("this node was removed from the cluster");
                    c.node.set_removed();
                    c.shutdown().await;
                    return;
                }
            }
        }
    });
}

impl Consensus {
    /// True if, after a silence, the leader says this node is no longer a member.
    async fn removed_by_leader(&self, m: &Metrics) -> bool {
        if self.heard_from_leader().elapsed() < SILENCE {
            return false;
        }
        self.leader_says_not_member(&self.peers(m)).await
    }

    /// Since when this leader has been in touch with a majority of the
    /// voters (see [`rules::in_touch`]); now, if it is not.
    fn in_touch_since(&self, m: &Metrics, touch: &mut Option<Instant>) -> Instant {
        let voters: BTreeSet<NodeId> = m.membership_config.membership().voter_ids().collect();
        if rules::in_touch(self.id, &self.seen(m), &voters) {
            *touch.get_or_insert_with(Instant::now)
        } else {
            *touch = None;
            Instant::now()
        }
    }

    /// The other members (id, address).
    fn peers(&self, m: &Metrics) -> Vec<(Option<NodeId>, String)> {
        let membership = m.membership_config.membership();
        membership.nodes().filter(|(id, _)| **id != self.id).map(|(id, n)| (Some(*id), n.addr.clone())).collect()
    }

    /// True if the leader does not count this node as a member: one of
    /// `peers` (id if known, address) if one leads, else the leader they
    /// name. A node removed while away may know none of the members that
    /// joined since, the leader among them (the simulator found a removed
    /// node campaigning for good so, asking only members that did not lead,
    /// seed 1493).
    pub(super) async fn leader_says_not_member(&self, peers: &[(Option<NodeId>, String)]) -> bool {
        for (id, addr) in peers {
            if let Some(removed) = self.ask_if_member(Target { addr, id: *id }).await {
                return removed;
            }
        }
        for (id, addr) in peers {
            let target = Target { addr, id: *id };
            let Ok(PeerResponse::Leader(Some((leader, at)))) =
                self.pool.call(target, &PeerRequest::Leader, Duration::from_secs(1)).await
            else {
                continue;
            };
            if leader == self.id || peers.iter().any(|(p, _)| *p == Some(leader)) {
                continue;
            }
            if let Some(removed) = self.ask_if_member(Target { addr: &at, id: Some(leader) }).await {
                return removed;
            }
        }
        false
    }

    /// If `target` leads: whether it says this node is no longer a member.
    async fn ask_if_member(&self, target: Target<'_>) -> Option<bool> {
        let req = PeerRequest::Check { id: self.id };
        match self.pool.call(target, &req, Duration::from_secs(1)).await {
            Ok(PeerResponse::Check { leader: true, member }) => Some(!member),
            _ => None,
        }
    }

    fn slots(&self) -> Vec<Slot> {
        self.node.snapshot(None).map(|snap| ctl::slots(&snap)).unwrap_or_default()
    }

    /// A leader's write: committed by this node as leader or not at all.
    async fn write(&self, cmd: Command) -> Option<Committed> {
        match self.propose_as_leader(cmd).await {
            Ok(c) => Some(c),
            Err(e) => {
                debug!(error = ?e, "leader write failed");
                None
            }
        }
    }

    /// Each step reads the metrics afresh: the steps before it may have
    /// waited seconds for commits, and a membership read before them misses
    /// the nodes that joined meanwhile (the simulator found a leader emptying
    /// a new member's slot as a non-member's so, and the member, taking it
    /// for a demotion, never claimed a slot again: seed 207355).
    async fn lead(&self, since: Instant) {
        self.publish_leader().await;
        self.publish_roles(&self.metrics()).await;
        self.remove_silent(&self.metrics(), since).await;
        self.tidy().await;
        self.match_voters_to_slots(&self.metrics()).await;
    }

    /// The members' names, or `None` during a voter change. Read after the
    /// state it is checked against: a node is a member before it can claim
    /// a slot or write `/ctl` files, so a holder missing here is truly gone.
    fn member_names(&self) -> Option<BTreeSet<String>> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        if membership.get_joint_config().len() > 1 {
            return None;
        }
        Some(membership.nodes().map(|(_, n)| n.name.clone()).collect())
    }

    /// Slots held by ids that are not members are emptied, and `/ctl/node`
    /// entries of ids that are not members are deleted: what a removal
    /// interrupted by a leader change can leave behind.
    async fn tidy(&self) {
        let slots = self.slots();
        let Some(members) = self.member_names() else { return };
        for slot in slots.iter().filter(|s| !s.holder.is_empty() && !members.contains(&s.holder)) {
            info!(slot = %slot.path, holder = %slot.holder, "emptying a slot held by a non-member");
            self.write(Command::Set { path: slot.path.clone(), rev: slot.rev, body: Body::default() }).await;
        }
        for slot in rules::extra_slots(&slots) {
            info!(slot = %slot.path, holder = %slot.holder, "emptying a second slot of one member");
            self.write(Command::Set { path: slot.path.clone(), rev: slot.rev, body: Body::default() }).await;
        }
        let Ok(snap) = self.node.snapshot(None) else { return };
        let Some(members) = self.member_names() else { return };
        for id in ctl::node_ids(&snap) {
            if members.contains(id.as_str()) {
                continue;
            }
            info!(node = %id, "deleting /ctl/node files of a non-member");
            self.forget(&id).await;
        }
        let Ok(snap) = self.node.snapshot(None) else { return };
        let Some(members) = self.member_names() else { return };
        for id in snap.getdir(&ctl::ns_dir(self.cluster())).unwrap_or_default() {
            if !members.contains(&*id) {
                info!(node = %id, "deleting the /ctl/ns entry of a non-member");
                self.forget(&id).await;
            }
        }
    }

    /// Deletes a removed member's `/ctl/node/<id>` files and its `/ctl/ns` entry.
    async fn forget(&self, name: &str) {
        let Ok(snap) = self.node.snapshot(None) else { return };
        for cmd in ctl::forget(&snap, self.cluster(), name) {
            self.write(cmd).await;
        }
    }

    /// Writes each member's role to `/ctl/node/<id>/role` once the membership
    /// that gives it is applied: `leader`, `voter` or `non-voter`.
    async fn publish_roles(&self, m: &Metrics) {
        let membership_at = m.membership_config.log_id().map(|l| l.index);
        let applied = m.last_applied.map(|l| l.index);
        if membership_at > applied {
            return;
        }
        let membership = m.membership_config.membership();
        let Ok(snap) = self.node.snapshot(None) else { return };
        for (id, member) in membership.nodes() {
            let role = if *id == self.id {
                "leader"
            } else if membership.voter_ids().any(|v| v == *id) {
                "voter"
            } else {
                "non-voter"
            };
            let path = ctl::node_file(&member.name, "role");
            let current = snap.get(&path).ok().flatten();
            // Only members that registered (have an addr) get a role file.
            let registered = ctl::exists(&snap, &ctl::node_file(&member.name, "addr"));
            if registered && current.is_none_or(|f| f.body != role.as_bytes()) {
                self.write(Command::Set { path, rev: doozer_store::CLOBBER, body: Body::from(role) }).await;
            }
        }
    }

    async fn publish_leader(&self) {
        let current = self.node.snapshot(None).ok().and_then(|s| s.get(ctl::LEADER).ok().flatten());
        if current.is_some_and(|f| f.body == self.me.name.as_bytes()) {
            return;
        }
        let body = Body::from(self.me.name.as_str());
        self.write(Command::Set { path: ctl::LEADER.into(), rev: doozer_store::CLOBBER, body }).await;
    }

    /// What this node knows of each member's liveness, for [`rules`].
    fn seen(&self, m: &Metrics) -> Vec<Seen> {
        let membership = m.membership_config.membership();
        let seen = |id: NodeId| Seen {
            id,
            quiet_for: self.liveness.last_answer(id).map(|t| t.elapsed()),
            replaced: self.liveness.is_replaced(id),
        };
        membership.nodes().map(|(id, _)| seen(*id)).collect()
    }

    async fn remove_silent(&self, m: &Metrics, since: Instant) {
        let membership = m.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let gone = rules::to_remove(self.id, &self.seen(m), &voters, since.elapsed(), self.opts.member_timeout);
        let silent: Vec<(NodeId, String, String)> = gone
            .into_iter()
            .filter_map(|id| membership.get_node(&id).map(|n| (id, n.name.clone(), n.addr.clone())))
            .collect();
        for (id, name, addr) in silent {
            warn!(node = %name, %addr, "removing a member silent for longer than -timeout");
            let is_voter = membership.voter_ids().any(|v| v == id);
            let change = if is_voter {
                ChangeMembers::RemoveVoters(BTreeSet::from([id]))
            } else {
                ChangeMembers::RemoveNodes(BTreeSet::from([id]))
            };
            // The membership first, its /ctl files after: a leader deposed
            // half way must not leave a member whose slot it emptied (the
            // member takes an emptied slot as a demotion and never claims it
            // again; the simulator found a cluster a voter short for good so,
            // seed 675). What a removal leaves behind, `tidy` repairs.
            if let Err(e) = self.raft.change_membership(change, false).await {
                debug!(node = %name, error = %e, "could not remove the member yet");
                continue;
            }
            info!(node = %name, "member removed");
            for slot in self.slots().into_iter().filter(|s| s.holder == name) {
                self.write(Command::Set { path: slot.path, rev: slot.rev, body: Body::default() }).await;
            }
            self.forget(&name).await;
        }
    }

    async fn match_voters_to_slots(&self, m: &Metrics) {
        let membership = m.membership_config.membership();
        // This leader's own changes finish before it gets here (each is
        // awaited), so a joint configuration is one a former leader began.
        if let Some(target) = rules::finish_change(membership.get_joint_config()) {
            info!(voters = target.len(), "finishing a voter change a former leader began");
            if let Err(e) = self.raft.change_membership(ChangeMembers::ReplaceAllVoters(target), true).await {
                debug!(error = %e, "could not finish the voter change yet");
            }
            return;
        }
        let by_name: HashMap<&str, NodeId> = membership.nodes().map(|(id, n)| (n.name.as_str(), *id)).collect();
        let wanted = rules::wanted_voters(&self.slots(), &by_name);
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let seen = self.seen(m);
        let is_alive = |id| rules::heard_recently(self.id, seen.iter().find(|s| s.id == id));
        match rules::voter_change(&wanted, &voters, is_alive) {
            Err(rules::Keep::NoLiveMajority { wanted, live }) => {
                debug!(wanted, live, "postponing a voter change that would leave no live majority");
            }
            Err(_) => {}
            Ok(next) => {
                let names = |ids: &BTreeSet<NodeId>| -> Vec<String> {
                    ids.iter().filter_map(|id| membership.get_node(id).map(|n| n.name.clone())).collect()
                };
                info!(voters = ?names(&next), before = ?names(&voters), "changing the voters to match /ctl/cal");
                if let Err(e) = self.raft.change_membership(ChangeMembers::ReplaceAllVoters(next), true).await {
                    debug!(error = %e, "voter change not made yet");
                }
            }
        }
    }

    /// `writable`, once: this node holds a slot and votes.
    async fn publish_writable(&self, m: &Metrics, claims: &Claims) {
        let votes = m.membership_config.membership().voter_ids().any(|v| v == self.id);
        if claims.held.is_none() || !votes {
            return;
        }
        let path = ctl::node_file(&self.me.name, "writable");
        if self.node.snapshot(None).ok().is_some_and(|s| !ctl::exists(&s, &path)) {
            if let Err(e) = self.mark_writable().await {
                debug!(error = %e, "could not write writable yet");
            }
        }
    }

    /// A member whose `/ctl/node` files or `/ctl/ns` entry have gone (a
    /// removal that did not finish) writes them again.
    async fn reregister(&self) {
        let addr = ctl::node_file(&self.me.name, "addr");
        let ns = ctl::ns_path(self.cluster(), &self.me.name);
        let present = self.node.snapshot(None).ok().is_some_and(|s| ctl::exists(&s, &addr) && ctl::exists(&s, &ns));
        if !present {
            info!("this member's /ctl/node files are missing; writing them again");
            if let Err(e) = self.register_node().await {
                debug!(error = %e, "could not register again yet");
            }
        }
    }

    /// Notes which slot this node holds, and a slot it lost.
    fn track_slot(&self, claims: &mut Claims) {
        let mine = self.slots().into_iter().find(|s| s.holder == self.me.name).map(|s| s.path);
        if let Some(lost) = claims.held.take().filter(|h| mine.as_ref() != Some(h)) {
            info!(slot = %lost, "this node's slot was emptied or taken: not claiming it again");
            claims.lost.insert(lost);
        }
        claims.held = mine;
    }

    /// A member that holds no slot takes the first vacant one it never lost.
    async fn claim_slot(&self, m: &Metrics, claims: &Claims) {
        let votes = m.membership_config.membership().voter_ids().any(|v| v == self.id);
        let slots = self.slots();
        if claims.held.is_some() {
            return;
        }
        if let Some(slot) = rules::slot_to_claim(&self.me.name, &slots, votes, &claims.lost).cloned() {
            let body = Body::from(self.me.name.as_str());
            // A member's own request, forwarded to the leader; the revision check
            // makes one claimant win.
            let claim = Command::Set { path: slot.path.clone(), rev: slot.rev, body };
            if let Ok(Committed::Changed(_)) = self.propose(claim).await {
                info!(slot = %slot.path, "claimed a vacant slot");
            }
        }
    }
}
