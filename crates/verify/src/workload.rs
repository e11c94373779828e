//! The workload: clients doing CAS SETs, clobber SETs, DELs and GETs (with and
//! without a revision) on a few keys through random nodes, watchers doing WAIT
//! loops, and a recorder that follows every revision. Everything that happens
//! is recorded with its times; an answer that never came is "unknown".

use crate::history::{Change, Op, Record, Ret, Rev, WatchLog, NEVER};
use doozer_client::{Client, ErrCode, Error, Event, Watch};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How long a client waits for an answer before calling the outcome unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// The nodes clients may use now: (slot, client address).
pub type Nodes = Arc<Mutex<Vec<(usize, String)>>>;

/// Nanoseconds since the run started: one clock for every record.
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
    let value = e.is_set().then(|| String::from_utf8_lossy(&e.body).into_owned());
    Change { rev: e.rev, path: e.path.clone(), value }
}

/// Follows `glob` from `from` across node failures, until `until` names the
/// last revision of the run and every matching event up to it has been seen.
pub async fn follow(
    nodes: Nodes,
    glob: String,
    from: Rev,
    mut until: watch::Receiver<Option<Rev>>,
) -> Result<WatchLog, String> {
    let mut log = WatchLog { glob: glob.clone(), from, events: Vec::new() };
    let mut next = from;
    loop {
        let mut w = Watch::new(&uri(&nodes), &glob, next).map_err(|e| e.to_string())?;
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
                Err(e) if e.code() == Some(ErrCode::TooLate) => {
                    return Err(format!("watch of {glob} fell out of the history window at {next}"));
                }
                Err(_) => break, // every node it knew failed: start over with the nodes now live
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
                match tokio::time::timeout(Duration::from_secs(1), Client::connect(&addr)).await {
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
        Error::Server { code: ErrCode::Other, detail } => (Ret::Unknown(detail), false),
        Error::Server { code, detail } => (Ret::Failed(format!("{code} {detail}")), false),
        other => (Ret::Unknown(other.to_string()), true),
    }
}
