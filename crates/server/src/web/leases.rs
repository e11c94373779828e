//! Leases over HTTP (documented in the README), as the lease verbs do them:
//!
//! - `GET /_api/leases[?limit=N]`: every lease (id, granted TTL, file count).
//! - `POST /_api/leases?ttl=S`: GRANT; answers `{"id","ttl"}`.
//! - `GET /_api/leases/ID`: TTL: seconds left (as the leader sees it), the
//!   granted TTL and the attached files.
//! - `POST /_api/leases/ID/keepalive`: KEEPALIVE; answers `{"id","ttl"}`.
//! - `DELETE /_api/leases/ID`: REVOKE; answers `{"id","rev"}`.
//!
//! Ids are hex, as the CLI prints them. Leased files are written with
//! `PUT /_api/files/PATH?rev=R&lease=ID` (`api`).

use super::api::{bad_request, int_param, write_error};
use super::{ApiError, Web};
use crate::consensus::{Committed, LeaseRefusal};
use crate::session::random_lease_id;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use doozer_proto::ErrCode;
use doozer_store::{Command, LeaseError, LeaseId, MAX_TTL, MIN_TTL};
use serde_json::json;
use std::collections::HashMap;

type Params = Query<HashMap<String, String>>;
type ApiResult = Result<Response, ApiError>;

/// Leases a listing returns unless `limit` says otherwise.
const LIST_DEFAULT: usize = 10_000;

pub fn routes() -> Router<Web> {
    Router::new()
        .route("/_api/leases", get(list).post(grant))
        .route("/_api/leases/{id}", get(ttl).delete(revoke))
        .route("/_api/leases/{id}/keepalive", post(keep_alive))
}

/// A lease id in hex (`0x` optional).
fn parse_id(s: &str) -> Result<LeaseId, ApiError> {
    let digits = s.strip_prefix("0x").unwrap_or(s);
    match i64::from_str_radix(digits, 16) {
        Ok(id) if id > 0 => Ok(id as LeaseId),
        _ => Err(bad_request(ErrCode::Other, format!("{s:?} is not a lease id (hex, as granted)"))),
    }
}

/// The `lease` parameter of a file write, if given.
pub fn lease_param(q: &HashMap<String, String>) -> Result<Option<LeaseId>, ApiError> {
    q.get("lease").map(|s| parse_id(s)).transpose()
}

fn hex(id: LeaseId) -> String {
    format!("{id:x}")
}

fn refused(id: LeaseId, why: LeaseRefusal) -> ApiError {
    match why {
        LeaseRefusal::NotFound => ApiError::from_code(ErrCode::NoEnt, LeaseError::NotFound(id).to_string()),
        LeaseRefusal::NotLeader => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrCode::Other, "no leader; try again")
        }
        LeaseRefusal::NoLeader(why) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, ErrCode::Other, format!("{why}; try again"))
        }
    }
}

async fn propose(web: &Web, cmd: Command) -> Result<Committed, ApiError> {
    if web.node().is_removed() {
        return Err(ApiError::from_code(ErrCode::Readonly, "this node was removed from its cluster"));
    }
    match web.cluster.propose(cmd).await {
        Ok(Committed::Failed(e)) => Err(write_error(web, "", e)),
        Ok(Committed::NotMember) => {
            Err(ApiError::from_code(ErrCode::Readonly, "this node was removed from its cluster; nothing was written"))
        }
        Ok(c) => Ok(c),
        Err(e) => Err(ApiError::proposal(&e)),
    }
}

async fn list(State(web): State<Web>, headers: HeaderMap, Query(q): Params) -> ApiResult {
    web.require(web.rights(&headers)?, false)?;
    let limit = int_param(&q, "limit")?.map_or(LIST_DEFAULT, |n| usize::try_from(n.max(0)).unwrap_or(0));
    let mut leases = Vec::new();
    let mut after = 0;
    while leases.len() < limit {
        let Some((id, lease)) = web.node().lease_after(after) else { break };
        leases.push(json!({"id": hex(id), "granted": lease.ttl, "files": lease.files.len()}));
        after = id;
    }
    Ok(Json(json!({"leases": leases, "count": web.node().lease_counts().0})).into_response())
}

async fn grant(State(web): State<Web>, headers: HeaderMap, Query(q): Params) -> ApiResult {
    web.require(web.rights(&headers)?, true)?;
    let ttl = int_param(&q, "ttl")?
        .ok_or_else(|| bad_request(ErrCode::MissingArg, format!("give ?ttl=S: {MIN_TTL} to {MAX_TTL} seconds")))?;
    let Some(ttl) = u32::try_from(ttl).ok().filter(|t| (MIN_TTL..=MAX_TTL).contains(t)) else {
        return Err(bad_request(ErrCode::Other, format!("a lease's TTL is {MIN_TTL} to {MAX_TTL} seconds, not {ttl}")));
    };
    let id = random_lease_id();
    propose(&web, Command::Grant { id, ttl }).await?;
    Ok((StatusCode::CREATED, Json(json!({"id": hex(id), "ttl": ttl}))).into_response())
}

async fn ttl(State(web): State<Web>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    web.require(web.rights(&headers)?, false)?;
    let id = parse_id(&id)?;
    let t = web.cluster.lease_time(id).await.map_err(|why| refused(id, why))?;
    let lease = web.node().lease(id).ok_or_else(|| refused(id, LeaseRefusal::NotFound))?;
    let files: Vec<&String> = lease.files.iter().collect();
    let left = t.remaining.as_millis().div_ceil(1000);
    Ok(Json(json!({"id": hex(id), "ttl": left, "granted": t.granted, "files": files})).into_response())
}

async fn keep_alive(State(web): State<Web>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    web.require(web.rights(&headers)?, true)?;
    let id = parse_id(&id)?;
    let t = web.cluster.keep_alive(id).await.map_err(|why| refused(id, why))?;
    Ok(Json(json!({"id": hex(id), "ttl": t.granted})).into_response())
}

async fn revoke(State(web): State<Web>, headers: HeaderMap, Path(id): Path<String>) -> ApiResult {
    web.require(web.rights(&headers)?, true)?;
    let id = parse_id(&id)?;
    let done = propose(&web, Command::Revoke { id }).await?;
    let rev = done.last_rev().unwrap_or_else(|| web.node().rev());
    Ok(Json(json!({"id": hex(id), "rev": rev})).into_response())
}
