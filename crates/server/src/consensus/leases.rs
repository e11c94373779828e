//! Leases as the cluster serves them: keep-alives and TTLs, asked from any
//! node of the leader's lessor, and the leader's expiring of leases past
//! their deadline.
//!
//! Grants, revokes and leased SETs are ordinary writes (`write`): committed,
//! replicated, applied by every node's store. Deadlines are not: only the
//! leader keeps them ([`Lessor`]), a keep-alive is a question to it (a
//! follower forwards it, [`PeerRequest::Lease`]), and the leader revokes a
//! lease past its deadline by proposing the revoke as leader, so that no
//! deposed leader gets one carried out. A new term starts every deadline
//! afresh (a full TTL), so no leader change expires a lease early.
//!
//! Not here: the lease table (`doozer_store::Leases`), the deadline rules
//! (`lessor`), the verbs (`session`).

use super::network::Target;
use super::wire::{Committed, LeaseAsk, LeaseRefusal, LeaseTime, PeerRequest, PeerResponse};
use super::Consensus;
use doozer_store::{Command, LeaseId};
use openraft::ServerState;
use tokio::time::Instant;
use tracing::{debug, info};

impl Consensus {
    /// A keep-alive for lease `id`, from any node: the leader moves its
    /// deadline to a TTL from now.
    pub async fn keep_alive(&self, id: LeaseId) -> Result<LeaseTime, LeaseRefusal> {
        self.ask_lessor(LeaseAsk::KeepAlive(id)).await
    }

    /// How long lease `id` has left, as the leader sees it.
    pub async fn lease_time(&self, id: LeaseId) -> Result<LeaseTime, LeaseRefusal> {
        self.ask_lessor(LeaseAsk::Time(id)).await
    }

    /// Asks the leader's lessor (this node's, if it leads), within the
    /// write timeout, following leader changes.
    async fn ask_lessor(&self, ask: LeaseAsk) -> Result<LeaseTime, LeaseRefusal> {
        let deadline = Instant::now() + self.opts.write_timeout;
        loop {
            if self.stopped.is_cancelled() {
                return Err(LeaseRefusal::NoLeader("this node stopped (it is rejoining its cluster)".into()));
            }
            let refused = match self.known_leader() {
                None => match self.answer_lessor(ask).await {
                    Err(LeaseRefusal::NotLeader) => LeaseRefusal::NoLeader("no leader is known".into()),
                    answer => return answer,
                },
                Some((id, Some(leader))) => {
                    let target = Target { addr: &leader.addr, id };
                    match self.pool.call(target, &PeerRequest::Lease(ask), self.opts.write_timeout).await {
                        Ok(PeerResponse::Lease(Err(LeaseRefusal::NotLeader))) => {
                            LeaseRefusal::NoLeader(format!("{} no longer leads", leader.addr))
                        }
                        Ok(PeerResponse::Lease(answer)) => return answer,
                        Ok(_) => LeaseRefusal::NoLeader("unexpected answer from the leader".into()),
                        Err(e) => LeaseRefusal::NoLeader(format!("cannot reach the leader at {}: {e}", leader.addr)),
                    }
                }
                Some((_, None)) => LeaseRefusal::NoLeader("the leader is not a member".into()),
            };
            if Instant::now() >= deadline {
                return Err(refused);
            }
            self.await_leader_change().await;
        }
    }

    /// The lessor's answer, if this node leads. A lease granted through
    /// another node may be committed and not yet applied here: a lease not
    /// found is looked for again once this node has applied all it committed.
    pub(super) async fn answer_lessor(&self, ask: LeaseAsk) -> Result<LeaseTime, LeaseRefusal> {
        match self.lessor_now(ask) {
            Err(LeaseRefusal::NotFound) => {
                if self.raft.ensure_linearizable().await.is_err() {
                    return Err(LeaseRefusal::NotLeader);
                }
                self.lessor_now(ask)
            }
            answer => answer,
        }
    }

    fn lessor_now(&self, ask: LeaseAsk) -> Result<LeaseTime, LeaseRefusal> {
        let m = self.raft.metrics().borrow().clone();
        if m.state != ServerState::Leader || m.current_leader != Some(self.id) {
            return Err(LeaseRefusal::NotLeader);
        }
        let id = match ask {
            LeaseAsk::KeepAlive(id) | LeaseAsk::Time(id) => id,
        };
        let lease = self.node.lease(id).ok_or(LeaseRefusal::NotFound)?;
        let now = Instant::now();
        let mut lessor = self.lessor.lock();
        lessor.for_term(m.current_term);
        lessor.know(id, lease.ttl, now);
        let time = match ask {
            LeaseAsk::KeepAlive(_) => lessor.keep_alive(id, now).map(|ttl| (ttl, ttl)),
            LeaseAsk::Time(_) => lessor.time(id, now),
        };
        time.map(|(remaining, _)| LeaseTime { remaining, granted: lease.ttl }).ok_or(LeaseRefusal::NotFound)
    }

    /// Revokes the leases past their deadline, as leader (the duties call
    /// this every tick while this node leads).
    pub(super) async fn expire_leases(&self, term: u64) {
        let due = {
            let mut lessor = self.lessor.lock();
            lessor.for_term(term);
            lessor.sync(self.node.leases(), Instant::now());
            lessor.expire(Instant::now())
        };
        for id in due {
            info!(lease = %format!("{id:x}"), "a lease expired; revoking it");
            match self.propose_as_leader(Command::Revoke { id }).await {
                Ok(Committed::Failed(e)) => debug!(lease = id, error = ?e, "the revoke was refused"),
                Ok(_) => self.node.metrics().lease_expired(),
                Err(e) => {
                    debug!(lease = id, error = ?e, "the revoke did not commit; it is tried again");
                    self.lessor.lock().retry(id);
                }
            }
        }
    }

    /// This node stopped leading: its deadlines are no one's.
    pub(super) fn forget_deadlines(&self) {
        self.lessor.lock().clear();
    }
}
