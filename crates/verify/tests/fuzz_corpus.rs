//! Replays the fuzzers' kept corpus (fuzz/corpus) through the same target
//! bodies on stable Rust, so every input that ever found new code still runs.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, data)
        })
        .collect();
    files.sort();
    files
}

fn replay(target: &str, run: fn(&[u8])) {
    let inputs = corpus(target);
    assert!(inputs.len() >= 10, "the {target} corpus has {} inputs", inputs.len());
    for (path, data) in inputs {
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(result.is_ok(), "fuzz input {} fails", path.display());
    }
}

#[test]
fn frame_corpus() {
    replay("frame", doozer_verify::fuzz::frame);
}

#[test]
fn store_corpus() {
    replay("store", doozer_verify::fuzz::store);
}

#[test]
fn glob_corpus() {
    replay("glob", doozer_verify::fuzz::glob);
}
