//! The `/ctl` subtree, laid out as the original does: `/ctl/name`,
//! `/ctl/node/<id>/{addr,hostname,version,writable}`, the `/ctl/cal/*`
//! slots whose holders are the voters, and the DzNS entries
//! `/ctl/ns/<cluster>/<id>` (the member's address) through which the
//! original clients find a cluster by name; plus `/ctl/leader`, the current
//! leader's id, and `/ctl/node/<id>/role` (`leader`, `voter`, `non-voter`).
//! Node ids are 80 random bits in base32.
//!
//! As in the original, `writable` is written `true` once a node holds a
//! `/ctl/cal` slot and votes (clients and the original's tests wait for it to
//! know a node has joined); a node without a slot is still served and still
//! takes writes, forwarding them to the leader.
//!
//! This module is the one place `/ctl` paths are spelled, and it only
//! describes: which files, with which bodies. Writing them is consensus's
//! job (`consensus::register`); this module knows nothing of Raft.

use doozer_store::{Command, Snapshot, CLOBBER};

/// The original's version, for the protocol level this server implements.
pub const PROTOCOL_VERSION: &str = "0.9.0-alpha";

/// The version written to `/ctl/node/<id>/version` and printed by `-v`: the
/// original's, so parsers of `0.9.0-alpha` keep working, and ours as semver
/// build metadata after the `+`.
pub const VERSION: &str = concat!("0.9.0-alpha+doozer-rs.", env!("CARGO_PKG_VERSION"));

/// The cluster's name.
pub const NAME: &str = "/ctl/name";
/// The leader's id.
pub const LEADER: &str = "/ctl/leader";
/// The voting slots.
pub const CAL: &str = "/ctl/cal";
/// One directory per member.
pub const NODES: &str = "/ctl/node";
/// DzNS entries, by cluster name.
pub const NS: &str = "/ctl/ns";

/// The slot named `name` (`0`, `1`, ...).
pub fn slot(name: &str) -> String {
    format!("{CAL}/{name}")
}

/// Member `id`'s directory.
pub fn node_dir(id: &str) -> String {
    format!("{NODES}/{id}")
}

/// One of member `id`'s files: `addr`, `hostname`, `version`, `role`, `writable`.
pub fn node_file(id: &str, file: &str) -> String {
    format!("{NODES}/{id}/{file}")
}

/// The DzNS entries of `cluster`'s members.
pub fn ns_dir(cluster: &str) -> String {
    format!("{NS}/{cluster}")
}

/// Where the DzNS entry of member `id` of `cluster` is.
pub fn ns_path(cluster: &str, id: &str) -> String {
    format!("{NS}/{cluster}/{id}")
}

/// The DzNS file whose writer won the race to start `cluster`.
pub fn boot_path(cluster: &str) -> String {
    format!("/ctl/boot/{cluster}")
}

/// A `/ctl/cal` slot: its path, the id it holds (empty: vacant) and its revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub path: String,
    pub holder: String,
    pub rev: doozer_store::Rev,
}

/// A file's body as text; empty if it is missing.
pub fn text(snap: &Snapshot, path: &str) -> String {
    snap.get(path).ok().flatten().map(|f| String::from_utf8_lossy(&f.body).into_owned()).unwrap_or_default()
}

/// True if the file exists.
pub fn exists(snap: &Snapshot, path: &str) -> bool {
    snap.get(path).ok().flatten().is_some()
}

/// The slots, in order.
pub fn slots(snap: &Snapshot) -> Vec<Slot> {
    let names = snap.getdir(CAL).unwrap_or_default();
    names
        .iter()
        .filter_map(|n| {
            let path = slot(n);
            let f = snap.get(&path).ok()??;
            Some(Slot { holder: String::from_utf8_lossy(&f.body).into_owned(), rev: f.rev, path })
        })
        .collect()
}

/// The ids with a `/ctl/node` directory.
pub fn node_ids(snap: &Snapshot) -> Vec<String> {
    snap.getdir(NODES).unwrap_or_default().iter().map(|id| id.to_string()).collect()
}

/// Who a node is, for its `/ctl` files.
pub struct Me<'a> {
    pub id: &'a str,
    pub addr: &'a str,
    pub cluster: &'a str,
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// 80 bits as 16 characters of standard base32.
pub fn encode_id(bits: [u8; 10]) -> String {
    let mut n = bits.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let mut out = [0u8; 16];
    for c in out.iter_mut().rev() {
        *c = BASE32[(n & 31) as usize];
        n >>= 5;
    }
    out.iter().map(|&c| c as char).collect()
}

/// A fresh node id: a node never reuses one, even on the same address.
pub fn new_id() -> String {
    let mut bits = [0u8; 10];
    crate::rt::fill_random(&mut bits);
    encode_id(bits)
}

fn hostname() -> String {
    hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A member's own files: address, host, version, and its DzNS entry.
pub fn node_files(me: &Me) -> Vec<(String, String)> {
    vec![
        (node_file(me.id, "addr"), me.addr.to_string()),
        (node_file(me.id, "hostname"), hostname()),
        (node_file(me.id, "version"), VERSION.to_string()),
        (ns_path(me.cluster, me.id), me.addr.to_string()),
    ]
}

/// The seed's `/ctl`: the cluster name, this node, slot 0 held by it, the
/// vacant slots 1..`slots` that attaching nodes will claim, and the leader.
pub fn seed_files(me: &Me, slots: usize) -> Vec<(String, String)> {
    let mut files = vec![(NAME.to_string(), me.cluster.to_string())];
    files.extend(node_files(me));
    files.push((slot("0"), me.id.to_string()));
    files.extend((1..slots).map(|i| (slot(&i.to_string()), String::new())));
    files.push((LEADER.to_string(), me.id.to_string()));
    files.push((node_file(me.id, "role"), "leader".to_string()));
    files.push((node_file(me.id, "writable"), "true".to_string()));
    files
}

/// An attached node's files (`writable` comes with a slot).
pub fn attached_files(me: &Me) -> Vec<(String, String)> {
    let mut files = node_files(me);
    files.push((node_file(me.id, "role"), "non-voter".to_string()));
    files
}

/// The deletes that forget member `id`: its `/ctl/node` files and its DzNS
/// entry in `cluster`.
pub fn forget(snap: &Snapshot, cluster: &str, id: &str) -> Vec<Command> {
    let files = snap.getdir(&node_dir(id)).unwrap_or_default();
    let mut paths: Vec<String> = files.iter().map(|f| node_file(id, f)).collect();
    paths.push(ns_path(cluster, id));
    paths.into_iter().map(|path| Command::Del { path, rev: CLOBBER }).collect()
}

/// After a restore: the backed-up cluster's members are not this cluster's.
/// Their `/ctl/node` files and DzNS entries go (entries of other clusters
/// stay: this may be a DzNS) and their slots become vacant, so the nodes
/// that attach to the new cluster claim them.
pub fn forget_restored_members(snap: &Snapshot) -> Vec<Command> {
    let old = node_ids(snap);
    let mut cmds = Vec::new();
    for id in &old {
        cmds.extend(
            snap.getdir(&node_dir(id))
                .unwrap_or_default()
                .iter()
                .map(|f| Command::Del { path: node_file(id, f), rev: CLOBBER }),
        );
    }
    for cluster in snap.getdir(NS).unwrap_or_default() {
        for id in snap.getdir(&ns_dir(&cluster)).unwrap_or_default() {
            if old.iter().any(|o| **o == *id) {
                cmds.push(Command::Del { path: ns_path(&cluster, &id), rev: CLOBBER });
            }
        }
    }
    for s in slots(snap).into_iter().filter(|s| !s.holder.is_empty()) {
        cmds.push(Command::Set { path: s.path, rev: CLOBBER, body: doozer_store::Body::default() });
    }
    cmds
}

#[cfg(test)]
mod tests {
    use super::*;
    use doozer_store::{Body, HistoryLimits, Store};

    fn store_with(files: &[(String, String)]) -> Store {
        let mut store = Store::new(HistoryLimits::default());
        for (path, body) in files {
            store.apply(&Command::Set { path: path.clone(), rev: CLOBBER, body: Body::from(body.as_str()) });
        }
        store
    }

    #[test]
    fn a_seed_lays_out_ctl_as_the_original_plus_slots_and_ns() {
        let me = Me { id: "AAAAAAAAAAAAAAAA", addr: "10.0.0.1:8046", cluster: "prod" };
        let store = store_with(&seed_files(&me, 3));
        let snap = store.snapshot(None).unwrap();
        assert_eq!(text(&snap, NAME), "prod");
        assert_eq!(text(&snap, &slot("0")), me.id);
        let vacant: Vec<String> = slots(&snap).into_iter().filter(|s| s.holder.is_empty()).map(|s| s.path).collect();
        assert_eq!(vacant, ["/ctl/cal/1", "/ctl/cal/2"]);
        assert_eq!(text(&snap, &ns_path("prod", me.id)), me.addr);
        assert_eq!(text(&snap, &node_file(me.id, "writable")), "true");
        assert_eq!(text(&snap, &node_file(me.id, "version")), VERSION);
        assert_eq!(node_ids(&snap), [me.id]);
        // An attached node: no writable until it holds a slot.
        let other = Me { id: "BBBBBBBBBBBBBBBB", addr: "10.0.0.2:8046", cluster: "prod" };
        assert!(!attached_files(&other).iter().any(|(p, _)| p.ends_with("/writable")));
    }

    #[test]
    fn forgetting_a_member_deletes_its_files_and_ns_entry() {
        let me = Me { id: "AAAAAAAAAAAAAAAA", addr: "10.0.0.1:8046", cluster: "prod" };
        let mut store = store_with(&seed_files(&me, 3));
        for cmd in forget(&store.snapshot(None).unwrap(), "prod", me.id) {
            store.apply(&cmd);
        }
        let snap = store.snapshot(None).unwrap();
        assert!(node_ids(&snap).is_empty());
        assert!(!exists(&snap, &ns_path("prod", me.id)));
    }

    #[test]
    fn a_restore_forgets_the_old_members_but_not_other_clusters_entries() {
        let me = Me { id: "AAAAAAAAAAAAAAAA", addr: "10.0.0.1:8046", cluster: "dzns" };
        let mut files = seed_files(&me, 2);
        files.push((ns_path("app", "CCCCCCCCCCCCCCCC"), "10.0.0.9:8046".into()));
        let mut store = store_with(&files);
        for cmd in forget_restored_members(&store.snapshot(None).unwrap()) {
            store.apply(&cmd);
        }
        let snap = store.snapshot(None).unwrap();
        assert!(node_ids(&snap).is_empty());
        assert!(slots(&snap).iter().all(|s| s.holder.is_empty()));
        assert!(!exists(&snap, &ns_path("dzns", me.id)));
        assert_eq!(text(&snap, &ns_path("app", "CCCCCCCCCCCCCCCC")), "10.0.0.9:8046", "another cluster's entry");
    }

    #[test]
    fn ids_are_sixteen_base32_chars() {
        assert_eq!(encode_id([0; 10]), "AAAAAAAAAAAAAAAA");
        assert_eq!(encode_id([0xff; 10]), "7777777777777777");
        // RFC 4648 test vector: "fooba" is MZXW6YTB; ten bytes give sixteen chars.
        assert_eq!(encode_id(*b"foobafooba"), "MZXW6YTBMZXW6YTB");
        let id = new_id();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| BASE32.contains(&b)));
        assert_ne!(new_id(), id);
    }
}
