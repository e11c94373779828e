//! STREAM (verb 38) and STOP (verb 39): a watch that is one request.
//!
//! STREAM names a glob and a revision; every change to a matching file from
//! that revision on is answered under the request's tag, in revision order,
//! until STOP names the tag (`other_tag`) or the stream ends with an error:
//! TOO_LATE when the next revision has left the history window, or OTHER
//! when the connection has more than [`STREAM_BUFFER`] bytes (or more than
//! `--max-pending` answers) its client has not read: a slow watcher is
//! told and cut off, never buffered without bound, and never skips an
//! event silently. Either error carries
//! `rev`, the first revision not delivered: a client starts again from it.
//!
//! A stream reads the history only to catch up (from its revision, or
//! after a cut-off): once it has sent everything up to the node's revision
//! it files one standing waiter, which the node tells every matching event
//! as it applies it. Keeping up then costs, per event, the glob match and
//! the write: no history scan, no registration, and the answer's bytes are
//! shared with every other waiter told the same event.
//!
//! Old clients never send these verbs and see nothing of them.

use super::{error, event_fields, event_response};
use crate::conn::Outbox;
use crate::node::{Hold, Node};
use crate::waiters::{Notify, Owner, Told, WaiterId, Wake};
use doozer_proto::{ErrCode, Response};
use doozer_store::{Glob, Rev};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

/// Unwritten answer bytes a connection may hold before its streams are cut off.
pub const STREAM_BUFFER: usize = 8 << 20;

/// Most events read from the history at a time.
const BATCH: usize = 256;

/// A connection's open streams, by tag.
pub(super) type Streams = Arc<Mutex<HashMap<i32, Arc<Follow>>>>;

/// One stream: where it is, and where its events go.
pub(super) struct Follow {
    node: Arc<Node>,
    glob: Arc<Glob>,
    tag: i32,
    out: Outbox,
    owner: Owner,
    /// To forget this stream when it ends by itself.
    streams: Weak<Mutex<HashMap<i32, Arc<Follow>>>>,
    state: Mutex<State>,
}

struct State {
    /// Every matching event before this revision has been sent.
    next: Rev,
    /// The standing waiter, once the stream has caught up.
    held: Option<WaiterId>,
    ended: bool,
}

/// Starts a stream of `glob` from `from`; its events and its end go to `out`.
/// `Err`: the tag already names an open stream (TAG_IN_USE).
pub(super) fn start(
    node: &Arc<Node>,
    streams: &Streams,
    out: &Outbox,
    owner: Owner,
    tag: i32,
    glob: Arc<Glob>,
    from: Rev,
) -> Result<(), Response> {
    let follow = Arc::new(Follow {
        node: node.clone(),
        glob,
        tag,
        out: out.clone(),
        owner,
        streams: Arc::downgrade(streams),
        state: Mutex::new(State { next: from.max(1), held: None, ended: false }),
    });
    {
        let mut open = streams.lock();
        if open.contains_key(&tag) {
            return Err(error(Some(tag), ErrCode::TagInUse));
        }
        open.insert(tag, follow.clone());
    }
    follow.pump();
    Ok(())
}

/// STOP: ends the stream `other` if it is open; no event of it follows the answer.
pub(super) fn stop(streams: &Streams, other: i32) {
    let follow = streams.lock().remove(&other);
    if let Some(f) = follow {
        f.stop();
    }
}

/// Why a stream is cut off.
const CUT_OFF: &str = "stream cut off: its connection has more answers unread than it may hold \
                       (8 MiB, or --max-pending); start again from rev";

impl Follow {
    /// Sends what has happened since `next`, then files the standing waiter.
    fn pump(self: &Arc<Self>) {
        let mut st = self.state.lock();
        while !st.ended {
            let (events, through) = match self.node.events_from(st.next, &self.glob, BATCH) {
                Ok(found) => found,
                Err(_) => return self.end(&mut st, ErrCode::TooLate, ""),
            };
            let full = events.len() == BATCH;
            for e in events {
                if self.clogged() {
                    st.next = e.rev;
                    return self.end(&mut st, ErrCode::Other, CUT_OFF);
                }
                self.out.send_more(event_response(Some(self.tag), e));
            }
            st.next = through + 1;
            if full {
                continue;
            }
            let me = self.clone();
            let notify = Notify::Every(Arc::new(move |wake: Wake<'_>| me.told(wake)));
            match self.node.hold_wait(self.glob.clone(), st.next, self.owner, notify) {
                // It came between the scan and the filing: scan again.
                Hold::Ready(_) => {}
                Hold::Held(id) => {
                    st.held = Some(id);
                    return;
                }
                Hold::TooLate => return self.end(&mut st, ErrCode::TooLate, ""),
                Hold::Full => return self.end(&mut st, ErrCode::Other, "too many held WAITs on this node"),
            }
        }
    }

    /// Has its connection more unread than a stream may leave it?
    fn clogged(&self) -> bool {
        self.out.unwritten() > STREAM_BUFFER || self.out.pending() > self.node.limits().max_pending
    }

    /// The standing waiter's callback: the next matching event, in order.
    fn told(&self, wake: Wake<'_>) {
        let mut st = self.state.lock();
        if st.ended {
            return;
        }
        let told: &Told = match wake {
            Wake::Event(told) => told,
            Wake::TooLate => {
                // The waiter is gone with this answer.
                st.held = None;
                return self.end(&mut st, ErrCode::TooLate, "");
            }
        };
        let rev = told.event.rev;
        // The node tells each event once, from the revision the waiter was
        // filed at: an older one would be a duplicate, and is never sent.
        if rev < st.next {
            return;
        }
        if self.clogged() {
            st.next = rev;
            return self.end(&mut st, ErrCode::Other, CUT_OFF);
        }
        self.out.send_more_tagged(Some(self.tag), told.encoded(event_fields));
        st.next = rev + 1;
    }

    /// The stream's last answer: an error and the first revision not sent.
    fn end(&self, st: &mut State, code: ErrCode, detail: &str) {
        if std::mem::replace(&mut st.ended, true) {
            return;
        }
        self.forget(st);
        let mut r =
            if detail.is_empty() { error(Some(self.tag), code) } else { Response::error(Some(self.tag), code, detail) };
        r.rev = Some(st.next);
        // This answer settles the STREAM request itself.
        self.out.send(r);
        if let Some(streams) = self.streams.upgrade() {
            let mut open = streams.lock();
            if open.get(&self.tag).is_some_and(|f| std::ptr::eq(&**f, self)) {
                open.remove(&self.tag);
            }
        }
    }

    /// Ends the stream without an answer of its own (STOP's answer says it).
    fn stop(&self) {
        let mut st = self.state.lock();
        if std::mem::replace(&mut st.ended, true) {
            return;
        }
        self.forget(&mut st);
        self.out.settle();
    }

    fn forget(&self, st: &mut State) {
        if let Some(id) = st.held.take() {
            self.node.drop_wait(&id);
        }
    }
}
