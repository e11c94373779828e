//! Measures what the tree itself costs per file: N files of 100 bytes, laid
//! out as doozer-bench's `mem` workload does (`/bench/mem/<k/1000>/<k%1000>`),
//! with the default history window. Prints resident-set growth per file.
//! It uses jemalloc, as doozerd does, so the numbers compare with the server's.
//!
//! Run: cargo run --release -p doozer-store --example tree_cost [N]
//! with `W=64` to interleave 64 writers' key ranges as 64 clients do, and
//! `REVS=1` for no history.

use doozer_store::{Body, Command, HistoryLimits, Store};

fn rss_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let before = rss_bytes();
    let revs = std::env::var("REVS").ok().and_then(|r| r.parse().ok()).unwrap_or(2000);
    let mut store = Store::new(HistoryLimits { revs, bytes: 256 << 20 });
    let w: usize = std::env::var("W").ok().and_then(|r| r.parse().ok()).unwrap_or(1);
    let per = n.div_ceil(w);
    for i in 0..n {
        let k = (i % w) * per + i / w;
        if k >= n {
            continue;
        }
        // As received from the network: each body its own buffer.
        let body = Body::from(vec![b'x'; 100]);
        store.apply(&Command::Set { path: format!("/bench/mem/{}/{}", k / 1000, k % 1000), rev: -1, body });
    }
    let grown = rss_bytes().saturating_sub(before);
    println!("{n} files: {} bytes of RSS per file ({} revisions of history)", grown / n, store.history_size().0);
}

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
