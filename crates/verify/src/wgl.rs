//! The Wing–Gong linearizability search with Lowe's memoisation, as in
//! porcupine: walk the calls and returns in time order; linearize a pending
//! call if the model allows it; backtrack when a return is reached whose call
//! has not been linearized; remember (linearized set, state) pairs already
//! explored. States are sets of possible model states, so operations whose
//! outcome is unknown can branch.

use std::collections::HashSet;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    type State: Clone + Eq + Hash + Ord;
    type Op;
    fn init(&self) -> Self::State;
    /// Every state `op` may lead to from `state`; empty if `op` cannot happen there.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Vec<Self::State>;
}

/// An operation with its call and return times (`u64::MAX`: never returned).
pub struct Timed<O> {
    pub op: O,
    pub call: u64,
    pub ret: u64,
}

#[derive(Clone, Copy)]
struct Event {
    op: usize,
    is_call: bool,
}

const NIL: usize = usize::MAX;

/// The calls and returns in time order, as a doubly linked list from which
/// linearized operations are cut out and put back when backtracking.
struct Events {
    events: Vec<Event>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Index of each operation's return event.
    ret_of: Vec<usize>,
}

impl Events {
    fn new<O>(ops: &[Timed<O>]) -> Events {
        // At equal times calls come first, so operations that touch overlap.
        let mut timed: Vec<(u64, u8, usize)> = Vec::with_capacity(2 * ops.len());
        for (i, o) in ops.iter().enumerate() {
            timed.push((o.call, 0, i));
            timed.push((o.ret, 1, i));
        }
        timed.sort();
        let events: Vec<Event> = timed.iter().map(|&(_, kind, op)| Event { op, is_call: kind == 0 }).collect();
        let len = events.len();
        // Index `len` is the head sentinel.
        let next = (0..=len)
            .map(|i| {
                if i == len {
                    0
                } else if i + 1 < len {
                    i + 1
                } else {
                    NIL
                }
            })
            .collect();
        let prev = (0..=len)
            .map(|i| {
                if i == 0 {
                    len
                } else if i == len {
                    NIL
                } else {
                    i - 1
                }
            })
            .collect();
        let mut ret_of = vec![0; ops.len()];
        for (i, e) in events.iter().enumerate() {
            if !e.is_call {
                ret_of[e.op] = i;
            }
        }
        Events { events, next, prev, ret_of }
    }

    fn head(&self) -> usize {
        self.events.len()
    }

    fn first(&self) -> usize {
        self.next[self.head()]
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    /// Puts back an unlinked event; undo in the reverse order of unlinking.
    fn relink(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        self.next[p] = i;
        if n != NIL {
            self.prev[n] = i;
        }
    }

    /// Cuts out an operation's call (at `call`) and its return.
    fn lift(&mut self, call: usize) {
        let ret = self.ret_of[self.events[call].op];
        self.unlink(call);
        self.unlink(ret);
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.ret_of[self.events[call].op];
        self.relink(ret);
        self.relink(call);
    }
}

/// SplitMix64: fixed pseudo-random values for the Zobrist hash.
fn splitmix(i: u64) -> u64 {
    let mut z = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// True if the operations can be ordered, each at a point between its call
/// and its return, so that the model accepts them in that order.
pub fn linearizable<M: Model>(model: &M, ops: &[Timed<M::Op>]) -> bool {
    let n = ops.len();
    let mut list = Events::new(ops);
    let mut state: Vec<M::State> = vec![model.init()];
    // The set of linearized operations, as a Zobrist hash: a random 128-bit
    // value per operation, XORed in and out. Memo entries stay 16 bytes
    // however long the history (a full bitset per entry does not scale to a
    // soak's 10^5 operations per key); a collision could only prune a branch,
    // so it could raise a false alarm but never hide a violation.
    let zobrist: Vec<u128> =
        (0..n as u64).map(|i| (u128::from(splitmix(2 * i)) << 64) | u128::from(splitmix(2 * i + 1))).collect();
    let mut linearized = 0u128;
    let mut seen: HashSet<(u128, Vec<M::State>)> = HashSet::new();
    let mut stack: Vec<(usize, Vec<M::State>)> = Vec::new();
    let mut entry = list.first();
    while list.first() != NIL {
        let step = (entry != NIL).then(|| list.events[entry]).filter(|e| e.is_call);
        if let Some(e) = step {
            let mut after: Vec<M::State> = state.iter().flat_map(|s| model.step(s, &ops[e.op].op)).collect();
            after.sort();
            after.dedup();
            if !after.is_empty() {
                let lin = linearized ^ zobrist[e.op];
                if seen.insert((lin, after.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, after)));
                    linearized = lin;
                    list.lift(entry);
                    entry = list.first();
                    continue;
                }
            }
            entry = list.next[entry];
            continue;
        }
        // A return whose call is not linearized (or the end): backtrack.
        let Some((call, old)) = stack.pop() else { return false };
        let op = list.events[call].op;
        linearized ^= zobrist[op];
        state = old;
        list.unlift(call);
        entry = list.next[call];
    }
    true
}
