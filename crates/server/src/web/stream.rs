//! Following the store's events from a revision on, and their JSON form. The
//! API's watch stream and the page's WebSocket both read through here.
//!
//! A follower holds its position as "every matching event up to revision
//! `through` has been delivered"; it never skips one: it waits on the WAIT
//! index (so an idle follower costs one held WAIT) and then reads whole runs
//! of events from the history. If it falls out of the history window it is
//! told (TOO_LATE), never silently moved on.

use crate::node::{Node, WaitStart};
use base64::Engine;
use doozer_store::{Event, EventKind, Glob, Rev};
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// Most events read from the history in one step.
pub const MAX_BATCH: usize = 1000;

/// Events, and the revision up to which nothing matching is missing.
pub struct Batch {
    pub events: Vec<Event>,
    pub through: Rev,
}

/// Why a stream cannot go on.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamError {
    /// The next revision has left the history window.
    TooLate,
    /// The node holds as many WAITs as it may.
    Full,
}

/// The next events matching `glob` from `from` on, waiting up to `idle` for
/// the first; an empty batch still reports how far the scan got.
pub async fn next_batch(node: &Arc<Node>, glob: &Arc<Glob>, from: Rev, idle: Duration) -> Result<Batch, StreamError> {
    let scan = |from: Rev| {
        node.events_from(from, glob, MAX_BATCH)
            .map(|(events, through)| Batch { events, through })
            .map_err(|_| StreamError::TooLate)
    };
    let first = scan(from)?;
    if !first.events.is_empty() {
        return Ok(first);
    }
    let from = first.through + 1;
    match node.start_wait(glob.clone(), from) {
        // It happened between the scan and the wait: the scan below finds it.
        WaitStart::Ready(_) => {}
        WaitStart::TooLate => return Err(StreamError::TooLate),
        WaitStart::Full => return Err(StreamError::Full),
        WaitStart::Held(rx, _guard) => {
            // A timeout is no loss: the scan below reads whatever came meanwhile.
            let _ = tokio::time::timeout(idle, rx).await;
        }
    }
    scan(from)
}

/// The name of an event's kind in JSON.
pub fn kind_name(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Set => "set",
        EventKind::Del => "del",
        EventKind::Nop => "nop",
    }
}

/// An event as JSON: `rev`, `path`, `kind`, `len` and its body (see [`put_body`]).
pub fn event_json(e: &Event, preview: Option<usize>, force_base64: bool) -> Value {
    let mut v = Map::new();
    v.insert("rev".into(), json!(e.rev));
    v.insert("path".into(), json!(&*e.path));
    v.insert("kind".into(), json!(kind_name(e.kind)));
    put_body(&mut v, &e.body, preview, force_base64);
    Value::Object(v)
}

/// Most bytes of paths and bodies one JSON answer carries (a walk, a log, a
/// directory page): past it the answer stops, marked `truncated`, whatever
/// `limit` asked for. At least one item is always sent.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;

/// How many of `sizes` (each an item's bytes) fit in [`MAX_ANSWER_BYTES`], at least one.
pub fn within_budget(sizes: impl Iterator<Item = usize>) -> usize {
    let mut total = 0usize;
    let mut n = 0;
    for size in sizes {
        total = total.saturating_add(size);
        if n > 0 && total > MAX_ANSWER_BYTES {
            break;
        }
        n += 1;
    }
    n
}

/// Files matching a walk, each as `path`, `rev`, `len` and its body, at most
/// `limit` of them and [`MAX_ANSWER_BYTES`]; and whether there were more.
pub fn files_json(
    found: &[(String, doozer_store::File)],
    limit: usize,
    preview: Option<usize>,
    force_base64: bool,
) -> (Vec<Value>, bool) {
    let shown = |f: &doozer_store::File| preview.map_or(f.body.len(), |p| f.body.len().min(p));
    let fit = within_budget(found.iter().take(limit).map(|(path, f)| path.len() + shown(f)));
    let files = found
        .iter()
        .take(fit)
        .map(|(path, f)| {
            let mut v = Map::new();
            v.insert("path".into(), json!(path));
            v.insert("rev".into(), json!(f.rev));
            put_body(&mut v, &f.body, preview, force_base64);
            Value::Object(v)
        })
        .collect();
    (files, found.len() > fit)
}

/// Adds `len` and the body: `body` when it is UTF-8 text, else `body_base64`.
/// With a `preview` size, longer bodies are cut there and `truncated` is set.
pub fn put_body(v: &mut Map<String, Value>, body: &[u8], preview: Option<usize>, force_base64: bool) {
    v.insert("len".into(), json!(body.len()));
    let text = if force_base64 { None } else { std::str::from_utf8(body).ok() };
    let limit = preview.unwrap_or(usize::MAX);
    match text {
        Some(t) => {
            let mut end = t.len().min(limit);
            while !t.is_char_boundary(end) {
                end -= 1;
            }
            v.insert("body".into(), json!(&t[..end]));
        }
        None => {
            let end = body.len().min(limit);
            v.insert("body_base64".into(), json!(base64::engine::general_purpose::STANDARD.encode(&body[..end])));
        }
    }
    if body.len() > limit {
        v.insert("truncated".into(), json!(true));
    }
}

/// The mark a client keeps with revision `rev` to check, when it resumes,
/// that this node's history is the one it followed ("" for revision 0).
pub fn mark(node: &Node, rev: Rev) -> String {
    if rev <= 0 {
        return String::new();
    }
    node.fingerprint(rev).map(|f| format!("{f:016x}")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn answers_stop_at_the_byte_budget_but_always_carry_one_item() {
        use super::{within_budget, MAX_ANSWER_BYTES};
        assert_eq!(within_budget([1, 2, 3].into_iter()), 3);
        assert_eq!(within_budget([MAX_ANSWER_BYTES / 2 + 1; 5].into_iter()), 1);
        assert_eq!(within_budget([MAX_ANSWER_BYTES * 4, 1].into_iter()), 1, "one item even if alone too large");
        assert_eq!(within_budget(std::iter::repeat_n(1 << 20, 100)), 16);
        assert_eq!(within_budget(std::iter::empty()), 0);
    }

    use super::*;

    #[test]
    fn bodies_are_text_or_base64_and_previews_cut_at_characters() {
        let mut v = Map::new();
        put_body(&mut v, "héllo".as_bytes(), Some(2), false);
        assert_eq!(Value::Object(v), json!({"len": 6, "body": "h", "truncated": true}));
        let mut v = Map::new();
        put_body(&mut v, &[0xff, 0, 1], None, false);
        assert_eq!(Value::Object(v), json!({"len": 3, "body_base64": "/wAB"}));
        let mut v = Map::new();
        put_body(&mut v, b"abc", None, true);
        assert_eq!(Value::Object(v), json!({"len": 3, "body_base64": "YWJj"}));
    }
}
