//! A Rust client for Doozer.
//!
//! What it is for: one connection per [`Client`], every request tagged and
//! pipelined (many may be outstanding; answers are matched by tag), the
//! `doozer:?ca=HOST:PORT&sk=SECRET` URI, and typed calls for every verb.
//!
//! [`Watch`] follows a glob across the loss of a node, moving to another of
//! the URI's addresses and resuming from the next revision.
//!
//! What it is not: a cache or a general retry layer. A call fails with
//! [`Error`] and the caller decides what to do.

mod uri;
mod watch;

pub use doozer_proto::ErrCode;
pub use uri::{parse_uri, Uri};
pub use watch::Watch;

use bytes::{Bytes, BytesMut};
use doozer_proto::{encode_frame, read_frame, FrameError, Request, Response, Verb, FLAG_DEL, FLAG_SET, MAX_FRAME};
use parking_lot::Mutex;
use prost::Message;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// A revision number.
pub type Rev = i64;

/// How long a node of a multi-address URI has to answer when dialled.
const PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Why a call failed.
#[derive(Debug, Clone)]
pub enum Error {
    /// The server answered with an error code (and maybe a detail).
    Server { code: ErrCode, detail: String },
    /// Could not connect to any address.
    Dial(String),
    /// The connection broke or was closed.
    Disconnected(String),
    /// The URI is not `doozer:?ca=...` or `HOST:PORT`.
    InvalidUri,
}

impl Error {
    /// The server's error code, if this is a server error.
    pub fn code(&self) -> Option<ErrCode> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl std::fmt::Display for Error {
    /// As the Go client prints them: `REV_MISMATCH`, `OTHER: permission denied`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Server { code, detail } if detail.is_empty() => write!(f, "{code}"),
            Error::Server { code, detail } => write!(f, "{code}: {detail}"),
            Error::Dial(msg) | Error::Disconnected(msg) => f.write_str(msg),
            Error::InvalidUri => f.write_str("invalid uri"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// A change reported by WAIT or a file reported by WALK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub path: String,
    pub rev: Rev,
    pub body: Bytes,
    pub flags: i32,
}

impl Event {
    pub fn is_set(&self) -> bool {
        self.flags & FLAG_SET != 0
    }

    pub fn is_del(&self) -> bool {
        self.flags & FLAG_DEL != 0
    }
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

type Waiting = HashMap<i32, oneshot::Sender<Result<Response>>>;

struct Shared {
    waiting: Mutex<Waiting>,
    /// Set once the connection is gone; later calls fail with it.
    closed: Mutex<Option<Error>>,
    next_tag: Mutex<i32>,
}

/// A connection to one doozerd. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    writer: Arc<tokio::sync::Mutex<WriteHalf<Box<dyn Stream>>>>,
    addr: String,
}

fn dial_error(addr: &str, e: &std::io::Error) -> Error {
    let reason = match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        _ => e.to_string(),
    };
    Error::Dial(format!("dial tcp {addr}: connect: {reason}"))
}

impl Client {
    /// Connects to `HOST:PORT`.
    pub async fn connect(addr: &str) -> Result<Client> {
        let stream = TcpStream::connect(addr).await.map_err(|e| dial_error(addr, &e))?;
        let _ = stream.set_nodelay(true);
        Ok(Client::over(Box::new(stream), addr))
    }

    /// Connects by URI (`doozer:?ca=A&ca=B&sk=S` or `HOST:PORT`): tries each
    /// address in turn until one answers, then sends ACCESS if there is a
    /// secret. With several addresses a node must also answer REV within two
    /// seconds, so a hung node (one that accepts connections but does not
    /// serve them) is passed over.
    pub async fn dial_uri(uri: &str) -> Result<Client> {
        let uri = parse_uri(uri)?;
        let probe = uri.addrs.len() > 1;
        let mut last = Error::InvalidUri;
        for addr in &uri.addrs {
            let attempt = async {
                let c = Client::connect(addr).await?;
                if let Some(sk) = &uri.secret {
                    c.access(sk.as_bytes()).await?;
                }
                if probe {
                    c.rev().await?;
                }
                Ok::<Client, Error>(c)
            };
            let answered = if probe {
                tokio::time::timeout(PROBE_TIMEOUT, attempt).await.unwrap_or_else(|_| {
                    Err(Error::Dial(format!("dial tcp {addr}: no answer within {PROBE_TIMEOUT:?}")))
                })
            } else {
                attempt.await
            };
            match answered {
                Ok(c) => return Ok(c),
                // A wrong secret is wrong everywhere.
                Err(e @ Error::Server { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Runs the protocol over an already-open stream (TLS, a proxy, a test pipe).
    pub fn over<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stream: S, addr: &str) -> Client {
        let boxed: Box<dyn Stream> = Box::new(stream);
        let (rd, wr) = tokio::io::split(boxed);
        let shared =
            Arc::new(Shared { waiting: Mutex::new(HashMap::new()), closed: Mutex::new(None), next_tag: Mutex::new(0) });
        tokio::spawn(read_loop(rd, shared.clone()));
        Client { shared, writer: Arc::new(tokio::sync::Mutex::new(wr)), addr: addr.to_string() }
    }

    /// The address this client is connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one request (its tag is assigned here) and waits for its answer.
    /// A server error comes back as `Err(Error::Server)`.
    pub async fn call(&self, mut req: Request) -> Result<Response> {
        let (tag, rx) = self.register()?;
        req.tag = Some(tag);
        let mut frame = BytesMut::new();
        encode_frame(&req, &mut frame);
        let written = self.writer.lock().await.write_all(&frame).await;
        if let Err(e) = written {
            self.shared.waiting.lock().remove(&tag);
            return Err(Error::Disconnected(e.to_string()));
        }
        let resp = rx.await.map_err(|_| self.closed_error())??;
        match resp.err() {
            Some(code) => Err(Error::Server { code, detail: resp.err_detail.unwrap_or_default() }),
            None => Ok(resp),
        }
    }

    fn closed_error(&self) -> Error {
        self.shared.closed.lock().clone().unwrap_or_else(|| Error::Disconnected("EOF".into()))
    }

    /// Picks an unused tag and files a slot for its answer.
    fn register(&self) -> Result<(i32, oneshot::Receiver<Result<Response>>)> {
        if let Some(e) = self.shared.closed.lock().clone() {
            return Err(e);
        }
        let (tx, rx) = oneshot::channel();
        let mut waiting = self.shared.waiting.lock();
        let mut next = self.shared.next_tag.lock();
        while waiting.contains_key(&*next) {
            *next = next.checked_add(1).unwrap_or(0);
        }
        let tag = *next;
        *next = next.checked_add(1).unwrap_or(0);
        waiting.insert(tag, tx);
        Ok((tag, rx))
    }

    fn req(verb: Verb) -> Request {
        Request { verb: Some(verb as i32), ..Request::default() }
    }

    /// GET: the body and revision of the file at `path` (rev 0 if missing).
    pub async fn get(&self, path: &str, rev: Option<Rev>) -> Result<(Bytes, Rev)> {
        let r = self.call(Request { path: Some(path.into()), rev, ..Self::req(Verb::Get) }).await?;
        Ok((r.value.unwrap_or_default(), r.rev.unwrap_or(0)))
    }

    /// SET: writes `body` if `rev` is -1 or at least the file's revision; returns the new revision.
    pub async fn set(&self, path: &str, rev: Rev, body: impl Into<Bytes>) -> Result<Rev> {
        let req = Request { path: Some(path.into()), rev: Some(rev), value: Some(body.into()), ..Self::req(Verb::Set) };
        Ok(self.call(req).await?.rev.unwrap_or(0))
    }

    /// DEL: deletes the file under the same revision rule as SET.
    pub async fn del(&self, path: &str, rev: Rev) -> Result<()> {
        self.call(Request { path: Some(path.into()), rev: Some(rev), ..Self::req(Verb::Del) }).await.map(drop)
    }

    /// REV: the node's current revision.
    pub async fn rev(&self) -> Result<Rev> {
        Ok(self.call(Self::req(Verb::Rev)).await?.rev.unwrap_or(0))
    }

    /// NOP: one change that does nothing; returns once it is committed.
    pub async fn nop(&self) -> Result<()> {
        self.call(Self::req(Verb::Nop)).await.map(drop)
    }

    /// SELF: the node's id.
    pub async fn self_id(&self) -> Result<Bytes> {
        Ok(self.call(Self::req(Verb::SelfId)).await?.value.unwrap_or_default())
    }

    /// ACCESS: presents a secret.
    pub async fn access(&self, secret: &[u8]) -> Result<()> {
        let req = Request { value: Some(Bytes::copy_from_slice(secret)), ..Self::req(Verb::Access) };
        self.call(req).await.map(drop)
    }

    /// STAT: `(len, rev)`: a file's length and revision, a directory's entry count
    /// and -2, or `(0, 0)` if missing.
    pub async fn stat(&self, path: &str, rev: Option<Rev>) -> Result<(i32, Rev)> {
        let r = self.call(Request { path: Some(path.into()), rev, ..Self::req(Verb::Stat) }).await?;
        Ok((r.len.unwrap_or(0), r.rev.unwrap_or(0)))
    }

    /// GETDIR: the name at `offset` in the directory at `path`.
    pub async fn getdir(&self, path: &str, offset: i32, rev: Option<Rev>) -> Result<String> {
        let req = Request { path: Some(path.into()), offset: Some(offset), rev, ..Self::req(Verb::Getdir) };
        Ok(self.call(req).await?.path.unwrap_or_default())
    }

    /// Every name in the directory at `path`, paging GETDIR until RANGE.
    pub async fn getdir_all(&self, path: &str, rev: Option<Rev>) -> Result<Vec<String>> {
        let mut names = Vec::new();
        loop {
            match self.getdir(path, names.len() as i32, rev).await {
                Ok(name) => names.push(name),
                Err(e) if e.code() == Some(ErrCode::Range) => return Ok(names),
                Err(e) => return Err(e),
            }
        }
    }

    /// WALK: the file at `offset` among those matching `glob`.
    pub async fn walk(&self, glob: &str, offset: i32, rev: Option<Rev>) -> Result<Event> {
        let req = Request { path: Some(glob.into()), offset: Some(offset), rev, ..Self::req(Verb::Walk) };
        Ok(event(self.call(req).await?))
    }

    /// WAIT: the first change at or after `rev` to a file matching `glob`.
    pub async fn wait(&self, glob: &str, rev: Rev) -> Result<Event> {
        let req = Request { path: Some(glob.into()), rev: Some(rev), ..Self::req(Verb::Wait) };
        Ok(event(self.call(req).await?))
    }
}

fn event(r: Response) -> Event {
    Event {
        path: r.path.unwrap_or_default(),
        rev: r.rev.unwrap_or(0),
        body: r.value.unwrap_or_default(),
        flags: r.flags.unwrap_or(0),
    }
}

fn gone(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof)
}

async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, shared: Arc<Shared>) {
    let why = loop {
        let body = match read_frame(&mut rd, MAX_FRAME).await {
            Ok(Some(b)) => b,
            Ok(None) => break "EOF".to_string(),
            // However the server went away, the original client said EOF.
            Err(FrameError::Truncated) => break "EOF".to_string(),
            Err(FrameError::Io(e)) if gone(&e) => break "EOF".to_string(),
            Err(e) => break e.to_string(),
        };
        let resp = match Response::decode(body) {
            Ok(r) => r,
            Err(e) => break format!("undecodable response: {e}"),
        };
        let Some(tag) = resp.tag else { continue };
        if let Some(tx) = shared.waiting.lock().remove(&tag) {
            let _ = tx.send(Ok(resp));
        }
    };
    let err = Error::Disconnected(why);
    *shared.closed.lock() = Some(err.clone());
    for (_, tx) in shared.waiting.lock().drain() {
        let _ = tx.send(Err(err.clone()));
    }
}
