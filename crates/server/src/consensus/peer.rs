//! The server side of peer traffic: a peer connection's hello (protocol
//! version, cluster name, proof of the secret, the node it is for), then
//! Raft's RPCs, forwarded writes, joins and membership checks, each answered
//! in turn.
//!
//! Not here: the client side (`network`), the wire format (`wire`).

use super::network::Target;
use super::types::{self, Member, NodeId};
use super::wire::{self, read_msg, write_msg, Answer, Challenge, ForwardError, Hello, PeerRequest, PeerResponse};
use super::Consensus;
use doozer_store::Image;
use openraft::error::{ClientWriteError, RaftError};
use openraft::ServerState;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, BufStream};
use tokio::time::Instant;
use tracing::{debug, info, warn};

impl Consensus {
    /// Serves a peer connection whose magic bytes have been read.
    pub async fn serve_peer<S: AsyncRead + AsyncWrite + Unpin>(self: Arc<Self>, stream: S) {
        let mut stream = BufStream::new(stream);
        let welcomed = tokio::time::timeout(crate::listen::FIRST_BYTES, self.welcome(&mut stream));
        if !matches!(welcomed.await, Ok(Ok(true))) {
            return;
        }
        loop {
            let req: PeerRequest = match read_msg(&mut stream, wire::MAX_MESSAGE).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(error = %e, "peer connection closed");
                    return;
                }
            };
            let resp = self.handle(req).await;
            if write_msg(&mut stream, &resp).await.is_err() {
                return;
            }
        }
    }

    /// The server's half of the hello (see `wire`): true if the dialer is
    /// welcome.
    async fn welcome<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: &mut S) -> std::io::Result<bool> {
        let hello: Hello = read_msg(stream, wire::MAX_HELLO).await?;
        let cluster = &self.opts.cluster;
        let refusal = if let Some(why) = wire::incompatible(hello.version, hello.oldest) {
            Some(why)
        } else if &hello.cluster != cluster {
            Some(format!("cluster name mismatch: this cluster is {cluster:?}, the peer is in {:?}", hello.cluster))
        } else if hello.to.is_some_and(|to| to != self.id) {
            Some(format!("{} {}, not the node asked for", wire::REPLACED, self.me.name))
        } else {
            None
        };
        let mut nonce = [0u8; 32];
        crate::rt::fill_random(&mut nonce);
        let go = match refusal {
            Some(why) => Err(why),
            None => Ok((nonce, wire::proof(&self.opts.secret, "doozer peer server", cluster, &hello.nonce, &nonce))),
        };
        let refused = go.is_err();
        let challenge = Challenge { version: wire::PROTOCOL, oldest: wire::OLDEST_PROTOCOL, go };
        write_msg(stream, &challenge).await?;
        if refused {
            return Ok(false);
        }
        let answer: Answer = read_msg(stream, wire::MAX_HELLO).await?;
        let expected = wire::proof(&self.opts.secret, "doozer peer dialer", cluster, &nonce, &hello.nonce);
        let verdict = if wire::proof_ok(&answer.proof, &expected) {
            Ok(())
        } else {
            Err("wrong cluster secret (DOOZER_RWSECRET)".to_string())
        };
        let ok = verdict.is_ok();
        write_msg(stream, &verdict).await?;
        Ok(ok)
    }

    /// A node of peer protocol 0 (its magic read): told why it is refused,
    /// in the words it understands.
    pub async fn refuse_old_peer<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S) {
        let mut stream = BufStream::new(stream);
        let refuse = async {
            wire::read_frame(&mut stream, wire::MAX_HELLO).await?;
            write_msg(&mut stream, &Err::<(), _>(wire::TOO_OLD.to_string())).await
        };
        let _ = tokio::time::timeout(crate::listen::FIRST_BYTES, refuse).await;
        if self.old_peer_warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            debug!("refused a peer of protocol 0");
        } else {
            warn!(
                "refused a peer of peer protocol 0 (an older doozerd, which sends the secret in the clear); upgrade it"
            );
        }
    }

    async fn handle(&self, req: PeerRequest) -> PeerResponse {
        match req {
            PeerRequest::Append(rpc) => {
                *self.heard.lock() = Instant::now();
                self.heard_from(rpc.vote.leader_id().voted_for());
                PeerResponse::Append(self.raft.append_entries(rpc).await)
            }
            PeerRequest::Vote(rpc) => {
                self.heard_from(rpc.vote.leader_id().voted_for());
                PeerResponse::Vote(self.raft.vote(rpc).await)
            }
            PeerRequest::Snapshot { vote, meta, image, applied } => {
                // Decoding the whole tree is slow: not on a runtime worker.
                let decoded = crate::rt::blocking(move || Image::decode(&image)).await;
                match decoded {
                    Ok(Ok(image)) => {
                        let data = types::SnapshotData { image, applied };
                        let snapshot = types::Snapshot { meta, snapshot: Box::new(data) };
                        PeerResponse::Snapshot(self.raft.install_full_snapshot(vote, snapshot).await)
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "rejected a snapshot from the leader");
                        PeerResponse::Snapshot(Err(openraft::error::Fatal::Panicked))
                    }
                    Err(_) => PeerResponse::Snapshot(Err(openraft::error::Fatal::Panicked)),
                }
            }
            PeerRequest::Propose(p) => PeerResponse::Propose(match self.raft.client_write(p).await {
                Ok(resp) => Ok(resp.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(ForwardError::NotLeader),
                Err(e) => Err(ForwardError::Failed(e.to_string())),
            }),
            PeerRequest::Join { id, member } => PeerResponse::Join(self.handle_join(id, member).await),
            PeerRequest::Check { id } => {
                let m = self.raft.metrics().borrow().clone();
                let leader = m.state == ServerState::Leader;
                let member = m.membership_config.membership().get_node(&id).is_some();
                PeerResponse::Check { leader, member }
            }
            PeerRequest::Leader => {
                let m = self.raft.metrics().borrow().clone();
                let leader = m
                    .current_leader
                    .and_then(|l| m.membership_config.membership().get_node(&l).map(|n| (l, n.addr.clone())));
                PeerResponse::Leader(leader)
            }
            PeerRequest::Lease(ask) => PeerResponse::Lease(self.answer_lessor(ask).await),
        }
    }

    /// A member that calls this node is alive, even if this node, not
    /// leading, has no reason to call it (a peer back from a pause may come
    /// back as the new leader).
    fn heard_from(&self, id: Option<NodeId>) {
        let Some(id) = id.filter(|id| *id != self.id && self.liveness.is_down(*id)) else { return };
        let m = self.raft.metrics().borrow().clone();
        if let Some(n) = m.membership_config.membership().get_node(&id) {
            self.liveness.answered(id, &n.name, &n.addr);
        }
    }

    async fn handle_join(&self, id: NodeId, member: Member) -> Result<u64, String> {
        let (leader, leader_addr) = {
            let m = self.raft.metrics().borrow().clone();
            let addr =
                m.current_leader.and_then(|l| m.membership_config.membership().get_node(&l).map(|n| n.addr.clone()));
            (m.current_leader, addr)
        };
        if leader == Some(self.id) {
            info!(node = %member.name, addr = %member.addr, "adding a learner");
            // Its silence is counted from now, not from when this leader took office.
            let _ = self.liveness.touch(id);
            return match self.raft.add_learner(id, member, false).await {
                Ok(resp) => Ok(resp.log_id.index),
                Err(e) => Err(format!("cannot add the node: {e}")),
            };
        }
        let Some(addr) = leader_addr else {
            return Err("the cluster has no leader right now; try again".into());
        };
        let target = Target { addr: &addr, id: leader };
        match self.pool.call(target, &PeerRequest::Join { id, member }, std::time::Duration::from_secs(30)).await {
            Ok(PeerResponse::Join(r)) => r,
            Ok(_) => Err("unexpected answer from the leader".into()),
            Err(e) => Err(format!("cannot reach the leader at {addr}: {e}")),
        }
    }
}
