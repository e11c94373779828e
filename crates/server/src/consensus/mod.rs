//! Consensus: the one module that knows openraft.
//!
//! Every doozerd runs Raft, a lone one included (it is a one-voter cluster).
//! Committed entries are store commands applied in log order by
//! `storage::StateMachine`, so revisions are identical on every node.
//! Writes made on a follower are forwarded to the leader; reads never come
//! here. Membership follows the `/ctl/cal/*` slots (see `duties`).
//!
//! What the rest of the server sees: [`Consensus::propose`], [`Consensus::serve_peer`],
//! [`Consensus::status`] and the seed/join start-up calls; no openraft type leaks out.

mod duties;
mod network;
mod register;
mod rules;
mod storage;
mod types;
mod wire;

pub use wire::{Committed, MAGIC as PEER_MAGIC};

use crate::node::Node;
use doozer_store::{Command, Image};
use network::{Credentials, Liveness, Network, Pool, Target};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Config, ServerState, SnapshotPolicy};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, BufStream};
use tracing::{debug, info, warn};
use types::{Member, NodeId, Proposal, Raft, WriteId};
use wire::{read_msg, write_msg, ForwardError, Hello, PeerRequest, PeerResponse};

/// Settings for a node's part in the cluster.
#[derive(Clone, Debug)]
pub struct Options {
    /// Cluster name (`-c`); peers must present the same.
    pub cluster: String,
    /// The read-write secret, which peers must present too.
    pub secret: String,
    /// How long a write may take to commit before it is answered with an error.
    pub write_timeout: Duration,
    /// How long a member may be silent before the leader removes it (`-timeout`).
    pub member_timeout: Duration,
    /// Slots the seed creates in `/ctl/cal` (`--cal-slots`).
    pub cal_slots: usize,
}

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

/// This node's view of the cluster, for operators.
#[derive(Clone, Debug)]
pub struct Status {
    pub id: String,
    pub role: &'static str,
    pub leader: Option<String>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
}

/// A node's consensus handle. Cheap to share (`Arc`).
pub struct Consensus {
    raft: Raft,
    id: NodeId,
    me: Member,
    node: Arc<Node>,
    opts: Options,
    pool: Pool,
    liveness: Liveness,
    /// When a leader last replicated to this node.
    heard: parking_lot::Mutex<Instant>,
    /// Writes waiting to be proposed, gathered into batches.
    batcher: tokio::sync::mpsc::UnboundedSender<Pending>,
    /// Cancelled by [`Consensus::shutdown`]: the tasks that hold this handle end.
    stopped: tokio_util::sync::CancellationToken,
    /// The Raft log (shared with openraft), to bound it by bytes.
    log: storage::LogStore,
    /// The last proposal id this node gave out.
    seq: std::sync::atomic::AtomicU64,
}

/// A write waiting for its batch, and where its result goes.
type Pending = (Command, Done);

/// What to do with a write's result: called once, by the batch that carried it.
pub type Done = Box<dyn FnOnce(Result<Committed, ProposeError>) + Send>;

/// Most writes in one batch (one Raft entry).
const MAX_BATCH: usize = 256;
/// Most bytes in one batch: a batch of large values stops here (one write
/// alone may be larger, up to the value limit), so that an entry fits in an
/// AppendEntries message ([`network::MAX_APPEND_BYTES`]).
const MAX_BATCH_BYTES: usize = 2 << 20;
/// Most bytes the Raft log holds before a snapshot is taken and the log
/// behind it purged (to half this); a follower that needs what was purged
/// catches up by the snapshot.
pub const MAX_LOG_BYTES: usize = 64 << 20;

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

fn shutting_down() -> ProposeError {
    ProposeError::NotDone("this node is shutting down".into())
}

/// The Raft node id of a Doozer id: its first 64 bits (the id is 80 random
/// bits in base32, so the first 13 characters carry them).
pub fn raft_id(name: &str) -> NodeId {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let bits = name.bytes().take(13).fold(0u128, |acc, c| {
        let v = ALPHABET.iter().position(|&a| a == c).unwrap_or(0) as u128;
        (acc << 5) | v
    });
    // 13 characters are 65 bits; drop the last one.
    (bits >> 1) as NodeId
}

fn raft_config(opts: &Options) -> Result<Config, String> {
    let config = Config {
        cluster_name: opts.cluster.clone(),
        heartbeat_interval: 100,
        election_timeout_min: 500,
        election_timeout_max: 1000,
        install_snapshot_timeout: 10_000,
        // An entry may be a batch of up to MAX_BATCH writes.
        max_payload_entries: 16,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(500),
        max_in_snapshot_log_to_keep: 250,
        ..Config::default()
    };
    config.validate().map_err(|e| e.to_string())
}

impl Consensus {
    /// Starts this node's Raft; it takes part once seeded or joined. `addr` is
    /// the address members and clients are told; `bind_ip` is where outgoing
    /// peer connections come from.
    pub async fn start(
        node: Arc<Node>,
        addr: String,
        bind_ip: Option<std::net::IpAddr>,
        opts: Options,
    ) -> Result<Arc<Consensus>, String> {
        let id = raft_id(node.id());
        let me = Member { addr, name: node.id().to_string() };
        let creds = Credentials { cluster: opts.cluster.clone(), secret: opts.secret.clone(), bind_ip };
        let pool = Pool::new(creds);
        let liveness = Liveness::default();
        let network = Network { pool: pool.clone(), liveness: liveness.clone() };
        let config = Arc::new(raft_config(&opts)?);
        let sm = storage::StateMachine::new(node.clone());
        let log = storage::LogStore::new(MAX_LOG_BYTES);
        let raft = Raft::new(id, config, network, log.clone(), sm).await.map_err(|e| e.to_string())?;
        let heard = parking_lot::Mutex::new(Instant::now());
        let (batcher, pending) = tokio::sync::mpsc::unbounded_channel();
        let stopped = tokio_util::sync::CancellationToken::new();
        let consensus = Arc::new(Consensus {
            raft,
            id,
            me,
            node,
            opts,
            pool,
            liveness,
            heard,
            batcher,
            stopped,
            log,
            seq: Default::default(),
        });
        tokio::spawn(consensus.clone().batch_loop(pending));
        tokio::spawn(consensus.clone().log_bound_loop());
        duties::spawn(consensus.clone());
        Ok(consensus)
    }

    /// Makes this node a new cluster's first voter and writes its `/ctl` files;
    /// with `restore`, the cluster's first entry loads that store image.
    pub async fn seed(&self, restore: Option<bytes::Bytes>) -> Result<(), String> {
        let members = BTreeMap::from([(self.id, self.me.clone())]);
        self.raft.initialize(members).await.map_err(|e| format!("cannot start the cluster: {e}"))?;
        self.raft
            .wait(Some(Duration::from_secs(30)))
            .metrics(|m| m.current_leader == Some(self.id), "the seed leads")
            .await
            .map_err(|e| format!("the seed did not become leader: {e}"))?;
        if let Some(image) = restore {
            match self.propose(Command::Load { image }).await {
                Ok(Committed::Unchanged) => {}
                other => return Err(format!("cannot load the restored store: {other:?}")),
            }
            self.forget_restored_members().await?;
        }
        self.register_seed().await
    }

    /// Joins the cluster at one of `addrs` as a learner, waits until this node
    /// has caught up, then registers it in `/ctl/node`.
    pub async fn join(&self, addrs: &[String]) -> Result<(), String> {
        let req = PeerRequest::Join { id: self.id, member: self.me.clone() };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut last = String::from("no address to attach to");
        let index = 'found: loop {
            for addr in addrs {
                match self.pool.call(Target { addr, id: None }, &req, Duration::from_secs(30)).await {
                    Ok(PeerResponse::Join(Ok(index))) => break 'found index,
                    Ok(PeerResponse::Join(Err(e))) => last = format!("{addr}: {e}"),
                    Ok(_) => last = format!("{addr}: unexpected answer"),
                    Err(e) if e.error.kind() == std::io::ErrorKind::PermissionDenied => {
                        return Err(format!("{addr} refused this node: {}", e.error));
                    }
                    Err(e) => last = format!("{addr}: {e}"),
                }
            }
            if Instant::now() > deadline {
                return Err(format!("failed to attach: {last}"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        self.raft
            .wait(Some(Duration::from_secs(300)))
            .metrics(|m| m.last_applied.is_some_and(|l| l.index >= index), "caught up")
            .await
            .map_err(|e| format!("joined but did not catch up: {e}"))?;
        self.register_node().await
    }

    /// When a leader last replicated to this node.
    fn heard_from_leader(&self) -> Instant {
        *self.heard.lock()
    }

    /// The node whose store this consensus drives.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// This node's Doozer id.
    pub fn name(&self) -> &str {
        &self.me.name
    }

    pub fn addr(&self) -> &str {
        &self.me.addr
    }

    /// The cluster's name (`-c`).
    pub fn cluster(&self) -> &str {
        &self.opts.cluster
    }

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
    async fn batch_loop(self: Arc<Self>, mut pending: tokio::sync::mpsc::UnboundedReceiver<Pending>) {
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

    /// Bounds the log as soon as an append takes it past [`MAX_LOG_BYTES`].
    async fn log_bound_loop(self: Arc<Self>) {
        let over = self.log.over_limit();
        loop {
            tokio::select! {
                _ = self.stopped.cancelled() => return,
                _ = over.notified() => {}
            }
            let m = self.raft.metrics().borrow().clone();
            self.bound_log(&m).await;
            // A snapshot or purge takes a moment to land: do not ask again at once.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Keeps the Raft log within [`MAX_LOG_BYTES`]: past it, purges what the
    /// latest snapshot covers down to half, or asks for a snapshot first.
    pub(crate) async fn bound_log(&self, m: &types::Metrics) {
        if self.log.bytes() <= MAX_LOG_BYTES {
            return;
        }
        let snapshot = m.snapshot.map(|l| l.index);
        let applied = m.last_applied.map(|l| l.index);
        match snapshot.and_then(|s| self.log.purge_point(s, MAX_LOG_BYTES / 2)) {
            Some(upto) => {
                debug!(upto, bytes = self.log.bytes(), "purging the Raft log");
                let _ = self.raft.trigger().purge_log(upto).await;
            }
            None if applied > snapshot => {
                debug!(bytes = self.log.bytes(), "taking a snapshot to purge the Raft log");
                let _ = self.raft.trigger().snapshot().await;
            }
            None => {}
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
        let write = self.raft.client_write(Proposal { id: None, cmd });
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
        let proposal = Proposal { id: Some(id), cmd };
        loop {
            // A member that knows another node leads forwards at once, rather
            // than asking its own Raft to be told so.
            let (leader_id, leader) = match self.known_leader() {
                Some(known) => known,
                None => match self.raft.client_write(proposal.clone()).await {
                    Ok(resp) => return Ok((resp.data, Route::Here)),
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
                Ok(PeerResponse::Propose(Ok(c))) => return Ok((c, Route::Forwarded)),
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
    fn known_leader(&self) -> Option<(Option<NodeId>, Option<Member>)> {
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

    /// Waits (briefly) for this node's view of the leader to change.
    async fn await_leader_change(&self) {
        let mut rx = self.raft.metrics();
        let leader = rx.borrow().current_leader;
        let changed = rx.wait_for(|m| m.current_leader != leader && m.current_leader.is_some());
        let _ = tokio::time::timeout(Duration::from_millis(200), changed).await;
    }

    /// Serves a peer connection whose magic bytes have been read.
    pub async fn serve_peer<S: AsyncRead + AsyncWrite + Unpin>(self: Arc<Self>, stream: S) {
        let mut stream = BufStream::new(stream);
        let hello =
            tokio::time::timeout(crate::listen::FIRST_BYTES, read_msg::<_, Hello>(&mut stream, wire::MAX_HELLO));
        let Ok(Ok(hello)) = hello.await else { return };
        let verdict = if hello.cluster != self.opts.cluster {
            Err(format!(
                "cluster name mismatch: this cluster is {:?}, the peer is in {:?}",
                self.opts.cluster, hello.cluster
            ))
        } else if !crate::access::same_secret(hello.secret.as_bytes(), &self.opts.secret) {
            Err("wrong cluster secret (DOOZER_RWSECRET)".to_string())
        } else if hello.to.is_some_and(|to| to != self.id) {
            Err(format!("{} {}, not the node asked for", wire::REPLACED, self.me.name))
        } else {
            Ok(())
        };
        let refused = verdict.is_err();
        if write_msg(&mut stream, &verdict).await.is_err() || refused {
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
                let decoded = tokio::task::spawn_blocking(move || Image::decode(&image)).await;
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
            self.liveness.touch(id);
            return match self.raft.add_learner(id, member, false).await {
                Ok(resp) => Ok(resp.log_id.index),
                Err(e) => Err(format!("cannot add the node: {e}")),
            };
        }
        let Some(addr) = leader_addr else {
            return Err("the cluster has no leader right now; try again".into());
        };
        let target = Target { addr: &addr, id: leader };
        match self.pool.call(target, &PeerRequest::Join { id, member }, Duration::from_secs(30)).await {
            Ok(PeerResponse::Join(r)) => r,
            Ok(_) => Err("unexpected answer from the leader".into()),
            Err(e) => Err(format!("cannot reach the leader at {addr}: {e}")),
        }
    }

    /// This node's view of the cluster.
    pub fn status(&self) -> Status {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let name = |id: &NodeId| membership.get_node(id).map_or_else(|| format!("#{id}"), |n| n.name.clone());
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        Status {
            id: self.me.name.clone(),
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Candidate => "candidate",
                ServerState::Follower if voters.contains(&self.id) => "voter",
                ServerState::Shutdown => "shutdown",
                _ => "non-voter",
            },
            leader: m.current_leader.map(|l| name(&l)),
            term: m.current_term,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            voters: voters.iter().map(name).collect(),
            learners: membership.learner_ids().map(|id| name(&id)).collect(),
        }
    }

    /// `Ok` when this node has caught up and is part of a working quorum: a
    /// leader that a majority acknowledged within the last second, or a member
    /// that heard from its leader within two. `Err` says why not.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.node.is_ready() {
            return Err("catching up with the cluster".into());
        }
        if self.node.is_removed() {
            return Err("removed from the cluster".into());
        }
        let m = self.raft.metrics().borrow().clone();
        match m.state {
            ServerState::Leader => match m.millis_since_quorum_ack {
                Some(ms) if ms < 1000 => Ok(()),
                Some(ms) => Err(format!("leader without a quorum: last acknowledged {ms} ms ago")),
                None => Err("leader without a quorum yet".into()),
            },
            ServerState::Follower | ServerState::Learner => {
                let silent = self.heard_from_leader().elapsed();
                if m.current_leader.is_some() && silent < Duration::from_secs(2) {
                    Ok(())
                } else {
                    Err(format!("no word from a leader for {} ms", silent.as_millis()))
                }
            }
            ServerState::Candidate => Err("no leader: an election is under way".into()),
            ServerState::Shutdown => Err("consensus has stopped".into()),
        }
    }

    /// Stops this node's Raft. Writes still queued are answered with an error.
    pub async fn shutdown(&self) {
        self.stopped.cancel();
        let _ = self.raft.shutdown().await;
    }

    /// Completes once this node's consensus has stopped.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await
    }

    /// The addresses of the other members, as this node last knew them.
    pub fn peer_addrs(&self) -> Vec<String> {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        membership.nodes().filter(|(id, _)| **id != self.id).map(|(_, n)| n.addr.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::ProposeError;

    #[test]
    fn a_failed_write_says_whether_it_may_still_happen() {
        assert_eq!(ProposeError::NotDone("shutting down".into()).detail(), "shutting down; nothing was written");
        assert_eq!(ProposeError::Unknown("leader lost".into()).detail(), "leader lost; it may still be applied later");
        // The timeout's words, unchanged for old clients.
        let timeout = "no quorum: the write was not committed within 10s; it may still be applied later";
        assert_eq!(ProposeError::Unknown(timeout.into()).detail(), timeout);
    }
}
