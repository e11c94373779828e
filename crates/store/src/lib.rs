//! Doozer's data: a tree of whole-file bodies with one store-wide revision per change.
//!
//! What it is for: the pure, deterministic state machine behind every node.
//! [`Store::apply`] takes a [`Command`] and returns its [`Outcome`] (a new revision
//! and its [`Event`], or an error that changes nothing). Reads and WAIT lookups can
//! name any revision still in the bounded history window.
//!
//! What it is not: it does no I/O, has no clock and knows nothing of the network or
//! of consensus. The server feeds it commands in commit order and holds the waiters.

mod backup;
mod body;
mod codec;
mod glob;
mod image;
mod lease;
mod path;
mod store;
mod tree;

pub use backup::{
    journal_change, journal_header, journal_snapshot, read_backup, read_journal, restore, Backup, BackupWriter,
    Journal, Record,
};
pub use body::Body;
pub use glob::{Glob, GlobError};
pub use image::{Image, ImageError};
pub use lease::{Lease, LeaseError, LeaseId, Leases, MAX_LEASES, MAX_TTL, MIN_TTL};
pub use path::{is_valid_path, path_problem, MAX_PATH};
pub use store::{Command, Event, EventKind, HistoryLimits, Outcome, ReadError, Snapshot, Stat, Store, StoreError};
pub use tree::File;

/// A revision number. 0 means "missing"; positive numbers are store revisions.
pub type Rev = i64;

/// SET/DEL precondition: write whatever the file's revision is.
pub const CLOBBER: Rev = -1;
/// The revision STAT reports for a directory.
pub const DIR: Rev = -2;
/// The revision of a missing file, and the "create only" precondition.
pub const MISSING: Rev = 0;
