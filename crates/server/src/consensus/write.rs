//! Writes: gathering them into batches (one Raft entry each), proposing a
//! batch through whoever leads (forwarding it, resending it under its id
//! after a leader change), and telling each writer how it went: done,
//! refused before it was proposed, or not known (it may still be applied).
//!
//! Not here: what an entry does when applied (`storage`), who leads (openraft).

use super::network::{self, Target};
use super::types::{Member, NodeId, Proposal, WriteId};
use super::wire::{Committed, ForwardError, PeerRequest, PeerResponse};
use super::Consensus;
use doozer_store::Command;
use openraft::error::{ClientWriteError, RaftError};
use std::sync::Arc;
use std::time::Duration;
use tracing::debug;

/// Why a write was not carried out, or is not known to have been.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not a member of a cluster (yet): nothing was proposed.
    ReadOnly,
    /// Definitely not carried out: refused before it was proposed.
    NotDone(String),
    /// Proposed, but not known to be committed: it may still be applied.
    Unknown(String),
}

impl ProposeError {
    /// The words for a client; an unknown outcome says so, as it always did.
    pub fn detail(&self) -> String {
        match self {
            ProposeError::ReadOnly => "this node is not a member of a cluster".into(),
            ProposeError::NotDone(why) => format!("{why}; nothing was written"),
            ProposeError::Unknown(why) if why.contains("may still be applied") => why.clone(),
            ProposeError::Unknown(why) => format!("{why}; it may still be applied later"),
        }
    }
}

/// A write waiting for its batch, and where its result goes.
pub(super) type Pending = (Command, Done);

/// What to do with a write's result: called once, by the batch that carried it.
pub type Done = Box<dyn FnOnce(Result<Committed, ProposeError>) + Send>;

/// Most writes in one batch (one Raft entry).
const MAX_BATCH: usize = 256;

/// Most bytes in one batch: a batch of large values stops here (one write
/// alone may be larger, up to the value limit), so that an entry fits in an
/// AppendEntries message ([`network::MAX_APPEND_BYTES`]).
const MAX_BATCH_BYTES: usize = 2 << 20;

/// `first` and whatever else is queued, up to [`MAX_BATCH`] writes and
/// [`MAX_BATCH_BYTES`]; the write that would go past the bytes is handed back
/// for the next batch.
fn gather(
    first: Pending,
    pending: &mut tokio::sync::mpsc::UnboundedReceiver<Pending>,
) -> (Vec<Pending>, Option<Pending>) {
    let mut bytes = first.0.bytes();
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        let Ok(p) = pending.try_recv() else { break };
        bytes += p.0.bytes();
        if bytes > MAX_BATCH_BYTES {
            return (batch, Some(p));
        }
        batch.push(p);
    }
    (batch, None)
}

/// Where a write was committed from.
enum Route {
    /// By this node's Raft, as leader: applied here before it is answered.
    Here,
    /// Through the leader: this node applies it a little later.
    Forwarded,
}

/// Who hears of a batch's result.
enum Answers {
    One(Done),
    Batch(Vec<Done>),
}

impl Answers {
    fn deliver(self, result: Result<Committed, ProposeError>) {
        let dones = match self {
            Answers::One(done) => return done(result),
            Answers::Batch(dones) => dones,
        };
        match result {
            Ok(Committed::Batch(outs)) if outs.len() == dones.len() => {
                for (done, out) in dones.into_iter().zip(outs) {
                    done(Ok(out));
                }
            }
            other => {
                let err = match other {
                    Err(e) => e,
                    Ok(o) => ProposeError::Unknown(format!("unexpected outcome of a batch: {o:?}")),
                };
                for done in dones {
                    done(Err(err.clone()));
                }
            }
        }
    }
}

/// A committed proposal's outcome; one the state machine refused (its
/// origin, this node, was no longer a member) was not carried out.
fn applied(c: Committed, route: Route) -> Result<(Committed, Route), ProposeError> {
    match c {
        Committed::NotMember => Err(ProposeError::NotDone("this node is no longer a member of the cluster".into())),
        c => Ok((c, route)),
    }
}

fn shutting_down() -> ProposeError {
    ProposeError::NotDone("this node is shutting down".into())
}
impl Consensus {
    /// Commits `cmd` through the leader and returns its outcome here. Writes
    /// that arrive while others are being committed share the next entry.
    pub async fn propose(&self, cmd: Command) -> Result<Committed, ProposeError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            cmd,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        // Dropped unanswered: the node stopped, maybe with the write proposed.
        rx.await.unwrap_or_else(|_| Err(ProposeError::Unknown("this node stopped with the write in flight".into())))
    }

    /// Queues `cmd` for the next batch; `done` gets its result. No task or
    /// channel per write: the client connection's answer is sent from `done`.
    pub fn submit(&self, cmd: Command, done: Done) {
        if let Err(e) = self.batcher.send((cmd, done)) {
            let (_, done) = e.0;
            done(Err(shutting_down()));
        }
    }

    /// Takes writes as they come and proposes them in batches, one at a time:
    /// whatever queued while a batch was being committed goes in the next.
    /// One batch in flight makes the largest batches, and on three nodes the
    /// per-entry messages, not the Raft pipeline, are what costs: 1 batch in
    /// flight gave 55k writes/s, 2 gave 54k, 4 gave 53k, 16 gave 42k
    /// (docs/performance.md); one node does the same with 1 to 4.
    pub(super) async fn batch_loop(self: Arc<Self>, mut pending: tokio::sync::mpsc::UnboundedReceiver<Pending>) {
        let mut carry: Option<Pending> = None;
        loop {
            let first = match carry.take() {
                Some(p) => p,
                None => tokio::select! {
                    _ = self.stopped.cancelled() => return,
                    p = pending.recv() => match p {
                        Some(p) => p,
                        None => return,
                    },
                },
            };
            let (batch, next) = gather(first, &mut pending);
            self.commit_batch(batch).await;
            carry = next;
        }
    }

    /// Commits one batch. A batch forwarded to the leader is answered once
    /// this node has applied it too (read-your-writes on the node written
    /// through), but the next batch need not wait for that: the answers wait
    /// in a task of their own.
    async fn commit_batch(self: &Arc<Self>, mut batch: Vec<Pending>) {
        let (cmd, dones) = if batch.len() == 1 {
            let Some((cmd, done)) = batch.pop() else { return };
            (cmd, Answers::One(done))
        } else {
            let (cmds, dones): (Vec<Command>, Vec<Done>) = batch.into_iter().unzip();
            (Command::Batch(cmds.into()), Answers::Batch(dones))
        };
        match self.propose_one(cmd).await {
            Ok((committed, Route::Forwarded)) => {
                let me = self.clone();
                tokio::spawn(async move {
                    me.await_applied(&committed).await;
                    dones.deliver(Ok(committed));
                });
            }
            other => dones.deliver(other.map(|(committed, _)| committed)),
        }
    }

    /// One command (maybe a batch) through the leader, within the write timeout.
    async fn propose_one(&self, cmd: Command) -> Result<(Committed, Route), ProposeError> {
        let timeout = self.opts.write_timeout;
        match tokio::time::timeout(timeout, self.propose_until_done(cmd)).await {
            Ok(r) => r,
            Err(_) => Err(ProposeError::Unknown(format!(
                "no quorum: the write was not committed within {timeout:?}; it may still be applied later"
            ))),
        }
    }

    /// Commits `cmd` only if this node is the leader, never forwarding it: for
    /// decisions a leader makes from what it alone sees (who is silent), which a
    /// deposed leader must not get another node to carry out.
    pub(crate) async fn propose_as_leader(&self, cmd: Command) -> Result<Committed, ProposeError> {
        self.propose_in_term(cmd, None).await
    }

    /// [`Consensus::propose_as_leader`], and with `term` applied only if
    /// committed in an entry of that term (else [`Committed::OutOfTerm`]).
    pub(crate) async fn propose_in_term(&self, cmd: Command, term: Option<u64>) -> Result<Committed, ProposeError> {
        let write = self.raft.client_write(Proposal { id: None, cmd, term });
        match tokio::time::timeout(self.opts.write_timeout, write).await {
            Ok(Ok(resp)) => Ok(resp.data),
            // Not the leader (any more): refused before it was proposed.
            Ok(Err(RaftError::APIError(e))) => Err(ProposeError::NotDone(e.to_string())),
            Ok(Err(e)) => Err(ProposeError::Unknown(e.to_string())),
            Err(_) => Err(ProposeError::Unknown("not committed in time".into())),
        }
    }

    /// Commits `cmd` through whoever leads, under one id: a proposal whose
    /// leader went away before answering (lost connection, leader change,
    /// leader stopping) is sent again, to the new leader, and the state
    /// machine applies it once. Only the caller's timeout leaves it unknown.
    async fn propose_until_done(&self, cmd: Command) -> Result<(Committed, Route), ProposeError> {
        let id = WriteId { origin: self.id, seq: self.seq.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1 };
        let proposal = Proposal { id: Some(id), cmd, term: None };
        loop {
            // A stopped node (removed, rejoining under a new id) sends nothing more.
            if self.stopped.is_cancelled() {
                return Err(ProposeError::Unknown("this node stopped with the write in flight".into()));
            }
            // A member that knows another node leads forwards at once, rather
            // than asking its own Raft to be told so.
            let (leader_id, leader) = match self.known_leader() {
                Some(known) => known,
                None => match self.raft.client_write(proposal.clone()).await {
                    Ok(resp) => return applied(resp.data, Route::Here),
                    Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => (f.leader_id, f.leader_node),
                    Err(RaftError::APIError(e)) => return Err(ProposeError::NotDone(e.to_string())),
                    // This node's Raft stopped, perhaps with the proposal in its log.
                    Err(RaftError::Fatal(e)) => return Err(ProposeError::Unknown(e.to_string())),
                },
            };
            let Some(leader) = leader else {
                if self.membership_is_empty() {
                    return Err(ProposeError::ReadOnly);
                }
                self.await_leader_change().await;
                continue;
            };
            let req = PeerRequest::Propose(proposal.clone());
            let target = Target { addr: &leader.addr, id: leader_id };
            match self.pool.call(target, &req, self.opts.write_timeout).await {
                Ok(PeerResponse::Propose(Ok(c))) => return applied(c, Route::Forwarded),
                Ok(PeerResponse::Propose(Err(ForwardError::NotLeader)))
                | Err(network::CallError { sent: false, .. }) => self.await_leader_change().await,
                // The leader failed (stopped, lost its office) or the connection
                // broke with the proposal sent: it may be committed or not;
                // sent again under its id, it is applied at most once.
                Ok(PeerResponse::Propose(Err(ForwardError::Failed(e)))) => {
                    debug!(error = %e, "the leader failed a forwarded write; sending it again");
                    self.await_leader_change().await
                }
                Err(e) => {
                    debug!(error = %e, "lost the leader with a forwarded write; sending it again");
                    self.await_leader_change().await
                }
                Ok(_) => return Err(ProposeError::Unknown("unexpected answer from the leader".into())),
            }
        }
    }

    /// The leader, when it is another node that this one knows of.
    pub(super) fn known_leader(&self) -> Option<(Option<NodeId>, Option<Member>)> {
        let m = self.raft.metrics();
        let m = m.borrow();
        let leader = m.current_leader.filter(|l| *l != self.id)?;
        let member = m.membership_config.membership().get_node(&leader)?.clone();
        Some((Some(leader), Some(member)))
    }

    /// Waits (up to the write timeout) until this node has applied what the
    /// leader committed for us, so a client reads its own write on the node
    /// it wrote through. The write is committed either way.
    async fn await_applied(&self, c: &Committed) {
        if let Some(rev) = c.last_rev() {
            let applied = tokio::time::timeout(self.opts.write_timeout, self.node.wait_for_rev(rev)).await;
            if applied.is_err() {
                debug!(rev, "a forwarded write committed but is not applied here yet");
            }
        }
    }

    fn membership_is_empty(&self) -> bool {
        self.raft.metrics().borrow().membership_config.nodes().next().is_none()
    }

    /// Waits (briefly) for this node's view of the leader to change. Once
    /// this node's Raft has stopped its metrics never change again (the
    /// watch is closed and answers at once): the wait is then the whole
    /// 200 ms, so a caller's retry loop does not spin (the simulator found a
    /// keep-alive spinning on a node that was rejoining, seed 1125).
    pub(super) async fn await_leader_change(&self) {
        const WAIT: Duration = Duration::from_millis(200);
        let mut rx = self.raft.metrics();
        let leader = rx.borrow().current_leader;
        let changed = rx.wait_for(|m| m.current_leader != leader && m.current_leader.is_some());
        let closed = matches!(tokio::time::timeout(WAIT, changed).await, Ok(Err(_)));
        if closed {
            tokio::time::sleep(WAIT).await;
        }
    }
}
