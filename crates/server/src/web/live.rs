//! The page's live connection: a WebSocket at `/_ws` that sends the tree once
//! and then every change, in revision order.
//!
//! The client speaks first, with one JSON message:
//! `{"glob": "/**", "from": R, "mark": "...", "secret": "..."}`, where `from`
//! is the next revision it wants (0: it has nothing) and `mark` is what the
//! server sent with revision `from - 1`. The server answers `hello` (this
//! node, the rights granted), then either the events from `from` on, if this
//! node's history still holds them and is the one the client followed (the
//! mark matches), or a `snapshot` of the tree followed by the events after it.
//! Every message carries `rev` (everything up to it has been sent) and the
//! `mark` to resume from there, so a reconnecting page misses nothing.
//!
//! A page that loads directories itself (the web view does, lazily, through
//! the JSON API) says `"tree": false`: then instead of a snapshot it gets
//! `reset` (start over: reload what you show as of `rev`) and the events after.
//!
//! The socket also pushes `{"type": "cluster", "cluster": {...}}` whenever the
//! members panel's data changes (see [`super::cluster`]): pages do not poll.

use super::stream::{event_json, files_json, mark, next_batch, StreamError};
use super::Web;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use doozer_store::{Glob, Rev};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

/// Body bytes sent per file; the page fetches the rest when asked.
const PREVIEW: usize = 2048;
/// Files in one snapshot; a larger tree is shown in part (open a subtree).
const SNAPSHOT_FILES: usize = 10_000;
/// Largest message a client may send (its hello).
const MAX_HELLO: usize = 64 * 1024;
/// How long a new connection may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for a change before telling the page the revision anyway.
const IDLE: Duration = Duration::from_secs(5);

pub async fn upgrade(State(web): State<Web>, ws: WebSocketUpgrade) -> Response {
    match web.follow() {
        Ok(counted) => ws.max_message_size(MAX_HELLO).on_upgrade(move |socket| async move {
            follow(web, socket).await;
            drop(counted);
        }),
        Err(e) => e.into_response(),
    }
}

/// What the client asks for in its first message.
struct Hello {
    glob: Arc<Glob>,
    from: Rev,
    mark: String,
    secret: Option<String>,
    /// Send the tree (`snapshot`), or only say `reset` when the page must reload.
    tree: bool,
}

fn parse_hello(text: &str) -> Result<Hello, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("bad hello: {e}"))?;
    let pattern = v["glob"].as_str().unwrap_or("/**");
    let glob = Glob::parse(pattern).map_err(|e| format!("bad glob {pattern:?}: {e}"))?;
    Ok(Hello {
        glob: Arc::new(glob),
        from: v["from"].as_i64().unwrap_or(0),
        mark: v["mark"].as_str().unwrap_or_default().to_string(),
        secret: v["secret"].as_str().filter(|s| !s.is_empty()).map(String::from),
        tree: v["tree"].as_bool().unwrap_or(true),
    })
}

async fn send(socket: &mut WebSocket, v: Value) -> bool {
    socket.send(Message::Text(v.to_string().into())).await.is_ok()
}

async fn refuse(mut socket: WebSocket, detail: &str, auth: bool) {
    let _ = send(&mut socket, json!({"type": "error", "error": "OTHER", "detail": detail, "auth": auth})).await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn read_hello(socket: &mut WebSocket) -> Option<String> {
    let first = tokio::time::timeout(HELLO_TIMEOUT, socket.recv()).await.ok()??.ok()?;
    match first {
        Message::Text(t) => Some(t.to_string()),
        _ => None,
    }
}

async fn follow(web: Web, mut socket: WebSocket) {
    let Some(text) = read_hello(&mut socket).await else {
        return;
    };
    let hello = match parse_hello(&text) {
        Ok(h) => h,
        Err(e) => return refuse(socket, &e, false).await,
    };
    let anonymous = web.secrets.anonymous();
    let rights = match &hello.secret {
        Some(s) => web.grant(s.as_bytes(), anonymous).unwrap_or_default(),
        None => anonymous,
    };
    if !rights.read {
        let detail = if hello.secret.is_some() { "wrong secret" } else { "this node needs a secret to read" };
        return refuse(socket, detail, true).await;
    }
    let node = web.node().clone();
    let greeting = json!({
        "type": "hello",
        "node": node.id(),
        "rights": {"read": rights.read, "write": rights.write},
    });
    if !send(&mut socket, greeting).await {
        return;
    }
    let resumable = hello.from > 0 && node.events_from(hello.from, &hello.glob, 0).is_ok() && {
        let seen = hello.from - 1;
        seen <= node.rev() && mark(&node, seen) == hello.mark
    };
    let mut next = hello.from;
    if !resumable {
        match start_over(&web, &mut socket, &hello.glob, hello.tree).await {
            Some(rev) => next = rev + 1,
            None => return,
        }
    }
    stream(&web, socket, &hello, next).await;
}

/// Tells the page to start again from now: with the tree, or with `reset`.
async fn start_over(web: &Web, socket: &mut WebSocket, glob: &Glob, tree: bool) -> Option<Rev> {
    if tree {
        return send_snapshot(web, socket, glob).await;
    }
    let rev = web.node().rev();
    send(socket, json!({"type": "reset", "rev": rev, "mark": mark(web.node(), rev)})).await.then_some(rev)
}

/// Sends the tree matching `glob` now; returns its revision.
async fn send_snapshot(web: &Web, socket: &mut WebSocket, glob: &Glob) -> Option<Rev> {
    let snap = web.node().snapshot(None).ok()?;
    let (files, truncated) =
        files_json(&snap.walk_first(glob, SNAPSHOT_FILES + 1), SNAPSHOT_FILES, Some(PREVIEW), false);
    let msg = json!({
        "type": "snapshot",
        "rev": snap.rev(),
        "mark": mark(web.node(), snap.rev()),
        "files": files,
        "truncated": truncated,
    });
    send(socket, msg).await.then_some(snap.rev())
}

/// Sends changes from `next` on, and the cluster when it changes, until the page goes away.
async fn stream(web: &Web, mut socket: WebSocket, hello: &Hello, mut next: Rev) {
    let node = web.node().clone();
    let glob = &hello.glob;
    let mut told = next - 1;
    let mut cluster = web.cluster_view.subscribe();
    cluster.mark_changed();
    loop {
        let batch = tokio::select! {
            _ = web.stop.cancelled() => return,
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
            changed = cluster.changed() => {
                let now = cluster.borrow_and_update().clone();
                if changed.is_ok() && !now.is_null() && !send(&mut socket, json!({"type": "cluster", "cluster": now})).await {
                    return;
                }
                continue;
            }
            b = next_batch(&node, glob, next, IDLE) => b,
        };
        match batch {
            Ok(b) => {
                next = b.through + 1;
                if b.events.is_empty() && b.through == told {
                    continue;
                }
                told = b.through;
                let events: Vec<Value> = b.events.iter().map(|e| event_json(e, Some(PREVIEW), false)).collect();
                let msg = json!({"type": "events", "rev": b.through, "mark": mark(&node, b.through), "events": events});
                if !send(&mut socket, msg).await {
                    return;
                }
            }
            // This page fell out of the history window: start it over.
            Err(StreamError::TooLate) => match start_over(web, &mut socket, glob, hello.tree).await {
                Some(rev) => {
                    next = rev + 1;
                    told = rev;
                }
                None => return,
            },
            Err(StreamError::Full) => return refuse(socket, "too many held WAITs on this node", false).await,
        }
    }
}
