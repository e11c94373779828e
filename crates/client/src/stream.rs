//! [`Subscription`]: the STREAM extension (verb 38), every change to the
//! files matching a glob from a revision on, as one request.
//!
//! The events wait in a buffer of [`STREAM_BUFFER`] events and
//! [`STREAM_BUFFER_BYTES`] bytes until [`Subscription::next`] takes them; a
//! subscriber that falls further behind is told
//! ([`Error::Behind`]) and starts again from [`Subscription::next_rev`]: an
//! event is never dropped silently. A server without STREAM answers
//! `UNKNOWN_VERB` on the first `next`; [`crate::Watch`] then loops WAITs.

use crate::{event, Client, Error, Event, Result, Rev};
use doozer_proto::{Request, Response, Verb};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Events a subscription holds that `next` has not yet taken.
pub const STREAM_BUFFER: usize = 4096;
/// Bytes of paths and bodies a subscription holds untaken (one event, up
/// to the 1 MiB value limit, is always kept).
pub const STREAM_BUFFER_BYTES: usize = 32 << 20;

/// What an answer costs the buffer.
fn size(r: &Result<Response>) -> usize {
    r.as_ref().map_or(0, |r| r.value.as_ref().map_or(0, |v| v.len()) + r.path.as_ref().map_or(0, |p| p.len()))
}

/// Where the read loop puts a stream's answers.
pub(crate) struct Slot {
    pub(crate) tx: mpsc::Sender<Result<Response>>,
    /// Set when the buffer was full: the stream was dropped here.
    pub(crate) behind: Arc<AtomicBool>,
    /// Bytes in the buffer ([`size`]).
    pub(crate) bytes: Arc<AtomicUsize>,
}

impl Slot {
    /// Hands an answer over; false once the stream is over (its last answer).
    /// Past a full buffer the stream's events are dropped here, and the
    /// subscriber is told once it has taken those before the gap.
    pub(crate) fn offer(&self, r: Result<Response>) -> bool {
        let last = !matches!(&r, Ok(resp) if resp.err_code.is_none());
        if self.behind.load(Ordering::SeqCst) {
            return !last;
        }
        let n = size(&r);
        // Counted before it is handed over, so that `next` never takes off
        // what was not yet added.
        let held = self.bytes.fetch_add(n, Ordering::SeqCst);
        if held > 0 && held + n > STREAM_BUFFER_BYTES || self.tx.try_send(r).is_err() {
            self.bytes.fetch_sub(n, Ordering::SeqCst);
            self.behind.store(true, Ordering::SeqCst);
        }
        !last
    }
}

/// An open STREAM; see the module documentation. Dropping it stops it.
pub struct Subscription {
    client: Client,
    tag: i32,
    rx: mpsc::Receiver<Result<Response>>,
    behind: Arc<AtomicBool>,
    bytes: Arc<AtomicUsize>,
    next: Rev,
    ended: bool,
}

impl Client {
    /// STREAM: every change to files matching `glob` at or after `from`.
    pub async fn stream(&self, glob: &str, from: Rev) -> Result<Subscription> {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let behind = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicUsize::new(0));
        let tag = self.register_stream(Slot { tx, behind: behind.clone(), bytes: bytes.clone() })?;
        let req = Request {
            tag: Some(tag),
            verb: Some(Verb::Stream as i32),
            path: Some(glob.into()),
            rev: Some(from),
            ..Request::default()
        };
        if let Err(e) = self.send(&req).await {
            self.forget_stream(tag);
            return Err(e);
        }
        Ok(Subscription { client: self.clone(), tag, rx, behind, bytes, next: from, ended: false })
    }
}

impl Subscription {
    /// The revision the next event will be at or after.
    pub fn next_rev(&self) -> Rev {
        self.next
    }

    /// The next event. After an error the stream is over: `TOO_LATE` (the
    /// window moved past [`Subscription::next_rev`]), `OTHER` (the server cut
    /// off a connection whose answers were not read), [`Error::Behind`], or
    /// the connection's end.
    pub async fn next(&mut self) -> Result<Event> {
        if self.ended {
            return Err(Error::Behind(format!("this stream is over; start again from rev {}", self.next)));
        }
        let got = if self.behind.load(Ordering::SeqCst) {
            // Take what came before the gap, then say where it is.
            match self.rx.try_recv() {
                Ok(got) => Some(got),
                Err(_) => {
                    self.ended = true;
                    self.stop_on_server();
                    let next = self.next;
                    return Err(Error::Behind(format!(
                        "fell behind: {STREAM_BUFFER} events or {} MiB unread; start again from rev {next}",
                        STREAM_BUFFER_BYTES >> 20
                    )));
                }
            }
        } else {
            self.rx.recv().await
        };
        if let Some(r) = &got {
            self.bytes.fetch_sub(size(r), Ordering::SeqCst);
        }
        let resp = match got {
            Some(Ok(resp)) if resp.err_code.is_none() => resp,
            Some(Ok(resp)) => {
                self.ended = true;
                return Err(Client::refusal(resp));
            }
            Some(Err(e)) => {
                self.ended = true;
                return Err(e);
            }
            None => {
                self.ended = true;
                return Err(self.client.closed_error());
            }
        };
        let e = event(resp);
        self.next = e.rev + 1;
        Ok(e)
    }

    /// STOP: the server sends no more events for this stream.
    pub async fn stop(mut self) -> Result<()> {
        self.ended = true;
        self.client.stop_stream(self.tag).await
    }

    fn stop_on_server(&self) {
        let (client, tag) = (self.client.clone(), self.tag);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { client.stop_stream(tag).await });
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.ended {
            self.stop_on_server();
        }
    }
}

impl Client {
    /// Sends STOP for stream `tag` and forgets it once answered.
    async fn stop_stream(&self, tag: i32) -> Result<()> {
        let req = Request { verb: Some(Verb::Stop as i32), other_tag: Some(tag), ..Request::default() };
        let done = self.call(req).await.map(|_| ());
        self.forget_stream(tag);
        done
    }
}
