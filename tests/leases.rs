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
