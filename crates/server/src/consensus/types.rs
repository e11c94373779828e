//! The Raft type configuration: what a log entry carries, what a member is,
//! and what a snapshot holds.

use super::wire::Committed;
use doozer_store::{Command, Image};
use openraft::TokioRuntime as Tokio;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

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
/// A leader's decision that holds only in the term it was made in carries
/// that term: committed in an entry of another term, it is not applied
/// (`Committed::OutOfTerm`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    pub id: Option<WriteId>,
    pub cmd: Command,
    pub term: Option<u64>,
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
        AsyncRuntime = Runtime,
);

/// openraft's runtime: tokio's, except that its random numbers (election
/// timeouts) come from [`crate::rt`], so a simulation seeds them.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Runtime;

impl openraft::AsyncRuntime for Runtime {
    type JoinError = <Tokio as openraft::AsyncRuntime>::JoinError;
    type JoinHandle<T: Send + 'static> = <Tokio as openraft::AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as openraft::AsyncRuntime>::Sleep;
    type Instant = <Tokio as openraft::AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as openraft::AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + Send> = <Tokio as openraft::AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = crate::rt::RaftRng;
    type OneshotSender<T: Send> = <Tokio as openraft::AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as openraft::AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: Send> = <Tokio as openraft::AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + Send + 'static,
        T::Output: Send + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + Send>(duration: Duration, future: F) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + Send>(deadline: Self::Instant, future: F) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        crate::rt::RaftRng
    }

    fn oneshot<T: Send>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>) {
        Tokio::oneshot()
    }
}

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Metrics = openraft::RaftMetrics<NodeId, Member>;
