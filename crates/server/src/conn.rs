//! One client connection: read frames, hand requests to the session, write answers.
//!
//! The reader never waits on an answer, so pipelined requests are answered as
//! each completes. A writer task batches whatever answers are ready into one
//! write. Every request counts as pending until its answer is written; past the
//! per-connection limit requests get an OTHER error, and a client that keeps
//! sending without reading is disconnected rather than buffered without bound.
//!
//! A connection whose first four bytes are the peer magic (an impossible,
//! negative frame length) belongs to another member and goes to consensus.
//! Client connections wait until this node has caught up with its cluster.

use crate::access::Secrets;
use crate::consensus::{Consensus, PEER_MAGIC};
use crate::session::{Outbox, Session};
use bytes::BytesMut;
use doozer_proto::{encode_frame, read_body, read_frame, read_prefix, ErrCode, Request, Response, MAX_FRAME};
use prost::Message;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Error answers a non-reading client may have queued beyond `max_pending`
/// before it is disconnected.
const OVERFLOW_ANSWERS: usize = 1024;

/// Bytes read from a client connection per call.
const READ_BUFFER: usize = 4 * 1024;

/// How long the writer may take to deliver the last answers after the client
/// has stopped sending; a client that is not reading them is not waited for.
const DRAIN: Duration = Duration::from_secs(10);

/// Serves one connection until the client closes it or breaks the protocol.
pub async fn serve<S>(mut stream: S, cluster: Arc<Consensus>, secrets: Arc<Secrets>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let first = match read_prefix(&mut stream).await {
        Ok(Some(prefix)) => prefix,
        _ => return,
    };
    if first == PEER_MAGIC {
        return cluster.serve_peer(stream).await;
    }
    cluster.node().wait_ready().await;
    let node = cluster.node().clone();
    let _counted = node.metrics().connection();
    let (rd, wr) = tokio::io::split(stream);
    // Pipelined requests arrive many to a segment: read them with one call,
    // not two per frame (prefix, then body).
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
    let mut first = Some(first);
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(AtomicUsize::new(0));
    let cancel = CancellationToken::new();
    let mut writer = tokio::spawn(write_loop(wr, rx, pending.clone(), cancel.clone()));
    let max_pending = node.limits().max_pending;
    let mut session = Session::new(cluster, secrets, Outbox(tx), cancel.clone());
    let mut flooded = false;
    loop {
        let frame = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            f = next_frame(&mut rd, first.take()) => f,
        };
        let body = match frame {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(e) => {
                debug!(error = %e, "closing connection: bad frame");
                break;
            }
        };
        let req = match Request::decode(body) {
            Ok(req) => req,
            Err(e) => {
                debug!(error = %e, "closing connection: undecodable request");
                break;
            }
        };
        let n = pending.fetch_add(1, Ordering::SeqCst);
        if n >= max_pending + OVERFLOW_ANSWERS {
            debug!("closing connection: client does not read its answers");
            flooded = true;
            break;
        }
        if n >= max_pending {
            let detail = format!("too many pending requests on this connection (limit {max_pending})");
            session.outbox().send(Response::error(req.tag, ErrCode::Other, detail));
            continue;
        }
        session.handle(req);
    }
    // Held WAITs and reads of future revisions end now; writes already received
    // still finish, and the writer sends what is left, then stops.
    cancel.cancel();
    drop(session);
    let drained = !flooded && tokio::time::timeout(DRAIN, &mut writer).await.is_ok();
    if !drained {
        writer.abort();
    }
}

async fn next_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    prefix: Option<[u8; 4]>,
) -> Result<Option<bytes::Bytes>, doozer_proto::FrameError> {
    match prefix {
        Some(p) => read_body(rd, p, MAX_FRAME).await.map(Some),
        None => read_frame(rd, MAX_FRAME).await,
    }
}

async fn write_loop<W: AsyncWrite>(
    wr: W,
    mut rx: mpsc::UnboundedReceiver<Response>,
    pending: Arc<AtomicUsize>,
    cancel: CancellationToken,
) {
    const BATCH: usize = 256 * 1024;
    tokio::pin!(wr);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        let mut count = 1;
        encode_frame(&first, &mut buf);
        while buf.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => {
                    encode_frame(&r, &mut buf);
                    count += 1;
                }
                Err(_) => break,
            }
        }
        if let Err(e) = wr.write_all(&buf).await {
            debug!(error = %e, "closing connection: write failed");
            cancel.cancel();
            return;
        }
        buf.clear();
        pending.fetch_sub(count, Ordering::SeqCst);
    }
    let _ = wr.shutdown().await;
}
