//! `scale`: how each cost grows with the tree. For each size in
//! `--scale-keys` (10k, 100k, 1M keys of `--size` bytes) it starts its own
//! local doozerd (default flags, a port of its choice, no web server),
//! loads the keys, and prints:
//! the load rate and RSS per key; the time to WALK the whole tree (256
//! pages in flight, at one revision); GETs at past revisions spread over
//! the default history window (2,000 revisions); the time for a new member
//! to join and catch up, and its RSS per key; `doozer backup` of the tree;
//! and a new cluster `--restore`d from that backup: the time until it
//! serves, and its RSS per key beside the loaded node's, when it starts
//! serving and `--scale-settle` (15) seconds later. (RSS per key is each node's growth over the
//! seed's RSS before the load.)
//!
//! It runs its own nodes because joins and restores start processes:
//! `doozerd` and `doozer` are taken from the directory `doozer-bench` is
//! in (where `cargo install` and `cargo build` put all three). Every node
//! it starts is killed when it is done with it.

use crate::procfs::rss_bytes;
use crate::{histogram, percentiles, Args, Report};
use bytes::Bytes;
use doozer_client::{Client, ErrCode, Options, Rev};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Writes and WALK pages in flight.
const WINDOW: usize = 256;

/// Past-revision reads per size.
const PAST_READS: usize = 2000;

/// How long a node may take to start serving.
const START_LIMIT: Duration = Duration::from_secs(300);

pub(crate) async fn scale(args: &Args) -> Result<Vec<Report>, String> {
    let mut reports = Vec::new();
    for &keys in &args.scale_keys {
        let r = one_size(args, keys).await?;
        crate::show(&mut reports, r);
    }
    Ok(reports)
}

async fn one_size(args: &Args, keys: usize) -> Result<Report, String> {
    let dir = std::env::temp_dir().join(format!("doozer-bench-scale-{}-{keys}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = measure(args, keys, &dir).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn measure(args: &Args, keys: usize, dir: &Path) -> Result<Report, String> {
    let seed = Node::start(dir, "seed", &[]).await?;
    let c = seed.client().await?;
    let base = seed.rss()?;
    let started = Instant::now();
    load(&c, keys, args.size).await?;
    let load_s = started.elapsed().as_secs_f64();
    let rev = c.rev().await.map_err(|e| e.to_string())?;
    let per_key = |rss: u64, base: u64| (rss.saturating_sub(base) / keys.max(1) as u64).to_string();
    let mut extra = vec![
        ("keys".to_string(), keys.to_string()),
        ("load_s".into(), format!("{load_s:.2}")),
        ("rss_bytes_per_key".into(), per_key(seed.rss()?, base)),
    ];
    let t = Instant::now();
    let walked = walk_all(&c, rev).await?;
    extra.push(("walk_s".into(), format!("{:.3}", t.elapsed().as_secs_f64())));
    extra.push(("walked".into(), walked.to_string()));
    let past = past_reads(&c, rev, keys).await?;

    let file = dir.join("backup");
    let t = Instant::now();
    backup(&seed.addr, &file)?;
    extra.push(("backup_s".into(), format!("{:.2}", t.elapsed().as_secs_f64())));
    // After the backup: a killed joiner leaves the seed without a quorum.
    let t = Instant::now();
    let joiner = Node::start(dir, "joiner", &["-a", &seed.addr]).await?;
    let j = joiner.client().await?;
    // Served at the loaded revision: caught up.
    j.get("/ctl/name", Some(rev)).await.map_err(|e| e.to_string())?;
    extra.push(("join_s".into(), format!("{:.2}", t.elapsed().as_secs_f64())));
    extra.push(("joined_rss_bytes_per_key".into(), per_key(joiner.rss()?, base)));
    drop(joiner);

    drop(c);
    drop(seed);
    let t = Instant::now();
    let restored = Node::start(dir, "restored", &["--restore", &file.to_string_lossy()]).await?;
    let r = restored.client().await?;
    r.get("/ctl/name", None).await.map_err(|e| e.to_string())?;
    extra.push(("restore_s".into(), format!("{:.2}", t.elapsed().as_secs_f64())));
    extra.push(("restored_rss_bytes_per_key".into(), per_key(restored.rss()?, base)));
    // Once the restored tree's log entry is purged and the allocator has
    // given the pages back (jemalloc's decay is 10 s): --scale-settle.
    tokio::time::sleep(Duration::from_secs_f64(args.scale_settle.max(0.0))).await;
    extra.push(("restored_settled_rss_bytes_per_key".into(), per_key(restored.rss()?, base)));
    Ok(Report { workload: "scale".into(), ops: keys as u64, seconds: load_s, latencies: vec![past], extra })
}

/// `keys` files of `size` bytes, `WINDOW` SETs in flight.
async fn load(c: &Client, keys: usize, size: usize) -> Result<(), String> {
    let body = Bytes::from(vec![b's'; size]);
    let paths: Vec<String> = (0..keys).map(|k| format!("/scale/{}/{}", k / 1000, k % 1000)).collect();
    for chunk in paths.chunks(WINDOW) {
        let sets = chunk.iter().map(|p| c.set(p, -1, body.clone()));
        for r in futures_util::future::join_all(sets).await {
            r.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// WALKs `/**` at `rev` to the end; returns the files listed.
async fn walk_all(c: &Client, rev: Rev) -> Result<usize, String> {
    let mut listed = 0;
    loop {
        let walks = (listed..listed + WINDOW).map(|o| c.walk("/**", o as i32, Some(rev)));
        for r in futures_util::future::join_all(walks).await {
            match r {
                Ok(_) => listed += 1,
                Err(e) if e.code() == Some(ErrCode::Range) => return Ok(listed),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// GETs at revisions spread over the history window below `rev`: the
/// latency of each (reads that fell out of the window are not counted).
async fn past_reads(c: &Client, rev: Rev, keys: usize) -> Result<(String, u64, u64, u64), String> {
    let mut h = histogram();
    for i in 0..PAST_READS {
        let at = rev - (i as Rev * 1999 / PAST_READS as Rev);
        let k = (i * 7919) % keys.max(1);
        let t = Instant::now();
        match c.get(&format!("/scale/{}/{}", k / 1000, k % 1000), Some(at)).await {
            Ok(_) => {
                let _ = h.record(t.elapsed().as_micros().max(1) as u64);
            }
            Err(e) if e.code() == Some(ErrCode::TooLate) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(percentiles("past_get", &h))
}

/// `doozer backup FILE` against `addr`.
fn backup(addr: &str, file: &Path) -> Result<(), String> {
    let out = Command::new(sibling("doozer"))
        .args(["-a", addr, "backup"])
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("doozer backup: {e}"))?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("doozer backup: {}", String::from_utf8_lossy(&out.stderr).trim())),
    }
}

/// A binary installed next to this one.
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe().map(|p| p.with_file_name(name)).unwrap_or_else(|_| PathBuf::from(name))
}

/// A doozerd this workload started; killed when dropped.
struct Node {
    child: Child,
    addr: String,
}

impl Node {
    /// Starts a node on a port of the kernel's choice, which it writes to
    /// `DIR/NAME.addr`; no web server.
    async fn start(dir: &Path, name: &str, extra: &[&str]) -> Result<Node, String> {
        let file = dir.join(format!("{name}.addr"));
        let child = Command::new(sibling("doozerd"))
            .args(["-l", "127.0.0.1:0", "-w", "false", "--addr-file"])
            .arg(&file)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", sibling("doozerd").display()))?;
        let mut node = Node { child, addr: String::new() };
        let deadline = Instant::now() + START_LIMIT;
        while node.addr.is_empty() {
            // A whole first line: the file may be read while it is written.
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            if let Some((line, _)) = text.split_once('\n') {
                node.addr = line.to_string();
            } else if Instant::now() > deadline || node.child.try_wait().ok().flatten().is_some() {
                return Err(format!("doozerd {} did not start", extra.join(" ")));
            } else {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(node)
    }

    /// A client, once the node serves (it has caught up with its cluster).
    async fn client(&self) -> Result<Client, String> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match Client::connect_with(&self.addr, &Options::default()).await {
                Ok(c) => return Ok(c),
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(e) => return Err(format!("{} never served: {e}", self.addr)),
            }
        }
    }

    fn rss(&self) -> Result<u64, String> {
        rss_bytes(self.child.id()).ok_or_else(|| "no RSS in /proc: scale needs Linux".to_string())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
