//! The `/ctl` subtree, laid out as the original does: `/ctl/name`,
//! `/ctl/node/<id>/{addr,hostname,version,writable}`, the `/ctl/cal/*`
//! slots whose holders are the voters, and the DzNS entries
//! `/ctl/ns/<cluster>/<id>` (the member's address) through which the
//! original clients find a cluster by name; plus `/ctl/leader`, the current
//! leader's id, and `/ctl/node/<id>/role` (`leader`, `voter`, `non-voter`).
//! Node ids are 80 random bits in base32.
//!
//! As in the original, `writable` is written `true` once a node holds a
//! `/ctl/cal` slot and votes (clients and the original's tests wait for it to
//! know a node has joined); a node without a slot is still served and still
//! takes writes, forwarding them to the leader.

use crate::consensus::{Committed, Consensus};
use doozer_store::Body;
use doozer_store::{Command, CLOBBER};
use rand::RngCore;

/// The original's version, for the protocol level this server implements.
pub const PROTOCOL_VERSION: &str = "0.9.0-alpha";

/// The version written to `/ctl/node/<id>/version` and printed by `-v`: the
/// original's, so parsers of `0.9.0-alpha` keep working, and ours as semver
/// build metadata after the `+`.
pub const VERSION: &str = concat!("0.9.0-alpha+doozer-rs.", env!("CARGO_PKG_VERSION"));

/// Where the DzNS entry of member `id` of `cluster` is.
pub fn ns_path(cluster: &str, id: &str) -> String {
    format!("/ctl/ns/{cluster}/{id}")
}

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// 80 bits as 16 characters of standard base32.
pub fn encode_id(bits: [u8; 10]) -> String {
    let mut n = bits.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let mut out = [0u8; 16];
    for c in out.iter_mut().rev() {
        *c = BASE32[(n & 31) as usize];
        n >>= 5;
    }
    out.iter().map(|&c| c as char).collect()
}

/// A fresh node id: a node never reuses one, even on the same address.
pub fn new_id() -> String {
    let mut bits = [0u8; 10];
    rand::rng().fill_bytes(&mut bits);
    encode_id(bits)
}

fn hostname() -> String {
    hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
}

async fn write_all(c: &Consensus, files: Vec<(String, String)>) -> Result<(), String> {
    for (path, body) in files {
        let cmd = Command::Set { path: path.clone(), rev: CLOBBER, body: Body::from(body.as_str()) };
        match c.propose(cmd).await {
            Ok(Committed::Changed(_)) => {}
            other => return Err(format!("cannot write {path}: {other:?}")),
        }
    }
    Ok(())
}

fn node_files(c: &Consensus) -> Vec<(String, String)> {
    let id = c.name();
    vec![
        (format!("/ctl/node/{id}/addr"), c.addr().to_string()),
        (format!("/ctl/node/{id}/hostname"), hostname()),
        (format!("/ctl/node/{id}/version"), VERSION.to_string()),
        (ns_path(c.cluster(), id), c.addr().to_string()),
    ]
}

/// The seed's `/ctl`: the cluster name, this node, slot 0 held by it, the
/// vacant slots 1..`slots` that attaching nodes will claim, and the leader.
pub async fn register_seed(c: &Consensus, cluster: &str, slots: usize) -> Result<(), String> {
    let id = c.name().to_string();
    let mut files = vec![("/ctl/name".to_string(), cluster.to_string())];
    files.extend(node_files(c));
    files.push(("/ctl/cal/0".to_string(), id.clone()));
    files.extend((1..slots).map(|i| (format!("/ctl/cal/{i}"), String::new())));
    files.push(("/ctl/leader".to_string(), id.clone()));
    files.push((format!("/ctl/node/{id}/role"), "leader".to_string()));
    files.push((format!("/ctl/node/{id}/writable"), "true".to_string()));
    write_all(c, files).await
}

/// After a restore: the backed-up cluster's members are not this cluster's.
/// Their `/ctl/node` files go and their slots become vacant, so the nodes that
/// attach to the new cluster claim them.
pub async fn forget_members(c: &Consensus) -> Result<(), String> {
    let snap = c.node().snapshot(None).map_err(|e| format!("{e:?}"))?;
    let mut cmds = Vec::new();
    for id in snap.getdir("/ctl/node").unwrap_or_default() {
        for f in snap.getdir(&format!("/ctl/node/{id}")).unwrap_or_default() {
            cmds.push(Command::Del { path: format!("/ctl/node/{id}/{f}"), rev: CLOBBER });
        }
    }
    // Their DzNS entries too; entries of other clusters (this may be a DzNS) stay.
    let old_members = snap.getdir("/ctl/node").unwrap_or_default();
    for cluster in snap.getdir("/ctl/ns").unwrap_or_default() {
        for id in snap.getdir(&format!("/ctl/ns/{cluster}")).unwrap_or_default() {
            if old_members.contains(&id) {
                cmds.push(Command::Del { path: ns_path(&cluster, &id), rev: CLOBBER });
            }
        }
    }
    for slot in snap.getdir("/ctl/cal").unwrap_or_default() {
        let path = format!("/ctl/cal/{slot}");
        if snap.get(&path).ok().flatten().is_some_and(|f| !f.body.is_empty()) {
            cmds.push(Command::Set { path, rev: CLOBBER, body: Body::default() });
        }
    }
    for cmd in cmds {
        c.propose(cmd.clone()).await.map_err(|e| format!("cannot rebuild /ctl ({cmd:?}): {e:?}"))?;
    }
    Ok(())
}

/// An attached node's `/ctl/node/<id>` files (`writable` comes with a slot).
pub async fn register_node(c: &Consensus) -> Result<(), String> {
    let mut files = node_files(c);
    files.push((format!("/ctl/node/{}/role", c.name()), "non-voter".to_string()));
    write_all(c, files).await
}

/// `/ctl/node/<id>/writable`, written once the node holds a slot and votes.
pub async fn mark_writable(c: &Consensus) -> Result<(), String> {
    write_all(c, vec![(format!("/ctl/node/{}/writable", c.name()), "true".to_string())]).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sixteen_base32_chars() {
        assert_eq!(encode_id([0; 10]), "AAAAAAAAAAAAAAAA");
        assert_eq!(encode_id([0xff; 10]), "7777777777777777");
        // RFC 4648 test vector: "fooba" is MZXW6YTB; ten bytes give sixteen chars.
        assert_eq!(encode_id(*b"foobafooba"), "MZXW6YTBMZXW6YTB");
        let id = new_id();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| BASE32.contains(&b)));
        assert_ne!(new_id(), id);
    }
}
