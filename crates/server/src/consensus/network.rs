//! The client side of peer traffic: Raft's RPCs to each member, forwarded
//! writes and joins, and a record of when each member last answered (the
//! leader uses it to find members that have been silent for `-timeout`).

// The error types are openraft's; their size is not ours to choose.
#![allow(clippy::result_large_err)]

use super::rpc;
use super::types::*;
use super::wire::{
    self, read_msg, write_msg, Answer, Challenge, Hello, PeerRequest, PeerResponse, MAGIC, MAX_HELLO, MAX_MESSAGE,
    OLDEST_PROTOCOL, PROTOCOL, REPLACED,
};
use crate::rt::Stream;
use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufStream};
use tokio::time::Instant;
use tracing::{info, warn};

/// Longest a snapshot's bytes may stop moving before the link is taken for
/// dead. A snapshot can hold the whole tree (up to a GiB), so no one deadline
/// fits all: one of two minutes outlasted a short `-timeout`, and the
/// follower it was for heard nothing meanwhile (openraft sends no heartbeats
/// to a follower while a snapshot to it is in flight), was removed as silent
/// and lost its watchers (the simulator found this with a message lost on
/// the way, seed 105636).
const SNAPSHOT_STALL: Duration = Duration::from_secs(10);
/// Least rate at which a follower is assumed to take in a snapshot it has
/// received: the answer is awaited [`SNAPSHOT_STALL`] plus this long per byte.
const INSTALL_RATE: f64 = 8.0 * 1024.0 * 1024.0;
/// Bytes of a snapshot written at a time (and progress noted after each).
const SNAPSHOT_CHUNK: usize = 1 << 20;
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
    /// Peer TLS (`--peer-cert`): every connection is mutual TLS.
    pub tls: Option<Arc<crate::tls::Tls>>,
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
        let tcp = match creds.tls.as_ref().and_then(|t| t.peer_connector()) {
            None => tcp,
            Some(config) => Stream::Other(Box::new(tls_connect(tcp, config, target.addr).await?)),
        };
        let mut stream = BufStream::new(tcp);
        stream.write_all(&MAGIC).await?;
        greet(&mut stream, target, creds).await?;
        Ok(PeerConn { stream })
    }

    /// True if the peer has closed this idle connection (or sent something
    /// unasked): it must not be used, or a request could look sent when it
    /// never arrived.
    fn is_stale(&mut self) -> bool {
        self.stream.get_mut().is_stale()
    }
}

/// Peer TLS: the peer's certificate must come from `--peer-ca` and name the
/// host dialled. A certificate refused by either side is a refusal
/// (`PermissionDenied`: a joining node stops and says why); anything else a
/// failure to connect, tried again as usual.
async fn tls_connect(
    tcp: Stream,
    config: Arc<tokio_rustls::rustls::ClientConfig>,
    addr: &str,
) -> io::Result<tokio_rustls::client::TlsStream<Stream>> {
    use tokio_rustls::rustls::pki_types::ServerName;
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?} is not a name a certificate can carry"))
    })?;
    let connector = tokio_rustls::TlsConnector::from(config);
    connector.connect(name, tcp).await.map_err(|e| {
        tls_refusal(addr, &e).unwrap_or_else(|| {
            io::Error::new(
                e.kind(),
                format!(
                    "TLS with the node at {addr} failed ({e}): does it run with --peer-cert, --peer-key and --peer-ca?"
                ),
            )
        })
    })
}

/// A TLS error that means a certificate was refused, by either side, in
/// words: TLS 1.3 tells a dialer that the server refused its certificate
/// only on the first read after the handshake.
fn tls_refusal(addr: &str, e: &io::Error) -> Option<io::Error> {
    use tokio_rustls::rustls::Error as Tls;
    let refused = |what: String| Some(io::Error::new(io::ErrorKind::PermissionDenied, what));
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Tls>())? {
        Tls::InvalidCertificate(why) => refused(format!(
            "the node at {addr} shows a certificate this node does not trust ({why:?}): it must come from this \
             node's --peer-ca and name the host dialled"
        )),
        Tls::AlertReceived(tokio_rustls::rustls::AlertDescription::NoApplicationProtocol) => refused(format!(
            "the node at {addr} does not take peer TLS: every member needs --peer-cert, --peer-key and --peer-ca"
        )),
        Tls::AlertReceived(alert) => refused(format!(
            "the node at {addr} refused this node's certificate ({alert:?}): is this node's --peer-cert from its \
             --peer-ca?"
        )),
        _ => None,
    }
}

/// The dialer's half of the hello (see `wire`): proves it knows the secret
/// and checks that the server does.
async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    target: Target<'_>,
    creds: &Credentials,
) -> io::Result<()> {
    let refused = |e: String| io::Error::new(io::ErrorKind::PermissionDenied, e);
    let mut nonce = [0u8; 32];
    crate::rt::fill_random(&mut nonce);
    let cluster = &creds.cluster;
    let hello = Hello { version: PROTOCOL, oldest: OLDEST_PROTOCOL, cluster: cluster.clone(), to: target.id, nonce };
    write_msg(stream, &hello).await?;
    // Not a refusal: a node that closes here may be restarting (or be an
    // older doozerd, protocol 0, which closes on this hello).
    let challenge: Challenge = read_msg(stream, MAX_HELLO).await.map_err(|e| {
        tls_refusal(target.addr, &e).unwrap_or_else(|| {
            io::Error::new(e.kind(), format!("no hello back from {} ({e}; an older doozerd?)", target.addr))
        })
    })?;
    if let Some(why) = wire::incompatible(challenge.version, challenge.oldest) {
        return Err(refused(why));
    }
    let (theirs, their_proof) = challenge.go.map_err(refused)?;
    let expected = wire::proof(&creds.secret, "doozer peer server", cluster, &nonce, &theirs);
    if !wire::proof_ok(&their_proof, &expected) {
        return Err(refused(format!(
            "the node at {} does not know this cluster's secret (DOOZER_RWSECRET differs)",
            target.addr
        )));
    }
    let proof = wire::proof(&creds.secret, "doozer peer dialer", cluster, &theirs, &nonce);
    write_msg(stream, &Answer { proof }).await?;
    let welcome: Result<(), String> = read_msg(stream, MAX_HELLO).await?;
    welcome.map_err(refused)
}

/// Open connections to peers by address and node, reused across calls.
#[derive(Clone)]
pub struct Pool {
    creds: Credentials,
    idle: Arc<Mutex<HashMap<PoolKey, Vec<PeerConn>>>>,
    /// Connections awaiting an answer their caller gave up on.
    late: Arc<AtomicUsize>,
}

/// Connections are pooled per address and the node expected there.
type PoolKey = (String, Option<NodeId>);

impl Pool {
    pub fn new(creds: Credentials) -> Pool {
        Pool { creds, idle: Arc::default(), late: Arc::default() }
    }

    /// One request/response with the peer at `target`, within `ttl`.
    pub async fn call(&self, target: Target<'_>, req: &PeerRequest, ttl: Duration) -> Result<PeerResponse, CallError> {
        self.call_noting(target, req, ttl, None).await
    }

    /// As [`Pool::call`]; if the caller gives up on the answer (its deadline,
    /// or openraft dropping the call), the answer is still read in the
    /// background for a while and `late` runs when it comes.
    async fn call_noting(
        &self,
        target: Target<'_>,
        req: &PeerRequest,
        ttl: Duration,
        late: Option<Late>,
    ) -> Result<PeerResponse, CallError> {
        if crate::rt::duplicate() {
            self.send_copy(target, req);
        }
        let addr = target.addr;
        let mut pending = self.checkout(target, late).await?;
        tokio::time::timeout(ttl, pending.exchange(req))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no answer from {addr} within {ttl:?}")))
            .and_then(|r| r)
            .map_err(|error| CallError { sent: true, error })
    }

    /// One request too large for one deadline (a snapshot): its bytes must
    /// keep moving (`stall` at most without progress; `progress` runs as
    /// they do), and the answer is awaited `stall` plus as long as
    /// installing that many bytes may take ([`INSTALL_RATE`]).
    pub async fn call_large(
        &self,
        target: Target<'_>,
        req: &PeerRequest,
        stall: Duration,
        progress: &(dyn Fn() + Sync),
    ) -> Result<PeerResponse, CallError> {
        let frame = wire::frame(req).map_err(|error| CallError { sent: false, error })?;
        let mut pending = self.checkout(target, None).await?;
        pending.exchange_large(&frame, stall, progress).await.map_err(|error| CallError { sent: true, error })
    }

    /// An idle pooled connection to `target`, or a new one.
    async fn checkout(&self, target: Target<'_>, late: Option<Late>) -> Result<Pending, CallError> {
        let key = (target.addr.to_string(), target.id);
        let idle = {
            let mut pool = self.idle.lock();
            let conns = pool.entry(key.clone()).or_default();
            conns.retain_mut(|c| !c.is_stale());
            conns.pop()
        };
        let conn = match idle {
            Some(c) => c,
            None => PeerConn::connect(target, &self.creds).await.map_err(|error| CallError { sent: false, error })?,
        };
        Ok(Pending { conn: Some(conn), written: false, key, idle: self.idle.clone(), waiting: self.late.clone(), late })
    }

    /// Sends a copy of `req` on a connection of its own and drops the
    /// answer: a duplicate that may overtake the original or trail it (the
    /// simulator's duplication fault; never in production). Not whole
    /// snapshots: their size would only slow the run.
    fn send_copy(&self, target: Target<'_>, req: &PeerRequest) {
        if matches!(req, PeerRequest::Snapshot { .. }) {
            return;
        }
        let Ok(frame) = wire::frame(req) else { return };
        let (addr, id, creds) = (target.addr.to_string(), target.id, self.creds.clone());
        tokio::spawn(async move {
            let copy = async {
                let mut conn = PeerConn::connect(Target { addr: &addr, id }, &creds).await?;
                conn.stream.write_all(&frame).await?;
                conn.stream.flush().await?;
                read_msg::<_, PeerResponse>(&mut conn.stream, MAX_MESSAGE).await
            };
            let _ = tokio::time::timeout(LATE_ANSWER, copy).await;
        });
    }
}

/// Called when an answer the caller gave up on arrives after all.
type Late = Arc<dyn Fn() + Send + Sync>;

/// How long an answer the caller gave up on is still awaited.
const LATE_ANSWER: Duration = Duration::from_secs(5);
/// Most connections awaiting late answers at once, per pool.
const MAX_LATE: usize = 16;

/// A pooled connection carrying one request. Dropped with the request sent
/// and unanswered, it reads the answer in the background: openraft gives an
/// AppendEntries one heartbeat interval, so on a link slower than that every
/// call is dropped unanswered, and a member that answers late would look
/// silent and be removed while it is alive (the simulator found a slow
/// voter removed so while another had just crashed, leaving a pair that
/// needed the dead one, seed 3857). The late answer counts as one, and the
/// connection goes back to the pool instead of a new one per heartbeat.
struct Pending {
    conn: Option<PeerConn>,
    /// The request is on the wire and its answer not read.
    written: bool,
    key: PoolKey,
    idle: Arc<Mutex<HashMap<PoolKey, Vec<PeerConn>>>>,
    /// The pool's count of connections awaiting late answers.
    waiting: Arc<AtomicUsize>,
    late: Option<Late>,
}

impl Pending {
    async fn exchange(&mut self, req: &PeerRequest) -> io::Result<PeerResponse> {
        let Some(conn) = self.conn.as_mut() else { return Err(io::Error::other("connection already used")) };
        // Cut short mid-write, the connection is unusable: dropped, not drained.
        write_msg(&mut conn.stream, req).await?;
        self.written = true;
        let resp = read_msg(&mut conn.stream, MAX_MESSAGE).await;
        self.written = false;
        let resp = resp?;
        self.give_back();
        Ok(resp)
    }

    /// As `exchange`, for a `frame` too large for one deadline (see
    /// [`Pool::call_large`]). Not drained if dropped: a late snapshot answer
    /// is no news of liveness worth a connection held that long.
    async fn exchange_large(
        &mut self,
        frame: &[u8],
        stall: Duration,
        progress: &(dyn Fn() + Sync),
    ) -> io::Result<PeerResponse> {
        let Some(conn) = self.conn.as_mut() else { return Err(io::Error::other("connection already used")) };
        for chunk in frame.chunks(SNAPSHOT_CHUNK) {
            within(stall, conn.stream.write_all(chunk)).await?;
            progress();
        }
        within(stall, conn.stream.flush()).await?;
        let install = stall + Duration::from_secs_f64(frame.len() as f64 / INSTALL_RATE);
        let resp = within(install, read_msg(&mut conn.stream, MAX_MESSAGE)).await?;
        self.give_back();
        Ok(resp)
    }

    /// Returns the connection, its exchange complete, to the pool.
    fn give_back(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.idle.lock().entry(std::mem::take(&mut self.key)).or_default().push(conn);
        }
    }
}

/// `io` within `limit`, or a timed-out error.
async fn within<T>(limit: Duration, io: impl Future<Output = io::Result<T>>) -> io::Result<T> {
    match tokio::time::timeout(limit, io).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, format!("no progress within {limit:?}"))),
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let (Some(mut conn), true) = (self.conn.take(), self.written) else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (idle, waiting) = (self.idle.clone(), self.waiting.clone());
        if waiting.fetch_add(1, Ordering::Relaxed) >= MAX_LATE {
            waiting.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        let (key, late) = (std::mem::take(&mut self.key), self.late.take());
        runtime.spawn(async move {
            let answer = tokio::time::timeout(LATE_ANSWER, read_msg::<_, PeerResponse>(&mut conn.stream, MAX_MESSAGE));
            if let Ok(Ok(_)) = answer.await {
                if let Some(late) = late {
                    late();
                }
                idle.lock().entry(key).or_default().push(conn);
            }
            waiting.fetch_sub(1, Ordering::Relaxed);
        });
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
        let (liveness, name, addr) = (self.liveness.clone(), node.name.clone(), node.addr.clone());
        let late: Late = Arc::new(move || liveness.answered(target, &name, &addr));
        PeerClient {
            target,
            name: node.name.clone(),
            addr: node.addr.clone(),
            pool: self.pool.clone(),
            liveness: self.liveness.clone(),
            late,
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
    /// Notes a late answer as one (see [`Pending`]).
    late: Late,
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
        match self.pool.call_noting(target, &req, ttl, Some(self.late.clone())).await {
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

    /// As `call`, for a snapshot: the follower counts as heard from while
    /// its bytes keep moving (openraft sends it no heartbeats meanwhile).
    async fn call_large(&self, req: PeerRequest) -> Result<PeerResponse, CallError> {
        let target = Target { addr: &self.addr, id: Some(self.target) };
        let moving = || self.liveness.answered(self.target, &self.name, &self.addr);
        let r = self.pool.call_large(target, &req, SNAPSHOT_STALL, &moving).await;
        match &r {
            Ok(_) => self.liveness.answered(self.target, &self.name, &self.addr),
            Err(e) => self.liveness.failed(self.target, &self.name, &self.addr, &e.error),
        }
        r
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
        match self.call(PeerRequest::Append(rpc.into()), ttl).await {
            Ok(PeerResponse::Append(Ok(rpc::AppendAnswer::Success))) if cut.is_some() => {
                Ok(AppendEntriesResponse::PartialSuccess(cut))
            }
            Ok(PeerResponse::Append(r)) => self.remote(rpc::append_answer(r)),
            Ok(_) => self.unexpected(),
            Err(e) => Err(RPCError::Unreachable(Unreachable::new(&e))),
        }
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        match self.call(PeerRequest::Vote(rpc.into()), option.hard_ttl()).await {
            Ok(PeerResponse::Vote(r)) => self.remote(rpc::vote_answer(r)),
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
        let started = Instant::now();
        let encode = crate::rt::blocking(move || {
            let mut image = Vec::new();
            data.image.encode(&mut image);
            (bytes::Bytes::from(image), data.applied)
        });
        let (image, applied) = match encode.await {
            Ok(done) => done,
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        };
        let (bytes, encoded) = (image.len(), started.elapsed());
        let req = PeerRequest::Snapshot { vote: vote.into(), meta: snapshot.meta.into(), image, applied };
        let resp = tokio::select! {
            closed = cancel => return Err(StreamingError::Closed(closed)),
            r = self.call_large(req) => r,
        };
        let (to, took) = (self.target, started.elapsed());
        tracing::debug!(to, bytes, ?encoded, ?took, "sent a snapshot (encoded, then sent and installed)");
        // The encoded tree (and its frame) is freed.
        crate::memory::release();
        match resp {
            Ok(PeerResponse::Snapshot(r)) => {
                rpc::snapshot_answer(r).map_err(|e| StreamingError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(_) => {
                let e = io::Error::new(io::ErrorKind::InvalidData, "unexpected answer kind");
                Err(StreamingError::Network(NetworkError::new(&e)))
            }
            Err(e) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;
    use tokio::net::TcpListener;

    /// A peer that welcomes each connection and answers every request
    /// `Leader` after `delay`.
    async fn slow_peer(delay: Duration) -> String {
        peer(Some(delay)).await
    }

    /// A peer that welcomes each connection and then reads nothing: a link
    /// that died with the connection open.
    async fn deaf_peer() -> String {
        peer(None).await
    }

    /// A peer that completes the handshake, then answers after `answer`, or
    /// (`None`) never reads again.
    async fn peer(answer: Option<Duration>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut s = BufStream::new(tcp);
                    let mut magic = [0u8; 4];
                    tokio::io::AsyncReadExt::read_exact(&mut s, &mut magic).await.ok()?;
                    let hello: Hello = read_msg(&mut s, MAX_HELLO).await.ok()?;
                    let ours = [7u8; 32];
                    let proof = wire::proof("", "doozer peer server", "c", &hello.nonce, &ours);
                    let go = Ok((ours, proof));
                    write_msg(&mut s, &Challenge { version: PROTOCOL, oldest: OLDEST_PROTOCOL, go }).await.ok()?;
                    let _: Answer = read_msg(&mut s, MAX_HELLO).await.ok()?;
                    write_msg(&mut s, &Ok::<(), String>(())).await.ok()?;
                    let Some(delay) = answer else { return std::future::pending::<Option<()>>().await };
                    loop {
                        let _: PeerRequest = read_msg(&mut s, MAX_MESSAGE).await.ok()?;
                        tokio::time::sleep(delay).await;
                        write_msg(&mut s, &PeerResponse::Leader(None)).await.ok()?;
                    }
                });
            }
        });
        addr
    }

    /// A request of about `bytes` bytes.
    fn large(bytes: usize) -> PeerRequest {
        PeerRequest::Join { id: 1, member: Member { addr: "x".into(), name: "x".repeat(bytes) } }
    }

    fn pool() -> Pool {
        Pool::new(Credentials { cluster: "c".into(), secret: String::new(), bind_ip: None, tls: None })
    }

    /// A [`Late`] that raises a flag.
    fn flag() -> (Arc<AtomicBool>, Late) {
        let heard = Arc::new(AtomicBool::new(false));
        let raise = heard.clone();
        (heard, Arc::new(move || raise.store(true, Ordering::SeqCst)))
    }

    /// Polls until `done`, for at most 10 s.
    async fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_answer_after_the_deadline_still_counts_and_keeps_the_connection() {
        let addr = slow_peer(Duration::from_millis(300)).await;
        let pool = pool();
        let (heard, late) = flag();
        let target = Target { addr: &addr, id: None };
        let r = pool.call_noting(target, &PeerRequest::Leader, Duration::from_millis(50), Some(late)).await;
        assert!(r.is_err(), "the call must give up at its deadline");
        eventually("the late answer was never noted", || heard.load(Ordering::SeqCst)).await;
        let idle = pool.idle.lock().get(&(addr.clone(), None)).map_or(0, Vec::len);
        assert_eq!(idle, 1, "the drained connection goes back to the pool");
        // And it is usable: the next call on it is answered.
        let r = pool.call(Target { addr: &addr, id: None }, &PeerRequest::Leader, Duration::from_secs(5)).await;
        assert!(matches!(r, Ok(PeerResponse::Leader(None))));
    }

    #[tokio::test]
    async fn no_more_than_max_late_connections_are_drained_at_once() {
        // Answers take 4 s (drains wait 5 s): every call below gives up long
        // before the first answer comes, even on a loaded machine.
        let addr = slow_peer(Duration::from_secs(4)).await;
        let pool = pool();
        let mut most = 0;
        for _ in 0..MAX_LATE + 8 {
            let target = Target { addr: &addr, id: None };
            let late: Late = Arc::new(|| {});
            let call = pool.call_noting(target, &PeerRequest::Leader, Duration::from_millis(20), Some(late));
            assert!(call.await.is_err());
            most = most.max(pool.late.load(Ordering::SeqCst));
        }
        assert_eq!(most, MAX_LATE, "the drains stop at the bound");
        eventually("the drains never finished", || pool.late.load(Ordering::SeqCst) == 0).await;
        let idle = pool.idle.lock().get(&(addr.clone(), None)).map_or(0, Vec::len);
        assert!(idle <= MAX_LATE, "{idle} drained connections back in the pool: the others were closed");
    }

    #[tokio::test]
    async fn a_large_call_notes_progress_and_waits_for_the_answer_past_the_stall_bound() {
        // The answer takes longer than the stall bound: installing is not stalling.
        let addr = slow_peer(Duration::from_millis(400)).await;
        let pool = pool();
        let chunks = AtomicUsize::new(0);
        let progress = || {
            chunks.fetch_add(1, Ordering::SeqCst);
        };
        let target = Target { addr: &addr, id: None };
        let r = pool.call_large(target, &large(3 * SNAPSHOT_CHUNK), Duration::from_millis(300), &progress).await;
        assert!(matches!(r, Ok(PeerResponse::Leader(None))), "{:?}", r.err());
        assert_eq!(chunks.load(Ordering::SeqCst), 4, "progress after each chunk");
    }

    #[tokio::test]
    async fn a_large_call_to_a_peer_that_stops_reading_fails_at_the_stall_bound() {
        let addr = deaf_peer().await;
        let pool = pool();
        let start = Instant::now();
        // Larger than any socket buffers: the writes stop moving.
        let target = Target { addr: &addr, id: None };
        let r = pool.call_large(target, &large(256 << 20), Duration::from_millis(500), &|| {}).await;
        let e = r.err().map(|e| e.error.kind());
        assert_eq!(e, Some(io::ErrorKind::TimedOut));
        assert!(start.elapsed() < Duration::from_secs(30), "failed only after {:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_large_call_unanswered_fails_after_the_install_time_of_its_size() {
        // Read but never answered: a small request waits the stall bound and a
        // little more, not two minutes.
        let addr = slow_peer(Duration::from_secs(3600)).await;
        let pool = pool();
        let start = Instant::now();
        let target = Target { addr: &addr, id: None };
        let r = pool.call_large(target, &large(1000), Duration::from_millis(200), &|| {}).await;
        assert_eq!(r.err().map(|e| e.error.kind()), Some(io::ErrorKind::TimedOut));
        assert!(start.elapsed() < Duration::from_secs(10), "failed only after {:?}", start.elapsed());
    }

    #[tokio::test]
    async fn a_call_dropped_by_its_caller_is_drained_too() {
        let addr = slow_peer(Duration::from_millis(200)).await;
        let pool = pool();
        let (heard, late) = flag();
        let target = Target { addr: &addr, id: None };
        // As openraft does: its own timeout drops the call future.
        let call = pool.call_noting(target, &PeerRequest::Leader, Duration::from_secs(5), Some(late));
        assert!(tokio::time::timeout(Duration::from_millis(50), call).await.is_err());
        eventually("the late answer was never noted", || heard.load(Ordering::SeqCst)).await;
        assert_eq!(pool.late.load(Ordering::SeqCst), 0);
    }
}
