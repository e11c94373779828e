//! Lease keepers and the check that no lease ends early.
//!
//! A keeper grants a lease (TTL [`TTL`]) and keeps it alive by hand, every
//! so often, through a node of its choosing; now and then it stays silent
//! past the TTL, so the cluster must end the lease, and at the end it
//! revokes what it still holds. It writes down, on the run's one clock, when
//! it sent each GRANT or KEEPALIVE the cluster acknowledged, and when a
//! KEEPALIVE was answered NOENT (the lease had ended).
//!
//! The check: a lease ends no sooner than a TTL after the last keep-alive
//! acknowledged before its end was seen. The server starts a deadline no
//! sooner than the request arrived, and a new leader gives every lease a
//! full TTL from taking office, so a NOENT seen earlier means a lease cut
//! short: a keep-alive acknowledged by a deposed leader, a deadline carried
//! from an old term, a clock mix-up. What this cannot see: a lease kept past
//! its TTL (the election check's final trees bound that).

use crate::workload::{Clock, Nodes};
use doozer_client::{Cluster, ErrCode, LeaseId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;
use tokio::sync::watch;

/// The keepers' lease TTL, in seconds.
pub const TTL: i64 = 2;

/// One lease, as its keeper saw it. Times are nanoseconds on the run's clock.
#[derive(Clone, Debug, Default)]
pub struct LeaseLog {
    pub id: LeaseId,
    /// When each acknowledged GRANT or KEEPALIVE was sent.
    pub kept: Vec<u64>,
    /// When a KEEPALIVE answered NOENT, if one did.
    pub ended: Option<u64>,
}

/// A keeper, until `stop`: every lease it held.
pub async fn keeper(seed: u64, nodes: Nodes, clock: Clock, stop: watch::Receiver<bool>) -> Vec<LeaseLog> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut logs = Vec::new();
    while !*stop.borrow() {
        let Some(cluster) = crate::election::connect(&nodes, &mut rng).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let sent = clock.now();
        let Ok(Ok(id)) = tokio::time::timeout(Duration::from_secs(5), cluster.grant(TTL)).await else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
            continue;
        };
        let mut log = LeaseLog { id, kept: vec![sent], ended: None };
        keep(&cluster, &mut log, &clock, &mut rng, stop.clone()).await;
        if log.ended.is_none() {
            let _ = tokio::time::timeout(Duration::from_secs(5), cluster.revoke(id)).await;
        }
        logs.push(log);
    }
    logs
}

/// Keeps `log`'s lease alive for a few rounds, until it ends or `stop`.
async fn keep(cluster: &Cluster, log: &mut LeaseLog, clock: &Clock, rng: &mut StdRng, mut stop: watch::Receiver<bool>) {
    let ttl_ms = TTL as u64 * 1000;
    for _ in 0..rng.random_range(5..40) {
        // Mostly well within the TTL; one round in twenty silent past it.
        let pause = if rng.random_bool(0.05) { ttl_ms + 500 } else { rng.random_range(100..ttl_ms / 2) };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(pause)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let sent = clock.now();
        match tokio::time::timeout(Duration::from_secs(5), cluster.keep_alive(log.id)).await {
            Ok(Ok(_)) => log.kept.push(sent),
            Ok(Err(e)) if e.code() == Some(ErrCode::NoEnt) => {
                log.ended = Some(clock.now());
                return;
            }
            _ => {}
        }
    }
}

/// The check in the module header.
pub fn check(leases: &[LeaseLog], out: &mut Vec<String>) {
    let ttl = Duration::from_secs(TTL as u64).as_nanos() as u64;
    for l in leases {
        let Some(ended) = l.ended else { continue };
        let Some(last) = l.kept.iter().copied().filter(|&k| k < ended).max() else { continue };
        if ended < last + ttl {
            out.push(format!(
                "lease {:x} ended early: NOENT seen {:.3}s after a keep-alive sent at {:.3}s was acknowledged (TTL {TTL}s)",
                l.id,
                (ended - last) as f64 / 1e9,
                last as f64 / 1e9
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn an_end_within_a_ttl_of_an_acknowledged_keep_alive_is_named() {
        let mut out = Vec::new();
        let fine = LeaseLog { id: 1, kept: vec![0, S, 2 * S], ended: Some(4 * S + 1) };
        let open = LeaseLog { id: 2, kept: vec![0, S], ended: None };
        check(&[fine, open], &mut out);
        assert!(out.is_empty(), "{out:?}");
        let early = LeaseLog { id: 0xab, kept: vec![0, S, 2 * S], ended: Some(3 * S) };
        check(&[early], &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].contains("lease ab ended early"), "{out:?}");
    }
}
