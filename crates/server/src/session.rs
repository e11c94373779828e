//! What each verb does for one connection: rights, required fields, and the
//! answer, as the original did (see docs/protocol.md).
//!
//! Answers that are ready (REV, SELF, reads at a revision this node has) are
//! sent at once. Writes, held WAITs and reads at a future revision run as tasks
//! that send their answer when it comes, so one slow request never holds up
//! the next on the same connection. Held WAITs and future reads are cancelled
//! when the connection closes; writes are not (they were received, so they run).

// An error here is an answer to send, no larger than a success answer.
#![allow(clippy::result_large_err)]

use crate::access::{Rights, Secrets};
use crate::conn::Outbox;
use crate::consensus::{Committed, Consensus, ProposeError};
use crate::metrics::Metrics;
use crate::node::{Hold, Node};
use crate::waiters::{Notify, Owner, Told, Wake};
use bytes::Bytes;
use doozer_proto::{ErrCode, Request, Response, Verb, FLAG_DEL, FLAG_SET};
use doozer_store::{
    is_valid_path, Body, Command, Event, EventKind, File, Glob, LeaseError, ReadError, Rev, Snapshot, Stat, StoreError,
};
use parking_lot::Mutex;
use prost::Message;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod leases;
mod stream;
pub use leases::random_lease_id;
pub use stream::STREAM_BUFFER;

/// Sends one request's answer and counts it in the node's metrics.
struct Reply {
    out: Outbox,
    metrics: Arc<Metrics>,
    verb: Option<Verb>,
    received: Instant,
}

impl Reply {
    fn send(&self, r: Response) {
        self.metrics.request(self.verb, r.err_code, self.received.elapsed());
        self.out.send(r);
    }

    /// Answers with an event told to many waiters, encoded once for all.
    fn send_event(&self, tag: Option<i32>, told: &Told) {
        self.metrics.request(self.verb, None, self.received.elapsed());
        self.out.send_tagged(tag, told.encoded(event_fields));
    }
}

/// An answer now, or `None` when a task will send it later; `Err` is an error answer.
type Handled = Result<Option<Response>, Response>;

/// Remembers the last full listing (a WALK's matches or a GETDIR's names) so
/// that a client paging through offsets 0, 1, 2, … pays for the listing once.
struct ListCache<T> {
    last: Mutex<Option<Listing<T>>>,
}

/// A listing and what it lists: (revision, path or glob, entries).
type Listing<T> = (Rev, String, Arc<Vec<T>>);

impl<T> ListCache<T> {
    fn new() -> Arc<Self> {
        Arc::new(ListCache { last: Mutex::new(None) })
    }

    fn get_or_build<E>(
        &self,
        rev: Rev,
        key: &str,
        build: impl FnOnce() -> Result<Vec<T>, E>,
    ) -> Result<Arc<Vec<T>>, E> {
        let mut last = self.last.lock();
        if let Some((r, k, list)) = last.as_ref() {
            if *r == rev && k == key {
                return Ok(list.clone());
            }
        }
        let list = Arc::new(build()?);
        *last = Some((rev, key.to_string(), list.clone()));
        Ok(list)
    }
}

/// One connection's protocol state.
pub struct Session {
    node: Arc<Node>,
    cluster: Arc<Consensus>,
    secrets: Arc<Secrets>,
    rights: Rights,
    out: Outbox,
    cancel: CancellationToken,
    walks: Arc<ListCache<(String, File)>>,
    dirs: Arc<ListCache<Arc<str>>>,
    /// The request being handled: its verb and when it arrived.
    current: (Option<Verb>, Instant),
    /// Owns this connection's held WAITs, which go when it closes.
    owner: Owner,
    /// Open STREAMs, by tag.
    streams: stream::Streams,
    /// The last glob WAIT or STREAM named, and its compiled form.
    last_glob: Option<(String, Arc<Glob>)>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.node.forget_waits(self.owner);
    }
}

fn error(tag: Option<i32>, code: ErrCode) -> Response {
    Response::error(tag, code, "")
}

/// The protocol's error code for a store error.
pub fn error_code(e: StoreError) -> ErrCode {
    match e {
        StoreError::BadPath => ErrCode::BadPath,
        StoreError::RevMismatch => ErrCode::RevMismatch,
        StoreError::IsDir => ErrCode::IsDir,
        StoreError::NotDir => ErrCode::NotDir,
        StoreError::NoEnt => ErrCode::NoEnt,
        StoreError::BadLoad => ErrCode::Other,
        StoreError::Lease(LeaseError::NotFound(_)) => ErrCode::NoEnt,
        StoreError::Lease(_) => ErrCode::Other,
    }
}

fn store_error(tag: Option<i32>, e: StoreError) -> Response {
    match e {
        // Lease errors say which lease and what to do.
        StoreError::Lease(le) => Response::error(tag, error_code(e), le.to_string()),
        _ => error(tag, error_code(e)),
    }
}

fn need<T>(field: Option<T>, tag: Option<i32>) -> Result<T, Response> {
    field.ok_or_else(|| error(tag, ErrCode::MissingArg))
}

fn at_offset<T: Clone>(list: &[T], offset: i32, tag: Option<i32>) -> Result<T, Response> {
    usize::try_from(offset).ok().and_then(|i| list.get(i)).cloned().ok_or_else(|| error(tag, ErrCode::Range))
}

fn event_response(tag: Option<i32>, e: Event) -> Response {
    let flags = match e.kind {
        EventKind::Set => FLAG_SET,
        EventKind::Del => FLAG_DEL,
        EventKind::Nop => 0,
    };
    Response {
        tag,
        path: Some(e.path.to_string()),
        rev: Some(e.rev),
        value: Some(e.body.to_bytes()),
        flags: Some(flags),
        ..Response::default()
    }
}

/// An event's answer without its tag, for [`Outbox::send_tagged`].
fn event_fields(e: &Event) -> Bytes {
    event_response(None, e.clone()).encode_to_vec().into()
}

fn clamp_i32(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl Session {
    pub fn new(cluster: Arc<Consensus>, secrets: Arc<Secrets>, out: Outbox, cancel: CancellationToken) -> Session {
        let rights = secrets.anonymous();
        let node = cluster.node().clone();
        let node_owner = node.new_owner();
        Session {
            node,
            cluster,
            secrets,
            rights,
            out,
            cancel,
            walks: ListCache::new(),
            dirs: ListCache::new(),
            current: (None, Instant::now()),
            owner: node_owner,
            streams: Default::default(),
            last_glob: None,
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.out
    }

    /// Handles one request; its answer is sent now or by a task.
    pub fn handle(&mut self, req: Request) {
        let tag = req.tag;
        let verb = req.verb.and_then(Verb::from_i32);
        self.current = (verb, Instant::now());
        let handled = match verb {
            None => Err(error(tag, ErrCode::UnknownVerb)),
            Some(verb) => self.check_rights(verb, tag).and_then(|()| self.dispatch(verb, req)),
        };
        match handled {
            Ok(Some(r)) | Err(r) => {
                // Answered now: counted and sent without the clones a later answer needs.
                self.node.metrics().request(verb, r.err_code, self.current.1.elapsed());
                self.out.send(r);
            }
            Ok(None) => {}
        }
    }

    /// Where the current request's answer goes.
    fn reply(&self) -> Reply {
        Reply {
            out: self.out.clone(),
            metrics: self.node.metrics().clone(),
            verb: self.current.0,
            received: self.current.1,
        }
    }

    fn check_rights(&self, verb: Verb, tag: Option<i32>) -> Result<(), Response> {
        let allowed = match verb {
            Verb::Rev | Verb::SelfId | Verb::Access => true,
            Verb::Set | Verb::Del | Verb::Nop => self.rights.write,
            Verb::Get | Verb::Wait | Verb::Walk | Verb::Getdir | Verb::Stat | Verb::Log => self.rights.read,
            Verb::Stream | Verb::Stop => self.rights.read,
            // A keep-alive changes what the cluster will do (a lease not
            // expiring); TTL and LEASES only read.
            Verb::Grant | Verb::KeepAlive | Verb::Revoke | Verb::SetLeased => self.rights.write,
            Verb::Ttl | Verb::Leases => self.rights.read,
            Verb::ForceNewCluster => self.rights.write,
        };
        if allowed {
            Ok(())
        } else {
            Err(Response::error(tag, ErrCode::Other, "permission denied"))
        }
    }

    fn dispatch(&mut self, verb: Verb, req: Request) -> Handled {
        let tag = req.tag;
        match verb {
            Verb::Rev => Ok(Some(Response { tag, rev: Some(self.node.rev()), ..Response::default() })),
            Verb::SelfId => {
                Ok(Some(Response { tag, value: Some(Bytes::from(self.node.id().to_string())), ..Response::default() }))
            }
            Verb::Access => self.access(tag, req.value.unwrap_or_default()),
            Verb::Get => self.get(tag, need(req.path, tag)?, req.rev),
            Verb::Stat => self.stat(tag, req.path.unwrap_or_default(), req.rev),
            Verb::Getdir => self.getdir(tag, need(req.path, tag)?, need(req.offset, tag)?, req.rev),
            Verb::Walk => self.walk(tag, need(req.path, tag)?, need(req.offset, tag)?, req.rev),
            Verb::Wait => self.wait(tag, need(req.path, tag)?, need(req.rev, tag)?),
            Verb::Log => self.log(tag, need(req.path, tag)?, req.offset.unwrap_or(0), req.rev),
            Verb::Set => self.set(tag, need(req.path, tag)?, need(req.rev, tag)?, req.value.unwrap_or_default()),
            Verb::Del => self.del(tag, need(req.path, tag)?, need(req.rev, tag)?),
            Verb::Nop => {
                self.propose(tag, Command::Nop, move |_| Ok(Response { tag, ..Response::default() }));
                Ok(None)
            }
            Verb::Grant => self.grant(tag, need(req.ttl, tag)?, req.lease),
            Verb::KeepAlive => self.keep_alive(tag, leases::lease_id(req.lease, tag)?),
            Verb::Revoke => self.revoke(tag, leases::lease_id(req.lease, tag)?),
            Verb::Ttl => self.ttl(tag, leases::lease_id(req.lease, tag)?, req.path),
            Verb::SetLeased => {
                let lease = leases::lease_id(req.lease, tag)?;
                let (path, rev) = (need(req.path, tag)?, need(req.rev, tag)?);
                self.set_leased(tag, path, rev, req.value.unwrap_or_default(), lease)
            }
            Verb::Leases => self.leases(tag, req.lease.unwrap_or(0)),
            Verb::ForceNewCluster => self.force_new_cluster(tag, req.rev.unwrap_or(0) != 0),
            Verb::Stream => self.stream(need(tag, tag)?, need(req.path, tag)?, need(req.rev, tag)?),
            Verb::Stop => {
                stream::stop(&self.streams, need(req.other_tag, tag)?);
                Ok(Some(Response { tag, ..Response::default() }))
            }
        }
    }

    /// FORCE_NEW_CLUSTER: the plan, or (`carry_out`) the plan carried out;
    /// either way refused while a majority of the voters answers.
    fn force_new_cluster(&self, tag: Option<i32>, carry_out: bool) -> Handled {
        let cluster = self.cluster.clone();
        self.spawn_cancellable(async move {
            let plan = match carry_out {
                true => cluster.force_new_cluster().await,
                false => cluster.recovery_plan().await,
            };
            match plan {
                Ok(plan) => Response { tag, value: Some(Bytes::from(plan)), ..Response::default() },
                Err(why) => Response::error(tag, ErrCode::Other, why),
            }
        });
        Ok(None)
    }

    fn access(&mut self, tag: Option<i32>, secret: Bytes) -> Handled {
        match self.secrets.grant(&secret) {
            Some(r) => {
                self.rights = self.rights.union(r);
                Ok(Some(Response { tag, ..Response::default() }))
            }
            None => Err(Response::error(tag, ErrCode::Other, "permission denied")),
        }
    }

    /// Sends the answer of `fut` when it completes, unless the connection closes first.
    fn spawn_cancellable(&self, fut: impl Future<Output = Response> + Send + 'static) {
        let out = self.reply();
        let cancel = self.cancel.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = fut => out.send(r),
                _ = cancel.cancelled() => {}
            }
        });
    }

    /// Answers `read` on the tree at `rev`, waiting for the revision if it is
    /// still in the future here.
    fn read_at<F>(&self, tag: Option<i32>, rev: Option<Rev>, read: F) -> Handled
    where
        F: FnOnce(Snapshot) -> Response + Send + 'static,
    {
        match self.node.snapshot(rev) {
            Ok(snap) => Ok(Some(read(snap))),
            Err(ReadError::TooLate) => Err(error(tag, ErrCode::TooLate)),
            Err(ReadError::Future(r)) => {
                let node = self.node.clone();
                self.spawn_cancellable(async move {
                    node.wait_for_rev(r).await;
                    match node.snapshot(Some(r)) {
                        Ok(snap) => read(snap),
                        Err(_) => error(tag, ErrCode::TooLate),
                    }
                });
                Ok(None)
            }
        }
    }

    fn get(&self, tag: Option<i32>, path: String, rev: Option<Rev>) -> Handled {
        if path.is_empty() {
            return Err(error(tag, ErrCode::BadPath));
        }
        self.read_at(tag, rev, move |snap| match snap.get(&path) {
            Ok(Some(f)) => Response { tag, rev: Some(f.rev), value: Some(f.body.to_bytes()), ..Response::default() },
            Ok(None) => Response { tag, rev: Some(0), value: Some(Bytes::new()), ..Response::default() },
            Err(e) => store_error(tag, e),
        })
    }

    fn stat(&self, tag: Option<i32>, path: String, rev: Option<Rev>) -> Handled {
        self.read_at(tag, rev, move |snap| {
            let (rev, len) = match snap.stat(&path) {
                Stat::File { rev, len } => (rev, clamp_i32(len)),
                Stat::Dir { entries } => (doozer_store::DIR, clamp_i32(entries)),
                Stat::Missing => (0, 0),
            };
            Response { tag, rev: Some(rev), len: Some(len), ..Response::default() }
        })
    }

    fn getdir(&self, tag: Option<i32>, path: String, offset: i32, rev: Option<Rev>) -> Handled {
        if path.is_empty() {
            return Err(error(tag, ErrCode::BadPath));
        }
        let cache = self.dirs.clone();
        self.read_at(tag, rev, move |snap| {
            let names = match cache.get_or_build(snap.rev(), &path, || snap.getdir(&path)) {
                Ok(names) => names,
                Err(e) => return store_error(tag, e),
            };
            match at_offset(&names, offset, tag) {
                Ok(name) => Response { tag, path: Some(name.to_string()), ..Response::default() },
                Err(e) => e,
            }
        })
    }

    fn walk(&self, tag: Option<i32>, pattern: String, offset: i32, rev: Option<Rev>) -> Handled {
        let glob = Glob::parse(&pattern).map_err(|e| Response::error(tag, ErrCode::Other, e.to_string()))?;
        let cache = self.walks.clone();
        self.read_at(tag, rev, move |snap| {
            let Ok(files) = cache.get_or_build::<Infallible>(snap.rev(), &pattern, || Ok(snap.walk(&glob)));
            match at_offset(&files, offset, tag) {
                Ok((path, f)) => Response {
                    tag,
                    path: Some(path),
                    value: Some(f.body.to_bytes()),
                    rev: Some(f.rev),
                    flags: Some(FLAG_SET),
                    ..Response::default()
                },
                Err(e) => e,
            }
        })
    }

    /// LOG: the `offset`-th newest change matching `pattern` at or before `rev`.
    fn log(&self, tag: Option<i32>, pattern: String, offset: i32, rev: Option<Rev>) -> Handled {
        let glob = Glob::parse(&pattern).map_err(|e| Response::error(tag, ErrCode::Other, e.to_string()))?;
        let Ok(skip) = usize::try_from(offset) else { return Err(error(tag, ErrCode::Range)) };
        let answer = move |found: Result<Vec<Event>, ReadError>| match found {
            Ok(mut events) if !events.is_empty() => event_response(tag, events.swap_remove(0)),
            Ok(_) => error(tag, ErrCode::Range),
            Err(_) => error(tag, ErrCode::TooLate),
        };
        let upto = rev.unwrap_or_else(|| self.node.rev()).max(1);
        match self.node.events_before(upto, &glob, skip, 1) {
            Err(ReadError::Future(r)) => {
                let node = self.node.clone();
                self.spawn_cancellable(async move {
                    node.wait_for_rev(r).await;
                    answer(node.events_before(r, &glob, skip, 1))
                });
                Ok(None)
            }
            found => Ok(Some(answer(found))),
        }
    }

    fn wait(&mut self, tag: Option<i32>, pattern: String, rev: Rev) -> Handled {
        let glob = self.compiled(tag, pattern)?;
        // A held WAIT is answered straight from the apply that satisfies it:
        // no task waits for it, and it goes when this connection closes.
        let reply = self.reply();
        let notify = Notify::Once(Box::new(move |wake: Wake<'_>| match wake {
            Wake::Event(told) => reply.send_event(tag, told),
            Wake::TooLate => reply.send(error(tag, ErrCode::TooLate)),
        }));
        match self.node.hold_wait(glob, rev, self.owner, notify) {
            Hold::Ready(e) => Ok(Some(event_response(tag, e))),
            Hold::TooLate => Err(error(tag, ErrCode::TooLate)),
            Hold::Full => Err(Response::error(
                tag,
                ErrCode::Other,
                format!("too many held WAITs on this node (limit {})", self.node.limits().max_waiters),
            )),
            Hold::Held(_) => Ok(None),
        }
    }

    /// The glob a WAIT or STREAM names. A WAIT loop names the same one
    /// each time: the last is kept compiled.
    fn compiled(&mut self, tag: Option<i32>, pattern: String) -> Result<Arc<Glob>, Response> {
        if let Some((last, glob)) = &self.last_glob {
            if *last == pattern {
                return Ok(glob.clone());
            }
        }
        let glob = Arc::new(Glob::parse(&pattern).map_err(|e| Response::error(tag, ErrCode::Other, e.to_string()))?);
        self.last_glob = Some((pattern, glob.clone()));
        Ok(glob)
    }

    fn stream(&mut self, tag: i32, pattern: String, rev: Rev) -> Handled {
        let glob = self.compiled(Some(tag), pattern)?;
        stream::start(&self.node, &self.streams, &self.out, self.owner, tag, glob, rev)?;
        // Counted when it starts: its answers go on for as long as it lasts.
        self.node.metrics().request(Some(Verb::Stream), None, self.current.1.elapsed());
        Ok(None)
    }

    fn set(&self, tag: Option<i32>, path: String, rev: Rev, body: Bytes) -> Handled {
        let body = self.checked_body(tag, &path, &body)?;
        self.propose(tag, Command::Set { path, rev, body }, move |o| set_answer(tag, o));
        Ok(None)
    }

    /// The value of a SET at `path`, checked: size and path.
    fn checked_body(&self, tag: Option<i32>, path: &str, body: &Bytes) -> Result<Body, Response> {
        let max = self.node.limits().max_value;
        if body.len() > max {
            return Err(Response::error(
                tag,
                ErrCode::Other,
                format!("value too large: {} bytes (limit {max})", body.len()),
            ));
        }
        if !is_valid_path(path) {
            return Err(error(tag, ErrCode::BadPath));
        }
        // The body is a slice of the request's whole frame; the store keeps it
        // for as long as the file lives, so it gets its own exact allocation
        // (shared by the Raft log, the tree and the history).
        Ok(Body::from(body))
    }

    fn del(&self, tag: Option<i32>, path: String, rev: Rev) -> Handled {
        if !is_valid_path(&path) {
            return Err(error(tag, ErrCode::BadPath));
        }
        self.propose(tag, Command::Del { path, rev }, move |o| match o {
            Committed::Changed(_) | Committed::Unchanged | Committed::Batch(_) => {
                Ok(Response { tag, ..Response::default() })
            }
            Committed::NotMember | Committed::OutOfTerm => Ok(removed(tag)),
            Committed::Failed(e) => Err(e),
        });
        Ok(None)
    }

    /// Proposes `cmd` and answers with `answer(outcome)` once it is applied.
    /// Not cancelled with the connection: a received write is carried out.
    fn propose<F>(&self, tag: Option<i32>, cmd: Command, answer: F)
    where
        F: FnOnce(Committed) -> Result<Response, StoreError> + Send + 'static,
    {
        let out = self.reply();
        if self.node.is_removed() {
            return out.send(error(tag, ErrCode::Readonly));
        }
        self.cluster.submit(
            cmd,
            Box::new(move |result| {
                let r = match result {
                    Ok(outcome) => answer(outcome).unwrap_or_else(|e| store_error(tag, e)),
                    Err(ProposeError::ReadOnly) => error(tag, ErrCode::Readonly),
                    Err(e @ ProposeError::NotDone(_)) => Response::error(tag, ErrCode::Other, e.detail()),
                    Err(e @ ProposeError::Unknown(_)) => Response::error_indeterminate(tag, ErrCode::Other, e.detail()),
                };
                out.send(r);
            }),
        );
    }
}

/// A SET's answer: its revision.
fn set_answer(tag: Option<i32>, o: Committed) -> Result<Response, StoreError> {
    match o {
        Committed::Changed(rev) => Ok(Response { tag, rev: Some(rev), ..Response::default() }),
        Committed::Unchanged | Committed::Batch(_) => Ok(Response { tag, ..Response::default() }),
        Committed::NotMember | Committed::OutOfTerm => Ok(removed(tag)),
        Committed::Failed(e) => Err(e),
    }
}

/// A write this node proposed after it stopped being a member: not done.
/// (The consensus layer turns that outcome into an error before it gets
/// here; this is the answer should it ever arrive. `OutOfTerm` never does:
/// only a leader's own decisions carry a term.)
fn removed(tag: Option<i32>) -> Response {
    Response::error(tag, ErrCode::Readonly, "this node was removed from its cluster; nothing was written".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_told_to_many_is_byte_for_byte_the_answer_encoded_whole() {
        let e = Event { rev: 42, path: "/svc/a".into(), body: Body::from("10.0.0.1:80"), kind: EventKind::Set };
        let rest = event_fields(&e);
        for tag in [Some(0), Some(7), Some(-3), Some(i32::MAX), None] {
            let mut whole = bytes::BytesMut::new();
            doozer_proto::encode_frame(&event_response(tag, e.clone()), &mut whole);
            assert_eq!(crate::conn::tagged_frame(tag, &rest), whole, "tag {tag:?}");
        }
    }
}
