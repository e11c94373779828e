//! What the workload did: every operation's invocation and completion times,
//! arguments and result. A result that is not known (a timeout, a lost
//! connection, "may still be applied") is recorded as such and completes at
//! "never": the checkers must allow it to have happened or not.

use std::collections::BTreeMap;

/// A revision number.
pub type Rev = i64;

/// Completion time of an operation whose outcome is unknown.
pub const NEVER: u64 = u64::MAX;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// SET with a revision precondition (-1: clobber).
    Set { key: String, cond: Rev, value: String },
    /// DEL with a revision precondition (-1: clobber).
    Del { key: String, cond: Rev },
    /// GET now (`rev` None) or at a revision.
    Get { key: String, rev: Option<Rev> },
}

impl Op {
    pub fn key(&self) -> &str {
        match self {
            Op::Set { key, .. } | Op::Del { key, .. } | Op::Get { key, .. } => key,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret {
    /// A SET succeeded at this revision.
    Set(Rev),
    /// A DEL succeeded.
    Del,
    /// A GET's answer: the body (None if missing) and the file's revision.
    Got { value: Option<String>, rev: Rev },
    /// REV_MISMATCH: nothing changed.
    Mismatch,
    /// Refused for certain (e.g. READONLY, TOO_LATE): nothing changed, nothing learned.
    Failed(String),
    /// Not known whether it took effect.
    Unknown(String),
}

/// One operation, as the client saw it. Times are nanoseconds on one clock.
#[derive(Clone, Debug)]
pub struct Record {
    pub client: usize,
    /// Which node the client was talking to.
    pub node: usize,
    pub op: Op,
    pub ret: Ret,
    pub invoked: u64,
    /// `NEVER` when the outcome is unknown.
    pub completed: u64,
}

/// A change in the committed log, as a recording watcher saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub rev: Rev,
    pub path: String,
    /// None for a delete (or a NOP, path "/").
    pub value: Option<String>,
}

/// A watcher's view: its glob, where it started, and every event it printed.
#[derive(Clone, Debug, Default)]
pub struct WatchLog {
    pub glob: String,
    pub from: Rev,
    pub events: Vec<Change>,
    /// Revision ranges (inclusive) the watcher was told it cannot see: a
    /// TOO_LATE, after which it went on from a later revision. The checker
    /// holds it to every matching event outside them, and to nothing inside.
    pub gaps: Vec<(Rev, Rev)>,
}

/// Everything a run produced.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub records: Vec<Record>,
    /// The committed log from revision 1, as the recorder saw it.
    pub log: Vec<Change>,
    pub watches: Vec<WatchLog>,
    /// Each node's final tree: path -> (file revision, body), at `final_rev`.
    pub finals: Vec<BTreeMap<String, (Rev, String)>>,
    pub final_rev: Rev,
    /// The lease keepers' leases (`lease`).
    pub leases: Vec<crate::lease::LeaseLog>,
}
