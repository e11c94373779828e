//! Coordination recipes over leases: [`Election`], [`Lock`] and
//! [`Registration`].
//!
//! An election and a lock are the same queue: each contender sets a file of
//! its own, `DIR/<lease id in hex>`, once (create-only, under its lease), and
//! the file's revision is its place. The lowest revision holds; each other
//! contender waits for the deletion of the one just ahead of it, so a
//! release wakes one waiter, not all (no thundering herd), and waiters are
//! served in the order they came. A holder that dies or pauses past its
//! TTL loses its lease, its file goes, and the next in line holds.
//!
//! **Fencing.** Holding is decided by the cluster, but a holder paused
//! after it won may wake believing it still holds. Its [`token`] (the
//! revision of its claim) only grows from holder to holder: a resource that
//! remembers the highest token it has accepted and refuses lower ones keeps
//! a stale holder out. With Doozer as the resource, keep the token in the
//! protected file's value and write it with SET at the revision read, after
//! checking that the stored token is not higher (see the `election`
//! example).
//!
//! [`token`]: Held::token

use crate::{Cluster, ErrCode, Error, Lease, Result, Rev};
use bytes::Bytes;

/// A contender's file in a queue directory, as read at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    path: String,
    rev: Rev,
    body: Bytes,
}

/// The contenders in `dir` at `rev`, in queue order (lowest revision first).
async fn entries(c: &Cluster, dir: &str, rev: Rev) -> Result<Vec<Entry>> {
    let names = match c.getdir_all(dir, Some(rev)).await {
        Ok(n) => n,
        Err(e) if e.code() == Some(ErrCode::NoEnt) => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        let path = format!("{dir}/{name}");
        if let Some(f) = c.get_file(&path, Some(rev)).await? {
            out.push(Entry { path, rev: f.rev, body: f.body });
        }
    }
    out.sort_by_key(|e| e.rev);
    Ok(out)
}

/// A place taken in a queue: held until the lease ends.
struct Place {
    lease: Lease,
    path: String,
    rev: Rev,
}

/// Joins the queue in `dir` with `value` under a new lease of `ttl` seconds.
async fn join(c: &Cluster, dir: &str, value: Bytes, ttl: i64) -> Result<Place> {
    let lease = Lease::grant(c, ttl).await?;
    let path = format!("{dir}/{:016x}", lease.id());
    let rev = c.set_leased(&path, 0, value, lease.id()).await?;
    Ok(Place { lease, path, rev })
}

/// Waits until `place` is first in its queue; an error if its lease ends first.
async fn wait_turn(c: &Cluster, dir: &str, place: &Place) -> Result<()> {
    loop {
        let now = c.rev().await?;
        let queue = entries(c, dir, now).await?;
        if !queue.iter().any(|e| e.path == place.path) {
            return Err(lost(&place.path));
        }
        let Some(ahead) = queue.iter().rev().find(|e| e.rev < place.rev) else { return Ok(()) };
        // The one just ahead goes (released, or its lease ended), or this
        // lease ends: whichever first.
        tokio::select! {
            r = c.wait(&ahead.path, now + 1) => match r {
                Ok(_) => {}
                // The history moved past `now`: look again.
                Err(e) if e.code() == Some(ErrCode::TooLate) => {}
                Err(e) => return Err(e),
            },
            _ = place.lease.lost() => return Err(lost(&place.path)),
        }
    }
}

fn lost(path: &str) -> Error {
    Error::Server { code: ErrCode::NoEnt, detail: format!("{path} is gone: its lease ended"), indeterminate: false }
}

/// Holding an election or a lock, until [`Held::release`], the value is
/// dropped, or the lease is lost ([`Held::lost`]).
pub struct Held {
    place: Place,
}

impl Held {
    /// The fencing token: the revision of this holder's claim. Every later
    /// holder's is higher.
    pub fn token(&self) -> Rev {
        self.place.rev
    }

    /// The file that holds the claim.
    pub fn path(&self) -> &str {
        &self.place.path
    }

    /// The lease the claim lives under.
    pub fn lease(&self) -> &Lease {
        &self.place.lease
    }

    /// Returns when the claim is lost: the lease ended, or may have (no
    /// keep-alive got through for a TTL). Stop acting as holder then.
    pub async fn lost(&self) {
        self.place.lease.lost().await
    }

    /// Stops keeping the claim's lease alive without giving it up: the next
    /// in line holds once the lease runs out, as if this process had died.
    pub fn orphan(self) {
        self.place.lease.orphan()
    }

    /// Gives the claim up now (the next in line holds); returns the revision
    /// of the claim's deletion.
    pub async fn release(self) -> Result<Rev> {
        self.place.lease.revoke().await
    }
}

/// A leader election among processes, in directory `dir` (`/election/db`).
/// See the module docs for how it works and for fencing.
#[derive(Clone)]
pub struct Election {
    cluster: Cluster,
    dir: String,
}

/// Who leads an election, as read at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leader {
    /// What the leader campaigned with.
    pub value: Bytes,
    /// Its fencing token (the revision of its claim).
    pub token: Rev,
}

impl Election {
    /// The election in `dir`.
    pub fn new(cluster: &Cluster, dir: &str) -> Election {
        Election { cluster: cluster.clone(), dir: dir.trim_end_matches('/').to_string() }
    }

    /// Campaigns with `value` under a lease of `ttl` seconds; returns once
    /// this process leads. An error if the lease ends while it waits.
    pub async fn campaign(&self, value: impl Into<Bytes>, ttl: i64) -> Result<Held> {
        let place = join(&self.cluster, &self.dir, value.into(), ttl).await?;
        wait_turn(&self.cluster, &self.dir, &place).await?;
        Ok(Held { place })
    }

    /// The leader now, if any.
    pub async fn leader(&self) -> Result<Option<Leader>> {
        let now = self.cluster.rev().await?;
        Ok(self.leader_at(now).await?.1)
    }

    async fn leader_at(&self, rev: Rev) -> Result<(Rev, Option<Leader>)> {
        let head = entries(&self.cluster, &self.dir, rev).await?.into_iter().next();
        Ok((rev, head.map(|e| Leader { value: e.body, token: e.rev })))
    }

    /// Follows the leadership: the leader now, then each change (a new
    /// leader, or none), in order.
    pub async fn observe(&self) -> Result<Observer> {
        let now = self.cluster.rev().await?;
        Ok(Observer { election: self.clone(), rev: now, last: None, started: false })
    }
}

/// The leaders of an election, one change at a time ([`Election::observe`]).
pub struct Observer {
    election: Election,
    rev: Rev,
    last: Option<Leader>,
    started: bool,
}

impl Observer {
    /// The next leadership: the first call returns the current one.
    pub async fn next(&mut self) -> Result<Option<Leader>> {
        let glob = format!("{}/*", self.election.dir);
        loop {
            if self.started {
                match self.election.cluster.wait(&glob, self.rev + 1).await {
                    Ok(e) => self.rev = e.rev,
                    Err(e) if e.code() == Some(ErrCode::TooLate) => self.rev = self.election.cluster.rev().await?,
                    Err(e) => return Err(e),
                }
            }
            let (_, leader) = self.election.leader_at(self.rev).await?;
            if !self.started || leader != self.last {
                self.started = true;
                self.last = leader.clone();
                return Ok(leader);
            }
        }
    }
}

/// A mutual-exclusion lock in directory `dir` (`/locks/backup`): fair
/// (first come, first served) and fenced (see the module docs).
#[derive(Clone)]
pub struct Lock {
    cluster: Cluster,
    dir: String,
}

impl Lock {
    /// The lock in `dir`.
    pub fn new(cluster: &Cluster, dir: &str) -> Lock {
        Lock { cluster: cluster.clone(), dir: dir.trim_end_matches('/').to_string() }
    }

    /// Waits for the lock, held under a lease of `ttl` seconds.
    pub async fn acquire(&self, ttl: i64) -> Result<Held> {
        let place = join(&self.cluster, &self.dir, Bytes::new(), ttl).await?;
        wait_turn(&self.cluster, &self.dir, &place).await?;
        Ok(Held { place })
    }

    /// How many hold or wait for the lock now.
    pub async fn queued(&self) -> Result<usize> {
        let now = self.cluster.rev().await?;
        Ok(entries(&self.cluster, &self.dir, now).await?.len())
    }
}

/// A service instance's entry in a directory that clients read and watch
/// (`/services/web/<instance>` = its address), for as long as the instance
/// lives: the name-service case. The entry goes when the instance stops
/// keeping its lease alive (it died, or was cut off past the TTL).
pub struct Registration {
    cluster: Cluster,
    lease: Lease,
    path: String,
}

impl Registration {
    /// Sets `dir/name` to `value` under a lease of `ttl` seconds, replacing
    /// what an earlier run of the same instance left.
    pub async fn register(
        cluster: &Cluster,
        dir: &str,
        name: &str,
        value: impl Into<Bytes>,
        ttl: i64,
    ) -> Result<Registration> {
        let lease = Lease::grant(cluster, ttl).await?;
        let path = format!("{}/{name}", dir.trim_end_matches('/'));
        cluster.set_leased(&path, -1, value, lease.id()).await?;
        Ok(Registration { cluster: cluster.clone(), lease, path })
    }

    /// The entry's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Changes the entry's value (it stays under the lease).
    pub async fn update(&self, value: impl Into<Bytes>) -> Result<Rev> {
        self.cluster.set_leased(&self.path, -1, value, self.lease.id()).await
    }

    /// Returns when the entry is gone or may be (the lease was lost).
    pub async fn lost(&self) {
        self.lease.lost().await
    }

    /// Removes the entry now.
    pub async fn deregister(self) -> Result<Rev> {
        self.lease.revoke().await
    }

    /// The instances registered in `dir` now: (name, value).
    pub async fn instances(cluster: &Cluster, dir: &str) -> Result<Vec<(String, Bytes)>> {
        let dir = dir.trim_end_matches('/');
        let now = cluster.rev().await?;
        Ok(entries(cluster, dir, now)
            .await?
            .into_iter()
            .map(|e| (e.path.rsplit('/').next().unwrap_or_default().to_string(), e.body))
            .collect())
    }
}
