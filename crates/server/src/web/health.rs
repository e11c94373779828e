//! `/healthz` (the process answers), `/readyz` (caught up and part of a
//! quorum) and `/metrics` (Prometheus text format).

use super::Web;
use crate::metrics::gauge;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(web): State<Web>) -> Response {
    match web.cluster.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()).into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n")).into_response(),
    }
}

pub async fn metrics(State(web): State<Web>) -> Response {
    let node = web.node();
    let mut out = String::new();
    node.metrics().render(&mut out);
    gauge(&mut out, "doozer_store_revision", "The last revision applied to this node's store.", node.rev());
    let (revs, bytes) = node.history_size();
    gauge(&mut out, "doozer_history_revisions", "Revisions kept in the history window.", revs);
    gauge(&mut out, "doozer_history_bytes", "Estimated memory of the history window.", bytes);
    gauge(&mut out, "doozer_held_waits", "WAITs held on this node (protocol and web watchers).", node.waiters());
    let s = web.cluster.status();
    gauge(&mut out, "doozer_raft_term", "The current Raft term.", s.term);
    gauge(&mut out, "doozer_raft_is_leader", "1 if this node is the leader.", u8::from(s.role == "leader"));
    gauge(&mut out, "doozer_raft_has_leader", "1 if this node knows a leader.", u8::from(s.leader.is_some()));
    if let Some(leader) = &s.leader {
        out.push_str("# HELP doozer_raft_leader_info The leader this node follows, by node id.\n");
        out.push_str("# TYPE doozer_raft_leader_info gauge\n");
        out.push_str(&format!("doozer_raft_leader_info{{leader=\"{leader}\",self=\"{}\"}} 1\n", s.id));
    }
    gauge(
        &mut out,
        "doozer_raft_last_log_index",
        "The last Raft log index on this node.",
        s.last_log_index.unwrap_or(0),
    );
    gauge(
        &mut out,
        "doozer_raft_commit_index",
        "The last committed Raft log index applied on this node.",
        s.applied_index.unwrap_or(0),
    );
    gauge(&mut out, "doozer_raft_log_bytes", "Bytes the Raft log's entries hold, about.", s.log_bytes);
    gauge(&mut out, "doozer_raft_voters", "Voters in the membership this node knows.", s.voters.len());
    gauge(&mut out, "doozer_raft_learners", "Non-voting members in the membership this node knows.", s.learners.len());
    if let Some(syncs) = s.log_syncs {
        out.push_str("# HELP doozer_log_fsyncs_total Group commits of the durable Raft log, one fsync each.\n");
        out.push_str("# TYPE doozer_log_fsyncs_total counter\n");
        out.push_str(&format!("doozer_log_fsyncs_total {syncs}\n"));
    }
    let (leases, leased) = node.lease_counts();
    gauge(&mut out, "doozer_leases", "Leases granted.", leases);
    gauge(&mut out, "doozer_leased_files", "Files attached to a lease.", leased);
    gauge(&mut out, "doozer_ready", "1 if /readyz answers 200.", u8::from(web.cluster.readiness().is_ok()));
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], out).into_response()
}
