//! A watch that survives the loss of a node.
//!
//! [`Watch`] issues WAIT after WAIT from the revision after the last event.
//! When the URI names several nodes and the one in use closes the connection
//! or stops answering (a REV probe times out), it moves to the next node and
//! waits again from the same revision, so no event is missed and none is
//! repeated. With a single address it fails as the original client did.

use crate::{parse_uri, resolve, Client, Error, Event, Options, Result, Rev, Uri};
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
        Watch { uri, opts, glob: glob.to_string(), next: from, client: None, at: 0 }
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
                r = client.wait(&self.glob, self.next) => r,
                why = stalled(&client) => Err(Error::Disconnected(why)),
            };
            match waited {
                Ok(e) => {
                    self.next = e.rev + 1;
                    return Ok(e);
                }
                Err(Error::Disconnected(why)) if self.uri.addrs.len() < 2 => return Err(Error::Disconnected(why)),
                Err(Error::Disconnected(_)) => {
                    self.client = None;
                    self.at = (self.at + 1) % self.uri.addrs.len();
                }
                Err(e) => return Err(e),
            }
        }
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
