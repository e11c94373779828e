//! A cluster behind one handle: calls go to one node at a time and move to
//! the next of the URI's addresses when that node cannot be reached.
//!
//! Retry rules, the same for every call:
//! - a call that could not be sent (no node answered, or the connection was
//!   already gone) is tried on the next address, with backoff from 50 ms to
//!   2 s, until [`Options::retry_for`] has passed;
//! - a read (GET, STAT, GETDIR, WALK, WAIT, REV, SELF) whose connection broke
//!   while it was in flight is sent again: reading twice changes nothing;
//! - a write (SET, DEL, NOP) whose connection broke in flight is not: it may
//!   have committed, and sending it again could apply it twice. The error
//!   says so; read the file back to find out;
//! - with several addresses, a node that stops answering (a REV probe every
//!   two seconds goes unanswered for two) counts as a broken connection, so a
//!   hung node does not hold a call forever.
//!
//! What it is not: a load balancer. One node serves every call until it fails.

use crate::{resolve, Client, Error, Event, File, Options, Result, Rev, Uri, Watch};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A handle on a cluster; cheap to clone, clones share the connection.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    uri: Uri,
    /// The URI as given, for [`Watch`].
    text: String,
    opts: Options,
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    client: Option<Client>,
    /// Index in `uri.addrs` of the node in use or to try next.
    at: usize,
}

/// Whether a call may be sent again after its connection broke in flight.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    Yes,
    No,
}

const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(2);

impl Cluster {
    /// The cluster at `uri` (`doozer:?ca=...`, `HOST:PORT`, or `doozer:?cn=NAME`
    /// with a boot URI in the options), with the default [`Options`].
    pub async fn connect(uri: &str) -> Result<Cluster> {
        Cluster::connect_with(uri, Options::default()).await
    }

    /// The cluster at `uri`; connects to the first address that answers
    /// (trying again, by the rules above, for [`Options::retry_for`]).
    pub async fn connect_with(uri: &str, opts: Options) -> Result<Cluster> {
        let resolved = resolve(uri, &opts).await?;
        let opts = resolved.options(&opts)?;
        let inner = Inner { uri: resolved, text: uri.to_string(), opts, state: Default::default() };
        let cluster = Cluster { inner: Arc::new(inner) };
        // The first connection is retried as calls are: nodes started a
        // moment ago may not be listening yet.
        cluster.run_read(|_| async { Ok(()) }).await?;
        Ok(cluster)
    }

    /// The addresses calls may go to, in order.
    pub fn addrs(&self) -> &[String] {
        &self.inner.uri.addrs
    }

    /// The connection in use, opening one (to the next address that answers)
    /// if there is none or it broke.
    pub async fn client(&self) -> Result<Client> {
        let mut state = self.inner.state.lock().await;
        if let Some(c) = state.client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        state.client = None;
        let addrs = &self.inner.uri.addrs;
        let mut last = Error::InvalidUri;
        for _ in 0..addrs.len() {
            let addr = &addrs[state.at % addrs.len()];
            match self.open(addr).await {
                Ok(c) => {
                    state.client = Some(c.clone());
                    return Ok(c);
                }
                Err(e @ Error::Server { .. }) => return Err(e),
                Err(e) => last = e,
            }
            state.at = (state.at + 1) % addrs.len();
        }
        Err(last)
    }

    async fn open(&self, addr: &str) -> Result<Client> {
        let probe = self.inner.uri.addrs.len() > 1;
        Client::open(addr, self.inner.uri.secret.as_deref(), probe, &self.inner.opts).await
    }

    /// Forgets `broken` and moves on to the next address.
    async fn drop_client(&self, broken: &Client) {
        let mut state = self.inner.state.lock().await;
        if state.client.as_ref().is_some_and(|c| c.addr() == broken.addr()) {
            state.client = None;
            state.at = (state.at + 1) % self.inner.uri.addrs.len().max(1);
        }
    }

    /// Runs `f` on a node, moving on and retrying by the rules above.
    async fn run<T, F, Fut>(&self, resend: Resend, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let start = Instant::now();
        let mut pause = FIRST_PAUSE;
        loop {
            let failed = match self.client().await {
                Ok(c) => match self.watched(&c, f(c.clone())).await {
                    Err(Error::Disconnected(why)) => {
                        self.drop_client(&c).await;
                        if resend == Resend::No {
                            return Err(Error::Disconnected(format!(
                                "{why}: the connection to {} broke with the write in flight; it may have committed (read it back)",
                                c.addr()
                            )));
                        }
                        Error::Disconnected(why)
                    }
                    other => return other,
                },
                Err(e @ (Error::Dial(_) | Error::Disconnected(_))) => e,
                Err(e) => return Err(e),
            };
            if start.elapsed() + pause > self.inner.opts.retry_for {
                return Err(failed);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    }

    /// `run` for a call that may be sent again (a read, a keep-alive).
    pub(crate) async fn run_read<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.run(Resend::Yes, f).await
    }

    /// `run` for a write: not sent again once it may have reached a node.
    pub(crate) async fn run_write<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.run(Resend::No, f).await
    }

    /// `call`, or a broken connection if the node stops answering meanwhile
    /// and there is another to go to.
    async fn watched<T>(&self, c: &Client, call: impl Future<Output = Result<T>>) -> Result<T> {
        if self.inner.uri.addrs.len() < 2 {
            return call.await;
        }
        tokio::select! {
            r = call => r,
            why = crate::watch::stalled(c) => Err(Error::Disconnected(why)),
        }
    }

    /// GET: `(body, rev)`, rev 0 if missing. See [`Client::get`].
    pub async fn get(&self, path: &str, rev: Option<Rev>) -> Result<(Bytes, Rev)> {
        self.run(Resend::Yes, |c| async move { c.get(path, rev).await }).await
    }

    /// GET, telling a missing file (`None`) from an empty one.
    pub async fn get_file(&self, path: &str, rev: Option<Rev>) -> Result<Option<File>> {
        self.run(Resend::Yes, |c| async move { c.get_file(path, rev).await }).await
    }

    /// SET; see [`Client::set`].
    pub async fn set(&self, path: &str, rev: Rev, body: impl Into<Bytes>) -> Result<Rev> {
        let body: Bytes = body.into();
        self.run(Resend::No, |c| {
            let body = body.clone();
            async move { c.set(path, rev, body).await }
        })
        .await
    }

    /// DEL; see [`Client::del`].
    pub async fn del(&self, path: &str, rev: Rev) -> Result<()> {
        self.run(Resend::No, |c| async move { c.del(path, rev).await }).await
    }

    /// NOP; see [`Client::nop`].
    pub async fn nop(&self) -> Result<()> {
        self.run(Resend::No, |c| async move { c.nop().await }).await
    }

    /// REV: the current revision of the node in use.
    pub async fn rev(&self) -> Result<Rev> {
        self.run(Resend::Yes, |c| async move { c.rev().await }).await
    }

    /// SELF: the id of the node in use.
    pub async fn self_id(&self) -> Result<Bytes> {
        self.run(Resend::Yes, |c| async move { c.self_id().await }).await
    }

    /// STAT; see [`Client::stat`].
    pub async fn stat(&self, path: &str, rev: Option<Rev>) -> Result<(i32, Rev)> {
        self.run(Resend::Yes, |c| async move { c.stat(path, rev).await }).await
    }

    /// Every name in a directory; see [`Client::getdir_all`].
    pub async fn getdir_all(&self, path: &str, rev: Option<Rev>) -> Result<Vec<String>> {
        self.run(Resend::Yes, |c| async move { c.getdir_all(path, rev).await }).await
    }

    /// WALK; see [`Client::walk`].
    pub async fn walk(&self, glob: &str, offset: i32, rev: Option<Rev>) -> Result<Event> {
        self.run(Resend::Yes, |c| async move { c.walk(glob, offset, rev).await }).await
    }

    /// Up to `max` changes matching `glob`, newest first; see [`Client::log_all`].
    pub async fn log_all(&self, glob: &str, rev: Option<Rev>, max: usize) -> Result<Vec<Event>> {
        self.run(Resend::Yes, |c| async move { c.log_all(glob, rev, max).await }).await
    }

    /// WAIT; see [`Client::wait`]. For a stream of changes use [`Cluster::watch`].
    pub async fn wait(&self, glob: &str, rev: Rev) -> Result<Event> {
        self.run(Resend::Yes, |c| async move { c.wait(glob, rev).await }).await
    }

    /// Every change to a file matching `glob` from revision `from`, across
    /// the loss of nodes; see [`Watch`].
    pub async fn watch(&self, glob: &str, from: Rev) -> Result<Watch> {
        let client = self.client().await?;
        let uri = Uri { addrs: self.inner.uri.addrs.clone(), ..self.inner.uri.clone() };
        Ok(Watch::resolved(uri, self.inner.opts.clone(), glob, from).starting_with(client))
    }

    /// The URI this handle was made from.
    pub fn uri(&self) -> &str {
        &self.inner.text
    }
}
