//! Consensus: the one module that knows openraft.
//!
//! Every doozerd runs Raft, a lone one included (it is a one-voter cluster).
//! Committed entries are store commands applied in log order by
//! `storage::StateMachine`, so revisions are identical on every node.
//! Writes made on a follower are forwarded to the leader; reads never come
//! here. Membership follows the `/ctl/cal/*` slots (see `duties`).
//!
//! What the rest of the server sees: [`Consensus::propose`], [`Consensus::serve_peer`],
//! [`Consensus::status`], the seed/join/resume start-up calls, and an opaque
//! [`DataDir`]; no openraft type or file format leaks out.
//!
//! Files, by job: this one (starting, seeding, joining, the node's view of
//! the cluster); `write` (batching, proposing, forwarding, what a failed
//! write means); `peer` (serving peer connections); `network` (calling
//! peers, and who answered); `storage` (the Raft log and the state machine);
//! `duties` (what a member does every tick) with `rules` (the membership
//! decisions, pure); `leases` with `lessor` (deadlines) and `confirm`
//! (batched confirmation that this node still leads); `register` (writing this node's `/ctl` files); `wire`
//! and `types` (the peer messages and openraft's types); for `--data-dir`,
//! `datadir` (the directory: lock, meta, snapshot file), `durable` (the log's
//! records and their writer thread) and `wal` (segments and frames);
//! `recover` (forcing a new cluster when a majority is lost).

mod confirm;
mod datadir;
mod durable;
mod duties;
mod leases;
mod lessor;
mod network;
mod peer;
mod recover;
mod register;
mod rpc;
mod rules;
mod storage;
mod types;
mod wal;
mod wire;
mod write;

pub use datadir::{DataDir, Saved};
pub use wire::{Committed, LeaseRefusal, LeaseTime, MAGIC as PEER_MAGIC, MAGIC_V0 as PEER_MAGIC_V0};
pub use write::{Done, ProposeError};

use crate::node::Node;
use doozer_store::Command;
use network::{Credentials, Liveness, Network, Pool, Target};
use openraft::{Config, ServerState, SnapshotPolicy};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info};
use types::{Member, NodeId, Raft};
use wire::{PeerRequest, PeerResponse};
use write::Pending;

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
    /// TLS, if configured: peer connections use it when `--peer-cert` is set.
    pub tls: Option<Arc<crate::tls::Tls>>,
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
    /// The leader (term, node) that wrote the entry at `applied_index`.
    pub applied_by: Option<(u64, NodeId)>,
    pub voters: Vec<String>,
    pub learners: Vec<String>,
    /// The voters are changing (Raft's joint consensus): until the change
    /// commits, a majority of the old voters and of the new are needed.
    pub changing: bool,
    /// Group commits (one fsync each) of a durable node's log.
    pub log_syncs: Option<u64>,
    /// What the Raft log's entries hold, about (bounded by [`MAX_LOG_BYTES`]).
    pub log_bytes: usize,
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
    /// Lease deadlines, kept while this node leads (see `leases`).
    lessor: parking_lot::Mutex<lessor::Lessor>,
    /// Questions waiting for a majority to confirm this node leads.
    confirmations: Arc<confirm::Confirmations>,
    /// The latest snapshot (shared with the state machine), for `recover`.
    snapshots: storage::CurrentSnapshot,
    /// A forced new cluster's image, once taken (see `recover`).
    recovered: parking_lot::Mutex<Option<bytes::Bytes>>,
    recovery: tokio::sync::Notify,
    /// A peer of protocol 0 has been refused and logged (once, for quiet logs).
    old_peer_warned: std::sync::atomic::AtomicBool,
}

/// Most bytes the Raft log holds before a snapshot is taken and the log
/// behind it purged (to half this); a follower that needs what was purged
/// catches up by the snapshot.
pub const MAX_LOG_BYTES: usize = 64 << 20;

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

fn raft_config(opts: &Options, durable: bool) -> Result<Config, String> {
    let config = Config {
        cluster_name: opts.cluster.clone(),
        // openraft 0.9 gives every AppendEntries one heartbeat interval to
        // come back (its own timeout around the call), so this is also the
        // longest round trip, transfer of a full append included, that
        // replication survives: at 100 ms a follower behind a 60 ms link, or
        // one receiving a 4 MiB append over 100 Mbit/s, was never caught up
        // (the simulator found it, seed 628). 250 ms carries cross-region
        // links; elections stay 4 to 8 heartbeats.
        heartbeat_interval: 250,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        install_snapshot_timeout: 10_000,
        // An entry may be a batch of up to MAX_BATCH writes.
        max_payload_entries: 16,
        // In memory a snapshot is a clone of the tree, nearly free; on a
        // durable node it writes the whole tree to disk and fsyncs it. Every
        // 500 entries that cost 3-node durable writes 40% of their rate
        // (tmpfs 17k -> 29k/s, disk 12.8k -> 16.9k/s without it), so a
        // durable node snapshots only when its log passes MAX_LOG_BYTES
        // (`bound_log`): one tree written per 64 MiB of log.
        snapshot_policy: if durable { SnapshotPolicy::Never } else { SnapshotPolicy::LogsSinceLast(500) },
        max_in_snapshot_log_to_keep: 250,
        ..Config::default()
    };
    config.validate().map_err(|e| e.to_string())
}

/// Where a durable node's proposal ids go on from. Ids only grow for an
/// origin, and a node that restarts with its data dir is the same origin: a
/// proposal id used again would be answered with an old proposal's outcome
/// (or, lower, not applied at all). Past every id its disk knows of, and
/// past the clock in microseconds, for an id its last life sent the leader
/// that never reached its own log (a node proposes far fewer than one batch
/// a microsecond).
fn first_seq(id: NodeId, saved: &Saved) -> u64 {
    let on_disk = saved.highest_seq(id).unwrap_or(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
    on_disk.max(clock)
}

impl Consensus {
    /// Starts this node's Raft; it takes part once seeded or joined. `addr` is
    /// the address members and clients are told; `bind_ip` is where outgoing
    /// peer connections come from.
    /// With `saved` (`--data-dir`), Raft's state lives on disk as well; a
    /// directory holding this node (`Saved::node`) is resumed from.
    pub async fn start(
        node: Arc<Node>,
        addr: String,
        bind_ip: Option<std::net::IpAddr>,
        opts: Options,
        saved: Option<Saved>,
    ) -> Result<Arc<Consensus>, String> {
        let id = raft_id(node.id());
        let me = Member { addr, name: node.id().to_string() };
        let creds = Credentials {
            cluster: opts.cluster.clone(),
            secret: opts.secret.clone(),
            bind_ip,
            tls: opts.tls.clone().filter(|t| t.peers_need_tls()),
        };
        let pool = Pool::new(creds);
        let liveness = Liveness::default();
        let network = Network { pool: pool.clone(), liveness: liveness.clone() };
        let config = Arc::new(raft_config(&opts, saved.is_some())?);
        let (log, sm, seq) = match saved {
            None => (storage::LogStore::new(MAX_LOG_BYTES), storage::StateMachine::new(node.clone()), 0),
            Some(saved) => {
                let seq = first_seq(id, &saved);
                let (log, sm) = Self::durable_storage(&node, &me, &opts, saved)?;
                (log, sm, seq)
            }
        };
        let snapshots = sm.snapshots();
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
            seq: seq.into(),
            lessor: Default::default(),
            confirmations: Default::default(),
            snapshots,
            recovered: Default::default(),
            recovery: Default::default(),
            old_peer_warned: Default::default(),
        });
        tokio::spawn(consensus.clone().batch_loop(pending));
        tokio::spawn(consensus.clone().log_bound_loop());
        duties::spawn(consensus.clone());
        Ok(consensus)
    }

    /// The log and state machine of a durable node; a new node's directory
    /// is made its own first.
    fn durable_storage(
        node: &Arc<Node>,
        me: &Member,
        opts: &Options,
        saved: Saved,
    ) -> Result<(storage::LogStore, storage::StateMachine), String> {
        if saved.meta.is_none() {
            let meta = datadir::Meta { cluster: opts.cluster.clone(), id: me.name.clone(), addr: me.addr.clone() };
            saved.dir.write_meta(&meta).map_err(|e| format!("cannot write to {}: {e}", saved.dir.path().display()))?;
        }
        let dir = storage::SnapshotDir { life: saved.dir.claim(), dir: saved.dir };
        let sm = storage::StateMachine::durable(node.clone(), dir, saved.snapshot)?;
        Ok((saved.log, sm))
    }

    /// Takes part again as the member a data dir says this node is: its
    /// state was rebuilt from the snapshot and log on disk. Returns at once
    /// (peers must reach it: after a whole cluster's restart no leader is
    /// elected until a majority is up, and nodes started one after another
    /// must not wait for each other), but clients are served only once it is
    /// caught up ([`Node::set_ready`]): once a leader is known and it has
    /// applied everything its log held at start (or, if a new leader cut
    /// that log's uncommitted tail, everything up to the cut). What it had
    /// applied before the crash is in that log, so a restarted node never
    /// answers from a state older than one it answered from before (the
    /// torture run's stale-read check found it doing so when it served at
    /// once). Then it makes sure its `/ctl` files exist (a crash may have
    /// come between joining and writing them).
    pub fn resume(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = me.stopped.cancelled() => {}
                _ = me.ready_when_caught_up() => {}
            }
        });
    }

    async fn ready_when_caught_up(&self) {
        let logged = self.metrics().last_log_index;
        let caught_up = |m: &types::Metrics| {
            let target = logged.min(m.last_log_index);
            m.current_leader.is_some() && m.last_applied.map(|l| l.index) >= target
        };
        if self.raft.wait(None).metrics(caught_up, "caught up with the log on disk").await.is_err() {
            return;
        }
        self.node.set_ready();
        let addr_file = crate::ctl::node_file(&self.me.name, "addr");
        if self.node.snapshot(None).is_ok_and(|s| matches!(s.get(&addr_file), Ok(None))) {
            if let Err(e) = self.register_node().await {
                info!(error = %e, "cannot write this node's /ctl files yet");
            }
        }
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
            self.compact_after_load().await;
        }
        self.register_seed().await
    }

    /// The Load entry holds the whole restored tree, which the store now
    /// holds as well: take a snapshot past it and purge it from the log,
    /// rather than carry it until the log fills ([`MAX_LOG_BYTES`]; at
    /// 100,000 keys it never would: 120 bytes per key, kept for good).
    async fn compact_after_load(&self) {
        let _ = self.raft.trigger().snapshot().await;
        let applied = self.metrics().last_applied;
        let wait = self.raft.wait(Some(Duration::from_secs(60)));
        match wait.metrics(|m| m.snapshot >= applied, "a snapshot").await {
            Ok(m) => {
                if let Some(upto) = m.snapshot {
                    let _ = self.raft.trigger().purge_log(upto.index).await;
                }
            }
            Err(e) => debug!(error = %e, "no snapshot after the restore; its entry stays in the log"),
        }
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
        self.catch_up(index, addrs).await?;
        self.register_node().await
    }

    /// Waits until this node has applied `index`. A learner the leader could
    /// not reach removes it again after `-timeout` (it never heard of its
    /// membership, so it cannot notice by itself): asked every few seconds,
    /// the leader says so, and the join fails, to be tried again under a new
    /// id (the simulator found a node waiting out its 300 s here, seed 628).
    async fn catch_up(&self, index: u64, addrs: &[String]) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let caught_up = self
                .raft
                .wait(Some(Duration::from_secs(5)))
                .metrics(|m| m.last_applied.is_some_and(|l| l.index >= index), "caught up")
                .await;
            if caught_up.is_ok() {
                return Ok(());
            }
            if self.stopped.is_cancelled() {
                return Err("stopped before catching up".into());
            }
            if Instant::now() > deadline {
                return Err("joined but did not catch up within 300 s".into());
            }
            let targets: Vec<(Option<NodeId>, String)> = addrs.iter().map(|a| (None, a.clone())).collect();
            if self.leader_says_not_member(&targets).await {
                return Err("removed from the cluster before catching up".into());
            }
        }
    }

    /// Raft's view now. Read it again after an await: a step that waited on
    /// commits may find the membership or the term changed.
    fn metrics(&self) -> types::Metrics {
        self.raft.metrics().borrow().clone()
    }

    /// True if this node leads, in its own view (a deposed leader may not
    /// know yet: what must not act on a stale view confirms it first).
    fn leads(&self, m: &types::Metrics) -> bool {
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
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
            applied_by: m.last_applied.map(|l| (l.leader_id.term, l.leader_id.node_id)),
            voters: voters.iter().map(name).collect(),
            learners: membership.learner_ids().map(|id| name(&id)).collect(),
            changing: membership.get_joint_config().len() > 1,
            log_syncs: self.log.syncs(),
            log_bytes: self.log.bytes(),
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
        self.log.close().await;
    }

    /// Completes once this node's consensus has stopped.
    pub async fn stopped(&self) {
        self.stopped.cancelled().await
    }

    /// The store revision the node at `addr` has applied, if it answers within `ttl`.
    pub async fn applied_rev_at(&self, addr: &str, ttl: Duration) -> Option<doozer_store::Rev> {
        match self.pool.call(Target { addr, id: None }, &PeerRequest::Rev, ttl).await {
            Ok(PeerResponse::Rev(rev)) => Some(rev),
            _ => None,
        }
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
