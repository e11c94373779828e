//! Writes this node's `/ctl` files through consensus: the seed's layout, an
//! attached node's files, `writable` once it votes, and the repair after a
//! restore. What the files are is `crate::ctl`'s; here they are committed.

use super::{Committed, Consensus};
use crate::ctl::{self, Me};
use doozer_store::{Body, Command, CLOBBER};

impl Consensus {
    fn me_files(&self) -> Me<'_> {
        Me { id: &self.me.name, addr: &self.me.addr, cluster: &self.opts.cluster }
    }

    /// Commits each `(path, body)` as a clobbering SET, in order.
    async fn write_files(&self, files: Vec<(String, String)>) -> Result<(), String> {
        for (path, body) in files {
            let cmd = Command::Set { path: path.clone(), rev: CLOBBER, body: Body::from(body.as_str()) };
            match self.propose(cmd).await {
                Ok(Committed::Changed(_)) => {}
                other => return Err(format!("cannot write {path}: {other:?}")),
            }
        }
        Ok(())
    }

    /// The seed's `/ctl` (see [`ctl::seed_files`]).
    pub(super) async fn register_seed(&self) -> Result<(), String> {
        self.write_files(ctl::seed_files(&self.me_files(), self.opts.cal_slots)).await
    }

    /// An attached node's `/ctl/node/<id>` files and DzNS entry.
    pub(super) async fn register_node(&self) -> Result<(), String> {
        self.write_files(ctl::attached_files(&self.me_files())).await
    }

    /// `/ctl/node/<id>/writable`, once the node holds a slot and votes.
    pub(super) async fn mark_writable(&self) -> Result<(), String> {
        self.write_files(vec![(ctl::node_file(&self.me.name, "writable"), "true".to_string())]).await
    }

    /// After a restore, the backed-up cluster's members are forgotten.
    pub(super) async fn forget_restored_members(&self) -> Result<(), String> {
        let snap = self.node.snapshot(None).map_err(|e| format!("{e:?}"))?;
        for cmd in ctl::forget_restored_members(&snap) {
            self.propose(cmd.clone()).await.map_err(|e| format!("cannot rebuild /ctl ({cmd:?}): {e:?}"))?;
        }
        Ok(())
    }
}
