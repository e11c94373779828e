//! The client side of peer traffic: Raft's RPCs to each member, forwarded
//! writes and joins, and a record of when each member last answered (the
//! leader uses it to find members that have been silent for `-timeout`).

// The error types are openraft's; their size is not ours to choose.
#![allow(clippy::result_large_err)]

use super::types::*;
use super::wire::{read_msg, write_msg, Hello, PeerRequest, PeerResponse, MAGIC, MAX_HELLO, MAX_MESSAGE, REPLACED};
use crate::rt::Stream;
use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufStream};
use tokio::time::Instant;
use tracing::{info, warn};

/// How long a snapshot may take to travel; it can hold the whole tree.
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);
/// The least time an AppendEntries may take before it is given up.
const MIN_APPEND_TTL: Duration = Duration::from_secs(1);
/// Most bytes of entries in one AppendEntries: openraft gives each one a
/// heartbeat interval (100 ms) to be answered, and a message of many large
/// entries cannot travel and be stored in that time, so it would be sent
/// again and again and the follower would never catch up. Past this, the
/// entries that fit are sent and answered as a partial success; openraft
/// sends the rest next.
pub const MAX_APPEND_BYTES: usize = 4 << 20;
/// How long to wait for a peer to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// When each member last answered an RPC from this node, and which members'
/// addresses now answer as another node (restarted in place: gone for good).
#[derive(Clone, Default)]
pub struct Liveness(Arc<Mutex<Seen>>);

#[derive(Default)]
struct Seen {
    answered: HashMap<NodeId, Instant>,
    replaced: std::collections::HashSet<NodeId>,
    /// Members reported unreachable, and since when their calls fail.
    failing: HashMap<NodeId, Instant>,
    down: std::collections::HashSet<NodeId>,
}

/// How long a member's calls must keep failing before it is reported down:
/// one lost heartbeat is not news.
const REPORT_DOWN_AFTER: Duration = Duration::from_secs(2);

impl Liveness {
    /// Notes that `id` answered; true if it had been reported down.
    pub fn touch(&self, id: NodeId) -> bool {
        let mut seen = self.0.lock();
        seen.answered.insert(id, Instant::now());
        seen.replaced.remove(&id);
        seen.failing.remove(&id);
        seen.down.remove(&id)
    }

    /// True while `id` is reported down.
    pub fn is_down(&self, id: NodeId) -> bool {
        self.0.lock().down.contains(&id)
    }

    /// Notes an answered call (or a call from the member); says so once if
    /// the member had been reported down.
    pub fn answered(&self, id: NodeId, name: &str, addr: &str) {
        if self.touch(id) {
            info!(node = %name, %addr, "peer reachable again");
        }
    }

    /// Notes a failed call; the first failure that has lasted
    /// [`REPORT_DOWN_AFTER`] is logged, once, until the member answers again.
    fn failed(&self, id: NodeId, name: &str, addr: &str, error: &dyn std::fmt::Display) {
        let mut seen = self.0.lock();
        let since = *seen.failing.entry(id).or_insert_with(Instant::now);
        if since.elapsed() >= REPORT_DOWN_AFTER && seen.down.insert(id) {
            drop(seen);
            warn!(node = %name, %addr, %error, "peer unreachable");
        }
    }

    pub fn last_answer(&self, id: NodeId) -> Option<Instant> {
        self.0.lock().answered.get(&id).copied()
    }

    /// Notes that `id`'s address refused a connection meant for `id` because
    /// another node now listens there.
    pub fn replaced(&self, id: NodeId) {
        self.0.lock().replaced.insert(id);
    }

    /// True if `id`'s address was last seen serving another node.
    pub fn is_replaced(&self, id: NodeId) -> bool {
        self.0.lock().replaced.contains(&id)
    }
}

/// How this node introduces itself to peers.
#[derive(Clone)]
pub struct Credentials {
    pub cluster: String,
    pub secret: String,
    /// The local address outgoing peer connections come from (the listen IP),
    /// so that a member is recognisable by its source address.
    pub bind_ip: Option<std::net::IpAddr>,
}

/// Where a peer request goes: an address and, if known, the node expected there.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub addr: &'a str,
    pub id: Option<NodeId>,
}

/// One open peer connection, past the hello.
pub struct PeerConn {
    stream: BufStream<Stream>,
}

/// A connection failure: `sent` says whether the request may have arrived.
#[derive(Debug)]
pub struct CallError {
    pub sent: bool,
    pub error: io::Error,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for CallError {}

impl PeerConn {
    /// Connects and says hello, all within [`CONNECT_TIMEOUT`]: a peer that
    /// accepts the connection but never answers the hello (a paused process,
    /// a link cut just after the handshake) must not hold the caller forever
    /// (the simulator found a rejoin stuck so, seed 28).
    pub async fn connect(target: Target<'_>, creds: &Credentials) -> io::Result<PeerConn> {
        let addr = target.addr;
        tokio::time::timeout(CONNECT_TIMEOUT, PeerConn::handshake(target, creds))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out")))?
    }

    async fn handshake(target: Target<'_>, creds: &Credentials) -> io::Result<PeerConn> {
        let tcp = Stream::connect(target.addr, creds.bind_ip).await?;
        let mut stream = BufStream::new(tcp);
        stream.write_all(&MAGIC).await?;
        let hello = Hello { cluster: creds.cluster.clone(), secret: creds.secret.clone(), to: target.id };
        write_msg(&mut stream, &hello).await?;
        let welcome: Result<(), String> = read_msg(&mut stream, MAX_HELLO).await?;
        welcome.map_err(|e| io::Error::new(io::ErrorKind::PermissionDenied, e))?;
        Ok(PeerConn { stream })
    }

    /// True if the peer has closed this idle connection (or sent something
    /// unasked): it must not be used, or a request could look sent when it
    /// never arrived.
    fn is_stale(&mut self) -> bool {
        self.stream.get_mut().is_stale()
    }

    pub async fn call(&mut self, req: &PeerRequest) -> io::Result<PeerResponse> {
        write_msg(&mut self.stream, req).await?;
        read_msg(&mut self.stream, MAX_MESSAGE).await
    }
}

/// Open connections to peers by address and node, reused across calls.
#[derive(Clone)]
pub struct Pool {
    creds: Credentials,
    idle: Arc<Mutex<HashMap<PoolKey, Vec<PeerConn>>>>,
}

/// Connections are pooled per address and the node expected there.
type PoolKey = (String, Option<NodeId>);

impl Pool {
    pub fn new(creds: Credentials) -> Pool {
        Pool { creds, idle: Arc::default() }
    }

    /// One request/response with the peer at `target`, within `ttl`.
    pub async fn call(&self, target: Target<'_>, req: &PeerRequest, ttl: Duration) -> Result<PeerResponse, CallError> {
        let addr = target.addr;
        let key = (addr.to_string(), target.id);
        let idle = {
            let mut pool = self.idle.lock();
            let conns = pool.entry(key.clone()).or_default();
            conns.retain_mut(|c| !c.is_stale());
            conns.pop()
        };
        let mut conn = match idle {
            Some(c) => c,
            None => PeerConn::connect(target, &self.creds).await.map_err(|error| CallError { sent: false, error })?,
        };
        let resp = tokio::time::timeout(ttl, conn.call(req))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {addr} within {ttl:?}")))
            .and_then(|r| r)
            .map_err(|error| CallError { sent: true, error })?;
        self.idle.lock().entry(key).or_default().push(conn);
        Ok(resp)
    }
}

/// Makes one [`PeerClient`] per member for openraft.
pub struct Network {
    pub pool: Pool,
    pub liveness: Liveness,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            name: node.name.clone(),
            addr: node.addr.clone(),
            pool: self.pool.clone(),
            liveness: self.liveness.clone(),
        }
    }
}

/// Raft's RPCs to one member.
pub struct PeerClient {
    target: NodeId,
    /// The member's base32 id, as logs and `/ctl` show it.
    name: String,
    addr: String,
    pool: Pool,
    liveness: Liveness,
}

type RpcResult<T> = Result<T, RPCError<NodeId, Member, RaftError<NodeId>>>;

/// Counts a call as failed unless it is marked answered: openraft drops an
/// RPC that outlives its deadline, so a hung peer's calls never return an error.
struct Outcome<'a> {
    client: &'a PeerClient,
    answered: bool,
}

impl Drop for Outcome<'_> {
    fn drop(&mut self) {
        if !self.answered {
            let c = self.client;
            c.liveness.failed(c.target, &c.name, &c.addr, &"no answer in time");
        }
    }
}

impl PeerClient {
    async fn call(&self, req: PeerRequest, ttl: Duration) -> Result<PeerResponse, CallError> {
        let target = Target { addr: &self.addr, id: Some(self.target) };
        let mut outcome = Outcome { client: self, answered: false };
        match self.pool.call(target, &req, ttl).await {
            Ok(resp) => {
                outcome.answered = true;
                self.liveness.answered(self.target, &self.name, &self.addr);
                Ok(resp)
            }
            Err(e) => {
                outcome.answered = true;
                self.liveness.failed(self.target, &self.name, &self.addr, &e.error);
                if e.error.kind() == io::ErrorKind::PermissionDenied && e.error.to_string().starts_with(REPLACED) {
                    self.liveness.replaced(self.target);
                }
                Err(e)
            }
        }
    }

    fn unexpected<T>(&self) -> RpcResult<T> {
        let e = io::Error::new(io::ErrorKind::InvalidData, "unexpected answer kind");
        Err(RPCError::Network(NetworkError::new(&e)))
    }

    fn remote<T>(&self, r: Result<T, RaftError<NodeId>>) -> RpcResult<T> {
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Keeps the first entries of `rpc` that fit in [`MAX_APPEND_BYTES`] (at
/// least one); returns the last kept entry's id if any were left out.
fn fit_append(mut rpc: AppendEntriesRequest<TypeConfig>) -> (AppendEntriesRequest<TypeConfig>, Option<LogId>) {
    let mut bytes = 0;
    let keep = rpc
        .entries
        .iter()
        .position(|e| {
            bytes += super::storage::entry_bytes(e);
            bytes > MAX_APPEND_BYTES
        })
        .map_or(rpc.entries.len(), |i| i.max(1));
    if keep == rpc.entries.len() {
        return (rpc, None);
    }
    rpc.entries.truncate(keep);
    let cut = rpc.entries.last().map(|e| e.log_id);
    (rpc, cut)
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        // openraft bounds the whole call by one heartbeat interval (see
        // `raft_config`) and drops this future then; this bound only matters
        // for calls openraft makes without its own timeout.
        let ttl = option.hard_ttl().max(MIN_APPEND_TTL);
        let (rpc, cut) = fit_append(rpc);
        match self.call(PeerRequest::Append(rpc), ttl).await {
            Ok(PeerResponse::Append(Ok(AppendEntriesResponse::Success))) if cut.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(cut))
            }
            Ok(PeerResponse::Append(r)) => self.remote(r),
            Ok(_) => self.unexpected(),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(PeerRequest::Vote(rpc), option.hard_ttl()).await {
            Ok(PeerResponse::Vote(r)) => self.remote(r),
            Ok(_) => self.unexpected(),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, openraft::error::Fatal<NodeId>>> {
        // Encoding the whole tree and its history is slow: not on a runtime worker.
        let data = *snapshot.snapshot;
        let encode = crate::rt::blocking(move || {
            let mut image = Vec::new();
            data.image.encode(&mut image);
            (image, data.applied)
        });
        let (image, applied) = match encode.await {
            Ok(done) => done,
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        };
        let req = PeerRequest::Snapshot { vote, meta: snapshot.meta, image, applied };
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = self.call(req, SNAPSHOT_TIMEOUT) => r,
        };
        match resp {
            Ok(PeerResponse::Snapshot(r)) => {
                r.map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => {
                let e = io::Error::new(io::ErrorKind::InvalidData, "unexpected answer kind");
                Err(StreamingError::Network(NetworkError::new(&e)))
            }
            Err(e) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
        }
    }
}
