//! One node's state: its store and who is waiting on it.
//!
//! Changes arrive from consensus in commit order: [`Node::apply`] for one
//! entry, [`Node::install`] for a snapshot. Those are the only places where
//! the store changes, so held WAITs and revision watchers never miss an event.
//!
//! The waiters an apply satisfies leave the table under the store's lock
//! and are told just after, before `apply` returns. (Telling them from a
//! task of their own, so that consensus and the writer's answer need not
//! wait, was tried and measured: with 1,000 watchers on this 2-core
//! machine their p99 grew from 15 to 21-33 ms, and at 100 it gained
//! nothing; see docs/performance.md.)

use crate::metrics::Metrics;
use crate::waiters::{Fired, Notify, Owner, WaiterId, Waiters, Wake};
use doozer_store::{Command, Event, Glob, HistoryLimits, Image, ImageError, Outcome, ReadError, Rev, Snapshot, Store};
use parking_lot::{Mutex, RwLock};
use std::sync::Arc;
use tokio::sync::{oneshot, watch};

/// The server's bounds, set from flags; each is in the README.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest SET body, in bytes.
    pub max_value: usize,
    /// Requests a connection may have unanswered (held WAITs included).
    pub max_pending: usize,
    /// Held WAITs on the whole node.
    pub max_waiters: usize,
    /// How much history the store keeps.
    pub history: HistoryLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value: doozer_proto::MAX_VALUE,
            max_pending: 4096,
            max_waiters: 250_000,
            history: HistoryLimits::default(),
        }
    }
}

/// How a WAIT starts.
pub enum WaitStart {
    /// The event is already in the history.
    Ready(Event),
    /// Held: the event (or `None`: too late after all) comes through the
    /// receiver; the guard unregisters on drop.
    Held(oneshot::Receiver<Option<Event>>, WaitGuard),
    TooLate,
    /// The node holds as many waiters as it may.
    Full,
}

/// How a WAIT answered by a callback starts.
pub enum Hold {
    /// The event is already in the history; the callback was not kept.
    Ready(Event),
    /// Held: the callback runs when the event comes, unless its owner goes
    /// first or it is dropped ([`Node::drop_wait`]).
    Held(WaiterId),
    TooLate,
    /// The node holds as many waiters as it may.
    Full,
}

enum Registered {
    Ready(Event),
    Held(WaiterId),
    TooLate,
    Full,
}

/// Unregisters a held WAIT when dropped (answered, or its connection closed).
pub struct WaitGuard {
    node: Arc<Node>,
    id: WaiterId,
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.node.waiters.lock().remove(&self.id);
    }
}

/// Tells the waiters of every event in an outcome (a batch has several).
fn dispatch(waiters: &mut Waiters, outcome: &Outcome, fired: &mut Fired) {
    match outcome {
        Outcome::Changed(event) => waiters.dispatch(event, fired),
        Outcome::Batch(outs) => outs.iter().for_each(|o| dispatch(waiters, o, fired)),
        Outcome::Unchanged | Outcome::Failed(_) => {}
    }
}

/// A node: identity, store and waiters.
pub struct Node {
    id: String,
    limits: Limits,
    store: RwLock<Store>,
    waiters: Mutex<Waiters>,
    rev_tx: watch::Sender<Rev>,
    /// True once this node has caught up and may answer clients.
    ready: watch::Sender<bool>,
    /// Set when the cluster removed this node: it no longer takes writes.
    removed: watch::Sender<bool>,
    metrics: Arc<Metrics>,
    /// The last owner number handed out (see [`Node::new_owner`]).
    owners: std::sync::atomic::AtomicU64,
}

impl Node {
    pub fn new(id: String, limits: Limits) -> Arc<Node> {
        let store = Store::new(limits.history);
        let waiters = Waiters::new(limits.max_waiters);
        let (rev_tx, _) = watch::channel(0);
        let (ready, _) = watch::channel(false);
        Arc::new(Node {
            id,
            limits,
            store: RwLock::new(store),
            waiters: Mutex::new(waiters),
            rev_tx,
            ready,
            removed: watch::channel(false).0,
            metrics: Arc::default(),
            owners: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// This node's id (16 characters of base32).
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// A new owner for held WAITs: one per client connection.
    pub fn new_owner(&self) -> Owner {
        self.owners.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
    }

    /// Drops one held WAIT; harmless if it was already answered.
    pub fn drop_wait(&self, id: &WaiterId) {
        self.waiters.lock().remove(id);
    }

    /// Drops every WAIT `owner` still holds.
    pub fn forget_waits(&self, owner: Owner) {
        self.waiters.lock().remove_owner(owner);
    }

    /// Lets clients in: this node has caught up with the cluster.
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Waits until the node has caught up.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Marks the node as removed from its cluster.
    pub fn set_removed(&self) {
        self.removed.send_replace(true);
    }

    pub fn is_removed(&self) -> bool {
        *self.removed.borrow()
    }

    /// Completes when the cluster has removed this node.
    pub async fn wait_removed(&self) {
        let mut rx = self.removed.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// The store as an image, for a snapshot.
    pub fn image(&self) -> Image {
        self.store.read().image()
    }

    /// Replaces the store with a snapshot's image. A held WAIT has seen
    /// nothing matching up to this node's old revision; the image holds the
    /// events from its own oldest on. So a waiter whose next unseen revision
    /// is below that oldest, with a gap between, cannot be answered exactly:
    /// it is told TOO_LATE. Every other waiter hears of the image's events
    /// newer than what this node had, as if they had been applied one by one.
    pub fn install(&self, new: Store) {
        let mut fired = Fired::default();
        {
            let mut store = self.store.write();
            let old_rev = store.rev();
            let known_from = new.oldest();
            *store = new;
            let mut waiters = self.waiters.lock();
            if old_rev + 1 < known_from {
                waiters.expire_below(known_from, &mut fired);
            }
            for e in store.events_after(old_rev) {
                waiters.dispatch(e, &mut fired);
            }
            self.rev_tx.send_replace(store.rev());
        }
        fired.notify();
    }

    /// The store a snapshot's image makes, for [`Node::install`]: slow for a
    /// large tree, so the caller runs it where it blocks nobody.
    pub fn prepare(&self, image: &Image) -> Result<Store, ImageError> {
        Store::from_image(image, self.limits.history)
    }

    /// Applies a committed change: the store moves and the satisfied waiters
    /// leave the table under the store lock, so no WAIT can slip between; they
    /// are answered just after, so no socket is written under the lock.
    pub fn apply(&self, cmd: &Command) -> Outcome {
        let mut fired = Fired::default();
        let outcome = {
            let mut store = self.store.write();
            let outcome = store.apply(cmd);
            dispatch(&mut self.waiters.lock(), &outcome, &mut fired);
            // A Load moves the revision without an event of its own.
            if store.rev() != *self.rev_tx.borrow() {
                self.rev_tx.send_replace(store.rev());
            }
            outcome
        };
        fired.notify();
        outcome
    }

    /// The last revision applied here.
    pub fn rev(&self) -> Rev {
        self.store.read().rev()
    }

    /// Every granted lease, (id, TTL in seconds).
    pub fn leases(&self) -> Vec<(doozer_store::LeaseId, u32)> {
        self.store.read().leases().iter().map(|(id, l)| (id, l.ttl)).collect()
    }

    /// How many leases are granted, and how many files are attached to one.
    pub fn lease_counts(&self) -> (usize, usize) {
        let store = self.store.read();
        (store.leases().len(), store.leases().attached())
    }

    /// One granted lease (a cheap copy: its file set is shared).
    pub fn lease(&self, id: doozer_store::LeaseId) -> Option<doozer_store::Lease> {
        self.store.read().leases().get(id).cloned()
    }

    /// The first granted lease whose id is greater than `id`.
    pub fn lease_after(&self, id: doozer_store::LeaseId) -> Option<(doozer_store::LeaseId, doozer_store::Lease)> {
        self.store.read().leases().after(id).map(|(id, l)| (id, l.clone()))
    }

    /// The tree at `rev` (`None`: now).
    pub fn snapshot(&self, rev: Option<Rev>) -> Result<Snapshot, ReadError> {
        self.store.read().snapshot(rev)
    }

    /// Waits until revision `rev` has been applied here.
    pub async fn wait_for_rev(&self, rev: Rev) {
        let mut rx = self.rev_tx.subscribe();
        // The sender lives as long as the node, so this only ends when rev arrives.
        let _ = rx.wait_for(|r| *r >= rev).await;
    }

    /// Starts a WAIT for the first event at or after `from` matching `glob`;
    /// a held one is answered through a channel.
    pub fn start_wait(self: &Arc<Node>, glob: Arc<Glob>, from: Rev) -> WaitStart {
        let (tx, rx) = oneshot::channel();
        let notify = Notify::Once(Box::new(move |wake| {
            let _ = tx.send(match wake {
                Wake::Event(told) => Some(told.event.clone()),
                Wake::TooLate => None,
            });
        }));
        match self.register(glob, from, 0, notify) {
            Registered::TooLate => WaitStart::TooLate,
            Registered::Ready(event) => WaitStart::Ready(event),
            Registered::Held(id) => WaitStart::Held(rx, WaitGuard { node: self.clone(), id }),
            Registered::Full => WaitStart::Full,
        }
    }

    /// Starts a WAIT (or a stream's waiter) whose answer `notify` sends when
    /// the event comes; it is dropped with the rest of `owner`'s when
    /// [`Node::forget_waits`] is called. A matching event already in the
    /// history is returned instead, and `notify` is not kept.
    pub fn hold_wait(&self, glob: Arc<Glob>, from: Rev, owner: Owner, notify: Notify) -> Hold {
        match self.register(glob, from, owner, notify) {
            Registered::TooLate => Hold::TooLate,
            Registered::Ready(event) => Hold::Ready(event),
            Registered::Held(id) => Hold::Held(id),
            Registered::Full => Hold::Full,
        }
    }

    /// The event if it already happened, else the waiter held.
    fn register(&self, glob: Arc<Glob>, from: Rev, owner: Owner, notify: Notify) -> Registered {
        let store = self.store.read();
        match store.first_event(from, &glob) {
            Err(_) => Registered::TooLate,
            Ok(Some(event)) => Registered::Ready(event),
            // Registered under the store's read lock: no apply can run between
            // the history check and the registration.
            Ok(None) => match self.waiters.lock().add(glob, from.max(1), owner, notify) {
                Some(id) => Registered::Held(id),
                None => Registered::Full,
            },
        }
    }

    /// Up to `max` events from `from` on matching `glob`, and the revision the
    /// scan got through (see [`Store::events_from`]).
    pub fn events_from(&self, from: Rev, glob: &Glob, max: usize) -> Result<(Vec<Event>, Rev), ReadError> {
        self.store.read().events_from(from, glob, max)
    }

    /// The oldest revision the history window holds.
    pub fn oldest(&self) -> Rev {
        self.store.read().oldest()
    }

    /// Changes to files matching `glob` at or before `upto`, newest first
    /// (see [`Store::events_before`]).
    pub fn events_before(&self, upto: Rev, glob: &Glob, skip: usize, max: usize) -> Result<Vec<Event>, ReadError> {
        self.store.read().events_before(upto, glob, skip, max)
    }

    /// The fingerprint of the event that made revision `rev`, if still in history.
    pub fn fingerprint(&self, rev: Rev) -> Option<u64> {
        self.store.read().event_at(rev).map(Event::fingerprint)
    }

    /// Revisions in the history window and their estimated bytes.
    pub fn history_size(&self) -> (usize, usize) {
        self.store.read().history_size()
    }

    /// Number of WAITs held on this node.
    pub fn waiters(&self) -> usize {
        self.waiters.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doozer_store::{Body, CLOBBER};

    fn set(path: &str) -> Command {
        Command::Set { path: path.into(), rev: CLOBBER, body: Body::from("x") }
    }

    /// A leader's image after `writes` more writes under `/w/` than `node` has,
    /// with a history window of `window` revisions.
    fn image_ahead(node: &Node, writes: usize, window: usize) -> Image {
        let mut leader = Store::new(HistoryLimits { revs: window, bytes: usize::MAX });
        leader.apply(&Command::Load { image: encode(&node.image()) });
        for i in 0..writes {
            leader.apply(&set(&format!("/w/{}", i % 7)));
        }
        leader.image()
    }

    fn encode(image: &Image) -> bytes::Bytes {
        let mut out = Vec::new();
        image.encode(&mut out);
        out.into()
    }

    fn held(node: &Arc<Node>, glob: &str, from: Rev) -> oneshot::Receiver<Option<Event>> {
        match node.start_wait(Arc::new(Glob::parse(glob).unwrap()), from) {
            WaitStart::Held(rx, guard) => {
                std::mem::forget(guard);
                rx
            }
            _ => panic!("the WAIT should be held"),
        }
    }

    #[test]
    fn a_snapshot_past_a_held_wait_answers_it_too_late_never_with_a_later_event() {
        let node = Node::new("N".into(), Limits::default());
        for i in 0..5 {
            node.apply(&set(&format!("/other/{i}")));
        }
        let mut watcher = held(&node, "/w/**", node.rev() + 1);
        let mut future = held(&node, "/w/**", node.rev() + 3);
        let mut later = held(&node, "/w/**", node.rev() + 60);
        // 100 writes, of which the image's history keeps the last 50.
        let image = image_ahead(&node, 100, 50);
        node.install(node.prepare(&image).unwrap());
        assert_eq!(node.rev(), 105);
        assert_eq!(watcher.try_recv().unwrap(), None, "revisions 6..55 are unknown here: too late");
        assert_eq!(future.try_recv().unwrap(), None);
        let e = later.try_recv().unwrap().expect("revision 65 is in the image's history");
        assert_eq!(e.rev, 65);
        assert_eq!(node.waiters(), 0);
    }

    #[test]
    fn a_snapshot_whose_history_covers_the_gap_answers_held_waits_exactly() {
        let node = Node::new("N".into(), Limits::default());
        node.apply(&set("/other/a"));
        let mut watcher = held(&node, "/w/3", 2);
        let image = image_ahead(&node, 40, 100);
        node.install(node.prepare(&image).unwrap());
        assert_eq!(watcher.try_recv().unwrap().map(|e| e.rev), Some(5), "the first write to /w/3 is revision 5");
    }

    /// A stream's standing waiter on `glob` from the next revision: what it is told.
    fn standing(node: &Node, glob: &str) -> Arc<Mutex<Vec<Option<Rev>>>> {
        let told = Arc::new(Mutex::new(Vec::new()));
        let t = told.clone();
        let notify = Notify::Every(Arc::new(move |wake: Wake<'_>| {
            t.lock().push(match wake {
                Wake::Event(e) => Some(e.event.rev),
                Wake::TooLate => None,
            });
        }));
        let glob = Arc::new(Glob::parse(glob).unwrap());
        assert!(matches!(node.hold_wait(glob, node.rev() + 1, 1, notify), Hold::Held(_)));
        told
    }

    #[test]
    fn a_stream_caught_up_by_a_snapshot_hears_every_event_it_missed_in_order_then_goes_on() {
        let node = Node::new("N".into(), Limits::default());
        node.apply(&set("/other/a"));
        let told = standing(&node, "/w/**");
        node.apply(&set("/w/0"));
        // 40 more writes, every 7th to /w/0..6 cycling; the image's history covers them all.
        let image = image_ahead(&node, 40, 100);
        node.install(node.prepare(&image).unwrap());
        node.apply(&set("/w/9"));
        let expected: Vec<Option<Rev>> = (2..=node.rev()).map(Some).collect();
        assert_eq!(*told.lock(), expected, "every /w event, in order, across the install");
        assert_eq!(node.waiters(), 1, "the stream's waiter stays");
    }

    #[test]
    fn a_stream_past_whose_events_a_snapshot_jumped_is_told_too_late_once() {
        let node = Node::new("N".into(), Limits::default());
        node.apply(&set("/other/a"));
        let told = standing(&node, "/w/**");
        let image = image_ahead(&node, 100, 50);
        node.install(node.prepare(&image).unwrap());
        node.apply(&set("/w/9"));
        assert_eq!(*told.lock(), vec![None], "revisions 2..51 are unknown here: too late, and nothing after");
        assert_eq!(node.waiters(), 0);
    }
}
