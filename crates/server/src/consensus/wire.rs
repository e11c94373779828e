//! Peer traffic between members, on the same `-l` address as clients.
//!
//! A peer connection opens with [`MAGIC`], four bytes that read as a negative
//! length, which no client frame can have; then the hello, in which each side
//! proves it knows the cluster's read-write secret without sending it:
//!
//! ```text
//! dialer -> [`Hello`]      version, oldest version it speaks, cluster, node asked for, nonce A (32 random bytes)
//! server -> [`Challenge`]  version, oldest, and nonce B with HMAC-SHA256(secret, "doozer peer server" cluster A B), or why not
//! dialer -> [`Answer`]     HMAC-SHA256(secret, "doozer peer dialer" cluster B A)
//! server -> welcome        Result<(), String>
//! ```
//! A recorded answer is worthless on another connection (B is new each
//! time). `Hello` and `Challenge` keep this layout in every version, so two
//! builds can always tell whether they speak a common one. Then
//! request/response pairs, each a 4-byte big-endian length and a
//! postcard-encoded message.
//!
//! Builds before the versioned hello (peer protocol 0) opened with
//! [`MAGIC_V0`] and sent the secret itself; they are refused with a message
//! they log.

use super::rpc;
use super::types::*;
use doozer_store::{Outcome, Rev, StoreError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The first four bytes of a peer connection.
pub const MAGIC: [u8; 4] = [0xFF, b'D', b'Z', b'V'];
/// What peer protocol 0 opened with.
pub const MAGIC_V0: [u8; 4] = [0xFF, b'D', b'Z', b'P'];
/// The peer protocol this build speaks, and the oldest it can work with.
///
/// - 1: the versioned hello, with openraft's own types for Raft's messages.
/// - 2: Raft's messages in our own types (`rpc`); the REV request.
pub const PROTOCOL: u16 = 2;
pub const OLDEST_PROTOCOL: u16 = 2;

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
    pub version: u16,
    pub oldest: u16,
    pub cluster: String,
    /// The node this connection is for, if a particular one: a restarted node
    /// may now listen at a dead member's address, and must not take its traffic.
    pub to: Option<NodeId>,
    pub nonce: [u8; 32],
}

/// The server's answer to a hello: its nonce and its proof, or a refusal.
#[derive(Serialize, Deserialize)]
pub struct Challenge {
    pub version: u16,
    pub oldest: u16,
    pub go: Result<([u8; 32], [u8; 32]), String>,
}

/// The dialer's proof.
#[derive(Serialize, Deserialize)]
pub struct Answer {
    pub proof: [u8; 32],
}

/// HMAC-SHA256 of the cluster's name and two nonces, keyed by the secret.
pub fn proof(secret: &str, role: &str, cluster: &str, first: &[u8; 32], second: &[u8; 32]) -> [u8; 32] {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    for part in [role.as_bytes(), &(cluster.len() as u64).to_be_bytes(), cluster.as_bytes(), first, second] {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// True if `got` is the proof expected (compared in constant time).
pub fn proof_ok(got: &[u8; 32], expected: &[u8; 32]) -> bool {
    use subtle::ConstantTimeEq;
    got.ct_eq(expected).into()
}

/// Why two protocol ranges have nothing in common, if they do not.
pub fn incompatible(peer_version: u16, peer_oldest: u16) -> Option<String> {
    (peer_version < OLDEST_PROTOCOL || peer_oldest > PROTOCOL).then(|| {
        format!(
            "peer protocol mismatch: this node speaks {OLDEST_PROTOCOL} to {PROTOCOL}, the peer {peer_oldest} to \
             {peer_version}; run builds that share a version (see the README's upgrade notes)"
        )
    })
}

/// What a node of protocol 0 is told (it logs the refusal).
pub const TOO_OLD: &str = "this cluster's nodes speak peer protocol 2 and refuse protocol 0 (doozerd builds that \
                           send the secret in the clear): upgrade this node";

/// A request on a peer connection. Raft's messages are our own types
/// (`rpc`), not openraft's, so that the wire is ours to version.
#[derive(Serialize, Deserialize)]
pub enum PeerRequest {
    Append(rpc::Append),
    Vote(rpc::VoteAsk),
    /// A whole snapshot; the image in its binary format. `Bytes`, not
    /// `Vec<u8>`: postcard writes both as a length and the bytes, but serde
    /// takes a `Vec<u8>` a byte at a time (1.5 s of a 1M-key join).
    Snapshot {
        vote: rpc::WireVote,
        meta: rpc::WireSnapshotMeta,
        image: bytes::Bytes,
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
    /// The store revision the answering node has applied (the web view's
    /// cluster page; a peer request so that it works under TLS too).
    Rev,
}

#[derive(Serialize, Deserialize)]
pub enum PeerResponse {
    Append(Result<rpc::AppendAnswer, rpc::Refused>),
    Vote(Result<rpc::VoteAnswer, rpc::Refused>),
    /// The receiver's vote.
    Snapshot(Result<rpc::WireVote, rpc::Refused>),
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
    /// The store revision applied.
    Rev(Rev),
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
    let body = read_frame(r, max).await?;
    postcard::from_bytes(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads one message's bytes, at most `max`.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> io::Result<Vec<u8>> {
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
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_binds_the_secret_the_role_the_cluster_and_both_nonces() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let p = proof("s", "doozer peer dialer", "c", &a, &b);
        assert!(proof_ok(&p, &proof("s", "doozer peer dialer", "c", &a, &b)));
        for other in [
            proof("t", "doozer peer dialer", "c", &a, &b),
            proof("s", "doozer peer server", "c", &a, &b),
            proof("s", "doozer peer dialer", "d", &a, &b),
            proof("s", "doozer peer dialer", "c", &b, &a),
            // A replayed answer meets a new server nonce.
            proof("s", "doozer peer dialer", "c", &[3u8; 32], &b),
        ] {
            assert!(!proof_ok(&p, &other));
        }
    }

    #[test]
    fn a_snapshot_image_travels_as_it_did_when_it_was_a_vec() {
        // The older peers' encoding, byte for byte: a sequence of u8.
        #[derive(serde::Serialize)]
        struct Before {
            image: Vec<u8>,
        }
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Now {
            image: bytes::Bytes,
        }
        let image: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
        let before = postcard::to_allocvec(&Before { image: image.clone() }).unwrap();
        let now = postcard::to_allocvec(&Now { image: image.clone().into() }).unwrap();
        assert_eq!(before, now);
        let read: Now = postcard::from_bytes(&before).unwrap();
        assert_eq!(read.image, image);
    }

    #[test]
    fn versions_without_one_in_common_are_refused() {
        assert!(incompatible(PROTOCOL, OLDEST_PROTOCOL).is_none());
        assert!(incompatible(OLDEST_PROTOCOL - 1, 0).is_some());
        let why = incompatible(PROTOCOL + 5, PROTOCOL + 1).unwrap();
        assert!(why.contains("peer protocol mismatch"), "{why}");
    }
}
