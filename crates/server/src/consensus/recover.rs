//! Disaster recovery (issue 15): when a majority of the voters is gone for
//! good, nothing can commit, and Raft cannot change that by itself. An
//! operator asks one survivor to become a new one-voter cluster keeping its
//! state, as etcd's `--force-new-cluster` does; the others then attach to it
//! as new members.
//!
//! What is kept: this node's store as applied, and every entry its log holds
//! beyond that (an entry a majority had stored may have been acknowledged to
//! a client before the majority was lost, and this node may hold the only
//! copy left; one never committed is applied too, as a write that timed out
//! may be). The new cluster starts the way `--restore` starts one: its first
//! entry loads the tree, same files, same revisions, and the old members'
//! `/ctl` entries are forgotten.
//!
//! Refused while a majority of the voters answers: that cluster elects a
//! leader by itself, and forcing a second cluster beside it would split it.

use super::network::Target;
use super::storage::{self, StateMachine};
use super::types::{Member, NodeId};
use super::wire::PeerRequest;
use super::Consensus;
use crate::node::Node;
use std::time::Duration;

/// How long a voter may take to answer the probe.
const PROBE: Duration = Duration::from_secs(2);

impl Consensus {
    /// What forcing a new cluster would do here, or why it must not.
    pub async fn recovery_plan(&self) -> Result<String, String> {
        // Just started from a data dir, Raft may still be loading it.
        let member = |m: &super::types::Metrics| m.membership_config.membership().get_node(&self.id).is_some();
        let _ = self.raft.wait(Some(Duration::from_secs(5))).metrics(member, "the membership loaded").await;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<(NodeId, Member)> =
            membership.voter_ids().filter_map(|id| membership.get_node(&id).map(|n| (id, n.clone()))).collect();
        if !voters.iter().any(|(id, _)| *id == self.id) && membership.get_node(&self.id).is_none() {
            return Err("this node is not a member of a cluster: there is nothing to recover".into());
        }
        let others: Vec<&(NodeId, Member)> = voters.iter().filter(|(id, _)| *id != self.id).collect();
        let answers = futures_util::future::join_all(others.iter().map(|(id, n)| self.answers(*id, &n.addr))).await;
        let answering: Vec<&str> =
            others.iter().zip(&answers).filter(|(_, a)| **a).map(|((_, n), _)| n.name.as_str()).collect();
        let me_voting = voters.iter().any(|(id, _)| *id == self.id);
        let reachable = answering.len() + usize::from(me_voting);
        if reachable > voters.len() / 2 {
            return Err(format!(
                "{reachable} of the {} voters answer (this node{}{}): a majority is reachable, so the cluster \
                 elects a leader by itself; nothing was changed",
                voters.len(),
                if answering.is_empty() { "" } else { ", " },
                answering.join(", ")
            ));
        }
        let lost: Vec<&str> = others.iter().map(|(_, n)| n.name.as_str()).collect();
        Ok(format!(
            "this node ({} at {}) becomes the only voter of a new cluster {:?}, keeping its files and revisions \
             (rev {}, and what its log holds beyond it); members {} are forgotten: start each again with an empty \
             data dir and -a {}",
            self.me.name,
            self.me.addr,
            self.opts.cluster,
            self.node.rev(),
            lost.join(", "),
            self.me.addr
        ))
    }

    /// True if the voter `id` at `addr` answers a peer request.
    async fn answers(&self, id: NodeId, addr: &str) -> bool {
        let call = self.pool.call(Target { addr, id: Some(id) }, &PeerRequest::Leader, PROBE);
        matches!(tokio::time::timeout(PROBE, call).await, Ok(Ok(_)))
    }

    /// Forces the new cluster: checks the plan, takes this node's state,
    /// and hands it to [`Consensus::wait_recovery`]'s waiter, which starts
    /// the new cluster with it. Returns the plan carried out.
    pub async fn force_new_cluster(&self) -> Result<String, String> {
        let plan = self.recovery_plan().await?;
        let image = self.recovered_image().await?;
        let mut bytes = Vec::new();
        image.encode(&mut bytes);
        *self.recovered.lock() = Some(bytes::Bytes::from(bytes));
        self.recovery.notify_one();
        Ok(plan)
    }

    /// Completes with the store image to start a new cluster from, once
    /// [`Consensus::force_new_cluster`] has been carried out.
    pub async fn wait_recovery(&self) -> bytes::Bytes {
        loop {
            if let Some(image) = self.recovered.lock().take() {
                return image;
            }
            self.recovery.notified().await;
        }
    }

    /// This node's state as a store image: a snapshot of what it applied,
    /// with every entry after it in its log applied too.
    async fn recovered_image(&self) -> Result<doozer_store::Image, String> {
        let _ = self.raft.trigger().snapshot().await;
        let applied = self.metrics().last_applied;
        self.raft
            .wait(Some(Duration::from_secs(60)))
            .metrics(|m| m.snapshot >= applied, "a snapshot of what was applied")
            .await
            .map_err(|e| format!("cannot take a snapshot to recover from: {e}"))?;
        let Some((meta, data)) = self.snapshots.lock().clone() else {
            return Err("no snapshot to recover from".into());
        };
        let after = meta.last_log_id.map_or(0, |l| l.index + 1);
        let entries = self.log.entries_from(after);
        let node = Node::new(self.me.name.clone(), self.node.limits().clone());
        let mut sm = StateMachine::from_snapshot(node.clone(), &meta, &data)?;
        storage::apply_all(&mut sm, entries).await.map_err(|e| format!("cannot apply the log: {e}"))?;
        Ok(node.image())
    }
}
