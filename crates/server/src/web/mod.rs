//! The HTTP side of doozerd (`-w`): the live web view, the JSON API, metrics
//! and health checks, all on one port.
//!
//! Everything that is not part of the tree lives under names a Doozer path
//! cannot have (`/_api`, `/_ws`, `/_/`: `_` is not a legal name byte), so any
//! other path is the web view of that subtree. Only `/metrics`, `/healthz` and
//! `/readyz` are fixed names, as monitoring systems expect them.
//!
//! Reads are answered from this node's store; writes go through consensus
//! like any client write. This module knows nothing of Raft beyond
//! [`Consensus::status`]. Files: `api` (the JSON API), `stream` (event
//! streams shared by the API and the page), `live` (the page's WebSocket),
//! `cluster` (the members panel), `health` (metrics and health).

mod api;
mod cluster;
mod health;
mod leases;
mod live;
mod stream;

use crate::access::{Rights, Secrets};
use crate::consensus::Consensus;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use doozer_proto::ErrCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What every handler shares.
#[derive(Clone)]
pub struct Web {
    cluster: Arc<Consensus>,
    secrets: Arc<Secrets>,
    /// Open watch streams and page sockets.
    followers: Arc<AtomicUsize>,
    /// Cancelled when the node stops: open streams and page sockets end.
    stop: CancellationToken,
    /// The members panel's data, asked once for every page.
    cluster_view: Arc<cluster::ClusterView>,
}

/// Most watch streams and page sockets open at once on a node.
pub const MAX_FOLLOWERS: usize = 4096;

/// Counts an open follower until dropped.
pub struct Following(Arc<AtomicUsize>);

impl Drop for Following {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Binds `addr` and serves until `stop`; returns the bound address.
pub async fn serve(
    addr: &str,
    cluster: Arc<Consensus>,
    secrets: Arc<Secrets>,
    stop: CancellationToken,
) -> Result<String, String> {
    let listener = bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for the web view: {e} (give -w HOST:PORT, or -w false)"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?.to_string();
    let web = Web { cluster, secrets, followers: Arc::default(), stop: stop.clone(), cluster_view: Arc::default() };
    cluster::keep_fresh(web.clone());
    let app = router(web);
    tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the web server stopped");
        }
    });
    Ok(bound)
}

/// Binds `addr`, giving a node that is rejoining its cluster a moment for
/// its old self's listener to close.
async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 20 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            r => return r,
        }
    }
}

fn router(web: Web) -> Router {
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/_/app.js", get(|| asset("text/javascript; charset=utf-8", include_str!("assets/app.js"))))
        .route("/_/style.css", get(|| asset("text/css; charset=utf-8", include_str!("assets/style.css"))))
        .route("/_ws", get(live::upgrade))
        .route("/_api/cluster", get(cluster::members))
        .merge(api::routes())
        .merge(leases::routes())
        .fallback(page)
        .layer(axum::middleware::from_fn_with_state(web.clone(), count))
        .with_state(web)
}

/// Counts every answer by status class for `/metrics`.
async fn count(State(web): State<Web>, req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    web.cluster.node().metrics().http(res.status().as_u16());
    res
}

async fn asset(kind: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, kind), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// The web view: any path that is not an endpoint shows that subtree.
async fn page(req: Request) -> Response {
    if req.method() != axum::http::Method::GET {
        return ApiError::new(StatusCode::METHOD_NOT_ALLOWED, ErrCode::Other, "only GET is served here")
            .into_response();
    }
    asset("text/html; charset=utf-8", include_str!("assets/index.html")).await
}

/// An error answer: the protocol's error name, a detail, and an HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrCode,
    detail: String,
    /// A write that may still be applied (`"indeterminate": true` in the body).
    indeterminate: bool,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrCode, detail: impl Into<String>) -> ApiError {
        ApiError { status, code, detail: detail.into(), indeterminate: false }
    }

    /// A write's failure: refused, or perhaps still to be applied.
    pub fn proposal(e: &crate::consensus::ProposeError) -> ApiError {
        use crate::consensus::ProposeError;
        match e {
            ProposeError::ReadOnly => ApiError::from_code(ErrCode::Readonly, e.detail()),
            ProposeError::NotDone(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrCode::Other, e.detail()),
            ProposeError::Unknown(_) => ApiError {
                indeterminate: true,
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrCode::Other, e.detail())
            },
        }
    }

    /// The status a protocol error maps to.
    pub fn from_code(code: ErrCode, detail: impl Into<String>) -> ApiError {
        let status = match code {
            ErrCode::NoEnt => StatusCode::NOT_FOUND,
            ErrCode::RevMismatch | ErrCode::IsDir | ErrCode::NotDir => StatusCode::CONFLICT,
            ErrCode::TooLate => StatusCode::GONE,
            ErrCode::BadPath | ErrCode::MissingArg | ErrCode::Range => StatusCode::BAD_REQUEST,
            ErrCode::Readonly => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, code, detail)
    }

    fn body(&self) -> serde_json::Value {
        let mut body = serde_json::json!({ "error": self.code.name(), "detail": self.detail });
        if self.indeterminate {
            body["indeterminate"] = serde_json::json!(true);
        }
        body
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

impl Web {
    fn node(&self) -> &Arc<crate::node::Node> {
        self.cluster.node()
    }

    /// Admits one more watch stream or page socket, if there is room.
    fn follow(&self) -> Result<Following, ApiError> {
        if self.followers.fetch_add(1, Ordering::SeqCst) >= MAX_FOLLOWERS {
            self.followers.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrCode::Other,
                format!("too many watch streams and page connections on this node (limit {MAX_FOLLOWERS})"),
            ));
        }
        Ok(Following(self.followers.clone()))
    }

    /// The rights a request has: the anonymous ones, plus what the secret in
    /// `Authorization: Bearer SECRET` grants. A wrong secret is refused.
    fn rights(&self, headers: &HeaderMap) -> Result<Rights, ApiError> {
        let anonymous = self.secrets.anonymous();
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(anonymous);
        };
        let secret = value.as_bytes().strip_prefix(b"Bearer ").unwrap_or(value.as_bytes());
        self.grant(secret, anonymous)
    }

    fn grant(&self, secret: &[u8], anonymous: Rights) -> Result<Rights, ApiError> {
        match self.secrets.grant(secret) {
            Some(r) => Ok(anonymous.union(r)),
            None => Err(ApiError::new(StatusCode::UNAUTHORIZED, ErrCode::Other, "permission denied: wrong secret")),
        }
    }

    /// Refuses unless `rights` allow reading (or writing, with `write`).
    fn require(&self, rights: Rights, write: bool) -> Result<(), ApiError> {
        let allowed = if write { rights.write } else { rights.read };
        if allowed {
            return Ok(());
        }
        let what = if write { "writing" } else { "reading" };
        let status = if rights.read { StatusCode::FORBIDDEN } else { StatusCode::UNAUTHORIZED };
        Err(ApiError::new(
            status,
            ErrCode::Other,
            format!("permission denied: {what} needs a secret (Authorization: Bearer SECRET)"),
        ))
    }
}
