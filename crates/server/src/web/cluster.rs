//! `GET /_api/cluster`: the members as `/ctl` records them (address, role,
//! slot, leader) and each one's applied revision, asked of the member itself
//! with a REV request, as `doozer members` does.

use super::{ApiError, Web};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use bytes::BytesMut;
use doozer_proto::{encode_frame, read_frame, Request, Response, Verb, MAX_FRAME};
use doozer_store::Snapshot;
use prost::Message;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long a member may take to say its revision before it shows as unknown.
const ASK_TIMEOUT: Duration = Duration::from_millis(800);

fn text(snap: &Snapshot, path: &str) -> String {
    snap.get(path).ok().flatten().map(|f| String::from_utf8_lossy(&f.body).into_owned()).unwrap_or_default()
}

pub async fn members(State(web): State<Web>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    web.require(web.rights(&headers)?, false)?;
    let node = web.node();
    let snap = node.snapshot(None).map_err(|_| ApiError::from_code(doozer_proto::ErrCode::Other, "no tree"))?;
    let slots: Vec<(String, String)> = snap
        .getdir("/ctl/cal")
        .unwrap_or_default()
        .iter()
        .map(|slot| (slot.to_string(), text(&snap, &format!("/ctl/cal/{slot}"))))
        .collect();
    let leader = text(&snap, "/ctl/leader");
    let ids = snap.getdir("/ctl/node").unwrap_or_default();
    let asks = ids.iter().map(|id| {
        let addr = text(&snap, &format!("/ctl/node/{id}/addr"));
        let me = &**id == node.id();
        async move {
            if me {
                Some(node.rev())
            } else {
                applied_rev(&addr).await
            }
        }
    });
    let applied = futures_util::future::join_all(asks).await;
    let members: Vec<Value> = ids
        .iter()
        .zip(applied)
        .map(|(id, applied)| {
            let slot = slots.iter().find(|(_, holder)| holder == &**id).map(|(s, _)| s.clone());
            json!({
                "id": &**id,
                "addr": text(&snap, &format!("/ctl/node/{id}/addr")),
                "hostname": text(&snap, &format!("/ctl/node/{id}/hostname")),
                "role": text(&snap, &format!("/ctl/node/{id}/role")),
                "voter": slot.is_some(),
                "slot": slot,
                "leader": leader == **id,
                "applied": applied,
            })
        })
        .collect();
    Ok(Json(json!({
        "name": text(&snap, "/ctl/name"),
        "self": node.id(),
        "leader": leader,
        "rev": snap.rev(),
        "slots": slots.len(),
        "members": members,
    })))
}

/// A member's applied revision, by the client protocol's REV.
async fn applied_rev(addr: &str) -> Option<i64> {
    let ask = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let mut buf = BytesMut::new();
        encode_frame(&Request { tag: Some(0), verb: Some(Verb::Rev as i32), ..Request::default() }, &mut buf);
        stream.write_all(&buf).await.ok()?;
        let frame = read_frame(&mut stream, MAX_FRAME).await.ok()??;
        Response::decode(frame).ok()?.rev
    };
    tokio::time::timeout(ASK_TIMEOUT, ask).await.ok().flatten()
}
