//! One client connection: read frames, hand requests to the session, write answers.
//!
//! The reader never waits on an answer, so pipelined requests are answered as
//! each completes. On a plain TCP connection an answer is written straight to
//! the socket by whoever has it (the commit of a write, the apply that wakes a
//! WAIT), without waking a task; only when the socket is full does a writer
//! task take over, batching what queues meanwhile into one write, until it has
//! caught up. (Answers are matched by tag, so their order does not matter;
//! only frames must not interleave.) TLS connections always use the writer,
//! which flushes whenever it has written all that is queued.
//!
//! Every request counts as pending until its answer is written; past the
//! per-connection limit requests get an OTHER error, and a client that keeps
//! sending without reading is disconnected rather than buffered without bound.
//!
//! Connections reach here from `listen`, which has read their first four
//! bytes and sent peers (whose bytes are an impossible, negative frame
//! length) to consensus. Client connections wait until this node has caught
//! up with its cluster.

use crate::access::Secrets;
use crate::consensus::Consensus;
use crate::session::Session;
use bytes::{BufMut, Bytes, BytesMut};
use doozer_proto::{encode_frame, read_body, read_frame, ErrCode, Request, Response, MAX_FRAME};
use prost::Message;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
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

/// Where a connection's answers go. Cheap to clone: every request whose
/// answer comes later holds one.
#[derive(Clone)]
pub struct Outbox(Arc<Sink>);

struct Sink {
    queue: mpsc::UnboundedSender<Bytes>,
    /// Answers queued or being written.
    pending: Arc<AtomicUsize>,
    /// Bytes of answers queued and not yet written (what a client that
    /// does not read costs this node).
    unwritten: Arc<AtomicUsize>,
    /// Plain TCP: the socket, written directly while the writer task is idle.
    direct: Option<Direct>,
}

struct Direct {
    socket: Arc<OwnedWriteHalf>,
    /// True while the writer task has bytes to write: answers then queue
    /// behind them instead of going straight to the socket.
    busy: Arc<parking_lot::Mutex<bool>>,
    cancel: CancellationToken,
}

impl Outbox {
    /// Sends an answer; if the connection is gone, nobody wants it.
    pub fn send(&self, r: Response) {
        let mut frame = BytesMut::with_capacity(4 + r.encoded_len());
        encode_frame(&r, &mut frame);
        self.send_frame(frame);
    }

    /// Sends an answer made of `tag` and `rest`, the rest of its fields
    /// already encoded: one event told to many waiters is encoded once.
    pub fn send_tagged(&self, tag: Option<i32>, rest: &[u8]) {
        self.send_frame(tagged_frame(tag, rest));
    }

    fn send_frame(&self, mut frame: BytesMut) {
        let sink = &*self.0;
        let Some(d) = &sink.direct else {
            return sink.queue(frame.freeze());
        };
        let mut busy = d.busy.lock();
        if *busy {
            // Queued under the lock, so the writer sees it before it goes idle.
            return sink.queue(frame.freeze());
        }
        match d.socket.try_write(&frame) {
            Ok(n) if n == frame.len() => {
                sink.pending.fetch_sub(1, Ordering::SeqCst);
            }
            Ok(n) => {
                *busy = true;
                sink.queue(frame.split_off(n).freeze());
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                *busy = true;
                sink.queue(frame.freeze());
            }
            Err(e) => {
                debug!(error = %e, "closing connection: write failed");
                d.cancel.cancel();
            }
        }
    }

    /// Sends one more answer to a request that has several (a STREAM's events).
    pub fn send_more(&self, r: Response) {
        self.0.pending.fetch_add(1, Ordering::SeqCst);
        self.send(r);
    }

    /// [`Outbox::send_more`] for an answer encoded as [`Outbox::send_tagged`] takes it.
    pub fn send_more_tagged(&self, tag: Option<i32>, rest: &[u8]) {
        self.0.pending.fetch_add(1, Ordering::SeqCst);
        self.send_tagged(tag, rest);
    }

    /// A request is done without an answer of its own (a STREAM that STOP ended).
    pub fn settle(&self) {
        self.0.pending.fetch_sub(1, Ordering::SeqCst);
    }

    /// Answers queued or being written, and requests still to be answered.
    pub fn pending(&self) -> usize {
        self.0.pending.load(Ordering::Relaxed)
    }

    /// Bytes of answers waiting for the client to read them.
    pub fn unwritten(&self) -> usize {
        self.0.unwritten.load(Ordering::Relaxed)
    }
}

impl Sink {
    /// Queues (the rest of) one answer's frame for the writer task.
    fn queue(&self, frame: Bytes) {
        self.unwritten.fetch_add(frame.len(), Ordering::Relaxed);
        let _ = self.queue.send(frame);
    }
}

/// The frame of an answer made of `tag` and `rest`, its other fields
/// encoded: the tag is field 1, so this is byte for byte what encoding the
/// whole answer gives (prost writes fields in number order).
pub(crate) fn tagged_frame(tag: Option<i32>, rest: &[u8]) -> BytesMut {
    let head = Response { tag, ..Response::default() };
    let len = head.encoded_len() + rest.len();
    let mut frame = BytesMut::with_capacity(4 + len);
    frame.put_u32(len as u32);
    // Cannot fail: the buffer was made for exactly this length.
    let _ = head.encode(&mut frame);
    frame.extend_from_slice(rest);
    frame
}

/// A client connection being served.
pub type Serving = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Serves a plain TCP client connection whose first four bytes were `first`.
pub async fn serve_tcp(stream: TcpStream, first: [u8; 4], cluster: Arc<Consensus>, secrets: Arc<Secrets>) {
    let (rd, wr) = stream.into_split();
    client(rd, Writer::Direct(Arc::new(wr)), first, cluster, secrets).await
}

/// Serves a client connection over another transport (TLS): answers go through the writer task.
pub async fn serve<S>(stream: S, first: [u8; 4], cluster: Arc<Consensus>, secrets: Arc<Secrets>)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (rd, wr) = tokio::io::split(stream);
    client(rd, Writer::Queued(Box::new(wr)), first, cluster, secrets).await
}

/// How a connection's answers reach its socket.
enum Writer {
    Direct(Arc<OwnedWriteHalf>),
    Queued(Box<dyn AsyncWrite + Send + Unpin>),
}

/// Serves one client connection until the client closes it or breaks the protocol.
async fn client<R>(rd: R, wr: Writer, first: [u8; 4], cluster: Arc<Consensus>, secrets: Arc<Secrets>)
where
    R: AsyncRead + Send + Unpin + 'static,
{
    cluster.node().wait_ready().await;
    let node = cluster.node().clone();
    let _counted = node.metrics().connection();
    // Pipelined requests arrive many to a segment: read them with one call,
    // not two per frame (prefix, then body).
    let mut rd = tokio::io::BufReader::with_capacity(READ_BUFFER, rd);
    let mut first = Some(first);
    let (tx, rx) = mpsc::unbounded_channel();
    let pending = Arc::new(AtomicUsize::new(0));
    let unwritten = Arc::new(AtomicUsize::new(0));
    let cancel = CancellationToken::new();
    let (mut writer, direct) = match wr {
        Writer::Direct(socket) => {
            let busy = Arc::new(parking_lot::Mutex::new(false));
            let counts = Counts { pending: pending.clone(), unwritten: unwritten.clone() };
            let task = direct_write_loop(socket.clone(), rx, busy.clone(), counts, cancel.clone());
            (tokio::spawn(task), Some(Direct { socket, busy, cancel: cancel.clone() }))
        }
        Writer::Queued(wr) => {
            let counts = Counts { pending: pending.clone(), unwritten: unwritten.clone() };
            (tokio::spawn(write_loop(wr, rx, counts, cancel.clone())), None)
        }
    };
    let outbox = Outbox(Arc::new(Sink { queue: tx, pending: pending.clone(), unwritten, direct }));
    let max_pending = node.limits().max_pending;
    let mut session = Session::new(cluster, secrets, outbox, cancel.clone());
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

/// Most bytes the writer gathers into one write.
const BATCH: usize = 256 * 1024;

/// The first queued item and whatever else is ready, up to [`BATCH`] bytes.
/// Each item is one answer's frame (or what a full socket left of it).
async fn next_batch(rx: &mut mpsc::UnboundedReceiver<Bytes>, buf: &mut BytesMut) -> Option<usize> {
    buf.extend_from_slice(&rx.recv().await?);
    let mut count = 1;
    while buf.len() < BATCH {
        match rx.try_recv() {
            Ok(frame) => buf.extend_from_slice(&frame),
            Err(_) => break,
        }
        count += 1;
    }
    Some(count)
}

/// What a writer tells the connection as it writes.
struct Counts {
    pending: Arc<AtomicUsize>,
    unwritten: Arc<AtomicUsize>,
}

impl Counts {
    /// `answers` in `bytes` have been written.
    fn written(&self, answers: usize, bytes: usize) {
        self.pending.fetch_sub(answers, Ordering::SeqCst);
        self.unwritten.fetch_sub(bytes, Ordering::Relaxed);
    }
}

/// The writer of a plain TCP connection: it runs only while answers are
/// queued (the socket was full), then hands writing back to [`Outbox::send`].
async fn direct_write_loop(
    socket: Arc<OwnedWriteHalf>,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    busy: Arc<parking_lot::Mutex<bool>>,
    counts: Counts,
    cancel: CancellationToken,
) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(count) = next_batch(&mut rx, &mut buf).await {
        if let Err(e) = write_all(&socket, &buf).await {
            debug!(error = %e, "closing connection: write failed");
            cancel.cancel();
            return;
        }
        counts.written(count, buf.len());
        buf.clear();
        let mut busy = busy.lock();
        if rx.is_empty() {
            *busy = false;
        }
    }
}

async fn write_all(socket: &OwnedWriteHalf, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        socket.writable().await?;
        match socket.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn write_loop<W: AsyncWrite>(
    wr: W,
    mut rx: mpsc::UnboundedReceiver<Bytes>,
    counts: Counts,
    cancel: CancellationToken,
) {
    tokio::pin!(wr);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(count) = next_batch(&mut rx, &mut buf).await {
        // A transport that buffers (TLS keeps the records a full socket did not
        // take) sends them only when written to again or flushed: flush before
        // waiting for more answers, or the last ones may never leave.
        let written = match wr.write_all(&buf).await {
            Ok(()) if rx.is_empty() => wr.flush().await,
            done => done,
        };
        if let Err(e) = written {
            debug!(error = %e, "closing connection: write failed");
            cancel.cancel();
            return;
        }
        counts.written(count, buf.len());
        buf.clear();
    }
    let _ = wr.shutdown().await;
}
