//! A watch that survives the loss of a node.
//!
//! [`Watch`] follows the glob with one STREAM (an extension), or, from a
//! server that does not know it (`UNKNOWN_VERB`), with WAIT after WAIT from
//! the revision after the last event. A stream cut off because this side
//! read too slowly is opened again from the next revision. When the URI
//! names several nodes and the one in use closes the connection or stops
//! answering (a REV probe times out), it moves to the next node and waits
//! again from the same revision, so no event is missed and none is
//! repeated. With a single address it fails as the original client did.

use crate::{parse_uri, resolve, Client, ErrCode, Error, Event, Options, Result, Rev, Subscription, Uri};
use std::time::Duration;
use tokio::time::Instant;

/// How often the node in use is asked for REV while a WAIT is held, and how
/// long it may take to answer before the watch moves on.
const PROBE: Duration = Duration::from_secs(2);
/// How long to keep trying the other nodes before giving up.
const RECONNECT_FOR: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Every change to the files matching a glob, in revision order, from a
/// starting revision; see the module documentation.
pub struct Watch {
    uri: Uri,
    opts: Options,
    glob: String,
    next: Rev,
    client: Option<Client>,
    /// Index in `uri.addrs` of the node in use.
    at: usize,
    /// The stream open on `client`, if any.
    stream: Option<Subscription>,
    /// False once a server answered STREAM with UNKNOWN_VERB: WAIT loops.
    streaming: bool,
}

impl Watch {
    /// A watch of `glob` from revision `from` (inclusive) on the cluster `uri`.
    pub fn new(uri: &str, glob: &str, from: Rev) -> Result<Watch> {
        Watch::with_options(uri, Options::default(), glob, from)
    }

    /// As [`Watch::new`], connecting with `opts` (TLS, timeouts, a DzNS for `cn=`).
    pub fn with_options(uri: &str, opts: Options, glob: &str, from: Rev) -> Result<Watch> {
        let uri = parse_uri(uri)?;
        let opts = uri.options(&opts)?;
        Ok(Watch::resolved(uri, opts, glob, from))
    }

    pub(crate) fn resolved(uri: Uri, opts: Options, glob: &str, from: Rev) -> Watch {
        Watch { uri, opts, glob: glob.to_string(), next: from, client: None, at: 0, stream: None, streaming: true }
    }

    /// Starts from an open connection to one of the URI's addresses.
    pub fn with_client(client: Client, uri: &str, glob: &str, from: Rev) -> Result<Watch> {
        Ok(Watch::new(uri, glob, from)?.starting_with(client))
    }

    /// Uses `client`, a connection to one of the URI's addresses, first.
    pub fn starting_with(mut self, client: Client) -> Watch {
        self.at = self.uri.addrs.iter().position(|a| a == client.addr()).unwrap_or(0);
        if !self.uri.addrs.iter().any(|a| a == client.addr()) {
            self.uri.addrs.insert(0, client.addr().to_string());
        }
        self.client = Some(client);
        self
    }

    /// The revision the next event will be at or after.
    pub fn next_rev(&self) -> Rev {
        self.next
    }

    /// The next matching event.
    pub async fn next(&mut self) -> Result<Event> {
        loop {
            let client = match &self.client {
                Some(c) => c.clone(),
                None => self.connect().await?,
            };
            let waited = tokio::select! {
                r = self.step(&client) => r,
                why = stalled(&client) => Err(Error::Disconnected(why)),
            };
            if waited.is_err() {
                // Whatever went wrong, that stream is over.
                self.stream = None;
            }
            match waited {
                Ok(e) => {
                    self.next = e.rev + 1;
                    return Ok(e);
                }
                Err(e) if self.streaming && resumable(&e) => {}
                Err(Error::Server { code: ErrCode::UnknownVerb, .. }) if self.streaming => self.streaming = false,
                Err(Error::Disconnected(why)) if self.uri.addrs.len() < 2 => return Err(Error::Disconnected(why)),
                Err(Error::Disconnected(_)) => {
                    self.client = None;
                    self.at = (self.at + 1) % self.uri.addrs.len();
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next event from the stream (opened if need be), or from a WAIT.
    async fn step(&mut self, client: &Client) -> Result<Event> {
        if !self.streaming {
            return client.wait(&self.glob, self.next).await;
        }
        let stream = match &mut self.stream {
            Some(s) => s,
            None => self.stream.insert(client.stream(&self.glob, self.next).await?),
        };
        stream.next().await
    }

    /// Connects to the next node that answers, starting at `self.at`.
    async fn connect(&mut self) -> Result<Client> {
        if self.uri.addrs.is_empty() {
            let named = Uri { addrs: Vec::new(), ..self.uri.clone() };
            let text = format!("doozer:?cn={}", named.name.clone().unwrap_or_default());
            self.uri.addrs = resolve(&text, &self.opts).await?.addrs;
        }
        let start = Instant::now();
        let n = self.uri.addrs.len();
        let mut last = Error::InvalidUri;
        loop {
            for _ in 0..n {
                let addr = self.uri.addrs[self.at].clone();
                match tokio::time::timeout(CONNECT_TIMEOUT.max(self.opts.connect_timeout), self.open(&addr)).await {
                    Ok(Ok(c)) => {
                        self.client = Some(c.clone());
                        return Ok(c);
                    }
                    Ok(Err(e)) => last = e,
                    Err(_) => last = Error::Dial(format!("dial tcp {addr}: timed out")),
                }
                self.at = (self.at + 1) % n;
            }
            if n < 2 || start.elapsed() > RECONNECT_FOR {
                return Err(last);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn open(&self, addr: &str) -> Result<Client> {
        Client::open(addr, self.uri.secret.as_deref(), false, &self.opts).await
    }
}

/// True for the end of a stream that a new one from the same revision mends:
/// this side fell behind, or the server cut the stream off for it.
fn resumable(e: &Error) -> bool {
    match e {
        Error::Behind(_) => true,
        Error::Server { code: ErrCode::Other, detail, .. } => detail.starts_with("stream cut off"),
        _ => false,
    }
}

/// Completes when the node stops answering REV within `PROBE`.
pub(crate) async fn stalled(client: &Client) -> String {
    loop {
        tokio::time::sleep(PROBE).await;
        match tokio::time::timeout(PROBE, client.rev()).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => return e.to_string(),
            Err(_) => return format!("{} stopped answering", client.addr()),
        }
    }
}
