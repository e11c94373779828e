//! The bodies of the fuzz targets (`fuzz/`), shared with a regular test that
//! replays the kept corpus on stable Rust. Each must never panic, whatever the
//! bytes; where there is an invariant to check, it is asserted.

use bytes::Bytes;
use doozer_proto::{read_frame, Request, Verb, MAX_FRAME};
use doozer_store::{is_valid_path, Command, Glob, HistoryLimits, Outcome, Store};
use prost::Message;
use std::sync::OnceLock;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread().build().unwrap_or_else(|e| panic!("fuzz runtime: {e}"))
    })
}

/// Frames and requests as the server reads them off a connection.
fn requests(data: &[u8]) -> Vec<Request> {
    runtime().block_on(async {
        let mut r = data;
        let mut out = Vec::new();
        while let Ok(Some(body)) = read_frame(&mut r, MAX_FRAME).await {
            assert!(body.len() <= MAX_FRAME);
            match Request::decode(body) {
                Ok(req) => out.push(req),
                Err(_) => break, // the server closes the connection here
            }
        }
        out
    })
}

/// Target `frame`: arbitrary bytes as a client connection's stream.
pub fn frame(data: &[u8]) {
    for req in requests(data) {
        // What decodes must encode back to something that decodes the same.
        let again = Request::decode(req.encode_to_vec().as_slice()).ok();
        assert_eq!(again.as_ref(), Some(&req));
    }
}

/// Target `store`: the requests in the stream, handled against a store as the
/// server's session does (path and glob checks, then the store), checking
/// that revisions only move one at a time and reads answer.
pub fn store(data: &[u8]) {
    let mut store = Store::new(HistoryLimits { revs: 16, bytes: 1 << 16 });
    for req in requests(data) {
        let path = req.path.clone().unwrap_or_default();
        let rev = req.rev.unwrap_or(0);
        let before = store.rev();
        let cmd = match req.verb.and_then(Verb::from_i32) {
            Some(Verb::Set) if is_valid_path(&path) => Some(Command::Set {
                path: path.clone(),
                rev,
                body: req.value.as_ref().map(doozer_store::Body::from).unwrap_or_default(),
            }),
            Some(Verb::Del) if is_valid_path(&path) => Some(Command::Del { path: path.clone(), rev }),
            Some(Verb::Nop) => Some(Command::Nop),
            _ => None,
        };
        if let Some(cmd) = cmd {
            let outcome = store.apply(&cmd);
            let moved = store.rev() - before;
            assert_eq!(moved, matches!(outcome, Outcome::Changed(_)) as i64);
        }
        let snap = match store.snapshot(req.rev) {
            Ok(s) => s,
            Err(_) => continue,
        };
        let _ = snap.get(&path);
        let _ = snap.getdir(&path);
        let _ = snap.stat(&path);
        if let Ok(g) = Glob::parse(&path) {
            let _ = snap.walk(&g);
            let _ = store.first_event(rev, &g);
        }
    }
    // The store's image must round-trip.
    let mut bytes = Vec::new();
    store.image().encode(&mut bytes);
    let image = doozer_store::Image::decode(&bytes).unwrap_or_else(|e| panic!("own image rejected: {e}"));
    let again = Store::from_image(&image, HistoryLimits { revs: 16, bytes: 1 << 16 });
    assert_eq!(again.map(|s| s.rev()).ok(), Some(store.rev()));
}

/// Target `glob`: a pattern and a path from the bytes; parsing and matching
/// must not panic, and a glob with no wildcard matches exactly itself.
pub fn glob(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (pattern, path) = text.split_once('\n').unwrap_or((&text, "/"));
    let _ = is_valid_path(path);
    if let Ok(g) = Glob::parse(pattern) {
        let m = g.matches(path);
        if g.is_literal() {
            assert_eq!(m, pattern == path);
        }
        let _ = g.could_match_below(path);
    }
    // Store images from arbitrary bytes must be rejected or accepted, never crash.
    if let Ok(image) = doozer_store::Image::decode(data) {
        let _ = Store::from_image(&image, HistoryLimits::default());
    }
    let _ = Bytes::copy_from_slice(data);
}
