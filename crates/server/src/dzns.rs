//! DzNS: finding and booting a cluster by name through another Doozer
//! cluster (`doozerd -b URI`), as the original did.
//!
//! A DzNS is an ordinary cluster. Under `/ctl/ns/<cluster>/<id>` it lists the
//! address of each member of the cluster `<cluster>`; `/ctl/boot/<cluster>`
//! holds the id of the node that won the race to start it. A node booted
//! with `-b`:
//!
//! 1. looks up `/ctl/ns/<cluster>/*`; if it lists anyone, attaches to them;
//! 2. otherwise writes its own entry and races, with a revision-checked SET
//!    of `/ctl/boot/<cluster>`, to be the seed; exactly one node wins;
//! 3. a loser deletes its entry, waits for the winner's, and attaches.
//!
//! Once serving, every node keeps its own entry in the DzNS (again after
//! rejoining under a new id), and the cluster's leader deletes the entries
//! of ids that are no longer members, so the list stays the membership;
//! unlike the original's, which only ever grew. Entries of a cluster that
//! died entirely stay until someone deletes them.
//!
//! What it is not: the `/ctl/ns` of a node's own cluster (see [`crate::ctl`]).

use crate::consensus::Consensus;
use doozer_client::{Client, ErrCode, Rev};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{debug, info, warn};

/// How a node booted through DzNS starts.
#[derive(Debug, PartialEq, Eq)]
pub enum Boot {
    /// Attach to these members.
    Attach(Vec<String>),
    /// Start the cluster: this node won the race.
    Seed,
}

/// How long a loser of the boot race waits for the winner's entry.
const WINNER_WAIT: Duration = Duration::from_secs(60);
/// How often a serving node checks its entry.
const KEEP_EVERY: Duration = Duration::from_secs(5);

async fn dial(boot: &str, secret: &str) -> Result<Client, String> {
    let c = Client::dial_uri_with(boot, &crate::rt::client_options())
        .await
        .map_err(|e| format!("cannot reach the DzNS {boot}: {e}"))?;
    if !secret.is_empty() {
        c.access(secret.as_bytes()).await.map_err(|e| format!("the DzNS {boot} refused DOOZER_RWSECRET: {e}"))?;
    }
    Ok(c)
}

/// The members `/ctl/ns/<cluster>` lists at `rev`, other than `except`: `(id, addr)`.
async fn lookup(
    c: &Client,
    cluster: &str,
    except: &str,
    rev: Option<Rev>,
) -> Result<Vec<(String, String)>, doozer_client::Error> {
    Ok(c.ns_lookup(cluster, rev).await?.into_iter().filter(|(id, _)| id != except).collect())
}

/// Decides how node `id` (advertising `addr`) of `cluster` starts.
pub async fn boot(boot: &str, secret: &str, cluster: &str, id: &str, addr: &str) -> Result<Boot, String> {
    let c = dial(boot, secret).await?;
    let failed = |e: doozer_client::Error| format!("DzNS {boot}: {e}");
    // The listing and the race file are read at one revision: a node that
    // wins after it makes this node's SET below fail, whatever the timing.
    let at = c.rev().await.map_err(failed)?;
    let members = lookup(&c, cluster, id, Some(at)).await.map_err(failed)?;
    if !members.is_empty() {
        return Ok(Boot::Attach(members.into_iter().map(|(_, a)| a).collect()));
    }
    let race = crate::ctl::boot_path(cluster);
    let (_, race_rev) = c.get(&race, Some(at)).await.map_err(failed)?;
    let mine = crate::ctl::ns_path(cluster, id);
    c.set(&mine, -1, addr.to_string()).await.map_err(failed)?;
    // Against the revision seen with the list empty: a stale winner of a
    // cluster that is gone can be replaced, a live one cannot.
    match c.set(&race, race_rev, id.to_string()).await {
        Ok(_) => {
            info!(%cluster, dzns = %boot, "won the DzNS boot race: starting the cluster");
            return Ok(Boot::Seed);
        }
        Err(e) if e.code() == Some(ErrCode::RevMismatch) => {}
        Err(e) => return Err(failed(e)),
    }
    // Lost: the winner registered before racing, so its entry shows up.
    // Other losers' entries may be listed for a moment; they are no members.
    c.del(&mine, -1).await.map_err(failed)?;
    let deadline = Instant::now() + WINNER_WAIT;
    loop {
        let winner = c.get_file(&race, None).await.map_err(failed)?.map(|f| f.body);
        let members = lookup(&c, cluster, id, None).await.map_err(failed)?;
        let (first, rest): (Vec<_>, Vec<_>) =
            members.into_iter().partition(|(m, _)| winner.as_deref() == Some(m.as_bytes()));
        if !first.is_empty() {
            return Ok(Boot::Attach(first.into_iter().chain(rest).map(|(_, a)| a).collect()));
        }
        if Instant::now() > deadline {
            return Err(format!(
                "DzNS {boot}: lost the race to start {cluster} but the winner did not register within {WINNER_WAIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Keeps this node's entry in the DzNS while it serves, and, on the leader,
/// deletes the entries of ids that are not members. Ends when the node stops.
pub fn keep_registered(boot: String, secret: String, c: Arc<Consensus>) {
    tokio::spawn(async move {
        let mut warned = false;
        loop {
            tokio::select! {
                _ = c.stopped() => return,
                r = keep_once(&boot, &secret, &c) => match r {
                    Ok(()) => warned = false,
                    Err(e) if !warned => {
                        warn!(dzns = %boot, error = %e, "cannot update this node's DzNS entry; will retry");
                        warned = true;
                    }
                    Err(e) => debug!(dzns = %boot, error = %e, "DzNS entry still not updated"),
                },
            }
            tokio::select! {
                _ = c.stopped() => return,
                _ = tokio::time::sleep(KEEP_EVERY) => {}
            }
        }
    });
}

async fn keep_once(boot: &str, secret: &str, c: &Consensus) -> Result<(), String> {
    let client = dial(boot, secret).await?;
    let failed = |e: doozer_client::Error| e.to_string();
    let mine = crate::ctl::ns_path(c.cluster(), c.name());
    let (addr, rev) = client.get(&mine, None).await.map_err(failed)?;
    if rev == 0 || addr != c.addr().as_bytes() {
        client.set(&mine, -1, c.addr().to_string()).await.map_err(failed)?;
        info!(dzns = %boot, entry = %mine, "registered in the DzNS");
    }
    if c.status().role != "leader" {
        return Ok(());
    }
    let members = c.node().snapshot(None).map(|s| crate::ctl::node_ids(&s)).unwrap_or_default();
    if members.is_empty() {
        return Ok(());
    }
    for (id, _) in lookup(&client, c.cluster(), c.name(), None).await.map_err(failed)? {
        if !members.contains(&id) {
            info!(dzns = %boot, node = %id, "deleting the DzNS entry of a former member");
            client.del(&crate::ctl::ns_path(c.cluster(), &id), -1).await.map_err(failed)?;
        }
    }
    Ok(())
}
