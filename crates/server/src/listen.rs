//! The `-l` listener: accepts connections, tells peers from clients, and
//! bounds both, so that no client can exhaust the node.
//!
//! - Every connection counts as a client from the moment it is accepted
//!   (`--max-conns`, default [`DEFAULT_MAX_CLIENTS`], lowered to leave room
//!   in the open-files limit for peers); one that turns out to be a peer
//!   moves to the peers' own cap, [`MAX_PEERS`], far above what a cluster
//!   opens. So a node flooded by clients still hears its cluster.
//! - A connection has [`FIRST_BYTES`] to send its first four bytes (and to
//!   finish its TLS handshake): idle connections do not stay forever.
//! - Past the client cap a connection is still accepted, since it may be a
//!   peer: at most [`MAX_HANDSHAKES`] of those wait for their first bytes at
//!   once, and past that the oldest is closed (a peer sends its bytes at
//!   once, so idle sockets cannot keep one out). A client among them is
//!   answered, on its first request, `OTHER: too many client connections`,
//!   and closed.
//! - Stopping the listener closes every connection it accepted: a node that
//!   rejoins its cluster under a new id leaves no client on the old one.
//! - With TLS configured (`tls`), a connection whose first byte begins a TLS
//!   handshake is taken through it (as a peer's or a client's, by its ALPN),
//!   the others stay plain; then each kind is held to its rules: with
//!   `--peer-cert` a peer must have come through peer TLS (else it is told
//!   why, and the refusal logged), with `-tlscert` a client through client
//!   TLS (else its first request is answered with why). One port serves
//!   both, as without TLS, so members and clients need one address a node.
//!
//! Not here: what a client connection does (`conn`), what a peer says (`consensus`).

use crate::access::Secrets;
use crate::conn;
use crate::consensus::{Consensus, PEER_MAGIC, PEER_MAGIC_V0};
use crate::rt::{Io, Listener, Stream as Conn};
use crate::tls::{Tls, HANDSHAKE, NO_TLS_HERE};
use doozer_proto::{encode_frame, read_body, read_prefix, ErrCode, Request, Response, MAX_FRAME};
use parking_lot::Mutex;
use prost::Message;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::rustls::server::Acceptor;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a new connection may take to send its first four bytes (and to
/// finish its TLS handshake).
pub const FIRST_BYTES: Duration = Duration::from_secs(30);
/// Connections past the client cap that have not yet said whether they are
/// a peer or a client.
pub const MAX_HANDSHAKES: usize = 1024;
/// Peer connections open at once (a member opens a few per other member).
pub const MAX_PEERS: usize = 1024;
/// Client connections by default (`--max-conns`).
pub const DEFAULT_MAX_CLIENTS: usize = 16_384;

/// Open connections of one kind: a permit each, given back on drop.
struct Slots {
    permits: Arc<Semaphore>,
    max: usize,
}

type Slot = OwnedSemaphorePermit;

impl Slots {
    fn new(max: usize) -> Slots {
        Slots { permits: Arc::new(Semaphore::new(max)), max }
    }

    fn take(&self) -> Option<Slot> {
        self.permits.clone().try_acquire_owned().ok()
    }
}

/// Connections still in their first bytes, oldest first: each can be closed
/// to make room for a newer one.
#[derive(Default)]
struct Handshakes {
    queue: Mutex<VecDeque<(u64, CancellationToken)>>,
    next: AtomicUsize,
}

impl Handshakes {
    /// Registers a new handshake, closing the oldest if there are too many.
    fn begin(&self) -> (u64, CancellationToken) {
        let id = self.next.fetch_add(1, Ordering::Relaxed) as u64;
        let token = CancellationToken::new();
        let mut q = self.queue.lock();
        while q.len() >= MAX_HANDSHAKES {
            if let Some((_, oldest)) = q.pop_front() {
                oldest.cancel();
            }
        }
        q.push_back((id, token.clone()));
        (id, token)
    }

    fn end(&self, id: u64) {
        let mut q = self.queue.lock();
        if let Some(i) = q.iter().position(|(h, _)| *h == id) {
            q.remove(i);
        }
    }
}

/// What every accepted connection shares.
struct Shared {
    cluster: Arc<Consensus>,
    secrets: Arc<Secrets>,
    tls: Option<Arc<Tls>>,
    clients: Slots,
    peers: Slots,
    handshakes: Handshakes,
    /// Refused peers (wrong CA, no TLS where TLS is required): each reason
    /// said at WARN once a minute, at DEBUG in between.
    refused_peers: Throttle,
}

/// Accepts on `listener` until `stop`, then closes every connection it accepted.
pub async fn accept_loop(
    listener: Listener,
    cluster: Arc<Consensus>,
    secrets: Arc<Secrets>,
    tls: Option<Arc<Tls>>,
    max_clients: usize,
    stop: CancellationToken,
) {
    let shared = Arc::new(Shared {
        cluster,
        secrets,
        tls,
        clients: Slots::new(max_clients),
        peers: Slots::new(MAX_PEERS),
        handshakes: Handshakes::default(),
        refused_peers: Throttle::default(),
    });
    let mut failing = false;
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors or similar: say it once, back off instead of spinning.
                if !failing {
                    warn!(error = %e, "cannot accept connections (out of file descriptors?); retrying");
                }
                failing = true;
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        failing = false;
        debug!(%peer, "connection accepted");
        let shared = shared.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = serve(stream, peer, &shared) => {}
            }
        });
    }
}

/// One accepted connection, from its first bytes to its end. Within the
/// client cap it holds a client slot from the start; past it, it is a
/// handshake that a newer one may push out.
async fn serve(stream: Conn, from: SocketAddr, shared: &Shared) {
    let slot = shared.clients.take();
    let handshake = slot.is_none().then(|| shared.handshakes.begin());
    let evicted = handshake.as_ref().map(|(_, t)| t.clone()).unwrap_or_default();
    let opened = tokio::select! {
        _ = evicted.cancelled() => None,
        r = tokio::time::timeout(FIRST_BYTES, open(stream, from, shared)) => r.ok().flatten(),
    };
    if let Some((id, _)) = handshake {
        shared.handshakes.end(id);
    }
    let Some(opened) = opened else { return debug!(%from, "closing a connection that sent nothing usable in time") };
    let arrival = Arrival { via: opened.via, from, slot };
    match opened.stream {
        Opened::Tcp(stream) => dispatch(stream, opened.first, arrival, shared).await,
        Opened::Other(stream) => dispatch(stream, opened.first, arrival, shared).await,
        Opened::Tls(stream) => dispatch(*stream, opened.first, arrival, shared).await,
    }
}

/// How a connection came in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Via {
    Plain,
    /// TLS with the client configuration (`-tlscert`).
    ClientTls,
    /// TLS with the peer configuration: the other side showed a certificate from `--peer-ca`.
    PeerTls,
}

/// A connection whose first bytes have come, and what it came through.
struct First {
    stream: Opened,
    first: [u8; 4],
    via: Via,
}

enum Opened {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
    Tls(Box<tokio_rustls::server::TlsStream<Conn>>),
}

/// A connection's origin, as `dispatch` judges it.
struct Arrival {
    via: Via,
    from: SocketAddr,
    slot: Option<Slot>,
}

/// The TLS handshake, if the connection opens with one, and the first four bytes.
async fn open(stream: Conn, from: SocketAddr, shared: &Shared) -> Option<First> {
    match stream {
        Conn::Tcp(mut stream) => {
            if let Some(tls) = &shared.tls {
                let mut byte = [0u8; 1];
                match stream.peek(&mut byte).await {
                    Ok(1) if byte[0] == HANDSHAKE => return accept_tls(Conn::Tcp(stream), from, tls, shared).await,
                    Ok(1) => {}
                    _ => return None,
                }
            }
            let first = read_prefix(&mut stream).await.ok().flatten()?;
            Some(First { stream: Opened::Tcp(stream), first, via: Via::Plain })
        }
        // A simulated connection: the simulator runs no TLS.
        Conn::Other(mut stream) => {
            let first = read_prefix(&mut stream).await.ok().flatten()?;
            Some(First { stream: Opened::Other(stream), first, via: Via::Plain })
        }
    }
}

/// A TLS handshake, with the peer or the client configuration as the
/// ClientHello asks.
async fn accept_tls(stream: Conn, from: SocketAddr, tls: &Tls, shared: &Shared) -> Option<First> {
    let start = match LazyConfigAcceptor::new(Acceptor::default(), stream).await {
        Ok(start) => start,
        Err(e) => {
            debug!(%from, error = %e, "not a TLS handshake after all");
            return None;
        }
    };
    let (peer, config) = tls.accept(&start.client_hello());
    if peer && !tls.peers_need_tls() {
        refused_peer(shared, from, NO_PEER_TLS);
    }
    let Some(config) = config else {
        debug!(%from, "closing a TLS client: this node serves clients without TLS (no -tlscert)");
        return None;
    };
    let mut stream = match start.into_stream(config).await {
        Ok(s) => s,
        Err(e) if peer && tls.peers_need_tls() => {
            refused_peer(shared, from, &peer_tls_failure(&e));
            return None;
        }
        Err(e) => {
            debug!(%from, error = %e, "TLS handshake with a client failed");
            return None;
        }
    };
    let first = read_prefix(&mut stream).await.ok().flatten()?;
    let via = if peer { Via::PeerTls } else { Via::ClientTls };
    Some(First { stream: Opened::Tls(Box::new(stream)), first, via })
}

/// Why a peer's TLS handshake failed, in words.
fn peer_tls_failure(e: &std::io::Error) -> String {
    use tokio_rustls::rustls::Error as Tls;
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Tls>()) {
        Some(Tls::InvalidCertificate(why)) => {
            format!("its certificate is not one this node trusts ({why:?}): it must come from this node's --peer-ca")
        }
        Some(Tls::AlertReceived(alert)) => {
            format!("it refused this node's certificate ({alert:?}): is this node's --peer-cert from its --peer-ca?")
        }
        Some(Tls::NoCertificatesPresented) => "it showed no certificate (a peer must, from --peer-cert)".into(),
        // A dialer that refuses the server's certificate just hangs up.
        _ if e.kind() == std::io::ErrorKind::UnexpectedEof => "it hung up during the TLS handshake: it may not trust \
            this node's certificate (are both nodes' --peer-cert from the same --peer-ca?)"
            .into(),
        _ => format!("TLS handshake failed: {e}"),
    }
}

/// Logs a refused peer connection, throttled.
fn refused_peer(shared: &Shared, from: SocketAddr, why: &str) {
    if shared.refused_peers.loud(why) {
        warn!(%from, "refused a peer connection: {why}");
    } else {
        debug!(%from, "refused a peer connection: {why}");
    }
}

/// True at most once a minute for each reason: a misconfigured peer
/// retries several times a second, and the log must stay readable.
#[derive(Default)]
struct Throttle(Mutex<HashMap<String, tokio::time::Instant>>);

impl Throttle {
    fn loud(&self, why: &str) -> bool {
        let now = tokio::time::Instant::now();
        let mut last = self.0.lock();
        if last.len() > 64 {
            last.clear();
        }
        let loud = last.get(why).is_none_or(|t| now.duration_since(*t) >= Duration::from_secs(60));
        if loud {
            last.insert(why.to_string(), now);
        }
        loud
    }
}

/// A stream whose first bytes have come: a peer's, or a client's.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    fn serve_client(self, first: [u8; 4], cluster: Arc<Consensus>, secrets: Arc<Secrets>) -> conn::Serving;
}

impl Stream for TcpStream {
    fn serve_client(self, first: [u8; 4], cluster: Arc<Consensus>, secrets: Arc<Secrets>) -> conn::Serving {
        Box::pin(conn::serve_tcp(self, first, cluster, secrets))
    }
}

impl Stream for Box<dyn Io> {
    fn serve_client(self, first: [u8; 4], cluster: Arc<Consensus>, secrets: Arc<Secrets>) -> conn::Serving {
        Box::pin(conn::serve(self, first, cluster, secrets))
    }
}

impl Stream for tokio_rustls::server::TlsStream<Conn> {
    fn serve_client(self, first: [u8; 4], cluster: Arc<Consensus>, secrets: Arc<Secrets>) -> conn::Serving {
        Box::pin(conn::serve(self, first, cluster, secrets))
    }
}

async fn dispatch<S: Stream>(mut stream: S, first: [u8; 4], arrival: Arrival, shared: &Shared) {
    let peers_need_tls = shared.tls.as_ref().is_some_and(|t| t.peers_need_tls());
    let clients_need_tls = shared.tls.as_ref().is_some_and(|t| t.clients_need_tls());
    if first == PEER_MAGIC || first == PEER_MAGIC_V0 {
        drop(arrival.slot);
        // A peer of either protocol holds a peer slot while it is served.
        let Some(_slot) = shared.peers.take() else {
            debug!("closing a peer connection: too many open");
            return;
        };
        if first == PEER_MAGIC_V0 {
            return shared.cluster.refuse_old_peer(stream).await;
        }
        if peers_need_tls && arrival.via != Via::PeerTls {
            refused_peer(shared, arrival.from, "it does not speak TLS, and this node's peers must (--peer-cert)");
            return shared.cluster.refuse_peer(stream, PLAIN_PEER.to_string()).await;
        }
        return shared.cluster.clone().serve_peer(stream).await;
    }
    if first[0] == HANDSHAKE {
        // TLS to a node that serves none (no frame is that long): told so in TLS's words.
        debug!(from = %arrival.from, "refusing a TLS connection: this node has no TLS configured");
        let _ = tokio::time::timeout(FIRST_BYTES, stream.write_all(&NO_TLS_HERE)).await;
        let _ = stream.shutdown().await;
        return;
    }
    let refusal = match arrival.via {
        Via::PeerTls => return debug!(from = %arrival.from, "closing a peer TLS connection that is not a peer's"),
        Via::Plain if clients_need_tls => Some(PLAIN_CLIENT.to_string()),
        _ if arrival.slot.is_none() => Some(format!(
            "too many client connections on this node (limit {}); try another node or later",
            shared.clients.max
        )),
        _ => None,
    };
    match (refusal, arrival.slot) {
        (None, Some(_slot)) => stream.serve_client(first, shared.cluster.clone(), shared.secrets.clone()).await,
        (Some(why), _) => refuse(&mut stream, first, why).await,
        (None, None) => {}
    }
}

/// Why a peer speaking TLS is refused by a node without `--peer-cert`.
const NO_PEER_TLS: &str =
    "it speaks peer TLS, and this node has no --peer-cert (give every member --peer-cert, --peer-key and --peer-ca)";
/// What a peer without TLS is told by a node whose peers need it.
const PLAIN_PEER: &str = "this cluster's peers speak TLS: start this node with --peer-cert, --peer-key and --peer-ca";
/// What a client without TLS is told by a node started with -tlscert.
const PLAIN_CLIENT: &str =
    "this node speaks TLS to clients, and only TLS: connect with TLS (doozer --cacert FILE, or cacert= in the URI)";

/// Answers a client that is not served on its first request, then closes.
async fn refuse<S: Stream>(stream: &mut S, first: [u8; 4], why: String) {
    let body = tokio::time::timeout(FIRST_BYTES, read_body(stream, first, MAX_FRAME)).await;
    // Not a request at all (an HTTP client, a broken frame): just closed.
    let Ok(Ok(request)) = body.map(|b| b.map(Request::decode)) else { return };
    let tag = request.ok().and_then(|r| r.tag);
    let mut frame = bytes::BytesMut::new();
    encode_frame(&Response::error(tag, ErrCode::Other, why), &mut frame);
    let _ = tokio::time::timeout(FIRST_BYTES, stream.write_all(&frame)).await;
    let _ = stream.shutdown().await;
}
