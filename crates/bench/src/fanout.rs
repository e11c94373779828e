//! `watch-fanout`: W watchers on one glob, each on its own connection,
//! spread over the cluster's members; one writer at a fixed rate whose
//! bodies carry their send time. Reports latency from the write's send and
//! from its acknowledgement to each watcher's receipt, events any watcher
//! missed, and the CPU the bench (the watchers, almost all of it) and each
//! local server used while measuring, so a run on one machine shows whose
//! cost is whose.
//!
//! Watchers loop WAITs (what old clients do) or, with `--stream`, hold one
//! STREAM each (the extension). They all connect before the clock starts:
//! 10,000 connections take a while to open, and that is not the fan-out.

use crate::procfs::{server_pid, CpuMeter};
use crate::{connect, histogram, percentiles, progress, root, Args, Clock, Report, Target};
use doozer_client::{Client, Event, Rev, Subscription};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Connections opened at once while the watchers connect.
const CONNECTING: usize = 64;

/// What a watcher saw: (revision, sent ns, received ns) per event.
type Seen = Vec<(Rev, u64, u64)>;

pub(crate) async fn watch_fanout(args: &Args, uri: &Target, watchers: usize) -> Result<Report, String> {
    let writer = connect(uri, 0).await?;
    let from = writer.rev().await.map_err(|e| e.to_string())? + 1;
    let pattern = format!("{}/fan/**", root());
    let clients = connect_all(uri, watchers).await?;
    let mut subs = Vec::with_capacity(watchers);
    for c in &clients {
        subs.push(match args.stream {
            true => Some(c.stream(&pattern, from).await.map_err(|e| e.to_string())?),
            false => None,
        });
    }
    let clock = Clock::new(args);
    let shown = progress("watch-fanout", &clock);
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::with_capacity(watchers);
    for (c, sub) in clients.into_iter().zip(subs) {
        let watching = Watching { client: c, sub, pattern: pattern.clone(), next: from };
        tasks.push(tokio::spawn(watching.run(stop.clone(), clock.start)));
    }
    let mut procs = vec![("bench_cpu_pct".to_string(), None)];
    procs.extend(uri.addrs.iter().map(|a| (format!("server_cpu_pct[{a}]"), server_pid(a))));
    let (acks, cpu) = write(args, &writer, &clock, procs).await?;
    // Let the last events arrive before the watchers stop.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut from_send, mut from_ack) = (histogram(), histogram());
    let mut missing = 0u64;
    for t in tasks {
        let seen = t.await.map_err(|e| e.to_string())?;
        let revs: HashSet<Rev> = seen.iter().map(|s| s.0).collect();
        missing += acks.keys().filter(|r| !revs.contains(r)).count() as u64;
        for (rev, sent, received) in seen {
            if let Some(ack) = acks.get(&rev) {
                let _ = from_send.record((received.saturating_sub(sent) / 1000).max(1));
                let _ = from_ack.record((received.saturating_sub(*ack) / 1000).max(1));
            }
        }
    }
    shown.abort();
    let paced = args.fanout_rate > 0.0;
    let mut extra = vec![
        ("watchers".into(), watchers.to_string()),
        ("rate".into(), if paced { args.fanout_rate.to_string() } else { "max".into() }),
        ("watch".into(), if args.stream { "stream" } else { "wait" }.into()),
        ("missing_events".into(), missing.to_string()),
    ];
    extra.extend(cpu);
    Ok(Report {
        workload: "watch-fanout".into(),
        ops: acks.len() as u64,
        seconds: clock.seconds(),
        latencies: vec![percentiles("from_send", &from_send), percentiles("from_ack", &from_ack)],
        extra,
    })
}

/// One connection per watcher, spread over the members, `CONNECTING` at a time.
async fn connect_all(uri: &Target, watchers: usize) -> Result<Vec<Client>, String> {
    let mut clients = Vec::with_capacity(watchers);
    for start in (0..watchers).step_by(CONNECTING) {
        let batch = (start..(start + CONNECTING).min(watchers)).map(|w| connect(uri, w + 1));
        for c in futures_util::future::join_all(batch).await {
            clients.push(c?);
        }
    }
    Ok(clients)
}

/// The writer: one SET at a time, on an open schedule of `--fanout-rate`
/// a second. Returns each measured write's acknowledgement time by
/// revision, and the CPU each process used while measuring.
async fn write(
    args: &Args,
    writer: &Client,
    clock: &Clock,
    procs: Vec<(String, Option<u32>)>,
) -> Result<(HashMap<Rev, u64>, Vec<(String, String)>), String> {
    let mut acks = HashMap::new();
    let mut meter = None;
    let mut n = 0u64;
    while clock.running() {
        if args.fanout_rate > 0.0 {
            // An open schedule: the next write is due at n / rate, whenever the last one ended.
            let due = Duration::from_secs_f64(n as f64 / args.fanout_rate);
            tokio::time::sleep_until(tokio::time::Instant::from_std(clock.start + due)).await;
        }
        if clock.measuring() && meter.is_none() {
            meter = Some(CpuMeter::start(procs.clone()));
        }
        let sent = clock.start.elapsed().as_nanos() as u64;
        let rev = writer
            .set(&format!("{}/fan/{}", root(), n % 100), -1, sent.to_string())
            .await
            .map_err(|e| e.to_string())?;
        n += 1;
        if clock.measuring() && clock.running() {
            acks.insert(rev, clock.start.elapsed().as_nanos() as u64);
            clock.ops.fetch_add(1, Ordering::Relaxed);
        }
    }
    let cpu = meter.map(|m| m.percents()).unwrap_or_default();
    Ok((acks, cpu))
}

/// One watcher: a WAIT loop, or a STREAM.
struct Watching {
    client: Client,
    sub: Option<Subscription>,
    pattern: String,
    /// The next revision it has not seen.
    next: Rev,
}

impl Watching {
    async fn run(mut self, stop: Arc<AtomicBool>, start: std::time::Instant) -> Seen {
        let mut seen = Seen::new();
        while !stop.load(Ordering::Relaxed) {
            let Some(e) = self.next_event().await else { continue };
            let received = start.elapsed().as_nanos() as u64;
            let sent = std::str::from_utf8(&e.body).ok().and_then(|s| s.parse().ok()).unwrap_or(received);
            seen.push((e.rev, sent, received));
            self.next = e.rev + 1;
        }
        seen
    }

    /// The next event, or `None` after 200 ms without one (to look at the stop flag).
    async fn next_event(&mut self) -> Option<Event> {
        let wait = Duration::from_millis(200);
        let got = match self.sub.as_mut() {
            Some(s) => tokio::time::timeout(wait, s.next()).await,
            None => tokio::time::timeout(wait, self.client.wait(&self.pattern, self.next)).await,
        };
        match got {
            Ok(Ok(e)) => Some(e),
            // A stream that ended (cut off, too late) is opened again from where it was.
            Ok(Err(_)) if self.sub.is_some() => {
                self.sub = self.client.stream(&self.pattern, self.next).await.ok();
                None
            }
            _ => None,
        }
    }
}
