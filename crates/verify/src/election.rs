//! Election contenders and the check of what they did: mutual exclusion
//! with fencing, under every fault the harness injects.
//!
//! Each contender campaigns (the client library's [`Election`], TTL
//! [`TTL`]) in [`ELECTION`], through a node of its choosing; as leader it
//! makes a few fenced writes to the protected register [`REGISTER`] (`TOKEN
//! HOLDER N`: written with SET at the revision read, and only if the stored
//! token is not higher than its own), then resigns, or dies (stops keeping
//! its lease alive and walks away), or pauses past its lease and wakes to
//! write once more under its old token, as a stalled process would.
//!
//! The check reads the committed log, not what contenders believed:
//! - every token written is the revision of a claim in [`ELECTION`];
//! - tokens in the register never go down, revision after revision;
//! - no two holders wrote under one token;
//! - once the contenders stop, every claim goes within its lease (the
//!   final trees have none): an ended holder's files are gone on every node.

use crate::history::{Change, Rev};
use crate::workload::Nodes;
use doozer_client::{Cluster, Election, ErrCode, Held};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::sync::watch;

/// Where contenders campaign.
pub const ELECTION: &str = "/fence/elect";
/// The protected register.
pub const REGISTER: &str = "/fence/register";
/// The contenders' lease TTL, in seconds.
pub const TTL: i64 = 2;

/// A contender, until `stop`; returns how many terms it led.
pub async fn contender(id: usize, seed: u64, nodes: Nodes, stop: watch::Receiver<bool>) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut led = 0;
    let mut round = 0;
    while !*stop.borrow() {
        round += 1;
        let Some(cluster) = connect(&nodes, &mut rng).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let name = format!("e{id}-{round}");
        let election = Election::new(&cluster, ELECTION);
        let mut halt = stop.clone();
        let held = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(30), election.campaign(name.clone(), TTL)) => r,
            _ = halt.wait_for(|s| *s) => break,
        };
        let Ok(Ok(held)) = held else {
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..500))).await;
            continue;
        };
        led += 1;
        lead(&cluster, &held, &name, rng.random_range(1..4), &mut rng).await;
        match rng.random_range(0..4) {
            0 => held.orphan(),
            1 => {
                // A holder that pauses past its lease and wakes believing it
                // still leads: its write must lose to any newer holder's.
                let token = held.token();
                held.orphan();
                tokio::time::sleep(Duration::from_secs(TTL as u64 + 1)).await;
                let value = format!("{name} stale");
                let _ = tokio::time::timeout(Duration::from_secs(5), fenced_write(&cluster, token, &value)).await;
            }
            _ => {
                let _ = tokio::time::timeout(Duration::from_secs(5), held.release()).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
    }
    led
}

/// A cluster handle over the live nodes, the first one chosen at random.
pub(crate) async fn connect(nodes: &Nodes, rng: &mut StdRng) -> Option<Cluster> {
    let mut addrs: Vec<String> = nodes.lock().iter().map(|(_, a)| a.clone()).collect();
    if addrs.is_empty() {
        return None;
    }
    let first = rng.random_range(0..addrs.len());
    addrs.rotate_left(first);
    let uri = format!("doozer:?{}", addrs.iter().map(|a| format!("ca={a}")).collect::<Vec<_>>().join("&"));
    tokio::time::timeout(Duration::from_secs(5), Cluster::connect_with(&uri, nodes.opts.clone())).await.ok()?.ok()
}

/// Up to `writes` fenced writes while `held` is not lost.
async fn lead(cluster: &Cluster, held: &Held, name: &str, writes: usize, rng: &mut StdRng) {
    for n in 0..writes {
        let value = format!("{name} {n}");
        let write = fenced_write(cluster, held.token(), &value);
        let done = tokio::select! {
            r = tokio::time::timeout(Duration::from_secs(5), write) => r,
            _ = held.lost() => return,
        };
        // Refused (a newer holder wrote), or unknown: this term is over.
        if !matches!(done, Ok(Ok(true))) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..400))).await;
    }
}

/// Writes `TOKEN VALUE` to the register unless a higher token is there:
/// true if written, false if refused.
async fn fenced_write(c: &Cluster, token: Rev, value: &str) -> doozer_client::Result<bool> {
    loop {
        let (stored, rev) = match c.get_file(REGISTER, None).await? {
            Some(f) => (token_of(&String::from_utf8_lossy(&f.body)).unwrap_or(0), f.rev),
            None => (0, 0),
        };
        if stored > token {
            return Ok(false);
        }
        match c.set(REGISTER, rev, format!("{token} {value}")).await {
            Ok(_) => return Ok(true),
            Err(e) if e.code() == Some(ErrCode::RevMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
}

fn token_of(body: &str) -> Option<Rev> {
    body.split(' ').next()?.parse().ok()
}

/// The checks in the module header, over the committed `log` and each
/// node's final tree.
pub fn check(log: &[Change], finals: &[BTreeMap<String, (Rev, String)>], out: &mut Vec<String>) {
    let by_rev: HashMap<Rev, &Change> = log.iter().map(|c| (c.rev, c)).collect();
    let claim_dir = format!("{ELECTION}/");
    let mut last: Option<(Rev, Rev)> = None; // (token, revision)
    let mut holders: HashMap<Rev, String> = HashMap::new();
    for c in log.iter().filter(|c| c.path == REGISTER) {
        let Some(value) = &c.value else { continue };
        let Some(token) = token_of(value) else {
            out.push(format!("fencing: revision {} wrote {value:?} to the register: no token", c.rev));
            continue;
        };
        let claim = by_rev.get(&token);
        if !claim.is_some_and(|cl| cl.path.starts_with(&claim_dir) && cl.value.is_some()) {
            out.push(format!("fencing: token {token} (revision {}) is not the revision of a claim: {claim:?}", c.rev));
        }
        if let Some((prev, at)) = last {
            if token < prev {
                out.push(format!("fencing: token {token} at revision {} after token {prev} at revision {at}", c.rev));
            }
        }
        last = Some((token, c.rev));
        let holder = value.split(' ').nth(1).unwrap_or_default().to_string();
        match holders.get(&token) {
            Some(h) if *h != holder => {
                out.push(format!("fencing: holders {h} and {holder} both wrote under token {token}"))
            }
            _ => {
                holders.insert(token, holder);
            }
        }
    }
    for (i, f) in finals.iter().enumerate() {
        if let Some((path, _)) = f.iter().find(|(p, _)| p.starts_with(&claim_dir)) {
            out.push(format!("fencing: node {i} still has the claim {path} after every contender stopped"));
        }
    }
}

/// Waits (up to `within`) until no claim is left on the node at `addr`:
/// contenders that died leave theirs for a TTL.
pub async fn claims_gone(nodes: &Nodes, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        let addrs: Vec<String> = nodes.lock().iter().map(|(_, a)| a.clone()).collect();
        let mut empty = !addrs.is_empty();
        for a in &addrs {
            let left = async { nodes.client(a).await.ok()?.getdir_all(ELECTION, None).await.ok() };
            match tokio::time::timeout(Duration::from_secs(2), left).await {
                Ok(Some(names)) if names.is_empty() => {}
                // Missing: the directory is gone with its last claim.
                Ok(None) => {}
                _ => empty = false,
            }
        }
        if empty {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(rev: Rev, path: &str, value: &str) -> Change {
        Change { rev, path: path.into(), value: Some(value.into()) }
    }

    fn run(log: &[Change]) -> Vec<String> {
        let mut out = Vec::new();
        check(log, &[], &mut out);
        out
    }

    #[test]
    fn fenced_writes_in_token_order_pass_and_each_violation_is_named() {
        let good = [
            set(1, "/fence/elect/a", "a"),
            set(2, REGISTER, "1 a 0"),
            set(3, "/fence/elect/b", "b"),
            set(4, REGISTER, "1 a 1"),
            set(5, REGISTER, "3 b 0"),
        ];
        assert!(run(&good).is_empty(), "{:?}", run(&good));
        // A stale holder's write after a newer token.
        let mut stale = good.to_vec();
        stale.push(set(6, REGISTER, "1 a 2"));
        assert!(run(&stale).iter().any(|v| v.contains("token 1 at revision 6 after token 3")));
        // Two holders under one token.
        let mut two = good.to_vec();
        two.push(set(6, REGISTER, "3 c 0"));
        assert!(run(&two).iter().any(|v| v.contains("both wrote under token 3")));
        // A token that is no claim.
        let forged = [set(1, "/other", "x"), set(2, REGISTER, "1 a 0")];
        assert!(run(&forged).iter().any(|v| v.contains("not the revision of a claim")));
        // A claim left behind.
        let mut out = Vec::new();
        let finals = [BTreeMap::from([("/fence/elect/x".to_string(), (1, "x".to_string()))])];
        check(&good, &finals, &mut out);
        assert!(out.iter().any(|v| v.contains("still has the claim")));
    }
}
