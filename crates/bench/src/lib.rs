//! `doozer-bench`: drives any Doozer cluster with the same workloads every
//! time and prints a table line and a JSON line per run.
//!
//! Workloads: `put-seq` (one client, sequential SETs of distinct keys),
//! `put-conc` (C clients, each its own connection, distinct keys), `get-conc`
//! (C readers over K preloaded keys), `watch-fanout` (W watchers in WAIT loops
//! or streams on one glob, one writer; latency from the write's send and from
//! its acknowledgement to each watcher's receipt, missing events, and whose
//! CPU it took: `fanout`), `mem`
//! (load N keys, report each local server's RSS growth), `lease-churn` (C
//! clients each granting a lease, setting a file under it and revoking it,
//! per op), `keep-alive` (C clients each keeping one lease alive, as fast
//! as answered), `election-failover` (a holder that dies just after it is
//! elected, TTL 2 s: the time from its last word to the next contender's
//! acknowledged leadership), `scale` (how RSS, WALK, past reads, a join,
//! a backup and a restore grow with the tree, on nodes of its own: `scale`).
//! Runs are bounded in time; the warm-up is not measured.
//!
//! It writes into the cluster it is pointed at, only under `/bench/<pid>`,
//! and deletes that subtree when it is done (also after a failed workload).
//! With `--etcd`, `put-seq` and `put-conc` run against etcd v3 instead
//! (`etcd`), for comparisons; nothing is deleted there.

mod etcd;
mod fanout;
mod procfs;
mod scale;

use procfs::{rss_bytes, server_pid};

use bytes::Bytes;
use clap::Parser;
use doozer_client::{Client, ErrCode, Options, Tls, Uri};
use hdrhistogram::Histogram;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Parser, Clone, Debug)]
#[command(name = "doozer-bench", about = "Benchmark a Doozer cluster with fixed workloads")]
pub struct Args {
    /// The cluster: doozer:?ca=HOST:PORT&ca=... or HOST:PORT (default: DOOZER_URI, else 127.0.0.1:8046).
    #[arg(short = 'a', long)]
    pub uri: Option<String>,
    /// put-seq, put-conc, get-conc, watch-fanout, mem, lease-churn,
    /// keep-alive, election-failover, scale, or all (comma-separated; all is the first five).
    #[arg(long, default_value = "all")]
    pub workload: String,
    /// Concurrent clients for put-conc, get-conc and mem.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Watchers for watch-fanout; a list (100,1000,10000) runs it once per count.
    #[arg(long, value_delimiter = ',', default_value = "100")]
    pub watchers: Vec<usize>,
    /// Writes per second in watch-fanout; 0: as fast as the writer can (each
    /// write waits for the last), which measures a saturated cluster's queues.
    #[arg(long, default_value_t = 200.0)]
    pub fanout_rate: f64,
    /// watch-fanout watchers use one STREAM each (the extension) instead of
    /// WAIT loops, as new clients do.
    #[arg(long)]
    pub stream: bool,
    /// Seconds measured per workload.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Keys preloaded for get-conc.
    #[arg(long, default_value_t = 1000)]
    pub keys: usize,
    /// Tree sizes for scale (its own local nodes; see the module).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    pub scale_keys: Vec<usize>,
    /// Seconds scale waits after a restore serves before reading its RSS again.
    #[arg(long, default_value_t = 15.0)]
    pub scale_settle: f64,
    /// Keys loaded by mem.
    #[arg(long, default_value_t = 100_000)]
    pub mem_keys: usize,
    /// TLS: the CA certificate(s) that signed the servers' certificates (PEM).
    #[arg(long)]
    pub cacert: Option<String>,
    /// TLS: a client certificate (PEM), with --key.
    #[arg(long)]
    pub cert: Option<String>,
    /// TLS: the client certificate's key (PEM).
    #[arg(long)]
    pub key: Option<String>,
    /// Run put-seq and put-conc against etcd v3 at these gRPC endpoints
    /// (HOST:PORT,HOST:PORT; plain TCP) instead of doozerd.
    #[arg(long, value_delimiter = ',')]
    pub etcd: Vec<String>,
}

/// Where a run writes: `/bench/<pid>`, deleted at the end.
fn root() -> String {
    format!("/bench/{}", std::process::id())
}

/// The cluster and how to connect to it.
pub struct Target {
    uri: Uri,
    opts: Options,
}

impl std::ops::Deref for Target {
    type Target = Uri;
    fn deref(&self) -> &Uri {
        &self.uri
    }
}

/// One workload's result.
#[derive(Debug, Default)]
pub struct Report {
    pub workload: String,
    pub ops: u64,
    pub seconds: f64,
    /// Latencies in microseconds: (name, p50, p99, p999).
    pub latencies: Vec<(String, u64, u64, u64)>,
    pub extra: Vec<(String, String)>,
}

impl Report {
    pub fn ops_per_sec(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ops as f64 / self.seconds
        } else {
            0.0
        }
    }

    fn table_line(&self) -> String {
        let mut line = format!("{:<13} {:>10.0} ops/s", self.workload, self.ops_per_sec());
        for (name, p50, p99, p999) in &self.latencies {
            line.push_str(&format!("  {name} p50 {p50}us p99 {p99}us p999 {p999}us"));
        }
        for (k, v) in &self.extra {
            line.push_str(&format!("  {k} {v}"));
        }
        line
    }

    fn json_line(&self) -> String {
        let mut fields = vec![
            format!("\"workload\":\"{}\"", self.workload),
            format!("\"ops\":{}", self.ops),
            format!("\"seconds\":{:.3}", self.seconds),
            format!("\"ops_per_sec\":{:.1}", self.ops_per_sec()),
        ];
        for (name, p50, p99, p999) in &self.latencies {
            fields.push(format!("\"{name}_p50_us\":{p50},\"{name}_p99_us\":{p99},\"{name}_p999_us\":{p999}"));
        }
        for (k, v) in &self.extra {
            let quoted = v.parse::<f64>().map(|_| v.clone()).unwrap_or_else(|_| format!("\"{v}\""));
            fields.push(format!("\"{k}\":{quoted}"));
        }
        format!("{{{}}}", fields.join(","))
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!()))
}

fn percentiles(name: &str, h: &Histogram<u64>) -> (String, u64, u64, u64) {
    (name.to_string(), h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.value_at_quantile(0.999))
}

/// Shared state of a timed run: when measuring starts and stops.
#[derive(Clone)]
struct Clock {
    start: Instant,
    warmup: Duration,
    end: Duration,
    ops: Arc<AtomicU64>,
}

impl Clock {
    fn new(args: &Args) -> Clock {
        let warmup = Duration::from_secs_f64(args.warmup);
        Clock {
            start: Instant::now(),
            warmup,
            end: warmup + Duration::from_secs_f64(args.duration),
            ops: Arc::default(),
        }
    }

    fn running(&self) -> bool {
        self.start.elapsed() < self.end
    }

    fn measuring(&self) -> bool {
        self.start.elapsed() >= self.warmup
    }

    fn seconds(&self) -> f64 {
        (self.end - self.warmup).as_secs_f64()
    }

    /// Counts an operation begun at `t`, if it ended while measuring.
    fn record(&self, h: &mut Histogram<u64>, t: Instant) {
        if self.measuring() && self.running() {
            let _ = h.record(t.elapsed().as_micros().max(1) as u64);
            self.ops.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Prints a progress line once a second while a workload runs (on a terminal).
fn progress(name: &str, clock: &Clock) -> tokio::task::JoinHandle<()> {
    let (name, clock) = (name.to_string(), clock.clone());
    tokio::spawn(async move {
        if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return;
        }
        while clock.running() {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let phase = if clock.measuring() { "measuring" } else { "warming up" };
            eprint!(
                "\r{name}: {:.0}s {phase}, {} ops   ",
                clock.start.elapsed().as_secs_f64(),
                clock.ops.load(Ordering::Relaxed)
            );
        }
        eprint!("\r{:60}\r", "");
    })
}

async fn connect(uri: &Target, i: usize) -> Result<Client, String> {
    let addr = &uri.addrs[i % uri.addrs.len()];
    let c = Client::connect_with(addr, &uri.opts).await.map_err(|e| e.to_string())?;
    if let Some(sk) = &uri.secret {
        c.access(sk.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    Ok(c)
}

/// `clients` connections, each running `op(client, worker, n)` in a loop until time is up.
async fn timed<F, Fut>(name: &str, args: &Args, uri: &Target, clients: usize, op: F) -> Result<Report, String>
where
    F: Fn(Client, usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send,
{
    let clock = Clock::new(args);
    let shown = progress(name, &clock);
    let mut tasks = Vec::new();
    for w in 0..clients {
        let c = connect(uri, w).await?;
        let (clock, op) = (clock.clone(), op.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let mut n = 0u64;
            while clock.running() {
                let t = Instant::now();
                op(c.clone(), w, n).await?;
                n += 1;
                clock.record(&mut h, t);
            }
            Ok::<_, String>(h)
        }));
    }
    collect(name, &clock, shown, tasks, clients).await
}

/// The report of a timed run once its workers are done.
async fn collect(
    name: &str,
    clock: &Clock,
    shown: tokio::task::JoinHandle<()>,
    tasks: Vec<tokio::task::JoinHandle<Result<Histogram<u64>, String>>>,
    clients: usize,
) -> Result<Report, String> {
    let mut all = histogram();
    for t in tasks {
        let h = t.await.map_err(|e| e.to_string())??;
        let _ = all.add(&h);
    }
    shown.abort();
    Ok(Report {
        workload: name.into(),
        ops: clock.ops.load(Ordering::Relaxed),
        seconds: clock.seconds(),
        latencies: vec![percentiles("latency", &all)],
        extra: vec![("clients".into(), clients.to_string()), ("latency_max_us".into(), all.max().to_string())],
    })
}

async fn put(name: &str, args: &Args, uri: &Target, clients: usize) -> Result<Report, String> {
    let body = Bytes::from(vec![b'x'; args.size]);
    let prefix = format!("{}/{name}", root());
    timed(name, args, uri, clients, move |c, w, n| {
        let (body, path) = (body.clone(), format!("{prefix}/{w}/{n}"));
        async move { c.set(&path, -1, body).await.map(drop).map_err(|e| e.to_string()) }
    })
    .await
}

async fn lease_churn(args: &Args, uri: &Target) -> Result<Report, String> {
    let body = Bytes::from(vec![b'l'; args.size]);
    let prefix = format!("{}/lease", root());
    timed("lease-churn", args, uri, args.clients, move |c, w, n| {
        let (body, path) = (body.clone(), format!("{prefix}/{w}/{n}"));
        async move {
            let failed = |e: doozer_client::Error| e.to_string();
            let id = c.grant(60).await.map_err(failed)?;
            c.set_leased(&path, -1, body, id).await.map_err(failed)?;
            c.revoke(id).await.map(drop).map_err(failed)
        }
    })
    .await
}

/// C clients, each keeping one lease alive as fast as it is answered: the
/// leader confirms it still leads before each answer (a heartbeat round to
/// the voters), so this measures that round as much as the verb.
async fn keep_alive(args: &Args, uri: &Target) -> Result<Report, String> {
    let leases: Arc<Mutex<HashMap<usize, doozer_client::LeaseId>>> = Arc::default();
    let report = timed("keep-alive", args, uri, args.clients, {
        let leases = leases.clone();
        move |c, w, _| {
            let leases = leases.clone();
            async move {
                let failed = |e: doozer_client::Error| e.to_string();
                let known = leases.lock().map_err(|e| e.to_string())?.get(&w).copied();
                let id = match known {
                    Some(id) => id,
                    None => {
                        let id = c.grant(60).await.map_err(failed)?;
                        leases.lock().map_err(|e| e.to_string())?.insert(w, id);
                        id
                    }
                };
                c.keep_alive(id).await.map(drop).map_err(failed)
            }
        }
    })
    .await?;
    let ids: Vec<_> = leases.lock().map_err(|e| e.to_string())?.values().copied().collect();
    let c = connect(uri, 0).await?;
    for id in ids {
        let _ = c.revoke(id).await;
    }
    Ok(report)
}

/// TTL of the holders in election-failover.
const FAILOVER_TTL: i64 = 2;

/// Rounds of: a holder claims leadership and dies at once (its lease is
/// never kept alive); a contender already waiting campaigns; the time from
/// the holder's grant (its last word) to the contender's acknowledged
/// leadership is one sample. The floor is the TTL.
async fn election_failover(args: &Args, uri: &Target) -> Result<Report, String> {
    let mut text = format!("doozer:?{}", uri.addrs.iter().map(|a| format!("ca={a}")).collect::<Vec<_>>().join("&"));
    if let Some(sk) = &uri.secret {
        text.push_str(&format!("&sk={sk}"));
    }
    let cluster = doozer_client::Cluster::connect_with(&text, uri.opts.clone()).await.map_err(|e| e.to_string())?;
    let holder = connect(uri, 0).await?;
    let failed = |e: doozer_client::Error| e.to_string();
    let rounds = ((args.duration / (FAILOVER_TTL as f64 + 0.5)).ceil() as usize).max(3);
    let mut h = histogram();
    let start = Instant::now();
    for round in 0..rounds {
        let dir = format!("{}/election/{round}", root());
        let election = doozer_client::Election::new(&cluster, &dir);
        // The holder: a lease granted, a claim made, and no keep-alive ever.
        let died = Instant::now();
        let id = holder.grant(FAILOVER_TTL).await.map_err(failed)?;
        holder.set_leased(&format!("{dir}/{id:016x}"), 0, "dead", id).await.map_err(failed)?;
        let next = election.campaign("next", 10).await.map_err(failed)?;
        let _ = h.record(died.elapsed().as_micros().max(1) as u64);
        next.release().await.map_err(failed)?;
    }
    Ok(Report {
        workload: "election-failover".into(),
        ops: rounds as u64,
        seconds: start.elapsed().as_secs_f64(),
        latencies: vec![percentiles("failover", &h)],
        extra: vec![("ttl_s".into(), FAILOVER_TTL.to_string()), ("failover_max_us".into(), h.max().to_string())],
    })
}

async fn get_conc(args: &Args, uri: &Target) -> Result<Report, String> {
    let body = Bytes::from(vec![b'g'; args.size]);
    let c = connect(uri, 0).await?;
    let mut loads = Vec::new();
    for k in 0..args.keys {
        let (c, body) = (c.clone(), body.clone());
        loads.push(tokio::spawn(async move { c.set(&format!("{}/get/{k}", root()), -1, body).await }));
    }
    for l in loads {
        l.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    }
    let keys = args.keys.max(1) as u64;
    timed("get-conc", args, uri, args.clients, move |c, w, n| async move {
        let k = (n.wrapping_mul(2_654_435_761).wrapping_add(w as u64)) % keys;
        c.get(&format!("{}/get/{k}", root()), None).await.map(drop).map_err(|e| e.to_string())
    })
    .await
}

/// Loads `mem_keys` keys and reports each local server's RSS growth per key.
async fn mem(args: &Args, uri: &Target) -> Result<Report, String> {
    let pids: Vec<(String, Option<u32>)> = uri.addrs.iter().map(|a| (a.clone(), server_pid(a))).collect();
    let before: Vec<Option<u64>> = pids.iter().map(|(_, p)| p.and_then(rss_bytes)).collect();
    let started = Instant::now();
    let body = Bytes::from(vec![b'm'; args.size]);
    let per = args.mem_keys.div_ceil(args.clients.max(1));
    let mut loads = Vec::new();
    for w in 0..args.clients.max(1) {
        let (c, body) = (connect(uri, w).await?, body.clone());
        let range = (w * per)..((w + 1) * per).min(args.mem_keys);
        loads.push(tokio::spawn(async move {
            for k in range {
                c.set(&format!("{}/mem/{}/{}", root(), k / 1000, k % 1000), -1, body.clone())
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(())
        }));
    }
    for l in loads {
        l.await.map_err(|e| e.to_string())??;
    }
    let seconds = started.elapsed().as_secs_f64();
    // Let every node apply the load before measuring it.
    let last = connect(uri, 0).await?.rev().await.map_err(|e| e.to_string())?;
    let mut extra = vec![("keys".to_string(), args.mem_keys.to_string())];
    for (i, (addr, pid)) in pids.iter().enumerate() {
        let c = Client::connect_with(addr, &uri.opts).await.map_err(|e| e.to_string())?;
        c.get("/bench", Some(last)).await.ok();
        let growth = match (before[i], pid.and_then(rss_bytes)) {
            (Some(b), Some(a)) => format!("{}", a.saturating_sub(b) / args.mem_keys.max(1) as u64),
            _ => "n/a".to_string(),
        };
        extra.push((format!("rss_bytes_per_key[{addr}]"), growth));
    }
    Ok(Report { workload: "mem".into(), ops: args.mem_keys as u64, seconds, latencies: vec![], extra })
}

/// Runs the chosen workloads and prints their reports.
pub async fn run(args: &Args) -> Result<Vec<Report>, String> {
    if !args.etcd.is_empty() {
        return etcd_workloads(args).await;
    }
    // It runs on nodes of its own: no cluster to write into or clean.
    if args.workload == "scale" {
        return scale::scale(args).await;
    }
    let uri_text = args
        .uri
        .clone()
        .or_else(|| std::env::var("DOOZER_URI").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| "127.0.0.1:8046".to_string());
    let parsed = doozer_client::parse_uri(&uri_text).map_err(|e| format!("{e}: {uri_text}"))?;
    let tls = match &args.cacert {
        Some(ca) => Some(Tls::from_files(ca, args.cert.as_deref(), args.key.as_deref()).map_err(|e| e.to_string())?),
        None => None,
    };
    let uri = Target { uri: parsed, opts: Options { tls, ..Options::default() } };
    eprintln!("doozer-bench: writing test data under {} in {uri_text}; it is deleted at the end", root());
    let result = workloads(args, &uri).await;
    let cleaned = clean_up(&uri).await;
    let reports = result?;
    cleaned?;
    Ok(reports)
}

/// Deletes everything this run wrote: lists it all at one revision first
/// (WALK pages at a fixed revision cost O(1) each after the first, and no
/// delete moves the revision during the listing), then deletes it, 256
/// requests in flight.
async fn clean_up(uri: &Target) -> Result<(), String> {
    const WINDOW: usize = 256;
    let c = connect(uri, 0).await?;
    let glob = format!("{}/**", root());
    let failed = |e: doozer_client::Error| format!("cleaning up {}: {e}", root());
    let rev = c.rev().await.map_err(failed)?;
    let mut paths = Vec::new();
    'walk: loop {
        let from = paths.len();
        let walks = (from..from + WINDOW).map(|o| c.walk(&glob, o as i32, Some(rev)));
        for r in futures_util::future::join_all(walks).await {
            match r {
                Ok(e) => paths.push(e.path),
                Err(e) if e.code() == Some(ErrCode::Range) => break 'walk,
                Err(e) => return Err(failed(e)),
            }
        }
    }
    for chunk in paths.chunks(WINDOW) {
        for r in futures_util::future::join_all(chunk.iter().map(|p| c.del(p, -1))).await {
            r.map_err(failed)?;
        }
    }
    Ok(())
}

async fn workloads(args: &Args, uri: &Target) -> Result<Vec<Report>, String> {
    let all = ["put-seq", "put-conc", "get-conc", "watch-fanout", "mem"];
    let chosen: Vec<&str> = if args.workload == "all" { all.to_vec() } else { args.workload.split(',').collect() };
    let mut reports = Vec::new();
    for w in chosen {
        let r = match w {
            "put-seq" => put("put-seq", args, uri, 1).await?,
            "put-conc" => put("put-conc", args, uri, args.clients).await?,
            "get-conc" => get_conc(args, uri).await?,
            "watch-fanout" => {
                for &watchers in &args.watchers {
                    show(&mut reports, fanout::watch_fanout(args, uri, watchers).await?);
                }
                continue;
            }
            "scale" => {
                reports.extend(scale::scale(args).await?);
                continue;
            }
            "mem" => mem(args, uri).await?,
            "lease-churn" => lease_churn(args, uri).await?,
            "keep-alive" => keep_alive(args, uri).await?,
            "election-failover" => election_failover(args, uri).await?,
            other => {
                return Err(format!(
                    "unknown workload {other:?}: use put-seq, put-conc, get-conc, watch-fanout, mem, lease-churn, keep-alive, election-failover, scale or all"
                ))
            }
        };
        show(&mut reports, r);
    }
    Ok(reports)
}

/// Prints a report's table line and JSON line, and keeps it.
fn show(reports: &mut Vec<Report>, r: Report) {
    println!("{}", r.table_line());
    println!("{}", r.json_line());
    reports.push(r);
}

async fn etcd_workloads(args: &Args) -> Result<Vec<Report>, String> {
    let chosen: Vec<&str> = match args.workload.as_str() {
        "all" => vec!["put-seq", "put-conc"],
        some => some.split(',').collect(),
    };
    let mut reports = Vec::new();
    for w in chosen {
        let r = match w {
            "put-seq" => etcd::put("put-seq", args, &args.etcd, 1).await?,
            "put-conc" => etcd::put("put-conc", args, &args.etcd, args.clients).await?,
            other => return Err(format!("against etcd only put-seq and put-conc run, not {other:?}")),
        };
        show(&mut reports, r);
    }
    Ok(reports)
}

pub fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("doozer-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("doozer-bench: {e} (is doozerd running? choose the cluster with -a)");
            ExitCode::from(2)
        }
    }
}
