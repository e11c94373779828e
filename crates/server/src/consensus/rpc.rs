//! Raft's messages as they travel between members: our own types, converted
//! to and from openraft's at the edge of this module's users (`network`
//! sends, `peer` answers).
//!
//! openraft's types are serde-derived and may change shape in any release;
//! peers encode these instead, so an openraft upgrade cannot change the wire
//! by accident (a change here is a new peer protocol version, `wire::PROTOCOL`).
//! The layout mirrors openraft 0.9's: a log id is (term, leader node, index),
//! a vote (term, node, committed).
//!
//! Errors from the remote Raft cross as [`Refused`]: whether it has stopped,
//! or why it failed; the asker's openraft sees them as a remote `Fatal`.
//!
//! Not here: the framing and the hello (`wire`).

use super::types::{Entry, LogId, Member, NodeId, Proposal, SnapshotMeta, Vote};
use openraft::error::{Fatal, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{CommittedLeaderId, EntryPayload, Membership, StoredMembership};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireLogId {
    pub term: u64,
    pub node: NodeId,
    pub index: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireVote {
    pub term: u64,
    pub node: NodeId,
    pub committed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireMembership {
    /// One voter set, or two during a change (joint consensus).
    pub configs: Vec<BTreeSet<NodeId>>,
    /// Every member, voters and learners.
    pub nodes: BTreeMap<NodeId, Member>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WirePayload {
    Blank,
    Normal(Proposal),
    Membership(WireMembership),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    pub log_id: WireLogId,
    pub payload: WirePayload,
}

/// AppendEntries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Append {
    pub vote: WireVote,
    pub prev_log_id: Option<WireLogId>,
    pub entries: Vec<WireEntry>,
    pub leader_commit: Option<WireLogId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendAnswer {
    Success,
    PartialSuccess(Option<WireLogId>),
    Conflict,
    HigherVote(WireVote),
}

/// RequestVote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteAsk {
    pub vote: WireVote,
    pub last_log_id: Option<WireLogId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteAnswer {
    pub vote: WireVote,
    pub granted: bool,
    pub last_log_id: Option<WireLogId>,
}

/// What a snapshot is of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireSnapshotMeta {
    pub last_log_id: Option<WireLogId>,
    pub membership_log_id: Option<WireLogId>,
    pub membership: WireMembership,
    pub snapshot_id: String,
}

/// The remote Raft could not answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refused {
    Stopped,
    Failed(String),
}

impl From<LogId> for WireLogId {
    fn from(l: LogId) -> WireLogId {
        WireLogId { term: l.leader_id.term, node: l.leader_id.node_id, index: l.index }
    }
}

impl From<WireLogId> for LogId {
    fn from(l: WireLogId) -> LogId {
        LogId::new(CommittedLeaderId::new(l.term, l.node), l.index)
    }
}

impl From<Vote> for WireVote {
    fn from(v: Vote) -> WireVote {
        WireVote { term: v.leader_id.term, node: v.leader_id.node_id, committed: v.committed }
    }
}

impl From<WireVote> for Vote {
    fn from(v: WireVote) -> Vote {
        if v.committed {
            Vote::new_committed(v.term, v.node)
        } else {
            Vote::new(v.term, v.node)
        }
    }
}

impl From<&Membership<NodeId, Member>> for WireMembership {
    fn from(m: &Membership<NodeId, Member>) -> WireMembership {
        WireMembership {
            configs: m.get_joint_config().clone(),
            nodes: m.nodes().map(|(id, n)| (*id, n.clone())).collect(),
        }
    }
}

impl From<WireMembership> for Membership<NodeId, Member> {
    fn from(m: WireMembership) -> Membership<NodeId, Member> {
        Membership::new(m.configs, m.nodes)
    }
}

impl From<Entry> for WireEntry {
    fn from(e: Entry) -> WireEntry {
        let payload = match e.payload {
            EntryPayload::Blank => WirePayload::Blank,
            EntryPayload::Normal(p) => WirePayload::Normal(p),
            EntryPayload::Membership(m) => WirePayload::Membership(WireMembership::from(&m)),
        };
        WireEntry { log_id: e.log_id.into(), payload }
    }
}

impl From<WireEntry> for Entry {
    fn from(e: WireEntry) -> Entry {
        let payload = match e.payload {
            WirePayload::Blank => EntryPayload::Blank,
            WirePayload::Normal(p) => EntryPayload::Normal(p),
            WirePayload::Membership(m) => EntryPayload::Membership(m.into()),
        };
        Entry { log_id: e.log_id.into(), payload }
    }
}

fn wire_id(l: Option<LogId>) -> Option<WireLogId> {
    l.map(Into::into)
}

fn raft_id(l: Option<WireLogId>) -> Option<LogId> {
    l.map(Into::into)
}

impl From<AppendEntriesRequest<super::types::TypeConfig>> for Append {
    fn from(r: AppendEntriesRequest<super::types::TypeConfig>) -> Append {
        Append {
            vote: r.vote.into(),
            prev_log_id: wire_id(r.prev_log_id),
            entries: r.entries.into_iter().map(Into::into).collect(),
            leader_commit: wire_id(r.leader_commit),
        }
    }
}

impl From<Append> for AppendEntriesRequest<super::types::TypeConfig> {
    fn from(r: Append) -> AppendEntriesRequest<super::types::TypeConfig> {
        AppendEntriesRequest {
            vote: r.vote.into(),
            prev_log_id: raft_id(r.prev_log_id),
            entries: r.entries.into_iter().map(Into::into).collect(),
            leader_commit: raft_id(r.leader_commit),
        }
    }
}

impl From<AppendEntriesResponse<NodeId>> for AppendAnswer {
    fn from(r: AppendEntriesResponse<NodeId>) -> AppendAnswer {
        match r {
            AppendEntriesResponse::Success => AppendAnswer::Success,
            AppendEntriesResponse::PartialSuccess(l) => AppendAnswer::PartialSuccess(wire_id(l)),
            AppendEntriesResponse::Conflict => AppendAnswer::Conflict,
            AppendEntriesResponse::HigherVote(v) => AppendAnswer::HigherVote(v.into()),
        }
    }
}

impl From<AppendAnswer> for AppendEntriesResponse<NodeId> {
    fn from(r: AppendAnswer) -> AppendEntriesResponse<NodeId> {
        match r {
            AppendAnswer::Success => AppendEntriesResponse::Success,
            AppendAnswer::PartialSuccess(l) => AppendEntriesResponse::PartialSuccess(raft_id(l)),
            AppendAnswer::Conflict => AppendEntriesResponse::Conflict,
            AppendAnswer::HigherVote(v) => AppendEntriesResponse::HigherVote(v.into()),
        }
    }
}

impl From<VoteRequest<NodeId>> for VoteAsk {
    fn from(r: VoteRequest<NodeId>) -> VoteAsk {
        VoteAsk { vote: r.vote.into(), last_log_id: wire_id(r.last_log_id) }
    }
}

impl From<VoteAsk> for VoteRequest<NodeId> {
    fn from(r: VoteAsk) -> VoteRequest<NodeId> {
        VoteRequest { vote: r.vote.into(), last_log_id: raft_id(r.last_log_id) }
    }
}

impl From<VoteResponse<NodeId>> for VoteAnswer {
    fn from(r: VoteResponse<NodeId>) -> VoteAnswer {
        VoteAnswer { vote: r.vote.into(), granted: r.vote_granted, last_log_id: wire_id(r.last_log_id) }
    }
}

impl From<VoteAnswer> for VoteResponse<NodeId> {
    fn from(r: VoteAnswer) -> VoteResponse<NodeId> {
        VoteResponse { vote: r.vote.into(), vote_granted: r.granted, last_log_id: raft_id(r.last_log_id) }
    }
}

impl From<SnapshotMeta> for WireSnapshotMeta {
    fn from(m: SnapshotMeta) -> WireSnapshotMeta {
        WireSnapshotMeta {
            last_log_id: wire_id(m.last_log_id),
            membership_log_id: wire_id(*m.last_membership.log_id()),
            membership: WireMembership::from(m.last_membership.membership()),
            snapshot_id: m.snapshot_id,
        }
    }
}

impl From<WireSnapshotMeta> for SnapshotMeta {
    fn from(m: WireSnapshotMeta) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: raft_id(m.last_log_id),
            last_membership: StoredMembership::new(raft_id(m.membership_log_id), m.membership.into()),
            snapshot_id: m.snapshot_id,
        }
    }
}

impl From<Fatal<NodeId>> for Refused {
    fn from(e: Fatal<NodeId>) -> Refused {
        match e {
            Fatal::Stopped => Refused::Stopped,
            other => Refused::Failed(other.to_string()),
        }
    }
}

impl From<RaftError<NodeId>> for Refused {
    fn from(e: RaftError<NodeId>) -> Refused {
        match e {
            RaftError::Fatal(f) => f.into(),
            RaftError::APIError(never) => match never {},
        }
    }
}

impl From<Refused> for Fatal<NodeId> {
    fn from(r: Refused) -> Fatal<NodeId> {
        match r {
            Refused::Stopped => Fatal::Stopped,
            // The remote's own log says what failed; here it only stops the call.
            Refused::Failed(_) => Fatal::Panicked,
        }
    }
}

impl From<Refused> for RaftError<NodeId> {
    fn from(r: Refused) -> RaftError<NodeId> {
        RaftError::Fatal(r.into())
    }
}

/// A remote Raft's answer to AppendEntries, in openraft's terms.
// openraft's own error types, as its `RaftNetwork` returns them.
#[allow(clippy::result_large_err)]
pub fn append_answer(r: Result<AppendAnswer, Refused>) -> Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> {
    r.map(Into::into).map_err(Into::into)
}

/// A remote Raft's answer to RequestVote, in openraft's terms.
// openraft's own error types, as its `RaftNetwork` returns them.
#[allow(clippy::result_large_err)]
pub fn vote_answer(r: Result<VoteAnswer, Refused>) -> Result<VoteResponse<NodeId>, RaftError<NodeId>> {
    r.map(Into::into).map_err(Into::into)
}

/// A remote Raft's answer to a snapshot, in openraft's terms.
// openraft's own error types, as its `RaftNetwork` returns them.
#[allow(clippy::result_large_err)]
pub fn snapshot_answer(r: Result<WireVote, Refused>) -> Result<SnapshotResponse<NodeId>, Fatal<NodeId>> {
    r.map(|vote| SnapshotResponse { vote: vote.into() }).map_err(Into::into)
}

#[cfg(test)]
mod tests {
    use super::*;
    use doozer_store::Command;

    fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    #[test]
    fn every_message_comes_back_as_it_went() {
        let mut nodes = BTreeMap::new();
        nodes.insert(1, Member { addr: "a:1".into(), name: "A".into() });
        nodes.insert(2, Member { addr: "b:2".into(), name: "B".into() });
        let membership = Membership::new(vec![BTreeSet::from([1]), BTreeSet::from([1, 2])], nodes);
        let proposal = Proposal { id: None, cmd: Command::Nop, term: Some(3) };
        let entries = vec![
            Entry { log_id: log_id(3, 1, 7), payload: EntryPayload::Blank },
            Entry { log_id: log_id(3, 1, 8), payload: EntryPayload::Normal(proposal) },
            Entry { log_id: log_id(3, 1, 9), payload: EntryPayload::Membership(membership.clone()) },
        ];
        let append = AppendEntriesRequest::<super::super::types::TypeConfig> {
            vote: Vote::new_committed(3, 1),
            prev_log_id: Some(log_id(2, 2, 6)),
            entries,
            leader_commit: Some(log_id(3, 1, 7)),
        };
        let (vote, prev, commit, sent) =
            (append.vote, append.prev_log_id, append.leader_commit, append.entries.clone());
        let back: AppendEntriesRequest<_> = Append::from(append).into();
        assert_eq!((back.vote, back.prev_log_id, back.leader_commit), (vote, prev, commit));
        assert_eq!(back.entries, sent);

        let ask = VoteRequest { vote: Vote::new(4, 2), last_log_id: None };
        assert_eq!(VoteRequest::from(VoteAsk::from(ask.clone())), ask);
        let answer = VoteResponse { vote: Vote::new(4, 2), vote_granted: true, last_log_id: Some(log_id(3, 1, 9)) };
        assert_eq!(VoteResponse::from(VoteAnswer::from(answer.clone())), answer);
        let answers = || {
            [
                AppendEntriesResponse::Success,
                AppendEntriesResponse::PartialSuccess(Some(log_id(1, 1, 1))),
                AppendEntriesResponse::Conflict,
                AppendEntriesResponse::HigherVote(Vote::new_committed(9, 2)),
            ]
        };
        for (a, expected) in answers().into_iter().zip(answers()) {
            assert!(AppendEntriesResponse::from(AppendAnswer::from(a)) == expected);
        }
        let meta = SnapshotMeta {
            last_log_id: Some(log_id(3, 1, 9)),
            last_membership: StoredMembership::new(Some(log_id(3, 1, 9)), membership),
            snapshot_id: "s-9".into(),
        };
        assert_eq!(SnapshotMeta::from(WireSnapshotMeta::from(meta.clone())), meta);
    }

    /// The bytes of one message are pinned: a change to these types (or to
    /// how they encode) must come with a new peer protocol version.
    #[test]
    fn the_encoding_is_pinned() {
        let ask = VoteAsk { vote: WireVote { term: 5, node: 300, committed: false }, last_log_id: None };
        assert_eq!(postcard::to_allocvec(&ask).unwrap(), [5, 0xAC, 0x02, 0, 0]);
    }
}
