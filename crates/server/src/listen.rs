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
//!
//! Not here: what a client connection does (`conn`), what a peer says (`consensus`).

use crate::access::Secrets;
use crate::conn;
use crate::consensus::{Consensus, PEER_MAGIC, PEER_MAGIC_V0};
use crate::rt::{Io, Listener, Stream as Conn};
use doozer_proto::{encode_frame, read_body, read_prefix, ErrCode, Request, Response, MAX_FRAME};
use parking_lot::Mutex;
use prost::Message;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
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
    tls: Option<TlsAcceptor>,
    clients: Slots,
    peers: Slots,
    handshakes: Handshakes,
}

/// Accepts on `listener` until `stop`, then closes every connection it accepted.
pub async fn accept_loop(
    listener: Listener,
    cluster: Arc<Consensus>,
    secrets: Arc<Secrets>,
    tls: Option<TlsAcceptor>,
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
                _ = serve(stream, &shared) => {}
            }
        });
    }
}

/// One accepted connection, from its first bytes to its end. Within the
/// client cap it holds a client slot from the start; past it, it is a
/// handshake that a newer one may push out.
async fn serve(stream: Conn, shared: &Shared) {
    let slot = shared.clients.take();
    let handshake = slot.is_none().then(|| shared.handshakes.begin());
    let evicted = handshake.as_ref().map(|(_, t)| t.clone()).unwrap_or_default();
    let opened = tokio::select! {
        _ = evicted.cancelled() => None,
        r = tokio::time::timeout(FIRST_BYTES, open(stream, shared)) => r.ok().flatten(),
    };
    if let Some((id, _)) = handshake {
        shared.handshakes.end(id);
    }
    match opened {
        Some(Opened::Tcp(stream, first)) => dispatch(stream, first, slot, shared).await,
        Some(Opened::Other(stream, first)) => dispatch(stream, first, slot, shared).await,
        Some(Opened::Tls(stream, first)) => dispatch(*stream, first, slot, shared).await,
        None => debug!("closing a connection that sent nothing in time"),
    }
}

enum Opened {
    Tcp(TcpStream, [u8; 4]),
    Other(Box<dyn Io>, [u8; 4]),
    Tls(Box<tokio_rustls::server::TlsStream<Conn>>, [u8; 4]),
}

/// The TLS handshake, if any, and the first four bytes.
async fn open(stream: Conn, shared: &Shared) -> Option<Opened> {
    match (&shared.tls, stream) {
        (None, Conn::Tcp(mut stream)) => {
            let first = read_prefix(&mut stream).await.ok().flatten()?;
            Some(Opened::Tcp(stream, first))
        }
        (None, Conn::Other(mut stream)) => {
            let first = read_prefix(&mut stream).await.ok().flatten()?;
            Some(Opened::Other(stream, first))
        }
        (Some(tls), stream) => {
            let mut s = match tls.accept(stream).await {
                Ok(s) => s,
                Err(e) => {
                    debug!(error = %e, "TLS handshake failed");
                    return None;
                }
            };
            let first = read_prefix(&mut s).await.ok().flatten()?;
            Some(Opened::Tls(Box::new(s), first))
        }
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

async fn dispatch<S: Stream>(mut stream: S, first: [u8; 4], client_slot: Option<Slot>, shared: &Shared) {
    if first == PEER_MAGIC || first == PEER_MAGIC_V0 {
        drop(client_slot);
        // A peer of either protocol holds a peer slot while it is served.
        let Some(_slot) = shared.peers.take() else {
            debug!("closing a peer connection: too many open");
            return;
        };
        if first == PEER_MAGIC_V0 {
            return shared.cluster.refuse_old_peer(stream).await;
        }
        return shared.cluster.clone().serve_peer(stream).await;
    }
    match client_slot {
        Some(_slot) => stream.serve_client(first, shared.cluster.clone(), shared.secrets.clone()).await,
        None => refuse(&mut stream, first, shared.clients.max).await,
    }
}

/// Answers a client past the cap on its first request, then closes.
async fn refuse<S: Stream>(stream: &mut S, first: [u8; 4], max: usize) {
    let body = tokio::time::timeout(FIRST_BYTES, read_body(stream, first, MAX_FRAME)).await;
    let tag = match body {
        Ok(Ok(b)) => Request::decode(b).ok().and_then(|r| r.tag),
        _ => None,
    };
    let detail = format!("too many client connections on this node (limit {max}); try another node or later");
    let mut frame = bytes::BytesMut::new();
    encode_frame(&Response::error(tag, ErrCode::Other, detail), &mut frame);
    let _ = tokio::time::timeout(FIRST_BYTES, stream.write_all(&frame)).await;
    let _ = stream.shutdown().await;
}
