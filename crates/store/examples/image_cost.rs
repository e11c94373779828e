//! Times a whole-store image at N files of 100 bytes (laid out as
//! doozer-bench's `scale` writes them): encoding it, decoding it, and
//! rebuilding a store from it, the three steps of a snapshot sent to a
//! joining member (and of `--restore`).
//!
//! Run: cargo run --release -p doozer-store --example image_cost [N]
//! with `BACKUP=file` to also write the tree as a backup (for timing
//! `doozerd --restore` and a join by hand).

use doozer_store::{BackupWriter, Body, Command, HistoryLimits, Image, Store};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(1_000_000);
    let limits = HistoryLimits { revs: 2000, bytes: 256 << 20 };
    let mut store = Store::new(limits);
    for k in 0..n {
        let body = Body::from(vec![b'x'; 100]);
        store.apply(&Command::Set { path: format!("/scale/{}/{}", k / 1000, k % 1000), rev: -1, body });
    }
    if let Ok(path) = std::env::var("BACKUP") {
        let out = std::io::BufWriter::new(std::fs::File::create(&path).expect("creates the backup file"));
        let mut w = BackupWriter::new(out, "local", store.rev()).expect("writes");
        for (path, f) in store.image().base.files() {
            w.file(&path, f.rev, &f.body).expect("writes");
        }
        w.finish().expect("writes");
    }
    for _ in 0..3 {
        let t = Instant::now();
        let image = store.image();
        let mut bytes = Vec::new();
        image.encode(&mut bytes);
        let encoded = t.elapsed();
        let t = Instant::now();
        let decoded = Image::decode(&bytes).expect("decodes");
        let decode = t.elapsed();
        let t = Instant::now();
        let rebuilt = Store::from_image(&decoded, limits).expect("rebuilds");
        let rebuild = t.elapsed();
        println!(
            "{n} files, {} MB: encode {encoded:.2?}, decode {decode:.2?}, rebuild {rebuild:.2?} (rev {})",
            bytes.len() >> 20,
            rebuilt.rev()
        );
    }
}

#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
