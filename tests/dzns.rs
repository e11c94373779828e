//! DzNS, as the original clients use it: every member listed under
//! `/ctl/ns/<cluster>/<id>`, `cn=` lookups through a boot URI, `doozerd -b`
//! booting a cluster through another one, and `writable` once a node holds a
//! `/ctl/cal` slot.

mod common;

use common::{client, doozer, eventually, Doozerd};

/// `(id, addr)` under `/ctl/ns/<cluster>` on the node at `addr`.
async fn ns(addr: &str, cluster: &str) -> Vec<(String, String)> {
    match doozer_client::Client::connect(addr).await {
        Ok(c) => c.ns_lookup(cluster, None).await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

async fn writable(addr: &str, id: &str) -> Option<String> {
    let f = client(addr).await.get_file(&format!("/ctl/node/{id}/writable"), None).await.unwrap();
    f.map(|f| String::from_utf8_lossy(&f.body).into_owned())
}

async fn id_of(addr: &str) -> String {
    String::from_utf8(client(addr).await.self_id().await.unwrap().to_vec()).unwrap()
}

#[tokio::test]
async fn every_member_is_listed_and_writable_comes_with_a_slot() {
    let nodes = common::cluster(3, &[]).await;
    let seed = nodes[0].addr.clone();
    let mut want: Vec<(String, String)> = Vec::new();
    for n in &nodes {
        want.push((id_of(&n.addr).await, n.addr.clone()));
    }
    want.sort();
    eventually("three /ctl/ns entries", || async { ns(&seed, "local").await == want }).await;
    for (id, _) in &want {
        eventually("writable", || async { writable(&seed, id).await.as_deref() == Some("true") }).await;
    }
    // A fourth node finds every slot taken: it serves, it is listed, but it is not writable.
    let fourth = Doozerd::start(&["-a", &seed]);
    let id4 = id_of(&fourth.addr).await;
    eventually("the fourth node in /ctl/ns", || async { ns(&seed, "local").await.len() == 4 }).await;
    eventually("the fourth node registered", || async {
        client(&seed).await.get_file(&format!("/ctl/node/{id4}/role"), None).await.unwrap().is_some()
    })
    .await;
    assert_eq!(writable(&seed, &id4).await, None, "no slot, no writable");

    // The original client's lookup: cn= with a boot URI (here the cluster is its own DzNS).
    let named = "doozer:?cn=local";
    let boot = format!("doozer:?ca={}", nodes[1].addr);
    let out = doozer(named, &["-b", &boot, "get", "/ctl/name"], b"");
    assert_eq!((out.out().as_str(), out.code), ("local", 0), "{}", out.stderr);
    let out = doozer(named, &["get", "/ctl/name"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("-b"), "{}", out.stderr);
    let c = doozer_client::Cluster::connect_with(
        named,
        doozer_client::Options { boot: Some(boot.clone()), ..Default::default() },
    )
    .await
    .unwrap();
    assert_eq!(c.addrs().len(), 4);
    assert_eq!(c.get("/ctl/name", None).await.unwrap().0, "local");
}

#[tokio::test]
async fn a_removed_member_leaves_ns() {
    // A short -timeout so the removal comes quickly; removal itself, under the
    // default timeout, is covered in tests/cluster.rs. Here: it also clears /ctl/ns.
    let mut nodes = common::cluster(3, &["-timeout", "2"]).await;
    let seed = nodes[0].addr.clone();
    let gone = id_of(&nodes[2].addr).await;
    eventually("three entries", || async { ns(&seed, "local").await.len() == 3 }).await;
    nodes[2].kill();
    eventually("the dead member's entry deleted", || async {
        let listed = ns(&seed, "local").await;
        listed.len() == 2 && listed.iter().all(|(id, _)| *id != gone)
    })
    .await;
}

/// Starts a node of cluster `name` that boots through the DzNS at `dzns`.
fn booted(name: &str, dzns: &str) -> std::thread::JoinHandle<Doozerd> {
    let args = ["-c".to_string(), name.to_string(), "-b".to_string(), format!("doozer:?ca={dzns}")];
    std::thread::spawn(move || Doozerd::start(&args.iter().map(String::as_str).collect::<Vec<_>>()))
}

#[tokio::test]
async fn doozerd_boots_a_cluster_through_a_dzns() {
    let dzns = Doozerd::start(&["-c", "dzns"]);
    // Three nodes race to start "app": one wins, the other two attach to it.
    let starting: Vec<_> = (0..3).map(|_| booted("app", &dzns.addr)).collect();
    let app: Vec<Doozerd> = starting.into_iter().map(|t| t.join().unwrap()).collect();
    for n in &app {
        let (name, _) = client(&n.addr).await.get("/ctl/name", None).await.unwrap();
        assert_eq!(name, "app");
    }
    common::voters_are(&app[0].addr, 3).await;
    let mut addrs: Vec<String> = app.iter().map(|n| n.addr.clone()).collect();
    addrs.sort();
    eventually("the DzNS lists all three", || async {
        let mut listed: Vec<String> = ns(&dzns.addr, "app").await.into_iter().map(|(_, a)| a).collect();
        listed.sort();
        listed == addrs
    })
    .await;
    let winner = client(&dzns.addr).await.get_file("/ctl/boot/app", None).await.unwrap().expect("/ctl/boot/app");
    let winner = String::from_utf8_lossy(&winner.body).into_owned();
    assert!(ns(&app[0].addr, "app").await.iter().any(|(id, _)| *id == winner), "the winner is a member");
    // The DzNS's own members are listed under its own name, apart.
    assert_eq!(ns(&dzns.addr, "dzns").await.len(), 1);

    // A client finds the cluster by name; a write through it reaches every member.
    let uri = "doozer:?cn=app";
    let boot = format!("doozer:?ca={}", dzns.addr);
    let out = doozer(uri, &["-b", &boot, "set", "/hello", "0"], b"world");
    assert_eq!(out.code, 0, "{}", out.stderr);
    for n in &app {
        eventually("the write everywhere", || async {
            client(&n.addr).await.get("/hello", None).await.unwrap().0 == "world"
        })
        .await;
    }
    // A fourth node booted later attaches through the listing.
    let late = booted("app", &dzns.addr).join().unwrap();
    let (name, _) = client(&late.addr).await.get("/ctl/name", None).await.unwrap();
    assert_eq!(name, "app");
    eventually("four listed", || async { ns(&dzns.addr, "app").await.len() == 4 }).await;
}
