//! The server side of peer traffic: a peer connection's hello (protocol
//! version, cluster name, proof of the secret, the node it is for), then
//! Raft's RPCs, forwarded writes, joins and membership checks, each answered
//! in turn.
//!
//! Not here: the client side (`network`), the wire format (`wire`).

use super::network::Target;
use super::rpc::Refused;
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
        let welcomed = tokio::time::timeout(crate::listen::FIRST_BYTES, self.welcome(&mut stream, None));
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

    /// A peer connection refused for `why` whatever its hello says, told so
    /// in the hello's answer (the dialer logs it, and a joining node stops).
    pub async fn refuse_peer<S: AsyncRead + AsyncWrite + Unpin>(&self, stream: S, why: String) {
        let mut stream = BufStream::new(stream);
        let _ = tokio::time::timeout(crate::listen::FIRST_BYTES, self.welcome(&mut stream, Some(why))).await;
    }

    /// The server's half of the hello (see `wire`): true if the dialer is
    /// welcome. `refuse` refuses it in any case.
    async fn welcome<S>(&self, stream: &mut S, refuse: Option<String>) -> std::io::Result<bool>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let hello: Hello = read_msg(stream, wire::MAX_HELLO).await?;
        let cluster = &self.opts.cluster;
        let refusal = if let Some(why) = refuse {
            Some(why)
        } else if let Some(why) = wire::incompatible(hello.version, hello.oldest) {
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
                self.heard_from(Some(rpc.vote.node));
                let answer = self.raft.append_entries(rpc.into()).await;
                PeerResponse::Append(answer.map(Into::into).map_err(Into::into))
            }
            PeerRequest::Vote(rpc) => {
                self.heard_from(Some(rpc.vote.node));
                let answer = self.raft.vote(rpc.into()).await;
                PeerResponse::Vote(answer.map(Into::into).map_err(Into::into))
            }
            PeerRequest::Snapshot { vote, meta, image, applied } => {
                // Decoding the whole tree is slow: not on a runtime worker.
                let (started, bytes) = (Instant::now(), image.len());
                let decoded = crate::rt::blocking(move || Image::decode(&image)).await;
                debug!(bytes, took = ?started.elapsed(), "decoded a snapshot");
                let refused = |why: String| PeerResponse::Snapshot(Err(Refused::Failed(why)));
                match decoded {
                    Ok(Ok(image)) => {
                        let data = types::SnapshotData { image, applied };
                        let snapshot = types::Snapshot { meta: meta.into(), snapshot: Box::new(data) };
                        let answer = self.raft.install_full_snapshot(vote.into(), snapshot).await;
                        // The bytes, the image and the tree it replaced are freed.
                        crate::memory::release();
                        PeerResponse::Snapshot(answer.map(|r| r.vote.into()).map_err(Into::into))
                    }
                    Ok(Err(e)) => {
                        warn!(error = %e, "rejected a snapshot from the leader");
                        refused(format!("a damaged snapshot: {e}"))
                    }
                    Err(e) => refused(e.to_string()),
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
            PeerRequest::Rev => PeerResponse::Rev(self.node().rev()),
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

#[cfg(test)]
mod tests {
    //! The server's half of the hello against a dialer written by hand: a
    //! real node on a loopback port, spoken to byte by byte.
    use super::wire::{self, Answer, Challenge, Hello};
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpStream;

    const SECRET: &str = "s3cret";

    async fn node() -> crate::Running {
        let mut settings = crate::Settings::local();
        settings.cluster.secret = SECRET.into();
        crate::start(settings).await.unwrap()
    }

    /// Opens a peer connection and sends a hello with `nonce`; returns the challenge.
    async fn hello(addr: &str, version: u16, oldest: u16, nonce: [u8; 32]) -> (TcpStream, Challenge) {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&wire::MAGIC).await.unwrap();
        let hello = Hello { version, oldest, cluster: "local".into(), to: None, nonce };
        wire::write_msg(&mut s, &hello).await.unwrap();
        let challenge: Challenge = wire::read_msg(&mut s, wire::MAX_HELLO).await.unwrap();
        (s, challenge)
    }

    async fn answer(s: &mut TcpStream, proof: [u8; 32]) -> Result<(), String> {
        wire::write_msg(s, &Answer { proof }).await.unwrap();
        wire::read_msg(s, wire::MAX_HELLO).await.unwrap()
    }

    #[tokio::test]
    async fn a_replayed_answer_and_a_wrong_secret_are_refused() {
        let running = node().await;
        let ours = [7u8; 32];
        let (mut s, challenge) = hello(&running.addr, wire::PROTOCOL, wire::OLDEST_PROTOCOL, ours).await;
        let (theirs, their_proof) = challenge.go.unwrap();
        assert_eq!(their_proof, wire::proof(SECRET, "doozer peer server", "local", &ours, &theirs));
        let recorded = wire::proof(SECRET, "doozer peer dialer", "local", &theirs, &ours);
        assert_eq!(answer(&mut s, recorded).await, Ok(()), "the right answer is welcome");

        // The same hello again: the server's nonce is new, so the answer recorded is worthless.
        let (mut s, challenge) = hello(&running.addr, wire::PROTOCOL, wire::OLDEST_PROTOCOL, ours).await;
        assert_ne!(challenge.go.unwrap().0, theirs);
        assert!(answer(&mut s, recorded).await.unwrap_err().contains("wrong cluster secret"));

        let (mut s, challenge) = hello(&running.addr, wire::PROTOCOL, wire::OLDEST_PROTOCOL, ours).await;
        let (theirs, _) = challenge.go.unwrap();
        let wrong = wire::proof("guess", "doozer peer dialer", "local", &theirs, &ours);
        assert!(answer(&mut s, wrong).await.unwrap_err().contains("wrong cluster secret"));
        running.stop().await;
    }

    #[tokio::test]
    async fn a_peer_of_another_protocol_version_is_told_both_ranges() {
        let running = node().await;
        let newer = wire::PROTOCOL + 1;
        let (_s, challenge) = hello(&running.addr, newer + 1, newer, [1u8; 32]).await;
        assert_eq!((challenge.version, challenge.oldest), (wire::PROTOCOL, wire::OLDEST_PROTOCOL));
        let why = challenge.go.unwrap_err();
        assert!(why.contains("peer protocol mismatch") && why.contains(&format!("{}", newer + 1)), "{why}");
        running.stop().await;
    }
}
