//! The workload: clients doing CAS SETs, clobber SETs, DELs and GETs (with and
//! without a revision) on a few keys through random nodes, watchers doing WAIT
//! loops, and a recorder that follows every revision. Everything that happens
//! is recorded with its times; an answer that never came is "unknown".

use crate::history::{Change, Op, Record, Ret, Rev, WatchLog, NEVER};
use doozer_client::{Client, ErrCode, Error, Event, Options, Watch};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long a client waits for an answer before calling the outcome unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// The nodes clients may use now, (slot, client address), and how to
/// connect to them (plain TCP; a simulated network in `crates/sim`).
#[derive(Clone)]
pub struct Nodes {
    live: Arc<Mutex<Vec<(usize, String)>>>,
    pub opts: Options,
    /// WAITs the recorder keeps in flight on each node: 256 keeps up with
    /// floods of real processes; a simulation, where every message costs
    /// simulated work and writes come at hundreds a second, needs few.
    pub recorder_depth: usize,
}

impl Nodes {
    pub fn new(live: Vec<(usize, String)>) -> Nodes {
        Nodes::with_options(live, Options::default())
    }

    pub fn with_options(live: Vec<(usize, String)>, opts: Options) -> Nodes {
        Nodes { live: Arc::new(Mutex::new(live)), opts, recorder_depth: 256 }
    }

    pub fn lock(&self) -> parking_lot::MutexGuard<'_, Vec<(usize, String)>> {
        self.live.lock()
    }

    async fn connect(&self, addr: &str) -> Result<Client, Error> {
        Client::connect_with(addr, &self.opts).await
    }

    /// A connection to the node at `addr`.
    pub async fn client(&self, addr: &str) -> Result<Client, Error> {
        self.connect(addr).await
    }
}

/// Nanoseconds since the run started: one clock for every record (tokio's,
/// so that it is virtual in a simulation).
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn new() -> Clock {
        Clock(Instant::now())
    }

    pub fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

fn uri(nodes: &Nodes) -> String {
    let addrs: Vec<String> = nodes.lock().iter().map(|(_, a)| format!("ca={a}")).collect();
    format!("doozer:?{}", addrs.join("&"))
}

fn change(e: &Event) -> Change {
    let value = e.is_set().then(|| body_text(&e.body));
    Change { rev: e.rev, path: e.path.clone(), value }
}

/// A body as the checkers compare it: the text, or for a large body (the
/// big writer's) its length and digest, so a run does not hold gigabytes.
pub fn body_text(body: &[u8]) -> String {
    if body.len() <= 1024 {
        return String::from_utf8_lossy(body).into_owned();
    }
    let digest = body.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3));
    format!("#{}:{digest:016x}", body.len())
}

/// Follows `glob` from `from` across node failures, until `until` names the
/// last revision of the run and every matching event up to it has been seen.
pub async fn follow(
    nodes: Nodes,
    glob: String,
    from: Rev,
    mut until: watch::Receiver<Option<Rev>>,
) -> Result<WatchLog, String> {
    let mut log = WatchLog { glob: glob.clone(), from, events: Vec::new(), gaps: Vec::new() };
    let mut next = from;
    loop {
        let mut w = Watch::with_options(&uri(&nodes), nodes.opts.clone(), &glob, next).map_err(|e| e.to_string())?;
        // Once the end is known, a new watch goes to nodes that all have it.
        let fresh = until.borrow().is_some();
        loop {
            let limit = *until.borrow();
            let got = match limit {
                Some(u) if next > u => return Ok(log),
                Some(_) if !fresh => break,
                // Every node has applied `u`: an event up to it comes at once, so
                // silence means there is none left.
                Some(u) => match tokio::time::timeout(Duration::from_secs(2), w.next()).await {
                    Ok(Ok(e)) if e.rev > u => return Ok(log),
                    Err(_) => return Ok(log),
                    Ok(r) => r,
                },
                None => tokio::select! {
                    r = w.next() => r,
                    _ = until.changed() => continue,
                },
            };
            match got {
                Ok(e) => {
                    next = e.rev + 1;
                    log.events.push(change(&e));
                }
                // Told honestly that it fell out of the window: note the
                // range it cannot see and go on from the node's revision now.
                Err(e) if e.code() == Some(ErrCode::TooLate) => {
                    // (A node asked may be behind the one that said TOO_LATE.)
                    let Some(now) = current_rev(&nodes).await.map(|r| r.max(next)) else { break };
                    log.gaps.push((next, now));
                    next = now + 1;
                    break;
                }
                Err(_) => break, // every node it knew failed: start over with the nodes now live
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The revision of any live node that answers.
async fn current_rev(nodes: &Nodes) -> Option<Rev> {
    let addrs: Vec<String> = nodes.lock().iter().map(|(_, a)| a.clone()).collect();
    for a in addrs {
        let rev = async { nodes.connect(&a).await.ok()?.rev().await.ok() };
        if let Ok(Some(r)) = tokio::time::timeout(Duration::from_secs(1), rev).await {
            return Some(r);
        }
    }
    None
}

/// WAITs held on one node only (no failover), from `from` until the node
/// has passed `until`'s revision: a watcher parked on a node that is paused
/// and then catches up (by a snapshot, under load). A TOO_LATE is a gap.
pub async fn follow_on(
    nodes: Nodes,
    addr: String,
    glob: String,
    from: Rev,
    until: watch::Receiver<Option<Rev>>,
) -> WatchLog {
    let mut log = WatchLog { glob: glob.clone(), from, events: Vec::new(), gaps: Vec::new() };
    let Ok(c) = nodes.connect(&addr).await else { return log };
    let mut next = from;
    loop {
        if until.borrow().is_some_and(|u| next > u) {
            return log;
        }
        let got = match tokio::time::timeout(Duration::from_secs(2), c.wait(&glob, next)).await {
            Err(_) if until.borrow().is_some() => return log,
            Err(_) => continue,
            Ok(r) => r,
        };
        match got {
            Ok(e) if until.borrow().is_some_and(|u| e.rev > u) => return log,
            Ok(e) => {
                next = e.rev + 1;
                log.events.push(change(&e));
            }
            Err(e) if e.code() == Some(ErrCode::TooLate) => {
                let Ok(now) = c.rev().await.map(|r| r.max(next)) else { return log };
                log.gaps.push((next, now));
                next = now + 1;
            }
            Err(_) => return log,
        }
    }
}

/// The recorder's progress, shared by its readers.
struct Recorded {
    /// Every revision below `next` is in `events`.
    next: Rev,
    events: Vec<Change>,
    /// Readers (by node address) that were told TOO_LATE at `next`.
    too_late: std::collections::HashSet<String>,
}

/// The committed log from `from`, read from every live node at once, each
/// reader keeping 256 WAITs on `/**` in flight (each answers exactly its
/// revision, since every revision matches): whichever node has a revision
/// first supplies it, so a paused or lagging node never holds the recorder
/// back, and it keeps up with write floods within the default window. If
/// every live node has let `next` go (TOO_LATE), the run fails: the checks
/// need every revision.
pub async fn record(nodes: Nodes, from: Rev, until: watch::Receiver<Option<Rev>>) -> Result<WatchLog, String> {
    let shared = Arc::new(Mutex::new(Recorded { next: from, events: Vec::new(), too_late: Default::default() }));
    let mut readers: std::collections::HashMap<String, tokio::task::JoinHandle<()>> = Default::default();
    loop {
        let live: Vec<String> = nodes.lock().iter().map(|(_, a)| a.clone()).collect();
        {
            let r = shared.lock();
            if until.borrow().is_some_and(|u| r.next > u) {
                break;
            }
            if !live.is_empty() && live.iter().all(|a| r.too_late.contains(a)) {
                let next = r.next;
                drop(r);
                readers.values().for_each(|t| t.abort());
                return Err(format!("the recorder fell out of every node's history window at revision {next}"));
            }
        }
        readers.retain(|addr, t| {
            let keep = live.contains(addr) && !t.is_finished();
            if !keep {
                t.abort();
            }
            keep
        });
        for addr in live {
            readers.entry(addr.clone()).or_insert_with(|| tokio::spawn(read_from(nodes.clone(), addr, shared.clone())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    readers.values().for_each(|t| t.abort());
    let events = std::mem::take(&mut shared.lock().events);
    Ok(WatchLog { glob: "/**".into(), from, events, gaps: Vec::new() })
}

/// One node's reader for [`record`]: reads revisions from the shared `next`
/// on, pipelined, and hands over those nobody has yet. Ends when its node
/// fails; the recorder starts another while the node is live.
async fn read_from(nodes: Nodes, addr: String, shared: Arc<Mutex<Recorded>>) {
    let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(1), nodes.connect(&addr)).await else { return };
    let mut pending = std::collections::VecDeque::new();
    let mut asked = shared.lock().next;
    loop {
        let next = shared.lock().next;
        if asked < next {
            // Others got ahead: skip what they have.
            pending.iter().for_each(|(_, t): &(Rev, tokio::task::JoinHandle<_>)| t.abort());
            pending.clear();
            asked = next;
        }
        while pending.len() < nodes.recorder_depth {
            let (rev, c) = (asked, c.clone());
            pending.push_back((rev, tokio::spawn(async move { c.wait("/**", rev).await })));
            asked += 1;
        }
        let Some((rev, first)) = pending.pop_front() else { return };
        let got = match tokio::time::timeout(Duration::from_millis(200), first).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => return,
            // Slow here (paused, lagging, or no new revision yet): ask again from
            // wherever the recorder has got to, if the connection still answers
            // at all (one that lost bytes in a partition never will again:
            // simulated TCP does not retransmit; a new reader will connect).
            Err(_) => {
                if !matches!(tokio::time::timeout(Duration::from_secs(1), c.rev()).await, Ok(Ok(_))) {
                    pending.iter().for_each(|(_, t)| t.abort());
                    return;
                }
                pending.iter().for_each(|(_, t)| t.abort());
                pending.clear();
                asked = shared.lock().next;
                continue;
            }
        };
        let too_late = match got {
            Ok(e) if e.rev == rev => {
                let mut r = shared.lock();
                if rev == r.next {
                    r.events.push(change(&e));
                    r.next += 1;
                    r.too_late.remove(&addr);
                }
                false
            }
            Err(e) if e.code() == Some(ErrCode::TooLate) => {
                let mut r = shared.lock();
                if rev <= r.next {
                    r.too_late.insert(addr.clone());
                }
                true
            }
            _ => return,
        };
        if too_late {
            pending.iter().for_each(|(_, t)| t.abort());
            pending.clear();
            tokio::time::sleep(Duration::from_millis(50)).await;
            asked = shared.lock().next;
        }
    }
}

/// Writes small values to `/load/*` as fast as `clients` connections to
/// `addr` (made with `opts`) can, until `stop`: many small Raft entries, so
/// that a paused follower falls out of the leader's log and the history
/// window.
pub async fn flood(opts: Options, addr: String, clients: usize, stop: watch::Receiver<bool>) -> usize {
    let mut tasks = Vec::new();
    for t in 0..clients {
        let (addr, stop, opts) = (addr.clone(), stop.clone(), opts.clone());
        tasks.push(tokio::spawn(async move {
            let Ok(c) = Client::connect_with(&addr, &opts).await else { return 0 };
            let mut n = 0;
            while !*stop.borrow() {
                let path = format!("/load/{t}/{}", n % 50);
                let write = c.set(&path, -1, format!("{n}"));
                match tokio::time::timeout(Duration::from_secs(2), write).await {
                    Ok(Ok(_)) => n += 1,
                    _ => break,
                }
            }
            n
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    total
}

/// Clobber SETs of values near the 1 MiB limit to `/big/*` through random
/// nodes, a few a second, until `stop`: large entries in every path (Raft
/// log, snapshots, history). Outside the linearizability records.
pub async fn big_writer(nodes: Nodes, seed: u64, stop: watch::Receiver<bool>) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut n = 0;
    while !*stop.borrow() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
        let addr = {
            let live = nodes.lock();
            (!live.is_empty()).then(|| live[rng.random_range(0..live.len())].1.clone())
        };
        let Some(addr) = addr else { continue };
        let len = (1 << 20) - rng.random_range(0..4096);
        let body = vec![b'a' + (n % 26) as u8; len];
        let write = async { nodes.connect(&addr).await?.set(&format!("/big/{}", n % 4), -1, body).await };
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(5), write).await {
            n += 1;
        }
    }
    n
}

/// One client's loop: random operations on random keys through a random node.
pub async fn client(
    id: usize,
    seed: u64,
    keys: usize,
    nodes: Nodes,
    clock: Clock,
    records: Arc<Mutex<Vec<Record>>>,
    stop: watch::Receiver<bool>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut conn: Option<(usize, Client)> = None;
    let mut n = 0usize;
    while !*stop.borrow() {
        let (node, c) = match &conn {
            Some(pair) => pair.clone(),
            None => {
                let choice = {
                    let live = nodes.lock();
                    (!live.is_empty()).then(|| live[rng.random_range(0..live.len())].clone())
                };
                let Some((slot, addr)) = choice else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                match tokio::time::timeout(Duration::from_secs(1), nodes.connect(&addr)).await {
                    Ok(Ok(c)) => {
                        conn = Some((slot, c.clone()));
                        (slot, c)
                    }
                    _ => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
        };
        let key = format!("/k/{}", rng.random_range(0..keys));
        n += 1;
        let value = format!("c{id}-{n}");
        let ops = plan(&mut rng, &c, &key, value).await;
        let mut last_read: Rev = 0;
        for mut op in ops {
            // A CAS uses the file revision its GET just read.
            if let Op::Set { cond, .. } | Op::Del { cond, .. } = &mut op {
                if *cond == FROM_READ {
                    *cond = last_read;
                }
            }
            let invoked = clock.now();
            let (ret, broken) = perform(&c, &op).await;
            let completed = if matches!(ret, Ret::Unknown(_)) { NEVER } else { clock.now() };
            if broken {
                conn = None;
            }
            if let Ret::Got { rev, .. } = &ret {
                last_read = *rev;
            }
            let keep = !matches!((&op, &ret), (Op::Get { .. }, Ret::Failed(_) | Ret::Unknown(_)));
            if keep {
                records.lock().push(Record { client: id, node, op, ret, invoked, completed });
            }
            if broken {
                break;
            }
        }
    }
}

/// A precondition to be replaced by the file revision the preceding GET read.
const FROM_READ: Rev = Rev::MIN;

/// The next operation(s): a CAS is a GET then a SET or DEL with the revision read.
async fn plan(rng: &mut StdRng, c: &Client, key: &str, value: String) -> Vec<Op> {
    let key = key.to_string();
    let get = Op::Get { key: key.clone(), rev: None };
    match rng.random_range(0..100) {
        0..30 => vec![get, Op::Set { key, cond: FROM_READ, value }],
        30..45 => vec![Op::Set { key, cond: -1, value }],
        45..55 => vec![get, Op::Del { key, cond: FROM_READ }],
        55..60 => vec![Op::Del { key, cond: -1 }],
        60..80 => vec![get],
        _ => {
            let now =
                tokio::time::timeout(Duration::from_secs(1), c.rev()).await.ok().and_then(Result::ok).unwrap_or(1);
            let back = rng.random_range(0..20);
            vec![Op::Get { key, rev: Some((now - back).max(1)) }]
        }
    }
}

/// Performs one operation; returns its result and whether the connection is
/// no longer usable.
async fn perform(c: &Client, op: &Op) -> (Ret, bool) {
    let call = async {
        match op {
            Op::Get { key, rev } => c.get(key, *rev).await.map(|(body, file_rev)| {
                let value = (file_rev > 0).then(|| String::from_utf8_lossy(&body).into_owned());
                Ret::Got { value, rev: file_rev }
            }),
            Op::Set { key, cond, value } => c.set(key, *cond, value.clone()).await.map(Ret::Set),
            Op::Del { key, cond } => c.del(key, *cond).await.map(|()| Ret::Del),
        }
    };
    match tokio::time::timeout(OP_TIMEOUT, call).await {
        Err(_) => (Ret::Unknown("no answer in time".into()), true),
        Ok(Ok(ret)) => (ret, false),
        Ok(Err(e)) => classify(e),
    }
}

fn classify(e: Error) -> (Ret, bool) {
    match e {
        Error::Server { code: ErrCode::RevMismatch, .. } => (Ret::Mismatch, false),
        // The server says whether a failed write may still be applied; one it
        // says was not carried out is held to that by the checkers.
        Error::Server { indeterminate: true, detail, .. } => (Ret::Unknown(detail), false),
        Error::Server { code, detail, .. } => (Ret::Failed(format!("{code} {detail}")), false),
        other => (Ret::Unknown(other.to_string()), true),
    }
}

/// Writes `/final` once through any node that takes it, then waits until
/// every node in `nodes` has applied it; returns its revision. Does not
/// give up: the caller bounds the time.
pub async fn settle(nodes: &Nodes) -> Rev {
    let mut final_rev = None;
    loop {
        let live: Vec<String> = nodes.lock().iter().map(|(_, a)| a.clone()).collect();
        if final_rev.is_none() {
            for a in &live {
                let write = async { nodes.connect(a).await?.set("/final", -1, "x").await };
                if let Ok(Ok(rev)) = tokio::time::timeout(Duration::from_secs(5), write).await {
                    final_rev = Some(rev);
                    break;
                }
            }
        }
        if let Some(rev) = final_rev {
            let mut all = true;
            for a in &live {
                all &= reached(nodes, a, rev).await;
            }
            if all {
                return rev;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// True if the node at `addr` has applied `rev` (waiting up to 10s for it).
pub async fn reached(nodes: &Nodes, addr: &str, rev: Rev) -> bool {
    let check = async {
        let c = nodes.connect(addr).await.ok()?;
        c.get("/final", Some(rev)).await.ok()
    };
    matches!(tokio::time::timeout(Duration::from_secs(10), check).await, Ok(Some(_)))
}

/// The node's whole tree at `rev`: path -> (file revision, body). A
/// connection that breaks is opened again and the walk begun anew, a few
/// times: a node may rejoin the cluster (and restart its listener) just as
/// the run ends, which is healing, not a fault in what it serves.
pub async fn dump(
    nodes: &Nodes,
    addr: &str,
    rev: Rev,
) -> Result<std::collections::BTreeMap<String, (Rev, String)>, String> {
    const ATTEMPTS: usize = 10;
    let mut last = String::new();
    for _ in 0..ATTEMPTS {
        match walk_all(nodes, addr, rev).await {
            Ok(tree) => return Ok(tree),
            Err(Broken::Refused(e)) => return Err(format!("walk on {addr}: {e}")),
            Err(Broken::Connection(e)) => last = e,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(format!("walk on {addr}: {last} ({ATTEMPTS} attempts)"))
}

/// Why a walk stopped short.
enum Broken {
    /// The node answered with an error.
    Refused(String),
    /// The connection failed.
    Connection(String),
}

async fn walk_all(
    nodes: &Nodes,
    addr: &str,
    rev: Rev,
) -> Result<std::collections::BTreeMap<String, (Rev, String)>, Broken> {
    let c = nodes.connect(addr).await.map_err(|e| Broken::Connection(e.to_string()))?;
    let mut tree = std::collections::BTreeMap::new();
    loop {
        match c.walk("/**", tree.len() as i32, Some(rev)).await {
            Ok(e) => {
                tree.insert(e.path, (e.rev, body_text(&e.body)));
            }
            Err(e) if e.code() == Some(ErrCode::Range) => return Ok(tree),
            Err(e) if e.code().is_some() => return Err(Broken::Refused(e.to_string())),
            Err(e) => return Err(Broken::Connection(e.to_string())),
        }
    }
}
