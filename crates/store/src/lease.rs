//! The lease table: which leases are granted, with what TTL, and which files
//! are attached to each (issue 14: sessions, ephemeral files, safe election).
//!
//! What it is for: the state a revoke needs, so that revoking (or expiring,
//! which is a revoke the leader proposes) deletes exactly the lease's files,
//! all in one command, on every node alike. It is part of the replicated
//! state, like the tree.
//!
//! What it is not: a clock. When a lease runs out is decided by the leader
//! from keep-alives it hears (they are not replicated; a new leader gives
//! every lease a full TTL from its election, as etcd does). This table only
//! knows each lease's TTL, so that the next leader can do that.
//!
//! Invariants (checked by [`Leases::check`] in the tests, against a model):
//! every attached file is attached to exactly one lease, and that lease
//! exists; a lease's file set and the file-to-lease map say the same thing.

use imbl::{OrdMap, OrdSet};
use std::fmt;

/// A lease's id: chosen by whoever proposes the grant, never 0.
pub type LeaseId = u64;

/// The shortest TTL a lease may have, in seconds: shorter than an election
/// and keep-alives could not keep it alive across one.
pub const MIN_TTL: u32 = 1;
/// The longest TTL, in seconds: one day.
pub const MAX_TTL: u32 = 24 * 3600;
/// Most leases granted at once. Each costs a few dozen bytes plus its files'
/// paths (which the tree bounds); this bounds the rest.
pub const MAX_LEASES: usize = 100_000;

/// One granted lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Seconds the lease lives without a keep-alive.
    pub ttl: u32,
    /// The files attached to it, in byte order.
    pub files: OrdSet<String>,
}

impl Lease {
    /// The first attached file after `path` in byte order ("" for the first).
    pub fn file_after(&self, path: &str) -> Option<&String> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.files.range::<_, str>((Excluded(path), Unbounded)).next()
    }
}

/// Why a lease operation did nothing.
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseError {
    /// No lease has this id (never granted, revoked, or expired).
    NotFound(LeaseId),
    /// A lease with this id is granted already.
    Exists(LeaseId),
    /// The TTL is outside [`MIN_TTL`]..=[`MAX_TTL`] seconds.
    BadTtl(u32),
    /// Id 0 means "no lease".
    ZeroId,
    /// [`MAX_LEASES`] are granted.
    TooMany,
}

impl fmt::Display for LeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseError::NotFound(id) => write!(f, "no lease {id:x}: never granted, revoked or expired"),
            LeaseError::Exists(id) => write!(f, "lease {id:x} is granted already"),
            LeaseError::BadTtl(ttl) => write!(f, "a lease's TTL is {MIN_TTL} to {MAX_TTL} seconds, not {ttl}"),
            LeaseError::ZeroId => write!(f, "lease id 0 means no lease"),
            LeaseError::TooMany => write!(f, "{MAX_LEASES} leases are granted; revoke some first"),
        }
    }
}

impl std::error::Error for LeaseError {}

/// Every granted lease and the files attached to each. Cheap to clone (the
/// maps are shared until changed), like the tree.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leases {
    leases: OrdMap<LeaseId, Lease>,
    of_file: OrdMap<String, LeaseId>,
}

impl Leases {
    pub fn new() -> Leases {
        Leases::default()
    }

    /// Grants lease `id` with `ttl` seconds, no files attached.
    pub fn grant(&mut self, id: LeaseId, ttl: u32) -> Result<(), LeaseError> {
        if id == 0 {
            return Err(LeaseError::ZeroId);
        }
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(LeaseError::BadTtl(ttl));
        }
        if self.leases.contains_key(&id) {
            return Err(LeaseError::Exists(id));
        }
        if self.leases.len() >= MAX_LEASES {
            return Err(LeaseError::TooMany);
        }
        self.leases.insert(id, Lease { ttl, files: OrdSet::new() });
        Ok(())
    }

    /// Ends lease `id`; returns its files, in byte order, for the caller to
    /// delete (they are detached already).
    pub fn revoke(&mut self, id: LeaseId) -> Result<Vec<String>, LeaseError> {
        let lease = self.leases.remove(&id).ok_or(LeaseError::NotFound(id))?;
        for path in &lease.files {
            self.of_file.remove(path);
        }
        Ok(lease.files.into_iter().collect())
    }

    /// Attaches the file at `path` to lease `id` (detaching it from the lease
    /// it had, if another): a SET under a lease.
    pub fn attach(&mut self, path: &str, id: LeaseId) -> Result<(), LeaseError> {
        if !self.leases.contains_key(&id) {
            return Err(LeaseError::NotFound(id));
        }
        if self.of_file.get(path) == Some(&id) {
            return Ok(());
        }
        self.detach(path);
        self.of_file.insert(path.to_string(), id);
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.files.insert(path.to_string());
        }
        Ok(())
    }

    /// Detaches the file at `path` from its lease, if it has one: a DEL, or
    /// a SET without a lease (as in etcd: the file then outlives the lease).
    pub fn detach(&mut self, path: &str) {
        let Some(id) = self.of_file.remove(path) else { return };
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.files.remove(path);
        }
    }

    /// The lease the file at `path` is attached to.
    pub fn lease_of(&self, path: &str) -> Option<LeaseId> {
        self.of_file.get(path).copied()
    }

    pub fn get(&self, id: LeaseId) -> Option<&Lease> {
        self.leases.get(&id)
    }

    /// The first lease whose id is greater than `id` (a cursor: O(log n)).
    pub fn after(&self, id: LeaseId) -> Option<(LeaseId, &Lease)> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.leases.range((Excluded(id), Unbounded)).next().map(|(id, l)| (*id, l))
    }

    /// Every lease, by id.
    pub fn iter(&self) -> impl Iterator<Item = (LeaseId, &Lease)> {
        self.leases.iter().map(|(id, l)| (*id, l))
    }

    /// How many leases are granted.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// How many files are attached to some lease.
    pub fn attached(&self) -> usize {
        self.of_file.len()
    }

    /// Panics unless the invariants in the module header hold (tests only:
    /// it walks everything).
    #[cfg(test)]
    fn check(&self) {
        let mut files = 0;
        for (id, lease) in &self.leases {
            for path in &lease.files {
                assert_eq!(self.of_file.get(path), Some(id), "{path} is listed by lease {id} but not mapped to it");
            }
            files += lease.files.len();
        }
        assert_eq!(files, self.of_file.len(), "a mapped file is missing from its lease's set");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[test]
    fn a_revoke_returns_exactly_the_files_still_attached() {
        let mut l = Leases::new();
        l.grant(7, 10).unwrap();
        l.grant(8, 10).unwrap();
        l.attach("/a", 7).unwrap();
        l.attach("/b", 7).unwrap();
        l.attach("/c", 7).unwrap();
        l.detach("/b");
        l.attach("/c", 8).unwrap();
        assert_eq!(l.revoke(7).unwrap(), ["/a"]);
        assert_eq!(l.lease_of("/a"), None);
        assert_eq!(l.lease_of("/c"), Some(8));
        assert_eq!(l.revoke(7), Err(LeaseError::NotFound(7)));
        l.check();
    }

    #[test]
    fn grants_are_refused_outside_the_bounds() {
        let mut l = Leases::new();
        assert_eq!(l.grant(0, 10), Err(LeaseError::ZeroId));
        assert_eq!(l.grant(1, 0), Err(LeaseError::BadTtl(0)));
        assert_eq!(l.grant(1, MAX_TTL + 1), Err(LeaseError::BadTtl(MAX_TTL + 1)));
        l.grant(1, MAX_TTL).unwrap();
        assert_eq!(l.grant(1, 5), Err(LeaseError::Exists(1)));
        assert_eq!(l.attach("/x", 2), Err(LeaseError::NotFound(2)));
        assert_eq!(l.attached(), 0);
    }

    #[test]
    fn no_more_than_max_leases() {
        let mut l = Leases::new();
        for id in 1..=MAX_LEASES as u64 {
            l.grant(id, 5).unwrap();
        }
        assert_eq!(l.grant(MAX_LEASES as u64 + 1, 5), Err(LeaseError::TooMany));
        l.revoke(1).unwrap();
        l.grant(MAX_LEASES as u64 + 1, 5).unwrap();
    }

    #[derive(Clone, Debug)]
    enum Op {
        Grant(u64, u32),
        Revoke(u64),
        Attach(u8, u64),
        Detach(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        let id = 0u64..6;
        prop_oneof![
            (id.clone(), 0u32..4).prop_map(|(i, t)| Op::Grant(i, t)),
            id.clone().prop_map(Op::Revoke),
            (0u8..8, id).prop_map(|(p, i)| Op::Attach(p, i)),
            (0u8..8).prop_map(Op::Detach),
        ]
    }

    proptest! {
        /// Against a model that is just "which lease each file has, and
        /// which leases exist".
        #[test]
        fn the_table_agrees_with_a_model(ops in proptest::collection::vec(op(), 0..200)) {
            let mut l = Leases::new();
            let mut granted: BTreeMap<u64, u32> = BTreeMap::new();
            let mut owner: BTreeMap<String, u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Grant(id, ttl) => {
                        let ok = id != 0 && ttl >= MIN_TTL && !granted.contains_key(&id);
                        prop_assert_eq!(l.grant(id, ttl).is_ok(), ok);
                        if ok {
                            granted.insert(id, ttl);
                        }
                    }
                    Op::Revoke(id) => {
                        let want: Vec<String> = owner.iter().filter(|(_, o)| **o == id).map(|(p, _)| p.clone()).collect();
                        match l.revoke(id) {
                            Ok(files) => {
                                prop_assert!(granted.remove(&id).is_some());
                                prop_assert_eq!(files, want);
                                owner.retain(|_, o| *o != id);
                            }
                            Err(_) => prop_assert!(!granted.contains_key(&id)),
                        }
                    }
                    Op::Attach(p, id) => {
                        let path = format!("/f{p}");
                        let ok = granted.contains_key(&id);
                        prop_assert_eq!(l.attach(&path, id).is_ok(), ok);
                        if ok {
                            owner.insert(path, id);
                        }
                    }
                    Op::Detach(p) => {
                        let path = format!("/f{p}");
                        l.detach(&path);
                        owner.remove(&path);
                    }
                }
                l.check();
                prop_assert_eq!(l.len(), granted.len());
                for p in 0..8u8 {
                    let path = format!("/f{p}");
                    prop_assert_eq!(l.lease_of(&path), owner.get(&path).copied());
                }
                for (id, ttl) in &granted {
                    prop_assert_eq!(l.get(*id).map(|x| x.ttl), Some(*ttl));
                }
            }
        }
    }
}
