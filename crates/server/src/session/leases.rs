//! The lease verbs, extensions the original never had (numbers 31 to 36,
//! fields 103 to 105; docs/protocol.md): GRANT, KEEPALIVE, REVOKE, TTL,
//! SETL and LEASES.
//!
//! GRANT, REVOKE and SETL are writes, committed like SET. KEEPALIVE and TTL
//! are questions for the leader's lessor, asked from whichever node the
//! client is connected to (`consensus::leases`). A leased file is an
//! ordinary file to every other verb: old clients read, watch and see it
//! deleted when its lease ends.

use super::*;
use crate::consensus::{LeaseRefusal, LeaseTime};
use doozer_store::{LeaseId, MAX_TTL, MIN_TTL};

/// A lease id from the wire: a positive int64.
pub(super) fn lease_id(field: Option<i64>, tag: Option<i32>) -> Result<LeaseId, Response> {
    match field {
        None => Err(error(tag, ErrCode::MissingArg)),
        Some(n) if n > 0 => Ok(n as LeaseId),
        Some(n) => Err(Response::error(tag, ErrCode::Other, format!("a lease id is a positive number, not {n}"))),
    }
}

/// A fresh lease id: random, positive as an int64 (so that every client
/// language holds it as is).
pub fn random_lease_id() -> LeaseId {
    let mut bytes = [0u8; 8];
    crate::rt::fill_random(&mut bytes);
    (u64::from_le_bytes(bytes) & i64::MAX as u64).max(1)
}

/// Whole seconds, rounded up: a lease with 0.3 s left has 1, not 0 (0 is
/// for a lease being revoked).
fn seconds_up(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
}

fn refused(tag: Option<i32>, id: LeaseId, why: LeaseRefusal) -> Response {
    match why {
        LeaseRefusal::NotFound => Response::error(tag, ErrCode::NoEnt, LeaseError::NotFound(id).to_string()),
        LeaseRefusal::NotLeader => Response::error(tag, ErrCode::Other, "no leader to ask; try again"),
        LeaseRefusal::NoLeader(why) => Response::error(tag, ErrCode::Other, format!("{why}; try again")),
    }
}

impl Session {
    pub(super) fn grant(&self, tag: Option<i32>, ttl: i64, lease: Option<i64>) -> Handled {
        let Some(ttl) = u32::try_from(ttl).ok().filter(|t| (MIN_TTL..=MAX_TTL).contains(t)) else {
            let why = format!("a lease's TTL is {MIN_TTL} to {MAX_TTL} seconds, not {ttl}");
            return Err(Response::error(tag, ErrCode::Other, why));
        };
        let id = match lease {
            Some(_) => lease_id(lease, tag)?,
            None => random_lease_id(),
        };
        self.propose(tag, Command::Grant { id, ttl }, move |o| match o {
            Committed::Failed(e) => Err(e),
            Committed::NotMember => Ok(removed(tag)),
            _ => Ok(Response {
                tag,
                lease: Some(id as i64),
                ttl: Some(i64::from(ttl)),
                granted: Some(i64::from(ttl)),
                ..Response::default()
            }),
        });
        Ok(None)
    }

    pub(super) fn keep_alive(&self, tag: Option<i32>, id: LeaseId) -> Handled {
        let cluster = self.cluster.clone();
        self.spawn_cancellable(async move {
            match cluster.keep_alive(id).await {
                Ok(t) => time_answer(tag, id, t),
                Err(why) => refused(tag, id, why),
            }
        });
        Ok(None)
    }

    pub(super) fn revoke(&self, tag: Option<i32>, id: LeaseId) -> Handled {
        let node = self.node.clone();
        self.propose(tag, Command::Revoke { id }, move |o| match o {
            Committed::Failed(e) => Err(e),
            Committed::NotMember => Ok(removed(tag)),
            // The revision of the last delete, or the current one if the
            // lease had no files.
            o => Ok(Response {
                tag,
                lease: Some(id as i64),
                rev: Some(o.last_rev().unwrap_or_else(|| node.rev())),
                ..Response::default()
            }),
        });
        Ok(None)
    }

    /// TTL: the leader's time for the lease, its file count here, and with
    /// `after`, the first of its files after that path ("" for the first).
    pub(super) fn ttl(&self, tag: Option<i32>, id: LeaseId, after: Option<String>) -> Handled {
        let (cluster, node) = (self.cluster.clone(), self.node.clone());
        self.spawn_cancellable(async move {
            let t = match cluster.lease_time(id).await {
                Ok(t) => t,
                Err(why) => return refused(tag, id, why),
            };
            let Some(lease) = node.lease(id) else { return refused(tag, id, LeaseRefusal::NotFound) };
            let mut r = time_answer(tag, id, t);
            r.len = Some(i32::try_from(lease.files.len()).unwrap_or(i32::MAX));
            if let Some(after) = after {
                match lease.file_after(&after) {
                    Some(path) => r.path = Some(path.clone()),
                    None => return error(tag, ErrCode::Range),
                }
            }
            r
        });
        Ok(None)
    }

    pub(super) fn set_leased(&self, tag: Option<i32>, path: String, rev: Rev, body: Bytes, lease: LeaseId) -> Handled {
        let body = self.checked_body(tag, &path, &body)?;
        self.propose(tag, Command::SetLeased { path, rev, body, lease }, move |o| set_answer(tag, o));
        Ok(None)
    }

    /// LEASES: the first granted lease with an id above `after`.
    pub(super) fn leases(&self, tag: Option<i32>, after: i64) -> Handled {
        let after = LeaseId::try_from(after.max(0)).unwrap_or(0);
        match self.node.lease_after(after) {
            Some((id, lease)) => Ok(Some(Response {
                tag,
                lease: Some(id as i64),
                granted: Some(i64::from(lease.ttl)),
                len: Some(i32::try_from(lease.files.len()).unwrap_or(i32::MAX)),
                ..Response::default()
            })),
            None => Err(error(tag, ErrCode::Range)),
        }
    }
}

fn time_answer(tag: Option<i32>, id: LeaseId, t: LeaseTime) -> Response {
    Response {
        tag,
        lease: Some(id as i64),
        ttl: Some(seconds_up(t.remaining)),
        granted: Some(i64::from(t.granted)),
        ..Response::default()
    }
}
