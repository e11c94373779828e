//! The store against a deliberately naive model: a flat map from full path to
//! (body, rev), with directories derived from file paths, and a full copy of the
//! map kept for every revision, and leases as a map from lease to TTL and from
//! file to lease. Random command sequences must give the same outcomes,
//! revisions, events and reads (now and at past revisions), and the same
//! lease table, also after a round trip through an image.

use doozer_store::{
    Body, Command, Event, EventKind, Glob, HistoryLimits, Image, LeaseError, Outcome, ReadError, Stat, Store,
    StoreError,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

type Files = BTreeMap<String, (Body, i64)>;

#[derive(Default)]
struct Model {
    rev: i64,
    states: Vec<Files>, // states[r] = files after revision r
    events: Vec<Event>, // events[r - 1]
    leases: BTreeMap<u64, u32>,
    owner: BTreeMap<String, u64>,
}

fn is_dir(files: &Files, path: &str) -> bool {
    let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
    files.keys().any(|k| k.starts_with(&prefix))
}

fn valid(path: &str) -> bool {
    path == "/"
        || (path.starts_with('/')
            && path[1..]
                .split('/')
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')))
}

fn ancestors(path: &str) -> Vec<String> {
    let parts: Vec<&str> = path[1..].split('/').collect();
    (1..parts.len()).map(|i| format!("/{}", parts[..i].join("/"))).collect()
}

impl Model {
    fn new() -> Model {
        Model { rev: 0, states: vec![Files::new()], events: vec![], ..Model::default() }
    }

    fn files(&self) -> &Files {
        &self.states[self.rev as usize]
    }

    fn check(&self, path: &str, rev: i64) -> Result<(), StoreError> {
        if !valid(path) {
            return Err(StoreError::BadPath);
        }
        if path == "/" {
            return Err(StoreError::IsDir);
        }
        let files = self.files();
        if ancestors(path).iter().any(|a| files.contains_key(a)) {
            return Err(StoreError::NotDir);
        }
        let dir = is_dir(files, path);
        let current = if dir { -2 } else { files.get(path).map_or(0, |f| f.1) };
        if rev != -1 && rev < current {
            return Err(StoreError::RevMismatch);
        }
        if dir {
            return Err(StoreError::IsDir);
        }
        Ok(())
    }

    fn commit(&mut self, files: Files, path: &str, body: Body, kind: EventKind) -> Outcome {
        self.rev += 1;
        self.states.push(files);
        let e = Event { rev: self.rev, path: path.into(), body, kind };
        self.events.push(e.clone());
        Outcome::Changed(e)
    }

    fn apply(&mut self, cmd: &Command) -> Outcome {
        match cmd {
            Command::Load { .. } | Command::Batch(_) => unreachable!("the generator makes neither"),
            Command::Nop => {
                let files = self.files().clone();
                self.commit(files, "/", Body::default(), EventKind::Nop)
            }
            Command::Set { path, rev, body } => {
                if let Err(e) = self.check(path, *rev) {
                    return Outcome::Failed(e);
                }
                self.owner.remove(path);
                let mut files = self.files().clone();
                files.insert(path.clone(), (body.clone(), self.rev + 1));
                self.commit(files, path, body.clone(), EventKind::Set)
            }
            Command::Del { path, rev } => {
                if let Err(e) = self.check(path, *rev) {
                    return Outcome::Failed(e);
                }
                let mut files = self.files().clone();
                if files.remove(path).is_none() {
                    return Outcome::Unchanged;
                }
                self.owner.remove(path);
                self.commit(files, path, Body::default(), EventKind::Del)
            }
            Command::Grant { id, ttl } => {
                let refused = if *id == 0 {
                    Some(LeaseError::ZeroId)
                } else if *ttl == 0 || *ttl > doozer_store::MAX_TTL {
                    Some(LeaseError::BadTtl(*ttl))
                } else if self.leases.contains_key(id) {
                    Some(LeaseError::Exists(*id))
                } else {
                    None
                };
                match refused {
                    Some(e) => Outcome::Failed(StoreError::Lease(e)),
                    None => {
                        self.leases.insert(*id, *ttl);
                        Outcome::Unchanged
                    }
                }
            }
            Command::Revoke { id } => {
                if self.leases.remove(id).is_none() {
                    return Outcome::Failed(StoreError::Lease(LeaseError::NotFound(*id)));
                }
                let files: Vec<String> = self.owner.iter().filter(|(_, o)| *o == id).map(|(p, _)| p.clone()).collect();
                let dels = files.into_iter().map(|path| self.apply(&Command::Del { path, rev: -1 })).collect();
                Outcome::Batch(dels)
            }
            Command::SetLeased { path, rev, body, lease } => {
                if !self.leases.contains_key(lease) {
                    return Outcome::Failed(StoreError::Lease(LeaseError::NotFound(*lease)));
                }
                let done = self.apply(&Command::Set { path: path.clone(), rev: *rev, body: body.clone() });
                if matches!(done, Outcome::Changed(_)) {
                    self.owner.insert(path.clone(), *lease);
                }
                done
            }
        }
    }

    /// The lease table as `Store::leases` would list it: (id, ttl, files).
    fn lease_table(&self) -> Vec<(u64, u32, Vec<String>)> {
        let files = |id: u64| self.owner.iter().filter(|(_, o)| **o == id).map(|(p, _)| p.clone()).collect();
        self.leases.iter().map(|(id, ttl)| (*id, *ttl, files(*id))).collect()
    }
}

fn model_stat(files: &Files, path: &str) -> Stat {
    if path == "/" {
        // The root always exists, even in an empty store.
        return Stat::Dir { entries: model_dir(files, path).len() };
    }
    if let Some((b, r)) = files.get(path) {
        return Stat::File { rev: *r, len: b.len() };
    }
    if valid(path) && is_dir(files, path) {
        return Stat::Dir { entries: model_dir(files, path).len() };
    }
    Stat::Missing
}

fn model_dir(files: &Files, path: &str) -> Vec<String> {
    let prefix = if path == "/" { "/".to_string() } else { format!("{path}/") };
    let mut names: Vec<String> = files
        .keys()
        .filter_map(|k| k.strip_prefix(&prefix))
        .map(|rest| rest.split('/').next().unwrap_or("").to_string())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn model_walk(files: &Files, glob: &Glob) -> Vec<(String, i64)> {
    let mut v: Vec<(Vec<String>, String, i64)> = files
        .iter()
        .filter(|(k, _)| glob.matches(k))
        .map(|(k, (_, r))| (k[1..].split('/').map(String::from).collect(), k.clone(), *r))
        .collect();
    v.sort();
    v.into_iter().map(|(_, k, r)| (k, r)).collect()
}

fn arb_path() -> impl Strategy<Value = String> {
    let name = prop_oneof![Just("a"), Just("b"), Just("a.b"), Just("c-1"), Just("z")];
    prop_oneof![
        9 => prop::collection::vec(name, 1..4).prop_map(|v| format!("/{}", v.join("/"))),
        1 => prop_oneof![Just("/".to_string()), Just("/a/".to_string()), Just("a".to_string()), Just("/x_y".to_string()), Just(String::new())],
    ]
}

fn arb_rev() -> impl Strategy<Value = i64> {
    prop_oneof![Just(-1i64), Just(0), Just(-2), 1i64..40, Just(i64::MAX)]
}

fn arb_cmd() -> impl Strategy<Value = Command> {
    prop_oneof![
        6 => (arb_path(), arb_rev(), prop::collection::vec(any::<u8>(), 0..4))
            .prop_map(|(path, rev, b)| Command::Set { path, rev, body: Body::from(b) }),
        3 => (arb_path(), arb_rev()).prop_map(|(path, rev)| Command::Del { path, rev }),
        1 => Just(Command::Nop),
        1 => (0u64..4, prop_oneof![Just(0u32), Just(5), Just(doozer_store::MAX_TTL + 1)])
            .prop_map(|(id, ttl)| Command::Grant { id, ttl }),
        1 => (0u64..4).prop_map(|id| Command::Revoke { id }),
        3 => (arb_path(), arb_rev(), prop::collection::vec(any::<u8>(), 0..4), 0u64..4)
            .prop_map(|(path, rev, b, lease)| Command::SetLeased { path, rev, body: Body::from(b), lease }),
    ]
}

fn store_lease_table(store: &Store) -> Vec<(u64, u32, Vec<String>)> {
    store.leases().iter().map(|(id, l)| (id, l.ttl, l.files.iter().cloned().collect())).collect()
}

fn arb_glob() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/**"),
        Just("/a/*"),
        Just("/a/**"),
        Just("/*"),
        Just("/?"),
        Just("/a*"),
        Just("/*/b"),
        Just("/a.b/?/*")
    ]
    .prop_map(String::from)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    // The store keeps a whole tree only every `keep` revisions and rebuilds
    // the others from events; small values make runs cross many kept trees.
    fn store_matches_model(cmds in prop::collection::vec(arb_cmd(), 1..300),
                           hist in prop_oneof![1usize..30, 30usize..200],
                           keep in prop_oneof![1i64..10, Just(256i64)],
                           probes in prop::collection::vec((arb_path(), 0i64..310, arb_glob()), 10)) {
        let mut store = Store::new(HistoryLimits { revs: hist, bytes: usize::MAX });
        store.keep_tree_every(keep);
        let mut model = Model::new();
        let mut held = Vec::new();
        for cmd in &cmds {
            prop_assert_eq!(store.apply(cmd), model.apply(cmd), "command {:?}", cmd);
            prop_assert_eq!(store.rev(), model.rev);
            held.push(store.current());
        }
        prop_assert_eq!(store_lease_table(&store), model.lease_table());
        // An image carries the lease table: a node caught up by snapshot
        // revokes exactly what the others would.
        let mut bytes = Vec::new();
        store.image().encode(&mut bytes);
        let copy = Store::from_image(&Image::decode(&bytes).unwrap(), HistoryLimits { revs: hist, bytes: usize::MAX }).unwrap();
        prop_assert_eq!(store_lease_table(&copy), model.lease_table());
        // Later writes change the tree in place: trees handed out before must not see them.
        let all = Glob::parse("/**").unwrap();
        for snap in &held {
            let walked: Vec<(String, i64)> = snap.walk(&all).into_iter().map(|(p, f)| (p, f.rev)).collect();
            prop_assert_eq!(walked, model_walk(&model.states[snap.rev() as usize], &all));
        }
        let oldest = (model.rev - hist as i64 + 1).max(1);
        prop_assert_eq!(store.oldest(), oldest.min(model.rev + 1));
        for (path, at, glob) in &probes {
            let glob = Glob::parse(glob).unwrap();
            let snap = store.snapshot(Some(*at));
            let want_rev = (*at).max(1);
            if want_rev > model.rev {
                prop_assert_eq!(snap.err(), Some(ReadError::Future(want_rev)));
            } else if want_rev < oldest {
                prop_assert_eq!(snap.err(), Some(ReadError::TooLate));
                prop_assert_eq!(store.first_event(*at, &glob), Err(ReadError::TooLate));
            } else {
                let snap = snap.unwrap();
                let files = &model.states[want_rev as usize];
                prop_assert_eq!(snap.rev(), want_rev);
                prop_assert_eq!(snap.stat(path), model_stat(files, path));
                let got = snap.get(path).map(|f| f.map(|f| (f.body, f.rev)));
                let want = if path == "/" || (valid(path) && is_dir(files, path)) { Err(StoreError::IsDir) } else { Ok(files.get(path.as_str()).cloned()) };
                prop_assert_eq!(got, want);
                if valid(path) && !files.contains_key(path.as_str()) && (path == "/" || is_dir(files, path)) {
                    let names: Vec<String> = snap.getdir(path).unwrap().iter().map(|n| n.to_string()).collect();
                    prop_assert_eq!(names, model_dir(files, path));
                }
                let walked: Vec<(String, i64)> = snap.walk(&glob).into_iter().map(|(p, f)| (p, f.rev)).collect();
                prop_assert_eq!(walked, model_walk(files, &glob));
                let first = model.events[(want_rev - 1) as usize..].iter().find(|e| glob.matches(&e.path)).cloned();
                prop_assert_eq!(store.first_event(*at, &glob), Ok(first));
                // A stream read in pages of 3 sees exactly the matching events, in order.
                let want: Vec<Event> = model.events[(want_rev - 1) as usize..].iter().filter(|e| glob.matches(&e.path)).cloned().collect();
                let (mut got, mut next) = (Vec::new(), *at);
                loop {
                    let (page, through) = store.events_from(next, &glob, 3).unwrap();
                    prop_assert!(page.len() <= 3 && through >= next.max(1) - 1);
                    prop_assert!(page.iter().all(|e| e.rev <= through));
                    got.extend(page);
                    if through == model.rev { break; }
                    next = through + 1;
                }
                prop_assert_eq!(got, want);
                prop_assert_eq!(store.event_at(want_rev).map(|e| e.rev), Some(want_rev));
            }
        }
    }
}

#[test]
fn walk_order_is_per_directory_not_full_path() {
    let mut s = Store::new(HistoryLimits::default());
    for p in ["/a.b", "/a/z"] {
        s.apply(&Command::Set { path: p.into(), rev: 0, body: Body::default() });
    }
    let walked: Vec<String> = s.current().walk(&Glob::parse("/**").unwrap()).into_iter().map(|(p, _)| p).collect();
    assert_eq!(walked, ["/a/z", "/a.b"]);
}

#[test]
fn history_is_bounded_by_bytes() {
    let mut s = Store::new(HistoryLimits { revs: 1000, bytes: 10_000 });
    for i in 0..100 {
        s.apply(&Command::Set { path: "/big".into(), rev: -1, body: Body::from(vec![i as u8; 1000]) });
    }
    let (revs, bytes) = s.history_size();
    assert!(bytes <= 30_000 && revs < 15, "{revs} revs, {bytes} bytes");
    assert_eq!(s.snapshot(Some(1)).err(), Some(ReadError::TooLate));
    assert_eq!(s.current().get("/big").unwrap().unwrap().rev, 100);
}

/// Entries below the window wait for the next kept tree before they are
/// dropped; with large bodies they count against the byte bound too, so the
/// history as a whole, not only its readable part, stays within it.
#[test]
fn hidden_history_counts_against_the_byte_bound() {
    let limit = 8 << 20;
    let mut s = Store::new(HistoryLimits { revs: 2000, bytes: limit });
    for i in 0..400usize {
        let body = Body::from(vec![i as u8; 1 << 20]);
        s.apply(&Command::Set { path: format!("/big/{}", i % 10), rev: -1, body });
        let (revs, bytes) = s.history_size();
        assert!(bytes <= limit || revs == 1, "after {i} writes: {bytes} bytes of history over {limit}");
        // Each entry holds at least its 1 MiB body.
        assert!(s.held_entries() <= limit / (1 << 20) + 1, "after {i} writes: {} entries in memory", s.held_entries());
        // Every readable revision still reads right.
        let oldest = s.rev() - revs as i64 + 1;
        let past = s.snapshot(Some(oldest)).unwrap();
        assert_eq!(past.get(&format!("/big/{}", (oldest - 1) % 10)).unwrap().unwrap().rev, oldest);
    }
    let live: usize = s.current().files().iter().map(|(_, f)| f.body.len()).sum();
    assert_eq!(live, 10 << 20);
}

#[test]
fn del_below_a_file_keeps_the_file() {
    let mut s = Store::new(HistoryLimits::default());
    s.apply(&Command::Set { path: "/a".into(), rev: 0, body: Body::from(&b"x"[..]) });
    assert_eq!(s.apply(&Command::Del { path: "/a/b".into(), rev: -1 }), Outcome::Failed(StoreError::NotDir));
    assert_eq!(s.current().get("/a").unwrap().unwrap().body, Body::from(&b"x"[..]));
}

#[test]
fn empty_directories_vanish() {
    let mut s = Store::new(HistoryLimits::default());
    s.apply(&Command::Set { path: "/a/b/c".into(), rev: 0, body: Body::default() });
    assert_eq!(s.current().stat("/a/b"), Stat::Dir { entries: 1 });
    s.apply(&Command::Del { path: "/a/b/c".into(), rev: -1 });
    assert_eq!(s.current().stat("/a"), Stat::Missing);
    assert_eq!(s.current().stat("/"), Stat::Dir { entries: 0 });
    // The past still shows them.
    assert_eq!(s.snapshot(Some(1)).unwrap().stat("/a/b/c"), Stat::File { rev: 1, len: 0 });
}

#[test]
fn a_limited_walk_is_the_first_files_of_the_whole_walk() {
    let mut s = Store::new(HistoryLimits::default());
    for i in 0..300 {
        s.apply(&Command::Set { path: format!("/d{}/f{}", i % 7, i), rev: -1, body: Body::default() });
    }
    let glob = Glob::parse("/**").unwrap();
    let all = s.current().walk(&glob);
    for max in [0, 1, 5, 299, 300, 1000] {
        let first = s.current().walk_first(&glob, max);
        assert_eq!(first.len(), max.min(300));
        assert!(all.iter().zip(&first).all(|(a, b)| a.0 == b.0), "walk_first({max}) is a prefix");
    }
}
