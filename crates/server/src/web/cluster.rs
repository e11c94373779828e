//! The members panel's data: the members as `/ctl` records them (address,
//! role, slot, leader, version) and each one's applied revision, asked of the
//! member itself with REV, as `doozer status` does.
//!
//! Asked once per node, not once per page: [`ClusterView`] keeps the last
//! answer, and one task per node asks again every [`FRESH`] while any page is
//! open, however many there are; each page's socket pushes the answer to its
//! page when it changes. An API call asks only if the answer is older than
//! [`FRESH`]. A member that does not answer in time shows as unreachable.

use super::{ApiError, Web};
use crate::ctl::{self, text};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

/// How long a member may take to say its revision before it shows as unreachable.
const ASK_TIMEOUT: Duration = Duration::from_millis(800);
/// How old an answer may be before it is asked again.
pub const FRESH: Duration = Duration::from_secs(1);

/// The last answer, shared by everything that shows the cluster.
pub struct ClusterView {
    tx: tokio::sync::watch::Sender<Value>,
    /// When it was last asked; held while asking, so one ask goes out at a time.
    asked: tokio::sync::Mutex<Option<Instant>>,
}

impl Default for ClusterView {
    fn default() -> ClusterView {
        ClusterView { tx: tokio::sync::watch::Sender::new(Value::Null), asked: Default::default() }
    }
}

impl ClusterView {
    /// The answers as they change, for a page's socket.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Value> {
        self.tx.subscribe()
    }

    /// The cluster as of at most [`FRESH`] ago.
    pub async fn get(&self, web: &Web) -> Value {
        self.refresh(web).await;
        self.tx.borrow().clone()
    }

    async fn refresh(&self, web: &Web) {
        let mut asked = self.asked.lock().await;
        if asked.is_some_and(|at| at.elapsed() < FRESH) {
            return;
        }
        let v = ask(web).await;
        *asked = Some(Instant::now());
        self.tx.send_if_modified(|old| {
            let changed = *old != v;
            *old = v;
            changed
        });
    }
}

/// Asks every [`FRESH`] while a page is open, until the node stops.
pub fn keep_fresh(web: Web) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = web.stop.cancelled() => return,
                _ = tokio::time::sleep(FRESH) => {}
            }
            if web.cluster_view.tx.receiver_count() > 0 {
                web.cluster_view.refresh(&web).await;
            }
        }
    });
}

pub async fn members(State(web): State<Web>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    web.require(web.rights(&headers)?, false)?;
    Ok(Json(web.cluster_view.get(&web).await))
}

async fn ask(web: &Web) -> Value {
    let node = web.node();
    let Ok(snap) = node.snapshot(None) else { return json!({"error": "no tree yet"}) };
    let slots: Vec<(String, String)> = ctl::slots(&snap)
        .into_iter()
        .map(|s| (s.path.rsplit('/').next().unwrap_or_default().to_string(), s.holder))
        .collect();
    let leader = text(&snap, ctl::LEADER);
    let ids = ctl::node_ids(&snap);
    let asks = ids.iter().map(|id| {
        let addr = text(&snap, &ctl::node_file(id, "addr"));
        let me = id == node.id();
        async move {
            if me {
                Some(node.rev())
            } else {
                web.cluster.applied_rev_at(&addr, ASK_TIMEOUT).await
            }
        }
    });
    let applied = futures_util::future::join_all(asks).await;
    let members: Vec<Value> = ids
        .iter()
        .zip(applied)
        .map(|(id, applied)| {
            let slot = slots.iter().find(|(_, holder)| holder == id).map(|(s, _)| s.clone());
            json!({
                "id": id,
                "addr": text(&snap, &ctl::node_file(id, "addr")),
                "hostname": text(&snap, &ctl::node_file(id, "hostname")),
                "version": text(&snap, &ctl::node_file(id, "version")),
                "role": text(&snap, &ctl::node_file(id, "role")),
                "voter": slot.is_some(),
                "slot": slot,
                "leader": leader == *id,
                "applied": applied,
                "reachable": applied.is_some(),
            })
        })
        .collect();
    json!({
        "name": text(&snap, ctl::NAME),
        "self": node.id(),
        "leader": leader,
        "rev": snap.rev(),
        "slots": slots.len(),
        "vacant": slots.iter().filter(|(_, holder)| holder.is_empty()).count(),
        "members": members,
    })
}
