//! A Rust client for Doozer.
//!
//! - [`Client`]: one connection to one node, every request tagged and
//!   pipelined (many may be outstanding; answers are matched by tag), and a
//!   typed call for every verb.
//! - [`Cluster`]: the cluster named by a `doozer:?ca=HOST:PORT&ca=...&sk=SECRET`
//!   URI; a call that cannot reach its node moves to the next address, with
//!   backoff, for up to [`Options::retry_for`].
//! - [`Watch`]: follows a glob across the loss of a node, resuming from the
//!   next revision, so no change is missed or repeated.
//! - [`Lease`]: a lease kept alive while held; files set under it
//!   ([`Client::set_leased`]) go when it ends.
//! - [`Election`], [`Lock`], [`Registration`]: master election, a fair
//!   lock (both with fencing tokens) and service registration, over leases.
//! - [`Options`]: connect timeout, [`Tls`], and the DzNS boot URI that
//!   resolves `cn=NAME`.
//!
//! What it is not: a cache. A server's answer (`REV_MISMATCH`, `TOO_LATE`)
//! comes back as [`Error::Server`] and the caller decides what to do.
//!
//! ```no_run
//! # async fn demo() -> doozer_client::Result<()> {
//! let c = doozer_client::Cluster::connect("doozer:?ca=127.0.0.1:8046").await?;
//! let rev = c.set("/config/greeting", 0, "hello").await?;
//! assert_eq!(c.get_file("/config/greeting", None).await?.map(|f| f.rev), Some(rev));
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod cluster;
mod lease;
mod options;
mod recipes;
mod stream;
mod uri;
mod watch;

pub use bytes::Bytes;
pub use cluster::Cluster;
pub use doozer_proto::ErrCode;
pub use lease::{Lease, LeaseId, LeaseInfo};
pub use options::{Dialer, Dialing, Options, Tls};
pub use recipes::{Election, Held, Leader, Lock, Observer, Registration};
pub use stream::{Subscription, STREAM_BUFFER, STREAM_BUFFER_BYTES};
pub use uri::{parse_uri, Uri};
pub use watch::Watch;

use bytes::BytesMut;
use doozer_proto::{
    encode_frame, read_frame, FrameError, Request, Response, Verb, FLAG_DEL, FLAG_SET, MAX_FRAME, MAX_VALUE,
};
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

/// A file as read: its body and the revision that last changed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// The file's contents.
    pub body: Bytes,
    /// The revision of the file's last change.
    pub rev: Rev,
}

/// Why a call failed.
#[derive(Debug, Clone)]
pub enum Error {
    /// The server answered with an error code (and maybe a detail).
    Server {
        /// What the server refused (`REV_MISMATCH`, `TOO_LATE`, ...).
        code: ErrCode,
        /// The server's words, if any (`permission denied`).
        detail: String,
        /// For a write: the server proposed it but does not know whether it
        /// committed, so it may still be applied (an extension, response
        /// field 102). False: the write was not carried out.
        indeterminate: bool,
    },
    /// Could not connect to any address.
    Dial(String),
    /// The connection broke or was closed.
    Disconnected(String),
    /// The URI is not `doozer:?ca=...` or `HOST:PORT`.
    InvalidUri,
    /// The URI names a cluster (`cn=`) but no DzNS to look it up in, or the
    /// DzNS lists no member of it.
    NotFound(String),
    /// The TLS settings cannot be used, or TLS with the server failed.
    Tls(String),
    /// The request is larger than any doozerd takes; it was not sent.
    TooLarge(String),
    /// A [`Subscription`] was not read fast enough: its buffer filled and
    /// later events were not kept. Start again from its `next_rev`.
    Behind(String),
}

impl Error {
    /// For a write that failed: true if it may nevertheless have been (or
    /// still be) applied: the server said so, or the connection broke with
    /// the write in flight. Read the file back to find out.
    pub fn may_have_applied(&self) -> bool {
        match self {
            Error::Server { indeterminate, .. } => *indeterminate,
            Error::Disconnected(_) => true,
            _ => false,
        }
    }

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
            Error::Server { code, detail, .. } if detail.is_empty() => write!(f, "{code}"),
            Error::Server { code, detail, .. } => write!(f, "{code}: {detail}"),
            Error::Dial(msg) | Error::Disconnected(msg) => f.write_str(msg),
            Error::InvalidUri => f.write_str("invalid uri"),
            Error::NotFound(msg) | Error::Tls(msg) | Error::TooLarge(msg) | Error::Behind(msg) => f.write_str(msg),
        }
    }
}

impl std::error::Error for Error {}

/// What every call returns.
pub type Result<T> = std::result::Result<T, Error>;

/// A change reported by WAIT or LOG, or a file reported by WALK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The file's path (`/` for a NOP).
    pub path: String,
    /// The revision of the change (of the file, for WALK).
    pub rev: Rev,
    /// The new body; empty for a delete.
    pub body: Bytes,
    /// `FLAG_SET` (4) or `FLAG_DEL` (8); 0 for a NOP.
    pub flags: i32,
}

impl Event {
    /// True if the change wrote the file.
    pub fn is_set(&self) -> bool {
        self.flags & FLAG_SET != 0
    }

    /// True if the change deleted the file.
    pub fn is_del(&self) -> bool {
        self.flags & FLAG_DEL != 0
    }
}

/// A byte stream a client can run over: what a [`Dialer`] returns.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Where an answer goes: a call's one answer, or a stream's many.
enum Slot {
    Once(oneshot::Sender<Result<Response>>),
    Stream(stream::Slot),
}

type Waiting = HashMap<i32, Slot>;

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
    /// Connects to `HOST:PORT` with the default [`Options`].
    pub async fn connect(addr: &str) -> Result<Client> {
        Client::connect_with(addr, &Options::default()).await
    }

    /// Connects to `HOST:PORT`: TCP within `opts.connect_timeout`, then TLS
    /// if `opts.tls` is set.
    pub async fn connect_with(addr: &str, opts: &Options) -> Result<Client> {
        let timed_out = || Error::Dial(format!("dial tcp {addr}: no connection within {:?}", opts.connect_timeout));
        if let Some(dialer) = &opts.dialer {
            let stream = tokio::time::timeout(opts.connect_timeout, dialer.dial(addr))
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| dial_error(addr, &e))?;
            return Ok(Client::over(stream, addr));
        }
        let stream = tokio::time::timeout(opts.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| dial_error(addr, &e))?;
        let _ = stream.set_nodelay(true);
        let Some(tls) = &opts.tls else { return Ok(Client::over(stream, addr)) };
        let host = tls.server_name.clone().unwrap_or_else(|| host_of(addr).to_string());
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|_| Error::Tls(format!("{host:?} is not a name a certificate can carry")))?;
        let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
        let secured = tokio::time::timeout(opts.connect_timeout, connector.connect(name, stream))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| Error::Tls(tls_failure(addr, &e)))?;
        Ok(Client::over(secured, addr))
    }

    /// Connects by URI (`doozer:?ca=A&ca=B&sk=S` or `HOST:PORT`) with the
    /// default [`Options`]; see [`Client::dial_uri_with`].
    pub async fn dial_uri(uri: &str) -> Result<Client> {
        Client::dial_uri_with(uri, &Options::default()).await
    }

    /// Connects by URI: tries each address in turn until one answers, then
    /// sends ACCESS if there is a secret. With several addresses a node must
    /// also answer REV within two seconds, so a hung node (one that accepts
    /// connections but does not serve them) is passed over. A `cn=NAME` is
    /// looked up in the DzNS `opts.boot`.
    pub async fn dial_uri_with(uri: &str, opts: &Options) -> Result<Client> {
        Client::dial_parsed(&resolve(uri, opts).await?, opts).await
    }

    async fn dial_parsed(uri: &Uri, opts: &Options) -> Result<Client> {
        let opts = &uri.options(opts)?;
        let probe = uri.addrs.len() > 1;
        let mut last = Error::InvalidUri;
        for addr in &uri.addrs {
            match Client::open(addr, uri.secret.as_deref(), probe, opts).await {
                Ok(c) => return Ok(c),
                // A wrong secret is wrong everywhere.
                Err(e @ Error::Server { .. }) => return Err(e),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Connects to `addr` and sends ACCESS with `secret`. With `probe`, the
    /// node must also answer REV within two seconds (or the connect timeout,
    /// if longer), so a hung node (one whose kernel accepts connections but
    /// that does not serve them) is passed over when there are others to try.
    pub(crate) async fn open(addr: &str, secret: Option<&str>, probe: bool, opts: &Options) -> Result<Client> {
        let attempt = async {
            let c = Client::connect_with(addr, opts).await?;
            if let Some(sk) = secret {
                c.access(sk.as_bytes()).await?;
            }
            if probe {
                c.rev().await?;
            }
            Ok::<Client, Error>(c)
        };
        if !probe {
            return attempt.await;
        }
        let limit = opts.connect_timeout.max(PROBE_TIMEOUT);
        tokio::time::timeout(limit, attempt)
            .await
            .unwrap_or_else(|_| Err(Error::Dial(format!("dial tcp {addr}: no answer within {limit:?}"))))
    }

    /// Runs the protocol over an already-open stream (TLS, a proxy, a test pipe).
    pub fn over<S: AsyncRead + AsyncWrite + Send + Unpin + 'static>(stream: S, addr: &str) -> Client {
        let boxed: Box<dyn Stream> = Box::new(stream);
        let (rd, wr) = tokio::io::split(boxed);
        let shared =
            Arc::new(Shared { waiting: Mutex::new(HashMap::new()), closed: Mutex::new(None), next_tag: Mutex::new(0) });
        // Answers arrive many to a segment (a stream's events, pipelined
        // replies): read them with one call, not two per frame.
        tokio::spawn(read_loop(tokio::io::BufReader::with_capacity(READ_BUFFER, rd), shared.clone()));
        Client { shared, writer: Arc::new(tokio::sync::Mutex::new(wr)), addr: addr.to_string() }
    }

    /// The address this client is connected to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// True once the connection is gone: every call on it fails.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.lock().is_some()
    }

    /// Sends one request (its tag is assigned here) and waits for its answer.
    /// A server error comes back as `Err(Error::Server)`.
    pub async fn call(&self, mut req: Request) -> Result<Response> {
        if let Some(value) = req.value.as_ref().filter(|v| v.len() > MAX_VALUE) {
            return Err(Error::TooLarge(format!(
                "the body is {} bytes; doozerd takes at most {MAX_VALUE} (1 MiB) per file",
                value.len()
            )));
        }
        let (tag, rx) = self.register()?;
        req.tag = Some(tag);
        if let Err(e) = self.send(&req).await {
            self.shared.waiting.lock().remove(&tag);
            return Err(e);
        }
        let resp = rx.await.map_err(|_| self.closed_error())??;
        match resp.err() {
            Some(_) => Err(Client::refusal(resp)),
            None => Ok(resp),
        }
    }

    /// Writes one request.
    async fn send(&self, req: &Request) -> Result<()> {
        let mut frame = BytesMut::new();
        encode_frame(req, &mut frame);
        let mut w = self.writer.lock().await;
        // TLS holds what a full socket did not take until flushed.
        let written = match w.write_all(&frame).await {
            Ok(()) => w.flush().await,
            e => e,
        };
        written.map_err(|e| Error::Disconnected(e.to_string()))
    }

    /// A server's error answer as an [`Error`].
    fn refusal(resp: Response) -> Error {
        let indeterminate = resp.indeterminate();
        let code = resp.err().unwrap_or(ErrCode::Other);
        Error::Server { code, detail: resp.err_detail.unwrap_or_default(), indeterminate }
    }

    fn closed_error(&self) -> Error {
        self.shared.closed.lock().clone().unwrap_or_else(|| Error::Disconnected("EOF".into()))
    }

    /// Picks an unused tag and files a slot for its answer.
    fn register(&self) -> Result<(i32, oneshot::Receiver<Result<Response>>)> {
        let (tx, rx) = oneshot::channel();
        Ok((self.file(Slot::Once(tx))?, rx))
    }

    /// Picks an unused tag for a stream.
    fn register_stream(&self, slot: stream::Slot) -> Result<i32> {
        self.file(Slot::Stream(slot))
    }

    fn file(&self, slot: Slot) -> Result<i32> {
        if let Some(e) = self.shared.closed.lock().clone() {
            return Err(e);
        }
        let mut waiting = self.shared.waiting.lock();
        let mut next = self.shared.next_tag.lock();
        while waiting.contains_key(&*next) {
            *next = next.checked_add(1).unwrap_or(0);
        }
        let tag = *next;
        *next = next.checked_add(1).unwrap_or(0);
        waiting.insert(tag, slot);
        Ok(tag)
    }

    /// Forgets stream `tag` (stopped, or never sent).
    fn forget_stream(&self, tag: i32) {
        let mut waiting = self.shared.waiting.lock();
        if matches!(waiting.get(&tag), Some(Slot::Stream(_))) {
            waiting.remove(&tag);
        }
    }

    fn req(verb: Verb) -> Request {
        Request { verb: Some(verb as i32), ..Request::default() }
    }

    /// GET: the body and revision of the file at `path` (rev 0 if missing),
    /// as of revision `rev` (`None`: now). See [`Client::get_file`].
    pub async fn get(&self, path: &str, rev: Option<Rev>) -> Result<(Bytes, Rev)> {
        let r = self.call(Request { path: Some(path.into()), rev, ..Self::req(Verb::Get) }).await?;
        Ok((r.value.unwrap_or_default(), r.rev.unwrap_or(0)))
    }

    /// GET, telling a missing file (`None`) from an empty one.
    pub async fn get_file(&self, path: &str, rev: Option<Rev>) -> Result<Option<File>> {
        let (body, rev) = self.get(path, rev).await?;
        Ok((rev != 0).then_some(File { body, rev }))
    }

    /// The addresses a DzNS lists for the members of `cluster`, under
    /// `/ctl/ns/<cluster>/<id>`: `(id, addr)` pairs, by id, as of revision
    /// `rev` (`None`: now).
    pub async fn ns_lookup(&self, cluster: &str, rev: Option<Rev>) -> Result<Vec<(String, String)>> {
        let rev = match rev {
            Some(r) => r,
            None => self.rev().await?,
        };
        let dir = format!("/ctl/ns/{cluster}");
        let ids = match self.getdir_all(&dir, Some(rev)).await {
            Err(e) if e.code() == Some(ErrCode::NoEnt) => Vec::new(),
            other => other?,
        };
        let mut found = Vec::new();
        for id in ids {
            if let Some(f) = self.get_file(&format!("{dir}/{id}"), Some(rev)).await? {
                if !f.body.is_empty() {
                    found.push((id, String::from_utf8_lossy(&f.body).into_owned()));
                }
            }
        }
        Ok(found)
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

    /// FORCE_NEW_CLUSTER (an extension, docs/protocol.md): what making this
    /// node a new one-voter cluster would do, or (`carry_out`) doing it.
    pub async fn force_new_cluster(&self, carry_out: bool) -> Result<String> {
        let req = Request { rev: Some(i64::from(carry_out)), ..Self::req(Verb::ForceNewCluster) };
        let value = self.call(req).await?.value.unwrap_or_default();
        Ok(String::from_utf8_lossy(&value).into_owned())
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

    /// LOG (an extension, verb 30): the `offset`-th newest change to a file
    /// matching `glob` at or before `rev` (`None`: now), within the history
    /// window. `Err` with [`ErrCode::Range`] past the oldest. Servers that do
    /// not have it answer [`ErrCode::UnknownVerb`].
    pub async fn log(&self, glob: &str, offset: i32, rev: Option<Rev>) -> Result<Event> {
        let req = Request { path: Some(glob.into()), offset: Some(offset), rev, ..Self::req(Verb::Log) };
        Ok(event(self.call(req).await?))
    }

    /// Up to `max` changes to files matching `glob`, newest first, at or
    /// before `rev` (`None`: now), within the history window. The requests
    /// are pipelined.
    pub async fn log_all(&self, glob: &str, rev: Option<Rev>, max: usize) -> Result<Vec<Event>> {
        let upto = match rev {
            Some(r) => r,
            None => self.rev().await?,
        };
        const BATCH: usize = 64;
        let mut out = Vec::new();
        while out.len() < max {
            let n = BATCH.min(max - out.len());
            let from = out.len();
            let calls = (from..from + n).map(|i| self.log(glob, i32::try_from(i).unwrap_or(i32::MAX), Some(upto)));
            for r in futures_util::future::join_all(calls).await {
                match r {
                    Ok(e) => out.push(e),
                    Err(e) if e.code() == Some(ErrCode::Range) => return Ok(out),
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(out)
    }

    /// WAIT: the first change at or after `rev` to a file matching `glob`.
    pub async fn wait(&self, glob: &str, rev: Rev) -> Result<Event> {
        let req = Request { path: Some(glob.into()), rev: Some(rev), ..Self::req(Verb::Wait) };
        Ok(event(self.call(req).await?))
    }
}

/// A failed handshake in words: a certificate the CA does not vouch for, or
/// a server that does not speak TLS at all.
fn tls_failure(addr: &str, e: &std::io::Error) -> String {
    let text = e.to_string();
    let hint = if text.contains("CaUsedAsEndEntity") {
        "the server presents a CA certificate as its own: sign a server certificate with that CA (or make a self-signed one with CA:FALSE)"
    } else if text.contains("certificate") {
        "check that --cacert is the CA that signed the server's certificate, and that the certificate names the host dialled"
    } else {
        "does it serve TLS? doozerd does with -tlscert"
    };
    format!("TLS with {addr} failed: {text} ({hint})")
}

/// The host part of `HOST:PORT` (`[::1]:8046` gives `::1`).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host)
}

/// Parses `uri` and, if it names a cluster (`cn=`), adds the addresses the
/// DzNS `opts.boot` lists for it.
pub async fn resolve(uri: &str, opts: &Options) -> Result<Uri> {
    let mut parsed = parse_uri(uri)?;
    let Some(name) = parsed.name.clone() else { return Ok(parsed) };
    let Some(boot) = &opts.boot else {
        if parsed.addrs.is_empty() {
            return Err(Error::NotFound(format!("the uri names cluster {name:?} but no DzNS to find it in: give -b doozer:?ca=HOST:PORT (or DOOZER_BOOT_URI)")));
        }
        return Ok(parsed);
    };
    let dzns = Client::dial_parsed(&parse_uri(boot)?, opts).await?;
    for (_, addr) in dzns.ns_lookup(&name, None).await? {
        if !parsed.addrs.contains(&addr) {
            parsed.addrs.push(addr);
        }
    }
    if parsed.addrs.is_empty() {
        return Err(Error::NotFound(format!(
            "the DzNS {boot} lists no member of cluster {name:?} (under /ctl/ns/{name})"
        )));
    }
    Ok(parsed)
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

/// Bytes read from the server per call.
const READ_BUFFER: usize = 16 * 1024;

async fn read_loop<R: AsyncRead + Unpin>(mut rd: R, shared: Arc<Shared>) {
    let why = loop {
        let body = match read_frame(&mut rd, MAX_FRAME).await {
            Ok(Some(b)) => b,
            Ok(None) => break "EOF".to_string(),
            // However the server went away, the original client said EOF.
            Err(FrameError::Truncated) => break "EOF".to_string(),
            Err(FrameError::Io(e)) if gone(&e) => break "EOF".to_string(),
            Err(FrameError::BadLength(n)) => match doozer_proto::explain_bad_length(n) {
                Some(why) => break why.to_string(),
                None => break format!("bad frame length {n}: is that address a doozerd?"),
            },
            Err(e) => break e.to_string(),
        };
        let resp = match Response::decode(body) {
            Ok(r) => r,
            Err(e) => break format!("undecodable response: {e}"),
        };
        let Some(tag) = resp.tag else { continue };
        let mut waiting = shared.waiting.lock();
        let done = match waiting.get(&tag) {
            Some(Slot::Stream(s)) => !s.offer(Ok(resp)),
            Some(Slot::Once(_)) => {
                if let Some(Slot::Once(tx)) = waiting.remove(&tag) {
                    let _ = tx.send(Ok(resp));
                }
                false
            }
            None => false,
        };
        if done {
            waiting.remove(&tag);
        }
    };
    let err = Error::Disconnected(why);
    *shared.closed.lock() = Some(err.clone());
    for (_, slot) in shared.waiting.lock().drain() {
        match slot {
            Slot::Once(tx) => {
                let _ = tx.send(Err(err.clone()));
            }
            Slot::Stream(s) => {
                s.offer(Err(err.clone()));
            }
        }
    }
}
