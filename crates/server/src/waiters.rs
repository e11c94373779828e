//! Held WAITs and open streams, indexed so that an event touches only the
//! waiters that could match it.
//!
//! A waiter is filed under its glob's literal prefix cut back to the last `/`
//! (`/a/b*` under `/a/`), or under the whole pattern if it has no wildcard. An
//! event at `/a/b/c` then looks only in the buckets `/`, `/a/`, `/a/b/` and
//! `/a/b/c`: the cost per event is the path's depth plus the waiters in those
//! buckets, not every waiter on the node.
//!
//! A waiter is a callback, run after the node's locks are released with the
//! event that satisfies it (or with [`Wake::TooLate`] when the events it
//! waits for can no longer be known: the node caught up by a snapshot past
//! them): a client connection's callback queues the answer directly, with no
//! task per held WAIT. A held WAIT's callback runs once ([`Notify::Once`]); a
//! stream's stays filed and runs for every matching event, in revision order
//! ([`Notify::Every`]), so a stream that keeps up costs no registration and
//! no history scan per event. Waiters may belong to an owner (a connection),
//! so that all of an owner's waiters go at once when it closes.
//!
//! An event told to many waiters is one [`Told`]: the first callback that
//! needs its answer's bytes encodes them, and the rest share them.

use bytes::Bytes;
use doozer_store::{Event, Glob, Rev};
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// What a waiter is told.
pub enum Wake<'a> {
    /// The first matching event at or after its revision (for a stream: the
    /// next one).
    Event(&'a Told),
    /// The events from its revision on are not all known here any more (a
    /// snapshot brought this node past them): the protocol's TOO_LATE. A
    /// stream's waiter is gone after this.
    TooLate,
}

/// An event as its waiters are told it.
pub struct Told {
    pub event: Event,
    encoded: OnceCell<Bytes>,
}

impl Told {
    fn new(event: Event) -> Told {
        Told { event, encoded: OnceCell::new() }
    }

    /// The event encoded by `encode`, once for all the waiters told it
    /// (every caller must pass the same encoding).
    pub fn encoded(&self, encode: impl FnOnce(&Event) -> Bytes) -> &Bytes {
        self.encoded.get_or_init(|| encode(&self.event))
    }
}

/// What a waiter does with its answers. Callbacks run after the node's
/// locks are released (they may write to a socket) and must not block.
pub enum Notify {
    /// A held WAIT: told once, then forgotten.
    Once(Box<dyn FnOnce(Wake<'_>) + Send>),
    /// A stream: told every matching event until removed, or once TOO_LATE.
    Every(Arc<dyn Fn(Wake<'_>) + Send + Sync>),
}

impl Notify {
    fn call(self, wake: Wake<'_>) {
        match self {
            Notify::Once(f) => f(wake),
            Notify::Every(f) => f(wake),
        }
    }
}

/// Waiters an event satisfied (or that became too late), to be told after
/// the locks are released: [`Fired::notify`].
#[derive(Default)]
pub struct Fired {
    events: Vec<(Told, Vec<Notify>)>,
    too_late: Vec<Notify>,
}

impl Fired {
    /// Runs every fired waiter's callback, events in the order they were fired.
    pub fn notify(self) {
        for n in self.too_late {
            n.call(Wake::TooLate);
        }
        for (told, notifies) in self.events {
            for n in notifies {
                n.call(Wake::Event(&told));
            }
        }
    }
}

/// Who holds a waiter: a connection, or nobody in particular (0).
pub type Owner = u64;

struct Waiter {
    glob: Arc<Glob>,
    from: Rev,
    owner: Owner,
    notify: Notify,
}

/// Where a waiter is filed, so it can be removed when its connection goes.
#[derive(Clone, Debug)]
pub struct WaiterId {
    key: Arc<str>,
    id: u64,
}

/// The node-wide table of held WAITs.
pub struct Waiters {
    /// Ordered maps, so waiters are answered oldest first and in the same
    /// order every time (a simulation replays exactly).
    buckets: BTreeMap<Arc<str>, BTreeMap<u64, Waiter>>,
    /// Each owner's waiters: id -> bucket key.
    by_owner: HashMap<Owner, HashMap<u64, Arc<str>>>,
    next_id: u64,
    count: usize,
    max: usize,
}

fn bucket_key(glob: &Glob) -> &str {
    if glob.is_literal() {
        return glob.as_str();
    }
    let prefix = glob.literal_prefix();
    // A glob always starts with '/', so there is a last '/'.
    &prefix[..prefix.rfind('/').map_or(0, |i| i + 1)]
}

impl Waiters {
    /// A table that holds at most `max` waiters.
    pub fn new(max: usize) -> Waiters {
        Waiters { buckets: BTreeMap::new(), by_owner: HashMap::new(), next_id: 0, count: 0, max }
    }

    /// Number of waiters held.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Files a waiter for the events at or after `from` matching `glob`: a
    /// held WAIT for the first, a stream for each. `None` if the table is full.
    pub fn add(&mut self, glob: Arc<Glob>, from: Rev, owner: Owner, notify: Notify) -> Option<WaiterId> {
        if self.count >= self.max {
            return None;
        }
        // A WAIT loop files under the same key again and again: share it.
        let key = match self.buckets.get_key_value(bucket_key(&glob)) {
            Some((key, _)) => key.clone(),
            None => Arc::from(bucket_key(&glob)),
        };
        let id = self.next_id;
        self.next_id += 1;
        self.buckets.entry(key.clone()).or_default().insert(id, Waiter { glob, from, owner, notify });
        self.count += 1;
        if owner != 0 {
            self.by_owner.entry(owner).or_default().insert(id, key.clone());
        }
        Some(WaiterId { key, id })
    }

    /// Forgets a waiter; harmless if it was already answered.
    pub fn remove(&mut self, w: &WaiterId) {
        let Some(bucket) = self.buckets.get_mut(&w.key) else {
            return;
        };
        let gone = bucket.remove(&w.id);
        if bucket.is_empty() {
            self.buckets.remove(&w.key);
        }
        if let Some(gone) = gone {
            self.count -= 1;
            self.unlist(gone.owner, w.id);
        }
    }

    /// Forgets every waiter of `owner` (its connection closed).
    pub fn remove_owner(&mut self, owner: Owner) {
        for (id, key) in self.by_owner.remove(&owner).unwrap_or_default() {
            self.remove(&WaiterId { key, id });
        }
    }

    fn unlist(&mut self, owner: Owner, id: u64) {
        if let Some(ids) = self.by_owner.get_mut(&owner) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    /// Removes every waiter waiting from before `rev` and adds it to `fired`
    /// as too late. Scans the whole table: only a snapshot install calls it.
    pub fn expire_below(&mut self, rev: Rev, fired: &mut Fired) {
        let mut gone = Vec::new();
        for (key, bucket) in self.buckets.iter_mut() {
            let ids: Vec<u64> = bucket.iter().filter(|(_, w)| w.from < rev).map(|(id, _)| *id).collect();
            for id in ids {
                if let Some(w) = bucket.remove(&id) {
                    gone.push((key.clone(), id, w));
                }
            }
        }
        self.buckets.retain(|_, b| !b.is_empty());
        for (_, id, w) in gone {
            self.count -= 1;
            self.unlist(w.owner, id);
            fired.too_late.push(w.notify);
        }
    }

    /// Adds to `fired` every waiter that `event` satisfies: a held WAIT
    /// leaves the table, a stream stays.
    pub fn dispatch(&mut self, event: &Event, fired: &mut Fired) {
        let path: &str = &event.path;
        let dirs = path.match_indices('/').map(|(i, _)| &path[..=i]);
        let file = (!path.ends_with('/')).then_some(path);
        let mut notifies = Vec::new();
        for key in dirs.chain(file) {
            let Some(bucket) = self.buckets.get_mut(key) else {
                continue;
            };
            let hits: Vec<u64> =
                bucket.iter().filter(|(_, w)| event.rev >= w.from && w.glob.matches(path)).map(|(id, _)| *id).collect();
            let mut answered = Vec::new();
            for id in hits {
                match bucket.get(&id).map(|w| &w.notify) {
                    Some(Notify::Every(f)) => notifies.push(Notify::Every(f.clone())),
                    Some(Notify::Once(_)) => {
                        if let Some(w) = bucket.remove(&id) {
                            notifies.push(w.notify);
                            answered.push((w.owner, id));
                        }
                    }
                    None => {}
                }
            }
            if bucket.is_empty() {
                self.buckets.remove(key);
            }
            self.count -= answered.len();
            for (owner, id) in answered {
                self.unlist(owner, id);
            }
        }
        if !notifies.is_empty() {
            fired.events.push((Told::new(event.clone()), notifies));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doozer_store::EventKind;
    use tokio::sync::oneshot;

    fn ev(rev: Rev, path: &str) -> Event {
        Event { rev, path: path.into(), body: doozer_store::Body::default(), kind: EventKind::Set }
    }

    fn fire(w: &mut Waiters, e: Event) {
        let mut fired = Fired::default();
        w.dispatch(&e, &mut fired);
        fired.notify();
    }

    #[test]
    fn keys() {
        let k = |p| bucket_key(&Glob::parse(p).unwrap()).to_string();
        assert_eq!(k("/a/b"), "/a/b");
        assert_eq!(k("/a/b*"), "/a/");
        assert_eq!(k("/**"), "/");
        assert_eq!(k("/a*/c"), "/");
        assert_eq!(k("/"), "/");
    }

    fn channel(owner: Owner, w: &mut Waiters, glob: &str, from: Rev) -> (Option<WaiterId>, oneshot::Receiver<Event>) {
        let (tx, rx) = oneshot::channel();
        let notify = Notify::Once(Box::new(move |wake| {
            if let Wake::Event(told) = wake {
                let _ = tx.send(told.event.clone());
            }
        }));
        (w.add(Arc::new(Glob::parse(glob).unwrap()), from, owner, notify), rx)
    }

    #[test]
    fn dispatch_answers_only_matching_waiters_from_their_rev() {
        let mut w = Waiters::new(10);
        let mut rxs = vec![];
        for (glob, from) in [("/a/*", 1), ("/a/b", 5), ("/**", 1), ("/x", 1), ("/", 1)] {
            let (id, rx) = channel(7, &mut w, glob, from);
            id.unwrap();
            rxs.push(rx);
        }
        fire(&mut w, ev(3, "/a/b"));
        assert_eq!(rxs[0].try_recv().unwrap().rev, 3);
        assert!(rxs[1].try_recv().is_err(), "from 5 must not see rev 3");
        assert_eq!(rxs[2].try_recv().unwrap().rev, 3);
        assert!(rxs[3].try_recv().is_err());
        assert_eq!(w.len(), 3);
        fire(&mut w, ev(5, "/a/b"));
        assert_eq!(rxs[1].try_recv().unwrap().rev, 5);
        fire(&mut w, ev(6, "/"));
        assert_eq!(rxs[4].try_recv().unwrap().rev, 6);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn full_table_and_removal() {
        let mut w = Waiters::new(1);
        let (id, _rx) = channel(0, &mut w, "/a", 1);
        let id = id.unwrap();
        assert!(channel(0, &mut w, "/b", 1).0.is_none());
        w.remove(&id);
        w.remove(&id);
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn an_owner_s_waiters_go_together_and_answered_ones_are_unlisted() {
        let mut w = Waiters::new(10);
        let (_, mut first) = channel(1, &mut w, "/a", 1);
        let _kept = channel(1, &mut w, "/b/**", 1);
        let _other = channel(2, &mut w, "/b/**", 1);
        fire(&mut w, ev(4, "/a"));
        assert_eq!(first.try_recv().unwrap().rev, 4);
        assert_eq!(w.by_owner[&1].len(), 1, "the answered waiter is no longer listed");
        w.remove_owner(1);
        assert_eq!(w.len(), 1);
        assert!(!w.by_owner.contains_key(&1));
        fire(&mut w, ev(5, "/b/c"));
        assert_eq!(w.len(), 0);
        assert!(w.by_owner.is_empty());
    }

    #[test]
    fn expiry_takes_exactly_the_waiters_from_below_the_revision() {
        let mut w = Waiters::new(10);
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        for (owner, glob, from) in [(1, "/a", 3), (1, "/b/**", 9), (2, "/**", 10), (0, "/c", 12)] {
            let told = told.clone();
            let notify = Notify::Once(Box::new(move |wake| {
                let what = match wake {
                    Wake::TooLate => "too late".to_string(),
                    Wake::Event(t) => format!("event {}", t.event.rev),
                };
                told.lock().unwrap().push((glob, what));
            }));
            w.add(Arc::new(Glob::parse(glob).unwrap()), from, owner, notify).unwrap();
        }
        let mut fired = Fired::default();
        w.expire_below(10, &mut fired);
        fired.notify();
        let mut got = told.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec![("/a", "too late".to_string()), ("/b/**", "too late".to_string())]);
        assert_eq!(w.len(), 2);
        assert!(!w.by_owner.contains_key(&1), "an expired waiter is no longer listed");
        fire(&mut w, ev(12, "/c"));
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn a_stream_s_waiter_is_told_every_match_in_order_and_stays_until_removed() {
        let mut w = Waiters::new(10);
        let told = Arc::new(std::sync::Mutex::new(Vec::new()));
        let t = told.clone();
        let notify = Notify::Every(Arc::new(move |wake: Wake<'_>| {
            t.lock().unwrap().push(match wake {
                Wake::Event(e) => e.event.rev,
                Wake::TooLate => -1,
            });
        }));
        let id = w.add(Arc::new(Glob::parse("/s/**").unwrap()), 3, 1, notify).unwrap();
        let (_, mut once) = channel(1, &mut w, "/s/**", 1);
        for (rev, path) in [(2, "/s/a"), (3, "/x"), (4, "/s/b"), (5, "/s/c/d")] {
            fire(&mut w, ev(rev, path));
        }
        assert_eq!(*told.lock().unwrap(), vec![4, 5], "from 3 on, only the matches");
        assert_eq!(once.try_recv().unwrap().rev, 2, "a held WAIT beside it is told once");
        assert_eq!(w.len(), 1, "the stream's waiter stays filed");
        w.remove(&id);
        fire(&mut w, ev(6, "/s/a"));
        assert_eq!(told.lock().unwrap().len(), 2, "removed: told nothing more");
        assert!(w.is_empty() && w.by_owner.is_empty());
    }

    #[test]
    fn a_stream_s_waiter_past_a_snapshot_is_told_too_late_once_and_forgotten() {
        let mut w = Waiters::new(10);
        let told = Arc::new(std::sync::Mutex::new(0));
        let t = told.clone();
        let notify = Notify::Every(Arc::new(move |_: Wake<'_>| *t.lock().unwrap() += 1));
        w.add(Arc::new(Glob::parse("/**").unwrap()), 3, 1, notify).unwrap();
        let mut fired = Fired::default();
        w.expire_below(10, &mut fired);
        fired.notify();
        fire(&mut w, ev(11, "/a"));
        assert_eq!(*told.lock().unwrap(), 1);
        assert!(w.is_empty());
    }

    #[test]
    fn waiters_told_one_event_share_one_encoding() {
        let mut w = Waiters::new(10);
        let encodings = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for glob in ["/a/**", "/a/b", "/**"] {
            let n = encodings.clone();
            let notify = Notify::Once(Box::new(move |wake| {
                if let Wake::Event(t) = wake {
                    t.encoded(|_| {
                        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        Bytes::from_static(b"x")
                    });
                }
            }));
            w.add(Arc::new(Glob::parse(glob).unwrap()), 1, 0, notify).unwrap();
        }
        fire(&mut w, ev(1, "/a/b"));
        assert_eq!(encodings.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(w.is_empty());
    }
}
