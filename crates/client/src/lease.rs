//! Leases: the extension verbs GRANT, KEEPALIVE, REVOKE, TTL, SETL and
//! LEASES (31 to 36; the README's "Protocol extensions"), and [`Lease`], a
//! lease kept alive in the background for as long as it is held.
//!
//! A lease lives `ttl` seconds past its last keep-alive; when it ends
//! (revoked, or expired because no keep-alive reached the leader in time)
//! every file attached to it is deleted in one revision. Servers that do
//! not have leases answer [`ErrCode::UnknownVerb`].

use crate::{Client, Cluster, ErrCode, Error, Result, Rev};
use bytes::Bytes;
use doozer_proto::{Request, Verb};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A lease's id: positive.
pub type LeaseId = i64;

/// A lease as the server reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Its id.
    pub id: LeaseId,
    /// Whole seconds it has left, rounded up (0: being revoked). `None` from
    /// [`Client::leases`], which does not ask the leader.
    pub remaining: Option<i64>,
    /// The TTL it was granted, in seconds.
    pub granted: i64,
    /// How many files are attached to it.
    pub files: usize,
}

fn info(r: &doozer_proto::Response, id: LeaseId) -> LeaseInfo {
    LeaseInfo {
        id: r.lease.unwrap_or(id),
        remaining: r.ttl,
        granted: r.granted.unwrap_or(0),
        files: r.len.map_or(0, |n| usize::try_from(n).unwrap_or(0)),
    }
}

impl Client {
    fn lease_req(verb: Verb, id: LeaseId) -> Request {
        Request { lease: Some(id), ..Client::req(verb) }
    }

    /// GRANT: a new lease of `ttl` seconds (1 to 86,400); returns its id.
    pub async fn grant(&self, ttl: i64) -> Result<LeaseId> {
        let r = self.call(Request { ttl: Some(ttl), ..Client::req(Verb::Grant) }).await?;
        r.lease.ok_or_else(|| Error::Disconnected("GRANT answered without a lease id".into()))
    }

    /// GRANT with an id of the caller's choosing (refused if it is taken).
    pub async fn grant_id(&self, id: LeaseId, ttl: i64) -> Result<LeaseId> {
        self.call(Request { ttl: Some(ttl), ..Client::lease_req(Verb::Grant, id) }).await.map(|_| id)
    }

    /// KEEPALIVE: the lease lives another TTL from now; returns the TTL.
    /// [`ErrCode::NoEnt`] if it has ended.
    pub async fn keep_alive(&self, id: LeaseId) -> Result<i64> {
        Ok(self.call(Client::lease_req(Verb::KeepAlive, id)).await?.ttl.unwrap_or(0))
    }

    /// REVOKE: ends the lease, deleting its files in one revision; returns
    /// that revision (the current one if it had no files).
    pub async fn revoke(&self, id: LeaseId) -> Result<Rev> {
        Ok(self.call(Client::lease_req(Verb::Revoke, id)).await?.rev.unwrap_or(0))
    }

    /// TTL: how long the lease has left, as the leader sees it.
    pub async fn lease_ttl(&self, id: LeaseId) -> Result<LeaseInfo> {
        Ok(info(&self.call(Client::lease_req(Verb::Ttl, id)).await?, id))
    }

    /// The files attached to the lease, in byte order (TTL, paged by path).
    pub async fn lease_files(&self, id: LeaseId) -> Result<Vec<String>> {
        let mut files: Vec<String> = Vec::new();
        loop {
            let after = files.last().cloned().unwrap_or_default();
            let req = Request { path: Some(after), ..Client::lease_req(Verb::Ttl, id) };
            match self.call(req).await {
                Ok(r) => files.push(r.path.unwrap_or_default()),
                Err(e) if e.code() == Some(ErrCode::Range) => return Ok(files),
                Err(e) => return Err(e),
            }
        }
    }

    /// SETL: SET (same revision rule), the file attached to `lease`: it is
    /// deleted when the lease ends. A later plain SET detaches it.
    pub async fn set_leased(&self, path: &str, rev: Rev, body: impl Into<Bytes>, lease: LeaseId) -> Result<Rev> {
        let req = Request {
            path: Some(path.into()),
            rev: Some(rev),
            value: Some(body.into()),
            ..Client::lease_req(Verb::SetLeased, lease)
        };
        Ok(self.call(req).await?.rev.unwrap_or(0))
    }

    /// Every granted lease, by id (LEASES, paged by id).
    pub async fn leases(&self) -> Result<Vec<LeaseInfo>> {
        let mut out: Vec<LeaseInfo> = Vec::new();
        loop {
            let after = out.last().map_or(0, |l| l.id);
            match self.call(Client::lease_req(Verb::Leases, after)).await {
                Ok(r) => out.push(LeaseInfo { remaining: None, ..info(&r, 0) }),
                Err(e) if e.code() == Some(ErrCode::Range) => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Cluster {
    /// GRANT; see [`Client::grant`].
    pub async fn grant(&self, ttl: i64) -> Result<LeaseId> {
        self.run_write(|c| async move { c.grant(ttl).await }).await
    }

    /// KEEPALIVE; see [`Client::keep_alive`]. Sent again on another node if
    /// its connection breaks (a keep-alive twice is one keep-alive).
    pub async fn keep_alive(&self, id: LeaseId) -> Result<i64> {
        self.run_read(|c| async move { c.keep_alive(id).await }).await
    }

    /// REVOKE; see [`Client::revoke`].
    pub async fn revoke(&self, id: LeaseId) -> Result<Rev> {
        self.run_write(|c| async move { c.revoke(id).await }).await
    }

    /// TTL; see [`Client::lease_ttl`].
    pub async fn lease_ttl(&self, id: LeaseId) -> Result<LeaseInfo> {
        self.run_read(|c| async move { c.lease_ttl(id).await }).await
    }

    /// The lease's files; see [`Client::lease_files`].
    pub async fn lease_files(&self, id: LeaseId) -> Result<Vec<String>> {
        self.run_read(|c| async move { c.lease_files(id).await }).await
    }

    /// SETL; see [`Client::set_leased`].
    pub async fn set_leased(&self, path: &str, rev: Rev, body: impl Into<Bytes>, lease: LeaseId) -> Result<Rev> {
        let body: Bytes = body.into();
        self.run_write(|c| {
            let body = body.clone();
            async move { c.set_leased(path, rev, body, lease).await }
        })
        .await
    }

    /// Every granted lease; see [`Client::leases`].
    pub async fn leases(&self) -> Result<Vec<LeaseInfo>> {
        self.run_read(|c| async move { c.leases().await }).await
    }
}

/// A lease held for as long as this value lives: kept alive in the
/// background (every third of its TTL, through any node of the cluster)
/// and revoked when dropped or [`Lease::revoke`]d. If it ends anyway (no
/// keep-alive got through in time: this process was paused, or cut off)
/// [`Lease::lost`] says so; whatever was attached to it is gone by then.
pub struct Lease {
    id: LeaseId,
    ttl: i64,
    cluster: Cluster,
    alive: watch::Receiver<bool>,
    keeper: tokio::task::JoinHandle<()>,
    revoked: bool,
}

impl Lease {
    /// Grants a lease of `ttl` seconds and starts keeping it alive.
    pub async fn grant(cluster: &Cluster, ttl: i64) -> Result<Lease> {
        let id = cluster.grant(ttl).await?;
        let (tx, alive) = watch::channel(true);
        let keeper = tokio::spawn(keep(cluster.clone(), id, ttl, Arc::new(tx)));
        Ok(Lease { id, ttl, cluster: cluster.clone(), alive, keeper, revoked: false })
    }

    /// The lease's id.
    pub fn id(&self) -> LeaseId {
        self.id
    }

    /// Its TTL in seconds.
    pub fn ttl(&self) -> i64 {
        self.ttl
    }

    /// False once the lease has ended (or may have: no keep-alive got
    /// through for a whole TTL).
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Returns when the lease has ended, or may have.
    pub async fn lost(&self) {
        let mut alive = self.alive.clone();
        let _ = alive.wait_for(|a| !*a).await;
    }

    /// Stops keeping the lease alive without revoking it: it ends a TTL
    /// after the last keep-alive, as if this process had died (etcd's
    /// `Session.Orphan`). For handing a lease on, or for tests of expiry.
    pub fn orphan(mut self) {
        self.keeper.abort();
        self.revoked = true;
    }

    /// Ends the lease now, deleting its files; returns that revision.
    pub async fn revoke(mut self) -> Result<Rev> {
        self.keeper.abort();
        self.revoked = true;
        match self.cluster.revoke(self.id).await {
            Err(e) if e.code() == Some(ErrCode::NoEnt) => self.cluster.rev().await,
            other => other,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.keeper.abort();
        if self.revoked {
            return;
        }
        // Best effort: if this does not get through, the lease expires.
        let (cluster, id) = (self.cluster.clone(), self.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = cluster.revoke(id).await;
            });
        }
    }
}

/// Keeps `id` alive until it is found ended or no keep-alive has got
/// through for a whole TTL (counted from the last that did: the lease may
/// have expired meanwhile, and a holder must not act as if it had not).
async fn keep(cluster: Cluster, id: LeaseId, ttl: i64, alive: Arc<watch::Sender<bool>>) {
    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(1));
    let every = ttl / 3;
    let mut last_ok = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let left = ttl.saturating_sub(last_ok.elapsed());
        // The leader's new deadline is a TTL from when it got the keep-alive,
        // which is after it was sent: counting from the sending is safe.
        let sent = tokio::time::Instant::now();
        match tokio::time::timeout(left, cluster.keep_alive(id)).await {
            Ok(Ok(_)) => last_ok = sent,
            Ok(Err(e)) if e.code() == Some(ErrCode::NoEnt) => break,
            Ok(Err(_)) | Err(_) => {}
        }
        if last_ok.elapsed() >= ttl {
            break;
        }
    }
    let _ = alive.send(false);
}
