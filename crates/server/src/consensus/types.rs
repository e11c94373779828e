//! The Raft type configuration: what a log entry carries, what a member is,
//! and what a snapshot holds.

use super::wire::Committed;
use doozer_store::{Command, Image};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Raft node id: the first 64 of the 80 random bits of the node's Doozer id.
pub type NodeId = u64;

/// What the cluster knows of a member: where it listens and its Doozer id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub addr: String,
    pub name: String,
}

/// Names one proposal of one node: a node proposes one batch at a time, in
/// order, so `seq` only grows. A proposal sent again (its leader died before
/// answering) keeps its id, and the state machine applies it once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteId {
    pub origin: NodeId,
    pub seq: u64,
}

/// A log entry's payload: a store command and, for a node's own proposals,
/// its id (the leader's own decisions carry none: they are never resent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: Option<WriteId>,
    pub cmd: Command,
}

/// For each member, the last proposal applied and its outcome: what a resent
/// proposal is answered with. Part of the replicated state (snapshots carry it).
pub type Applied = BTreeMap<NodeId, (u64, Committed)>;

/// What a snapshot holds: the store and the applied proposals.
#[derive(Clone)]
pub struct SnapshotData {
    pub image: Image,
    pub applied: Applied,
}

openraft::declare_raft_types!(
    /// Log entries carry store commands; applying one yields its outcome.
    pub TypeConfig:
        D = Proposal,
        R = Committed,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = SnapshotData,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Metrics = openraft::RaftMetrics<NodeId, Member>;
