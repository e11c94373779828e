//! Measures what the history window costs in memory: a tree of 10,000 files
//! under 100 directories, then N overwrites of 100-byte bodies at random
//! files, with the window at 1 revision and at N. Prints resident-set growth.
//!
//! Run: cargo run --release -p doozer-store --example history_cost N WINDOW
//! (each configuration in its own process, so freed memory is not reused).

use doozer_store::{Body, Command, HistoryLimits, Store};

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn run(window: usize, writes: usize) -> usize {
    let mut store = Store::new(HistoryLimits { revs: window, bytes: usize::MAX });
    for i in 0..10_000 {
        store.apply(&Command::Set {
            path: format!("/d{}/f{}", i % 100, i),
            rev: -1,
            body: Body::from(vec![b'x'; 100]),
        });
    }
    let before = rss_bytes();
    let mut x: u64 = 88172645463325252;
    for _ in 0..writes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let i = x % 10_000;
        store.apply(&Command::Set {
            path: format!("/d{}/f{}", i % 100, i),
            rev: -1,
            body: Body::from(vec![b'y'; 100]),
        });
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(store.rev() > 0);
    past_reads(&store);
    grown
}

/// How long a read at a past revision takes: its tree is rebuilt from the
/// nearest tree on either side, up to 512 events away. Alternating between two
/// revisions keeps the store's last rebuilt tree from helping.
fn past_reads(store: &Store) {
    let now = store.rev();
    let oldest = store.oldest();
    let mut worst = std::time::Duration::ZERO;
    let mut total = std::time::Duration::ZERO;
    let reads = 200.min(now - 1).max(0);
    for i in 0..reads {
        let rev = now - 1 - (i * 7919) % (now - oldest).max(1);
        let t = std::time::Instant::now();
        let snap = store.snapshot(Some(rev.max(1)));
        let took = t.elapsed();
        if let Ok(s) = snap {
            std::hint::black_box(s.stat("/d1"));
            worst = worst.max(took);
            total += took;
        }
    }
    if reads > 0 {
        println!("reads at past revisions: mean {:?}, worst {:?} ({reads} reads)", total / reads as u32, worst);
    }
}

fn main() {
    let arg = |i: usize, default: usize| std::env::args().nth(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let (writes, window) = (arg(1, 2000), arg(2, 2000));
    let grown = run(window, writes);
    println!("{writes} overwrites, window {window}: rss growth {grown} bytes ({} per write)", grown / writes.max(1));
}
