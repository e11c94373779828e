//! The Raft type configuration: what a log entry carries and what a member is.

use doozer_store::{Command, Image, Outcome};
use serde::{Deserialize, Serialize};

/// A Raft node id: the first 64 of the 80 random bits of the node's Doozer id.
pub type NodeId = u64;

/// What the cluster knows of a member: where it listens and its Doozer id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub addr: String,
    pub name: String,
}

openraft::declare_raft_types!(
    /// Log entries carry store commands; applying one yields its outcome.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = Member,
        SnapshotData = Image,
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
