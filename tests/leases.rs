//! Leases against real doozerd processes: grant, attach, keep alive,
//! revoke and expire; every lease verb's bad input; a lease through a
//! leader's death; many short leases expiring while writes go on.

mod common;

use common::*;
use doozer_client::{ErrCode, Lease};
use doozer_proto::{Request, Verb};
use std::time::{Duration, Instant};

fn code(r: &doozer_proto::Response) -> Option<ErrCode> {
    r.err()
}

#[tokio::test]
async fn a_revoke_deletes_every_file_of_the_lease_in_one_revision() {
    let d = Doozerd::start(&[]);
    let c = client(&d.addr).await;
    let id = c.grant(30).await.unwrap();
    assert!(id > 0);
    c.set_leased("/svc/a", 0, "1", id).await.unwrap();
    c.set_leased("/svc/b", 0, "2", id).await.unwrap();
    c.set("/svc/plain", 0, "3").await.unwrap();
    let info = c.lease_ttl(id).await.unwrap();
    assert_eq!((info.granted, info.files), (30, 2));
    assert!(matches!(info.remaining, Some(29..=30)), "{info:?}");
    assert_eq!(c.lease_files(id).await.unwrap(), ["/svc/a", "/svc/b"]);
    assert_eq!(c.keep_alive(id).await.unwrap(), 30);

    // An old client's WAIT sees ordinary deletes, both at the revoke's revision.
    let from = c.rev().await.unwrap() + 1;
    let rev = c.revoke(id).await.unwrap();
    let first = c.wait("/svc/*", from).await.unwrap();
    let second = c.wait("/svc/*", first.rev + 1).await.unwrap();
    assert!(first.is_del() && second.is_del());
    assert_eq!((first.rev, second.rev), (rev - 1, rev), "one entry, consecutive revisions");
    assert_eq!(c.get_file("/svc/a", None).await.unwrap(), None);
    assert_eq!(c.get("/svc/plain", None).await.unwrap().0, "3");
    let gone = c.keep_alive(id).await.unwrap_err();
    assert_eq!(gone.code(), Some(ErrCode::NoEnt), "{gone}");
}

#[tokio::test]
async fn a_lease_not_kept_alive_expires_and_takes_its_files_within_ttl_and_a_second() {
    let d = Doozerd::start(&[]);
    let c = client(&d.addr).await;
    let start = Instant::now();
    let id = c.grant(2).await.unwrap();
    c.set_leased("/master", 0, "me", id).await.unwrap();
    eventually("the leased file to go", || async { c.get_file("/master", None).await.unwrap().is_none() }).await;
    let took = start.elapsed();
    assert!(took >= Duration::from_secs(2), "expired early: {took:?}");
    assert!(took < Duration::from_secs(3), "expired late: {took:?}");
    assert_eq!(c.lease_ttl(id).await.unwrap_err().code(), Some(ErrCode::NoEnt));
    // A plain SET detaches: that file outlives its lease.
    let id = c.grant(1).await.unwrap();
    c.set_leased("/kept", 0, "x", id).await.unwrap();
    c.set("/kept", -1, "y").await.unwrap();
    eventually("the lease to end", || async { c.lease_ttl(id).await.is_err() }).await;
    assert_eq!(c.get("/kept", None).await.unwrap().0, "y");
}

#[tokio::test]
async fn a_held_lease_outlives_its_ttl_and_goes_when_dropped() {
    let d = Doozerd::start(&[]);
    let cluster = doozer_client::Cluster::connect(&d.uri()).await.unwrap();
    let lease = Lease::grant(&cluster, 1).await.unwrap();
    cluster.set_leased("/held", 0, "x", lease.id()).await.unwrap();
    // Three TTLs later it is still there: the keep-alives get through.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(lease.is_alive());
    assert!(cluster.get_file("/held", None).await.unwrap().is_some());
    drop(lease);
    eventually("the dropped lease's file to go", || async { cluster.get_file("/held", None).await.unwrap().is_none() })
        .await;
}

#[tokio::test]
async fn bad_lease_requests_get_errors_and_the_node_goes_on() {
    let d = Doozerd::start(&[]);
    let mut raw = Raw::connect(&d.addr).await;
    let grant = |tag, ttl: Option<i64>, lease: Option<i64>| Request { ttl, lease, ..req(Verb::Grant, tag) };
    for (tag, ttl) in [(1, 0), (2, -5), (3, 86_401), (4, i64::MAX)] {
        let r = raw.call(grant(tag, Some(ttl), None)).await;
        assert_eq!(code(&r), Some(ErrCode::Other), "ttl {ttl}");
        assert!(r.err_detail.unwrap_or_default().contains("1 to 86400 seconds"));
    }
    assert_eq!(code(&raw.call(grant(5, None, None)).await), Some(ErrCode::MissingArg));
    assert_eq!(code(&raw.call(grant(6, Some(5), Some(-1))).await), Some(ErrCode::Other));
    assert_eq!(code(&raw.call(grant(7, Some(5), Some(0))).await), Some(ErrCode::Other));
    let ok = raw.call(grant(8, Some(5), Some(77))).await;
    assert_eq!((code(&ok), ok.lease, ok.ttl), (None, Some(77), Some(5)));
    let taken = raw.call(grant(9, Some(5), Some(77))).await;
    assert_eq!(code(&taken), Some(ErrCode::Other));
    assert!(taken.err_detail.unwrap_or_default().contains("granted already"));
    for verb in [Verb::KeepAlive, Verb::Revoke, Verb::Ttl] {
        assert_eq!(code(&raw.call(req(verb, 10)).await), Some(ErrCode::MissingArg), "{verb:?}");
        let unknown = raw.call(Request { lease: Some(12345), ..req(verb, 11) }).await;
        assert_eq!(code(&unknown), Some(ErrCode::NoEnt), "{verb:?}");
        let negative = raw.call(Request { lease: Some(-3), ..req(verb, 12) }).await;
        assert_eq!(code(&negative), Some(ErrCode::Other), "{verb:?}");
    }
    let setl = |tag, lease: Option<i64>, p: &str| Request {
        lease,
        verb: Some(Verb::SetLeased as i32),
        ..set(tag, p, 0, b"v")
    };
    assert_eq!(code(&raw.call(setl(13, None, "/a")).await), Some(ErrCode::MissingArg));
    assert_eq!(code(&raw.call(setl(14, Some(999), "/a")).await), Some(ErrCode::NoEnt));
    assert_eq!(code(&raw.call(setl(15, Some(77), "bad path")).await), Some(ErrCode::BadPath));
    let big = Request { value: Some(vec![0u8; (1 << 20) + 1].into()), ..setl(16, Some(77), "/big") };
    assert_eq!(code(&raw.call(big).await), Some(ErrCode::Other));
    let ok = raw.call(setl(17, Some(77), "/a")).await;
    assert_eq!(code(&ok), None);
    // TTL paging by path, and RANGE past the last file.
    let ttl = |tag, p: &str| Request { lease: Some(77), path: Some(p.into()), ..req(Verb::Ttl, tag) };
    let first = raw.call(ttl(18, "")).await;
    assert_eq!((first.path.as_deref(), first.len), (Some("/a"), Some(1)));
    assert_eq!(code(&raw.call(ttl(19, "/a")).await), Some(ErrCode::Range));
    // LEASES from the start, then past the last.
    let list = raw.call(req(Verb::Leases, 20)).await;
    assert_eq!((list.lease, list.granted, list.len), (Some(77), Some(5), Some(1)));
    let past = raw.call(Request { lease: Some(77), ..req(Verb::Leases, 21) }).await;
    assert_eq!(code(&past), Some(ErrCode::Range));
    // Still serving.
    assert_eq!(code(&raw.call(req(Verb::Rev, 22)).await), None);
}

#[tokio::test]
async fn a_read_only_client_may_read_leases_but_not_grant() {
    let d = Doozerd::start_env(&[], &[("DOOZER_RWSECRET", "rw"), ("DOOZER_ROSECRET", "ro")]);
    let mut raw = Raw::connect(&d.addr).await;
    let access = Request { value: Some(bytes::Bytes::from_static(b"ro")), ..req(Verb::Access, 1) };
    assert_eq!(code(&raw.call(access).await), None);
    let grant = raw.call(Request { ttl: Some(5), ..req(Verb::Grant, 2) }).await;
    assert_eq!(code(&grant), Some(ErrCode::Other));
    assert_eq!(grant.err_detail.as_deref(), Some("permission denied"));
    assert_eq!(code(&raw.call(req(Verb::Leases, 3)).await), Some(ErrCode::Range));
}

#[tokio::test]
async fn a_lease_lives_through_its_leaders_death_and_keep_alives_from_any_node() {
    let mut nodes = cluster(3, &[]).await;
    let leader = leader_index(&nodes, &[0, 1, 2]).await;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let (a, b) = (client(&nodes[others[0]].addr).await, client(&nodes[others[1]].addr).await);
    // Granted through one follower, kept alive through the other.
    let id = a.grant(4).await.unwrap();
    a.set_leased("/db/master", 0, "a", id).await.unwrap();
    assert_eq!(b.keep_alive(id).await.unwrap(), 4);
    nodes[leader].kill();
    // Kept alive through the failover: never lost, though the dead leader
    // held its deadline.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        if b.keep_alive(id).await.is_err() {
            // The election is under way; the lease must still be there after it.
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert!(a.get_file("/db/master", None).await.unwrap().is_some(), "expired early");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(b.get_file("/db/master", None).await.unwrap().is_some());
    // Left alone it expires, on both live nodes.
    let stop = Instant::now();
    for c in [&a, &b] {
        eventually("the lease to expire", || async { c.get_file("/db/master", None).await.unwrap().is_none() }).await;
    }
    assert!(stop.elapsed() < Duration::from_secs(6), "took {:?}", stop.elapsed());
}

#[tokio::test]
async fn a_thousand_short_leases_expire_while_writes_go_on() {
    let d = Doozerd::start(&[]);
    let c = client(&d.addr).await;
    let grants = (0..1000).map(|i| {
        let c = c.clone();
        async move {
            let id = c.grant(1).await.unwrap();
            c.set_leased(&format!("/eph/{i}"), 0, "x", id).await.unwrap();
        }
    });
    futures_util::future::join_all(grants).await;
    // Writes go on while they expire; none waits long.
    let start = Instant::now();
    let mut slowest = Duration::ZERO;
    while c.getdir_all("/eph", None).await.map_or(0, |n| n.len()) > 0 {
        assert!(start.elapsed() < Duration::from_secs(20), "the leases did not expire");
        let t = Instant::now();
        c.set("/busy", -1, "x").await.unwrap();
        slowest = slowest.max(t.elapsed());
    }
    assert!(c.leases().await.unwrap().is_empty());
    assert!(slowest < Duration::from_secs(2), "a write waited {slowest:?} behind the expiries");
}

/// A `doozer` command running in the background, killed when dropped.
struct Background(std::process::Child);

impl Background {
    fn start(uri: &str, args: &[&str]) -> Background {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_doozer"))
            .args(args)
            .env("DOOZER_URI", uri)
            .env_remove("DOOZER_BOOT_URI")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn doozer");
        Background(child)
    }

    fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill").args(["-s", sig, &self.0.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    /// Waits (up to the deadline) for the process to exit; its code and stderr.
    async fn exit(mut self) -> (Option<i32>, String) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return (status.code(), err);
            }
            assert!(start.elapsed() < DEADLINE, "doozer did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The one contender file in `dir` on the node at `addr`, if any: (path, rev, body).
async fn contenders(addr: &str, dir: &str) -> Vec<(String, i64, String)> {
    let c = client(addr).await;
    let names = c.getdir_all(dir, None).await.unwrap_or_default();
    let mut out = Vec::new();
    for n in names {
        let path = format!("{dir}/{n}");
        if let Some(f) = c.get_file(&path, None).await.unwrap() {
            out.push((path, f.rev, String::from_utf8_lossy(&f.body).into_owned()));
        }
    }
    out
}

/// The fenced write of the election example: `/res` holds `TOKEN VALUE`;
/// a write with a lower token than the stored one is refused.
async fn fenced_write(c: &doozer_client::Cluster, token: i64, value: &str) -> bool {
    loop {
        let (stored, rev) = match c.get_file("/res", None).await.unwrap() {
            Some(f) => {
                let text = String::from_utf8_lossy(&f.body).into_owned();
                (text.split(' ').next().and_then(|t| t.parse::<i64>().ok()).unwrap_or(0), f.rev)
            }
            None => (0, 0),
        };
        if stored > token {
            return false;
        }
        match c.set("/res", rev, format!("{token} {value}")).await {
            Ok(_) => return true,
            Err(e) if e.code() == Some(ErrCode::RevMismatch) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn a_holder_killed_with_sigkill_loses_its_master_file_within_ttl_and_a_second_on_every_node() {
    let nodes = cluster(3, &[]).await;
    let uri = format!("doozer:?ca={}&ca={}&ca={}", nodes[0].addr, nodes[1].addr, nodes[2].addr);
    let holder = Background::start(&uri, &["-ttl", "2", "elect", "/election/db", "host-a"]);
    eventually("the holder to be elected", || async { contenders(&nodes[0].addr, "/election/db").await.len() == 1 })
        .await;
    let (path, _, body) = contenders(&nodes[0].addr, "/election/db").await.remove(0);
    assert_eq!(body, "host-a");
    holder.signal("KILL");
    let killed = Instant::now();
    for n in &nodes {
        let c = client(&n.addr).await;
        eventually("the master file to go", || async { c.get_file(&path, None).await.unwrap().is_none() }).await;
    }
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(3), "gone only after {took:?} (TTL 2 s)");
}

#[tokio::test]
async fn a_holder_paused_past_its_ttl_loses_the_election_and_its_fenced_writes_are_refused() {
    let d = Doozerd::start(&[]);
    let cluster = doozer_client::Cluster::connect(&d.uri()).await.unwrap();
    let paused = Background::start(&d.uri(), &["-ttl", "2", "elect", "/election/m", "a"]);
    eventually("a to lead", || async { contenders(&d.addr, "/election/m").await.len() == 1 }).await;
    let (_, token_a, _) = contenders(&d.addr, "/election/m").await.remove(0);
    assert!(fenced_write(&cluster, token_a, "a").await);
    paused.signal("STOP");
    // Another campaigns meanwhile and wins once a's lease runs out.
    let b = doozer_client::Election::new(&cluster, "/election/m").campaign("b", 5).await.unwrap();
    assert!(b.token() > token_a, "tokens only grow: {} then {}", token_a, b.token());
    assert!(fenced_write(&cluster, b.token(), "b").await);
    // a wakes believing it leads: its writes are refused by the token.
    paused.signal("CONT");
    assert!(!fenced_write(&cluster, token_a, "a").await, "a stale holder's write was accepted");
    let (code, err) = paused.exit().await;
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("lost the election"), "{err}");
    let leader = doozer_client::Election::new(&cluster, "/election/m").leader().await.unwrap().unwrap();
    assert_eq!((leader.value.as_ref(), leader.token), (&b"b"[..], b.token()));
}

#[tokio::test]
async fn a_lock_serves_waiters_in_the_order_they_came_and_each_holder_a_higher_token() {
    let d = Doozerd::start(&[]);
    let cluster = doozer_client::Cluster::connect(&d.uri()).await.unwrap();
    let lock = doozer_client::Lock::new(&cluster, "/locks/x");
    let first = lock.acquire(10).await.unwrap();
    let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for i in 0..3 {
        let (mine, tx) = (lock.clone(), tx.clone());
        waiters.push(tokio::spawn(async move {
            let held = mine.acquire(10).await.unwrap();
            tx.send((i, held.token())).unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            held.release().await.unwrap();
        }));
        // Each joins before the next starts.
        eventually("the waiter to queue", || async { lock.queued().await.unwrap() == i + 2 }).await;
    }
    assert!(order.try_recv().is_err(), "a waiter got a held lock");
    let mut last = first.token();
    first.release().await.unwrap();
    for expected in 0..3 {
        let (i, token) = order.recv().await.unwrap();
        assert_eq!(i, expected, "served out of order");
        assert!(token > last);
        last = token;
    }
    for w in waiters {
        w.await.unwrap();
    }
}

#[tokio::test]
async fn doozer_lock_runs_the_command_with_its_token_and_one_at_a_time() {
    let d = Doozerd::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let script = format!(
        "echo start $DOOZER_LOCK_TOKEN >> {0}; sleep 0.5; echo end $DOOZER_LOCK_TOKEN >> {0}; exit 3",
        log.display()
    );
    let a = Background::start(&d.uri(), &["lock", "/locks/job", "--", "sh", "-c", &script]);
    let b = Background::start(&d.uri(), &["lock", "/locks/job", "--", "sh", "-c", &script]);
    assert_eq!(a.exit().await.0, Some(3), "the command's status");
    assert_eq!(b.exit().await.0, Some(3));
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{text}");
    // Never interleaved: each start is followed by its own end.
    assert_eq!(lines[0].replace("start", "end"), lines[1], "{text}");
    assert_eq!(lines[2].replace("start", "end"), lines[3], "{text}");
    let token = |l: &str| l.split(' ').nth(1).unwrap().parse::<i64>().unwrap();
    assert!(token(lines[2]) > token(lines[0]), "{text}");
    assert!(contenders(&d.addr, "/locks/job").await.is_empty(), "released");
}

#[tokio::test]
async fn an_observer_sees_each_leader_in_turn() {
    let d = Doozerd::start(&[]);
    let cluster = doozer_client::Cluster::connect(&d.uri()).await.unwrap();
    let election = doozer_client::Election::new(&cluster, "/election/o");
    let mut observer = election.observe().await.unwrap();
    assert_eq!(observer.next().await.unwrap(), None);
    let a = election.campaign("a", 10).await.unwrap();
    let seen = observer.next().await.unwrap().unwrap();
    assert_eq!((seen.value.as_ref(), seen.token), (&b"a"[..], a.token()));
    let b = tokio::spawn({
        let election = election.clone();
        async move { election.campaign("b", 10).await.unwrap() }
    });
    eventually("b to join", || async { contenders(&d.addr, "/election/o").await.len() == 2 }).await;
    a.release().await.unwrap();
    let seen = observer.next().await.unwrap().unwrap();
    assert_eq!(seen.value.as_ref(), b"b");
    let b = b.await.unwrap();
    assert_eq!(seen.token, b.token());
    b.release().await.unwrap();
    assert_eq!(observer.next().await.unwrap(), None);
}
