//! Held WAITs, indexed so that an event touches only the waiters that could match it.
//!
//! A waiter is filed under its glob's literal prefix cut back to the last `/`
//! (`/a/b*` under `/a/`), or under the whole pattern if it has no wildcard. An
//! event at `/a/b/c` then looks only in the buckets `/`, `/a/`, `/a/b/` and
//! `/a/b/c`: the cost per event is the path's depth plus the waiters in those
//! buckets, not every waiter on the node.

use doozer_store::{Event, Glob, Rev};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::oneshot;

struct Waiter {
    glob: Arc<Glob>,
    from: Rev,
    tx: oneshot::Sender<Event>,
}

/// Where a waiter is filed, so it can be removed when its connection goes.
#[derive(Clone, Debug)]
pub struct WaiterId {
    key: Arc<str>,
    id: u64,
}

/// The node-wide table of held WAITs.
pub struct Waiters {
    buckets: HashMap<Arc<str>, HashMap<u64, Waiter>>,
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
        Waiters { buckets: HashMap::new(), next_id: 0, count: 0, max }
    }

    /// Number of waiters held.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Holds a waiter for the first event at or after `from` matching `glob`.
    /// `None` if the table is full.
    pub fn add(&mut self, glob: Arc<Glob>, from: Rev, tx: oneshot::Sender<Event>) -> Option<WaiterId> {
        if self.count >= self.max {
            return None;
        }
        let key: Arc<str> = Arc::from(bucket_key(&glob));
        let id = self.next_id;
        self.next_id += 1;
        self.buckets.entry(key.clone()).or_default().insert(id, Waiter { glob, from, tx });
        self.count += 1;
        Some(WaiterId { key, id })
    }

    /// Forgets a waiter; harmless if it was already answered.
    pub fn remove(&mut self, w: &WaiterId) {
        if let Some(bucket) = self.buckets.get_mut(&w.key) {
            if bucket.remove(&w.id).is_some() {
                self.count -= 1;
            }
            if bucket.is_empty() {
                self.buckets.remove(&w.key);
            }
        }
    }

    /// Answers and removes every waiter that `event` satisfies.
    pub fn dispatch(&mut self, event: &Event) {
        let path: &str = &event.path;
        let dirs = path.match_indices('/').map(|(i, _)| &path[..=i]);
        let mut keys: Vec<&str> = dirs.collect();
        if !path.ends_with('/') {
            keys.push(path);
        }
        for key in keys {
            let Some(bucket) = self.buckets.get_mut(key) else {
                continue;
            };
            let hits: Vec<u64> =
                bucket.iter().filter(|(_, w)| event.rev >= w.from && w.glob.matches(path)).map(|(id, _)| *id).collect();
            for id in hits {
                if let Some(w) = bucket.remove(&id) {
                    self.count -= 1;
                    let _ = w.tx.send(event.clone());
                }
            }
            if bucket.is_empty() {
                self.buckets.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use doozer_store::EventKind;

    fn ev(rev: Rev, path: &str) -> Event {
        Event { rev, path: path.into(), body: Bytes::new(), kind: EventKind::Set }
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

    #[test]
    fn dispatch_answers_only_matching_waiters_from_their_rev() {
        let mut w = Waiters::new(10);
        let mut rxs = vec![];
        for (glob, from) in [("/a/*", 1), ("/a/b", 5), ("/**", 1), ("/x", 1), ("/", 1)] {
            let (tx, rx) = oneshot::channel();
            w.add(Arc::new(Glob::parse(glob).unwrap()), from, tx).unwrap();
            rxs.push(rx);
        }
        w.dispatch(&ev(3, "/a/b"));
        assert_eq!(rxs[0].try_recv().unwrap().rev, 3);
        assert!(rxs[1].try_recv().is_err(), "from 5 must not see rev 3");
        assert_eq!(rxs[2].try_recv().unwrap().rev, 3);
        assert!(rxs[3].try_recv().is_err());
        assert_eq!(w.len(), 3);
        w.dispatch(&ev(5, "/a/b"));
        assert_eq!(rxs[1].try_recv().unwrap().rev, 5);
        w.dispatch(&ev(6, "/"));
        assert_eq!(rxs[4].try_recv().unwrap().rev, 6);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn full_table_and_removal() {
        let mut w = Waiters::new(1);
        let (tx, _rx) = oneshot::channel();
        let id = w.add(Arc::new(Glob::parse("/a").unwrap()), 1, tx).unwrap();
        let (tx2, _rx2) = oneshot::channel();
        assert!(w.add(Arc::new(Glob::parse("/b").unwrap()), 1, tx2).is_none());
        w.remove(&id);
        w.remove(&id);
        assert_eq!(w.len(), 0);
    }
}
