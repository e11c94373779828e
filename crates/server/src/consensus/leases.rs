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

    /// The lessor's answer, if this node leads and a majority of the voters
    /// still follow it (`confirm`: one round for all questions waiting). A
    /// leader cut off from them may not know it was deposed: its answer would
    /// keep alive a lease the new leader is about to end (the simulator's
    /// lease keepers found keep-alives so answered after the lease was
    /// revoked, seed 300117). The confirmation also applies all this node
    /// committed, so a lease granted through another node is found.
    pub(super) async fn answer_lessor(&self, ask: LeaseAsk) -> Result<LeaseTime, LeaseRefusal> {
        if !self.leads(&self.metrics()) {
            return Err(LeaseRefusal::NotLeader);
        }
        let (raft, limit) = (self.raft.clone(), self.opts.write_timeout);
        let round = move || {
            let raft = raft.clone();
            async move { matches!(tokio::time::timeout(limit, raft.ensure_linearizable()).await, Ok(Ok(_))) }
        };
        if self.confirmations.confirm(round).await {
            self.lessor_now(ask)
        } else {
            Err(LeaseRefusal::NotLeader)
        }
    }

    fn lessor_now(&self, ask: LeaseAsk) -> Result<LeaseTime, LeaseRefusal> {
        let m = self.metrics();
        if !self.leads(&m) {
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
    /// this every tick while this node leads). Each revoke holds only in the
    /// term whose deadlines decided it: this node may lose office and win it
    /// again while the revoke waits, and the later term's leader (itself,
    /// even) kept the lease alive (the simulator found a revoke decided in
    /// term 1 committed in term 4 so, seed 302097).
    pub(super) async fn expire_leases(&self) {
        let m = self.metrics();
        if !self.leads(&m) {
            return;
        }
        let term = m.current_term;
        let due = {
            let mut lessor = self.lessor.lock();
            lessor.for_term(term);
            lessor.sync(self.node.leases(), Instant::now());
            lessor.expire(Instant::now())
        };
        for id in due {
            info!(lease = %format!("{id:x}"), "a lease expired; revoking it");
            match self.propose_in_term(Command::Revoke { id }, Some(term)).await {
                Ok(Committed::Failed(e)) => debug!(lease = id, error = ?e, "the revoke was refused"),
                Ok(Committed::OutOfTerm) => debug!(lease = id, "the revoke was committed in a later term: not applied"),
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
