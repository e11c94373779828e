//! Peer traffic between members, on the same `-l` address as clients.
//!
//! A peer connection opens with [`MAGIC`], four bytes that read as a negative
//! length, which no client frame can have; then a [`Hello`] naming the cluster
//! and carrying the read-write secret; then request/response pairs, each a
//! 4-byte big-endian length and a postcard-encoded message.

use super::types::*;
use doozer_store::{Outcome, Rev, StoreError};
use openraft::error::{Fatal, RaftError};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first four bytes of a peer connection.
pub const MAGIC: [u8; 4] = [0xFF, b'D', b'Z', b'P'];

/// Largest peer message: a snapshot holds the whole tree.
pub const MAX_MESSAGE: usize = 1 << 30;
/// Largest hello (and its answer): read before the sender is known.
pub const MAX_HELLO: usize = 64 * 1024;

/// How a refusal begins when the address asked for now serves another node
/// (a member restarted in place): the node asked for is gone for good.
pub const REPLACED: &str = "this address now serves node";

/// The first message on a peer connection.
#[derive(Serialize, Deserialize)]
pub struct Hello {
    pub cluster: String,
    pub secret: String,
    /// The node this connection is for, if a particular one: a restarted node
    /// may now listen at a dead member's address, and must not take its traffic.
    pub to: Option<NodeId>,
}

#[derive(Serialize, Deserialize)]
pub enum PeerRequest {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    /// A whole snapshot; the image in its binary format.
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        image: Vec<u8>,
        applied: Applied,
    },
    /// A client write forwarded to the leader, with its id.
    Propose(Proposal),
    /// A new node asks to be added as a learner.
    Join {
        id: NodeId,
        member: Member,
    },
    /// A node that has not heard from a leader asks whether it is still a member.
    Check {
        id: NodeId,
    },
    /// Which member leads, as the answering node knows it.
    Leader,
    /// A question for the leader's lessor, from a node that does not lead.
    Lease(LeaseAsk),
}

#[derive(Serialize, Deserialize)]
pub enum PeerResponse {
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    Snapshot(Result<SnapshotResponse<NodeId>, Fatal<NodeId>>),
    Propose(Result<Committed, ForwardError>),
    /// The log index at which the learner was added.
    Join(Result<u64, String>),
    /// Whether the answering node leads, and whether it counts the asker as a member.
    Check {
        leader: bool,
        member: bool,
    },
    /// The leader's id and address, if the answering node knows them.
    Leader(Option<(NodeId, String)>),
    /// The lessor's answer.
    Lease(Result<LeaseTime, LeaseRefusal>),
}

/// What a node asks the leader's lessor: deadlines live only there, and a
/// keep-alive is not a write (as etcd's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseAsk {
    /// Move the lease's deadline to a TTL from now.
    KeepAlive(doozer_store::LeaseId),
    /// How long the lease has left.
    Time(doozer_store::LeaseId),
}

/// A lease's time as the leader sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTime {
    pub remaining: std::time::Duration,
    /// Its TTL, in seconds.
    pub granted: u32,
}

/// Why the lessor did not answer with a time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseRefusal {
    /// No such lease, or it is being revoked (a keep-alive came too late).
    NotFound,
    /// The asked node does not lead (any more).
    NotLeader,
    /// No leader could be asked in time.
    NoLeader(String),
}

/// A committed write's result, as small as it can travel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Committed {
    Changed(Rev),
    Unchanged,
    Failed(StoreError),
    /// A batch's results, one per command.
    Batch(Vec<Committed>),
    /// Not applied: the node that proposed it is no longer a member (see
    /// `StateMachine::apply_proposal`). Its writers are told nothing was done.
    NotMember,
    /// Not applied: a leader's decision made in another term than the entry
    /// that carried it (see `types::Proposal`).
    OutOfTerm,
}

impl Committed {
    /// The newest revision this result made, if it made any.
    pub fn last_rev(&self) -> Option<Rev> {
        match self {
            Committed::Changed(rev) => Some(*rev),
            Committed::Batch(all) => all.iter().filter_map(Committed::last_rev).max(),
            Committed::Unchanged | Committed::Failed(_) | Committed::NotMember | Committed::OutOfTerm => None,
        }
    }
}

impl From<Outcome> for Committed {
    fn from(o: Outcome) -> Committed {
        match o {
            Outcome::Changed(e) => Committed::Changed(e.rev),
            Outcome::Unchanged => Committed::Unchanged,
            Outcome::Failed(e) => Committed::Failed(e),
            Outcome::Batch(outs) => Committed::Batch(outs.into_iter().map(Committed::from).collect()),
        }
    }
}

/// Why a forwarded write was not carried out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum ForwardError {
    /// The receiver is not the leader (any more); ask again.
    NotLeader,
    Failed(String),
}

pub async fn write_msg<W: AsyncWrite + Unpin, T: Serialize>(w: &mut W, msg: &T) -> io::Result<()> {
    w.write_all(&frame(msg)?).await?;
    w.flush().await
}

/// A message as it travels: its length, then its encoding.
pub fn frame<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    // The length goes in front once the body is encoded after it: one buffer.
    let mut frame = postcard::to_extend(msg, vec![0u8; 4]).map_err(io::Error::other)?;
    let len = u32::try_from(frame.len() - 4).map_err(io::Error::other)?;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    Ok(frame)
}

/// Reads one message of at most `max` bytes. The buffer grows as bytes
/// arrive, so a length prefix alone reserves no memory.
pub async fn read_msg<R: AsyncRead + Unpin, T: DeserializeOwned>(r: &mut R, max: usize) -> io::Result<T> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("peer message of {len} bytes is too large")));
    }
    let mut body = Vec::with_capacity(len.min(64 * 1024));
    let got = r.take(len as u64).read_to_end(&mut body).await?;
    if got < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer message cut short"));
    }
    postcard::from_bytes(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
