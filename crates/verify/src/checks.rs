//! The checkers. Ground truth is the committed log a recording watcher saw
//! from revision 1, and it is checked itself: gap-free, consistent with every
//! acknowledged write, and, replayed, equal to every node's final tree.
//!
//! - linearizability: per key, SET/DEL with their preconditions and results
//!   (REV_MISMATCH included) must have a legal order within their real-time
//!   windows ([`wgl`](crate::wgl)); and acknowledged revisions must follow real
//!   time across keys. A failure is shrunk to a minimal failing sub-history.
//! - GET at revision R must return exactly the state the log has at R; a GET
//!   with no revision must return a state that really existed, and one client's
//!   successive reads of a key on one node never go back in time.
//! - no acknowledged write is lost: every SET answered with revision R is the
//!   log's change at R, and every node ends with the log's tree.
//! - watch completeness: each watcher saw, in order and once, exactly the
//!   log's changes matching its glob from where it started to where it
//!   stopped, except in ranges it was told TOO_LATE for (and none in them).

use crate::history::{Change, History, Op, Record, Ret, Rev, NEVER};
use crate::wgl::{linearizable, Model, Timed};
use doozer_store::Glob;
use std::collections::{BTreeMap, HashMap};

/// What the checkers found.
#[derive(Debug, Default)]
pub struct Report {
    pub ops: usize,
    pub keys: usize,
    pub anomalies: Vec<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// One key as a register with a file revision (0: missing).
struct Register;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct State {
    value: Option<String>,
    rev: Rev,
}

type KeyOp = (Op, Ret);

fn cond_ok(cond: Rev, s: &State) -> bool {
    cond == -1 || cond >= s.rev
}

impl Model for Register {
    type State = State;
    type Op = KeyOp;

    fn init(&self) -> State {
        State { value: None, rev: 0 }
    }

    fn step(&self, s: &State, (op, ret): &KeyOp) -> Vec<State> {
        let missing = State { value: None, rev: 0 };
        match (op, ret) {
            (Op::Set { cond, value, .. }, Ret::Set(r)) if cond_ok(*cond, s) && *r > s.rev => {
                vec![State { value: Some(value.clone()), rev: *r }]
            }
            (Op::Set { cond, .. } | Op::Del { cond, .. }, Ret::Mismatch) if !cond_ok(*cond, s) => vec![s.clone()],
            (Op::Del { cond, .. }, Ret::Del) if cond_ok(*cond, s) => vec![missing],
            (Op::Del { cond, .. }, Ret::Unknown(_)) if cond_ok(*cond, s) => vec![s.clone(), missing],
            (Op::Del { .. }, Ret::Unknown(_)) => vec![s.clone()],
            _ => vec![],
        }
    }
}

/// The log, indexed: each key's changes in revision order.
struct Log<'a> {
    by_rev: HashMap<Rev, &'a Change>,
    by_key: HashMap<&'a str, Vec<&'a Change>>,
    by_value: HashMap<(&'a str, &'a str), Rev>,
}

impl<'a> Log<'a> {
    fn new(changes: &'a [Change]) -> Log<'a> {
        let mut log = Log { by_rev: HashMap::new(), by_key: HashMap::new(), by_value: HashMap::new() };
        for c in changes {
            log.by_rev.insert(c.rev, c);
            log.by_key.entry(c.path.as_str()).or_default().push(c);
            if let Some(v) = &c.value {
                log.by_value.insert((c.path.as_str(), v.as_str()), c.rev);
            }
        }
        log
    }

    /// A key's state at store revision `rev`.
    fn state_at(&self, key: &str, rev: Rev) -> State {
        let changes = self.by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        let i = changes.partition_point(|c| c.rev <= rev);
        match i.checked_sub(1).map(|i| changes[i]) {
            Some(Change { value: Some(v), rev, .. }) => State { value: Some(v.clone()), rev: *rev },
            _ => State { value: None, rev: 0 },
        }
    }

    /// The store revisions during which `key` was in state `s`, or None if it never was.
    fn interval(&self, key: &str, s: &State, last: Rev) -> Option<(Rev, Rev)> {
        let changes = self.by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        if s.rev > 0 {
            let c = self.by_rev.get(&s.rev)?;
            if c.path != key || c.value != s.value {
                return None;
            }
            let i = changes.iter().position(|x| x.rev == s.rev)?;
            return Some((s.rev, changes.get(i + 1).map_or(last, |n| n.rev - 1)));
        }
        // Missing: before the first change, or after any delete.
        if s.value.is_some() {
            return None;
        }
        Some((0, last))
    }
}

/// Runs every checker over `h`.
pub fn check(h: &History) -> Report {
    let mut report = Report { ops: h.records.len(), ..Report::default() };
    let a = &mut report.anomalies;
    check_log_is_complete(h, a);
    let log = Log::new(&h.log);
    let last = h.log.last().map_or(0, |c| c.rev);
    let records = resolve_unknown_sets(h, &log, a);
    report.keys = check_linearizable(&records, a);
    check_real_time_order(&records, a);
    check_reads(&records, &log, last, a);
    check_watches(h, &log, a);
    check_finals(h, a);
    crate::election::check(&h.log, &h.finals, a);
    crate::lease::check(&h.leases, a);
    report
}

fn check_log_is_complete(h: &History, a: &mut Vec<String>) {
    for (i, c) in h.log.iter().enumerate() {
        if c.rev != i as Rev + 1 {
            a.push(format!("the recorded log skips or repeats revisions: position {i} holds revision {}", c.rev));
            return;
        }
    }
    if (h.log.len() as Rev) < h.final_rev {
        a.push(format!("the recorded log stops at {} but the nodes are at {}", h.log.len(), h.final_rev));
    }
}

/// Acknowledged SETs must be in the log at their revision; SETs of unknown
/// outcome are settled by the log (values are unique): found means it
/// happened at that revision, absent means it never did.
fn resolve_unknown_sets(h: &History, log: &Log, a: &mut Vec<String>) -> Vec<Record> {
    let mut out = Vec::new();
    for r in &h.records {
        match (&r.op, &r.ret) {
            (Op::Set { key, value, .. }, Ret::Set(rev)) => {
                let logged = log.by_rev.get(rev);
                if logged.is_none_or(|c| c.path != *key || c.value.as_deref() != Some(value)) {
                    a.push(format!(
                        "lost write: SET {key}={value} was acknowledged at revision {rev}, but the log has {logged:?} there"
                    ));
                }
                out.push(r.clone());
            }
            (Op::Set { key, value, .. }, Ret::Unknown(_)) => {
                if let Some(rev) = log.by_value.get(&(key.as_str(), value.as_str())) {
                    out.push(Record { ret: Ret::Set(*rev), completed: NEVER, ..r.clone() });
                }
            }
            (_, Ret::Failed(_)) => {}
            _ => out.push(r.clone()),
        }
    }
    out
}

fn timed(r: &Record) -> Timed<KeyOp> {
    Timed { op: (r.op.clone(), r.ret.clone()), call: r.invoked, ret: r.completed }
}

fn check_linearizable(records: &[Record], a: &mut Vec<String>) -> usize {
    let mut by_key: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for r in records.iter().filter(|r| !matches!(r.op, Op::Get { .. })) {
        by_key.entry(r.op.key()).or_default().push(r);
    }
    for (key, rs) in &by_key {
        let ops: Vec<Timed<KeyOp>> = rs.iter().map(|r| timed(r)).collect();
        if !linearizable(&Register, &ops) {
            let minimal = shrink(rs);
            let lines: Vec<String> = minimal.iter().map(|r| describe(r)).collect();
            a.push(format!("not linearizable on {key}; a minimal failing sub-history:\n  {}", lines.join("\n  ")));
        }
    }
    by_key.len()
}

fn fails(rs: &[&Record]) -> bool {
    let ops: Vec<Timed<KeyOp>> = rs.iter().map(|r| timed(r)).collect();
    !linearizable(&Register, &ops)
}

/// The shortest failing prefix by call time, then drop every operation whose
/// removal keeps it failing: no single operation can be left out of the result.
fn shrink<'a>(rs: &[&'a Record]) -> Vec<&'a Record> {
    let mut sorted: Vec<&Record> = rs.to_vec();
    sorted.sort_by_key(|r| r.invoked);
    let (mut lo, mut hi) = (1, sorted.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(&sorted[..mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let mut keep: Vec<&Record> = sorted[..hi].to_vec();
    if keep.len() <= 300 {
        let mut i = keep.len();
        while i > 0 {
            i -= 1;
            let mut without = keep.clone();
            without.remove(i);
            if fails(&without) {
                keep = without;
            }
        }
    }
    keep
}

fn describe(r: &Record) -> String {
    let done = if r.completed == NEVER { "never".to_string() } else { r.completed.to_string() };
    format!("client {} node {}: {:?} -> {:?}  [{} .. {}]", r.client, r.node, r.op, r.ret, r.invoked, done)
}

/// An operation answered with revision A before another was invoked must
/// have A below the other's revision: revisions follow real time.
fn check_real_time_order(records: &[Record], a: &mut Vec<String>) {
    let mut acked: Vec<(&Record, Rev)> = records
        .iter()
        .filter(|r| r.completed != NEVER)
        .filter_map(|r| match r.ret {
            Ret::Set(rev) => Some((r, rev)),
            _ => None,
        })
        .collect();
    let mut by_completion = acked.clone();
    by_completion.sort_by_key(|(r, _)| r.completed);
    acked.sort_by_key(|(r, _)| r.invoked);
    let (mut i, mut max_before): (usize, Option<(&Record, Rev)>) = (0, None);
    for (r, rev) in acked {
        while i < by_completion.len() && by_completion[i].0.completed < r.invoked {
            if max_before.is_none_or(|(_, m)| by_completion[i].1 > m) {
                max_before = Some(by_completion[i]);
            }
            i += 1;
        }
        if let Some((earlier, m)) = max_before.filter(|(_, m)| *m >= rev) {
            a.push(format!(
                "revisions go back in time: {} finished at revision {m} before {} began, which got {rev}",
                describe(earlier),
                describe(r)
            ));
        }
    }
}

fn check_reads(records: &[Record], log: &Log, last: Rev, a: &mut Vec<String>) {
    // (client, node, key) -> the latest store revision its previous read proved.
    let mut floor: HashMap<(usize, usize, &str), Rev> = HashMap::new();
    let mut reads: Vec<&Record> = records.iter().filter(|r| matches!(r.op, Op::Get { .. })).collect();
    reads.sort_by_key(|r| r.invoked);
    for r in reads {
        let (Op::Get { key, rev }, Ret::Got { value, rev: file_rev }) = (&r.op, &r.ret) else { continue };
        let got = State { value: value.clone(), rev: *file_rev };
        match rev {
            Some(at) => {
                let want = log.state_at(key, (*at).max(1));
                if got != want {
                    a.push(format!("read at revision {at} of {key} returned {got:?}; the log has {want:?}"));
                }
            }
            None => match log.interval(key, &got, last) {
                None => a.push(format!("read of {key} returned {got:?}, a state that never existed: {}", describe(r))),
                Some((start, end)) => {
                    let f = floor.entry((r.client, r.node, key.as_str())).or_insert(0);
                    if end < *f {
                        a.push(format!(
                            "stale read: {} went back in time (state ended at {end}, an earlier read saw {f})",
                            describe(r)
                        ));
                    }
                    *f = (*f).max(start);
                }
            },
        }
    }
}

fn check_watches(h: &History, log: &Log, a: &mut Vec<String>) {
    for (i, w) in h.watches.iter().enumerate() {
        let Ok(glob) = Glob::parse(&w.glob) else {
            a.push(format!("watcher {i} has a bad glob {}", w.glob));
            continue;
        };
        if let Some(pair) = w.events.windows(2).find(|p| p[1].rev <= p[0].rev) {
            a.push(format!(
                "watcher {i} on {} saw revision {} after {}: events out of order or repeated",
                w.glob, pair[1].rev, pair[0].rev
            ));
            continue;
        }
        // The log is known up to the final revision; a write whose outcome was
        // unknown may still be applied after it (and a watcher see it).
        let seen: Vec<&Change> = w.events.iter().filter(|e| e.rev <= h.final_rev).collect();
        let Some(end) = seen.last().map(|e| e.rev) else { continue };
        let told_too_late = |rev: Rev| w.gaps.iter().any(|&(lo, hi)| lo <= rev && rev <= hi);
        let want: Vec<&Change> = (w.from.max(1)..=end)
            .filter(|rev| !told_too_late(*rev))
            .filter_map(|rev| log.by_rev.get(&rev).copied())
            .filter(|c| glob.matches(&c.path))
            .collect();
        let got = seen;
        if got != want {
            let missing: Vec<Rev> = want.iter().filter(|c| !got.contains(c)).map(|c| c.rev).take(10).collect();
            let extra: Vec<Rev> = got.iter().filter(|c| !want.contains(c)).map(|c| c.rev).take(10).collect();
            a.push(format!(
                "watcher {i} on {}: missed revisions {missing:?}, saw revisions not in the log {extra:?}",
                w.glob
            ));
        }
    }
}

fn check_finals(h: &History, a: &mut Vec<String>) {
    let mut tree: BTreeMap<String, (Rev, String)> = BTreeMap::new();
    for c in h.log.iter().take_while(|c| c.rev <= h.final_rev) {
        match &c.value {
            Some(v) => {
                tree.insert(c.path.clone(), (c.rev, v.clone()));
            }
            None => {
                tree.remove(&c.path);
            }
        }
    }
    for (n, t) in h.finals.iter().enumerate() {
        if *t != tree {
            let diff: Vec<&String> =
                tree.keys().chain(t.keys()).filter(|k| tree.get(*k) != t.get(*k)).take(5).collect();
            a.push(format!("node {n}'s tree at revision {} differs from the log's, e.g. at {diff:?}", h.final_rev));
        }
    }
}
