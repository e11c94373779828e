//! The JSON API under `/_api` (documented in the README):
//!
//! - `GET /_api/rev`: the store revision, and the oldest the history holds.
//! - `GET /_api/files/PATH[?rev=R][&raw][&encoding=base64]`: a file (its
//!   revision, length and body) or a directory (its entries; `offset` and
//!   `limit` page through a large one).
//! - `PUT /_api/files/PATH?rev=R[&lease=ID]` with the body: SET with CAS
//!   revision R (with `lease`, the file is attached to that lease: SETL).
//! - `DELETE /_api/files/PATH?rev=R`: DEL with CAS revision R.
//! - `GET /_api/walk?glob=G[&rev=R][&limit=N]`: the files matching a glob.
//! - `GET /_api/log?glob=G[&rev=R][&limit=N]`: the changes to files matching G
//!   at or before R (default: now) within the history window, newest first.
//! - `GET /_api/watch?glob=G[&from=R][&limit=N]`: every change from revision R
//!   on, as JSON lines, or server-sent events when asked for `text/event-stream`.
//!
//! - `/_api/leases`: leases (`leases` module).
//!
//! Bodies that are UTF-8 are given as `body`, others as `body_base64`.

use super::stream::{event_json, files_json, next_batch, put_body, within_budget, Batch, StreamError};
use super::{ApiError, Web};
use crate::consensus::Committed;
use crate::session::error_code;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use doozer_proto::ErrCode;
use doozer_store::{is_valid_path, Command, Glob, ReadError, Rev, Snapshot, Stat, StoreError};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// How long a read at a future revision waits for it.
const FUTURE_WAIT: Duration = Duration::from_secs(10);
/// Entries a directory read returns unless `limit` says otherwise, and at most.
const DIR_DEFAULT: usize = 100_000;
const DIR_MAX: usize = 100_000;
/// Files a walk returns unless `limit` says otherwise, and at most.
const WALK_DEFAULT: usize = 10_000;
const WALK_MAX: usize = 100_000;
/// How often an idle server-sent-events stream sends a comment, so proxies
/// and clients can tell a quiet stream from a dead one.
const KEEPALIVE: Duration = Duration::from_secs(15);

type Params = Query<HashMap<String, String>>;
type ApiResult = Result<Response, ApiError>;

pub fn routes() -> Router<Web> {
    Router::new()
        .route("/_api/rev", get(rev))
        .route("/_api/files", get(read_root))
        .route("/_api/files/", get(read_root))
        .route("/_api/files/{*path}", get(read).put(set).delete(del))
        .route("/_api/walk", get(walk))
        .route("/_api/log", get(log))
        .route("/_api/watch", get(watch))
}

pub(super) fn bad_request(code: ErrCode, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, detail)
}

/// An integer query parameter, if given.
pub(super) fn int_param(q: &HashMap<String, String>, name: &str) -> Result<Option<i64>, ApiError> {
    match q.get(name) {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| bad_request(ErrCode::Other, format!("{name} must be an integer, not {s:?}"))),
    }
}

fn glob_param(q: &HashMap<String, String>) -> Result<Arc<Glob>, ApiError> {
    let pattern = q.get("glob").map_or("/**", String::as_str);
    Glob::parse(pattern).map(Arc::new).map_err(|e| bad_request(ErrCode::Other, format!("bad glob {pattern:?}: {e}")))
}

/// The tree at `rev` (`None`: now); a future revision is waited for a while.
pub async fn snapshot_at(web: &Web, rev: Option<Rev>) -> Result<Snapshot, ApiError> {
    let node = web.node();
    match node.snapshot(rev) {
        Ok(s) => return Ok(s),
        Err(ReadError::TooLate) => return Err(too_late(rev.unwrap_or(0))),
        Err(ReadError::Future(r)) => {
            if tokio::time::timeout(FUTURE_WAIT, node.wait_for_rev(r)).await.is_err() {
                return Err(ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrCode::Other,
                    format!("revision {r} has not happened within {FUTURE_WAIT:?}"),
                ));
            }
        }
    }
    node.snapshot(rev).map_err(|_| too_late(rev.unwrap_or(0)))
}

fn too_late(rev: Rev) -> ApiError {
    ApiError::from_code(ErrCode::TooLate, format!("revision {rev} is older than this node's history"))
}

async fn rev(State(web): State<Web>) -> Json<Value> {
    let node = web.node();
    Json(json!({ "rev": node.rev(), "oldest": node.oldest() }))
}

async fn read_root(state: State<Web>, headers: HeaderMap, q: Params) -> ApiResult {
    read_path(state, headers, q, "/".to_string()).await
}

async fn read(state: State<Web>, headers: HeaderMap, q: Params, Path(path): Path<String>) -> ApiResult {
    read_path(state, headers, q, format!("/{path}")).await
}

async fn read_path(State(web): State<Web>, headers: HeaderMap, Query(q): Params, path: String) -> ApiResult {
    web.require(web.rights(&headers)?, false)?;
    if !is_valid_path(&path) {
        return Err(ApiError::from_code(ErrCode::BadPath, format!("{path:?} is not a legal path")));
    }
    let snap = snapshot_at(&web, int_param(&q, "rev")?).await?;
    let base64 = q.get("encoding").is_some_and(|e| e == "base64");
    match snap.get(&path) {
        Ok(Some(f)) if q.contains_key("raw") => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::ETAG, format!("\"{}\"", f.rev))],
            [("x-doozer-rev", f.rev.to_string())],
            f.body.to_bytes(),
        )
            .into_response()),
        Ok(Some(f)) => {
            let mut v = Map::new();
            v.insert("path".into(), json!(path));
            v.insert("kind".into(), json!("file"));
            v.insert("rev".into(), json!(f.rev));
            v.insert("at".into(), json!(snap.rev()));
            put_body(&mut v, &f.body, None, base64);
            Ok(Json(Value::Object(v)).into_response())
        }
        Ok(None) => {
            Err(ApiError::from_code(ErrCode::NoEnt, format!("{path} does not exist at revision {}", snap.rev())))
        }
        Err(StoreError::IsDir) => {
            let offset = int_param(&q, "offset")?.map_or(0, |n| usize::try_from(n).unwrap_or(0));
            let limit = int_param(&q, "limit")?.map_or(DIR_DEFAULT, |n| usize::try_from(n).unwrap_or(0)).min(DIR_MAX);
            Ok(Json(dir_json(&snap, &path, offset, limit)).into_response())
        }
        Err(e) => Err(ApiError::from_code(error_code(e), "")),
    }
}

/// A directory's entries from `offset`, at most `limit`, each with its kind
/// and revision or entry count; `total` is how many there are in all.
fn dir_json(snap: &Snapshot, path: &str, offset: usize, limit: usize) -> Value {
    let names = snap.getdir(path).unwrap_or_default();
    // A name is at most a path's length; with its kind and numbers, about 64 bytes more.
    let fit = within_budget(names.iter().skip(offset).take(limit).map(|n| n.len() + 64));
    let entries: Vec<Value> = names
        .iter()
        .skip(offset)
        .take(fit)
        .map(|name| {
            let child = if path == "/" { format!("/{name}") } else { format!("{path}/{name}") };
            match snap.stat(&child) {
                Stat::File { rev, len } => json!({"name": &**name, "kind": "file", "rev": rev, "len": len}),
                Stat::Dir { entries } => json!({"name": &**name, "kind": "dir", "entries": entries}),
                Stat::Missing => json!({"name": &**name, "kind": "missing"}),
            }
        })
        .collect();
    let truncated = names.len() > offset.saturating_add(fit);
    json!({"path": path, "kind": "dir", "at": snap.rev(), "entries": entries, "total": names.len(), "truncated": truncated})
}

/// The CAS revision of a write: required, as in the protocol.
fn write_rev(q: &HashMap<String, String>) -> Result<Rev, ApiError> {
    int_param(q, "rev")?.ok_or_else(|| {
        bad_request(ErrCode::MissingArg, "give ?rev=R: the file's revision, 0 to create only, -1 to overwrite any")
    })
}

async fn set(
    State(web): State<Web>,
    headers: HeaderMap,
    Query(q): Params,
    Path(path): Path<String>,
    body: Body,
) -> ApiResult {
    web.require(web.rights(&headers)?, true)?;
    let path = format!("/{path}");
    let rev = write_rev(&q)?;
    let max = web.node().limits().max_value;
    let body = axum::body::to_bytes(body, max).await.map_err(|_| {
        ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, ErrCode::Other, format!("value too large (limit {max} bytes)"))
    })?;
    if !is_valid_path(&path) {
        return Err(ApiError::from_code(ErrCode::BadPath, format!("{path:?} is not a legal path")));
    }
    let body = doozer_store::Body::from(&body);
    let cmd = match super::leases::lease_param(&q)? {
        Some(lease) => Command::SetLeased { path: path.clone(), rev, body, lease },
        None => Command::Set { path: path.clone(), rev, body },
    };
    write(&web, cmd, path).await
}

async fn del(State(web): State<Web>, headers: HeaderMap, Query(q): Params, Path(path): Path<String>) -> ApiResult {
    web.require(web.rights(&headers)?, true)?;
    let path = format!("/{path}");
    let rev = write_rev(&q)?;
    if !is_valid_path(&path) || path == "/" {
        return Err(ApiError::from_code(ErrCode::BadPath, format!("{path:?} is not a file path")));
    }
    write(&web, Command::Del { path: path.clone(), rev }, path).await
}

/// Proposes a SET or DEL of `path` and answers with the new revision (`null`
/// when nothing changed: deleting a missing file).
async fn write(web: &Web, cmd: Command, path: String) -> ApiResult {
    if web.node().is_removed() {
        return Err(ApiError::from_code(ErrCode::Readonly, "this node was removed from its cluster"));
    }
    match web.cluster.propose(cmd).await {
        Ok(Committed::Changed(rev)) => Ok(Json(json!({"path": path, "rev": rev})).into_response()),
        Ok(Committed::Unchanged | Committed::Batch(_)) => Ok(Json(json!({"path": path, "rev": null})).into_response()),
        Ok(Committed::Failed(e)) => Err(write_error(web, &path, e)),
        Ok(Committed::NotMember | Committed::OutOfTerm) => {
            Err(ApiError::from_code(ErrCode::Readonly, "this node was removed from its cluster; nothing was written"))
        }
        Err(e) => Err(ApiError::proposal(&e)),
    }
}

/// A refused write, with what a person needs to retry: the file's revision now.
pub(super) fn write_error(web: &Web, path: &str, e: StoreError) -> ApiError {
    let detail = match e {
        StoreError::RevMismatch => match web.node().snapshot(None).ok().and_then(|s| s.get(path).ok().flatten()) {
            Some(f) => format!("{path} has changed: it is now at revision {}", f.rev),
            None => format!("{path} has changed: it no longer exists"),
        },
        StoreError::IsDir => format!("{path} is a directory"),
        StoreError::NotDir => format!("a parent of {path} is a file"),
        StoreError::Lease(le) => le.to_string(),
        _ => String::new(),
    };
    ApiError::from_code(error_code(e), detail)
}

async fn walk(State(web): State<Web>, headers: HeaderMap, Query(q): Params) -> ApiResult {
    web.require(web.rights(&headers)?, false)?;
    let glob = glob_param(&q)?;
    let limit = int_param(&q, "limit")?.map_or(WALK_DEFAULT, |n| usize::try_from(n).unwrap_or(0)).min(WALK_MAX);
    let snap = snapshot_at(&web, int_param(&q, "rev")?).await?;
    let base64 = q.get("encoding").is_some_and(|e| e == "base64");
    let (files, truncated) = files_json(&snap.walk_first(&glob, limit.saturating_add(1)), limit, None, base64);
    Ok(Json(json!({"at": snap.rev(), "files": files, "truncated": truncated})).into_response())
}

/// The changes matching a glob, newest first, within the history window.
async fn log(State(web): State<Web>, headers: HeaderMap, Query(q): Params) -> ApiResult {
    web.require(web.rights(&headers)?, false)?;
    let glob = glob_param(&q)?;
    let limit = int_param(&q, "limit")?.map_or(WALK_DEFAULT, |n| usize::try_from(n).unwrap_or(0)).min(WALK_MAX);
    let base64 = q.get("encoding").is_some_and(|e| e == "base64");
    // Waits for a future revision as reads do; the snapshot is only the wait.
    let upto = snapshot_at(&web, int_param(&q, "rev")?).await?.rev();
    let node = web.node();
    let found = node.events_before(upto, &glob, 0, limit.saturating_add(1)).map_err(|_| too_late(upto))?;
    let fit = within_budget(found.iter().take(limit).map(|e| e.path.len() + e.body.len()));
    let changes: Vec<Value> = found.iter().take(fit).map(|e| event_json(e, None, base64)).collect();
    Ok(Json(json!({"at": upto, "oldest": node.oldest(), "changes": changes, "truncated": found.len() > fit}))
        .into_response())
}

/// A watch stream's state between chunks.
struct Follow {
    _counted: super::Following,
    web: Web,
    glob: Arc<Glob>,
    next: Rev,
    left: u64,
    sse: bool,
    base64: bool,
    done: bool,
}

async fn watch(State(web): State<Web>, headers: HeaderMap, Query(q): Params) -> ApiResult {
    web.require(web.rights(&headers)?, false)?;
    let glob = glob_param(&q)?;
    let sse =
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/event-stream"));
    let resume = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<Rev>().ok());
    let next = match resume {
        Some(seen) => seen + 1,
        None => int_param(&q, "from")?.unwrap_or_else(|| web.node().rev() + 1),
    };
    if web.node().events_from(next, &glob, 0).is_err() {
        return Err(too_late(next));
    }
    let left = int_param(&q, "limit")?.map_or(u64::MAX, |n| u64::try_from(n).unwrap_or(0));
    let base64 = q.get("encoding").is_some_and(|e| e == "base64");
    let follow = Follow { _counted: web.follow()?, web, glob, next, left, sse, base64, done: false };
    let stream = futures_util::stream::unfold(follow, step);
    let kind = if sse { "text/event-stream" } else { "application/x-ndjson" };
    Ok((
        [(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")],
        [("x-accel-buffering", "no")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// The next chunk of a watch stream: a run of events, a keep-alive, or the
/// error that ends it.
async fn step(mut f: Follow) -> Option<(Result<Bytes, Infallible>, Follow)> {
    if f.done || f.left == 0 {
        return None;
    }
    loop {
        let batch = tokio::select! {
            _ = f.web.stop.cancelled() => return None,
            b = next_batch(f.web.node(), &f.glob, f.next, KEEPALIVE) => b,
        };
        match batch {
            Ok(Batch { events, through }) => {
                f.next = through + 1;
                if events.is_empty() {
                    if f.sse {
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), f));
                    }
                    continue;
                }
                let mut out = String::new();
                for e in events.iter().take(usize::try_from(f.left).unwrap_or(usize::MAX)) {
                    let line = event_json(e, None, f.base64);
                    if f.sse {
                        out.push_str(&format!(
                            "id: {}\nevent: {}\ndata: {line}\n\n",
                            e.rev,
                            super::stream::kind_name(e.kind)
                        ));
                    } else {
                        out.push_str(&format!("{line}\n"));
                    }
                    f.left -= 1;
                }
                return Some((Ok(Bytes::from(out)), f));
            }
            Err(e) => {
                f.done = true;
                let err = match e {
                    StreamError::TooLate => too_late(f.next),
                    StreamError::Full => ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        ErrCode::Other,
                        "too many held WAITs on this node",
                    ),
                };
                let body = err.body();
                let chunk = if f.sse { format!("event: error\ndata: {body}\n\n") } else { format!("{body}\n") };
                return Some((Ok(Bytes::from(chunk)), f));
            }
        }
    }
}
