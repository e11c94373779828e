//! The HTTP side through real HTTP: the JSON API (every endpoint and its
//! errors), the watch stream, the page's WebSocket, metrics and health.

mod common;

use base64::Engine;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

fn web_node(args: &[&str]) -> Doozerd {
    web_node_env(args, &[])
}

fn web_node_env(args: &[&str], env: &[(&str, &str)]) -> Doozerd {
    let mut all = vec!["-w", "127.0.0.1:0"];
    all.extend_from_slice(args);
    Doozerd::start_env(&all, env)
}

fn base(d: &Doozerd) -> String {
    format!("http://{}", d.web.as_deref().expect("the node serves HTTP"))
}

/// Status and JSON body of a request.
async fn call(req: reqwest::RequestBuilder) -> (u16, Value) {
    let res = req.send().await.expect("HTTP request");
    let status = res.status().as_u16();
    let text = res.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

#[tokio::test]
async fn files_api_reads_writes_and_refuses_with_protocol_errors() {
    let d = web_node(&[]);
    let (web, http, c) = (base(&d), reqwest::Client::new(), client(&d.addr).await);
    let file = |p: &str| format!("{web}/_api/files{p}");

    let (s, v) = call(http.get(format!("{web}/_api/rev"))).await;
    assert_eq!((s, v["rev"].as_i64()), (200, Some(c.rev().await.unwrap())));

    // SET with CAS: create, then conflict, then update at the right revision.
    let (s, v) = call(http.put(file("/message?rev=0")).body("hello, world\n")).await;
    assert_eq!(s, 200, "{v}");
    let r1 = v["rev"].as_i64().unwrap();
    assert_eq!(c.get("/message", None).await.unwrap(), (bytes::Bytes::from("hello, world\n"), r1));
    let (s, v) = call(http.put(file("/message?rev=0")).body("other")).await;
    assert_eq!((s, v["error"].as_str()), (409, Some("REV_MISMATCH")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains(&format!("revision {r1}")), "{v}");
    let (s, v) = call(http.put(file(&format!("/message?rev={r1}"))).body("second")).await;
    assert_eq!(s, 200, "{v}");
    let r2 = v["rev"].as_i64().unwrap();

    // Reads: now, at a past revision, raw, as base64; a file that did not exist yet.
    let (s, v) = call(http.get(file("/message"))).await;
    assert_eq!(
        (s, &v),
        (200, &json!({"path": "/message", "kind": "file", "rev": r2, "at": r2, "len": 6, "body": "second"}))
    );
    let (_, v) = call(http.get(file(&format!("/message?rev={r1}")))).await;
    assert_eq!((v["body"].as_str(), v["rev"].as_i64()), (Some("hello, world\n"), Some(r1)));
    let raw = http.get(file("/message?raw")).send().await.unwrap();
    assert_eq!(raw.headers()["x-doozer-rev"], r2.to_string().as_str());
    assert_eq!(raw.bytes().await.unwrap(), "second");
    let (_, v) = call(http.get(file("/message?encoding=base64"))).await;
    assert_eq!(v["body_base64"], "c2Vjb25k");
    let (s, v) = call(http.get(file(&format!("/message?rev={}", r1 - 1)))).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("NOENT")));

    // Binary bodies round-trip as base64.
    let blob = vec![0u8, 255, 1, 128, b'\n'];
    let (s, _) = call(http.put(file("/bin/blob?rev=-1")).body(blob.clone())).await;
    assert_eq!(s, 200);
    let (_, v) = call(http.get(file("/bin/blob"))).await;
    let decoded = base64::engine::general_purpose::STANDARD.decode(v["body_base64"].as_str().unwrap()).unwrap();
    assert_eq!((decoded, v.get("body")), (blob.clone(), None));
    assert_eq!(c.get("/bin/blob", None).await.unwrap().0, blob);

    // Directories list their entries; the root too.
    let (s, v) = call(http.get(file("/bin"))).await;
    assert_eq!(s, 200);
    assert_eq!(v["kind"], "dir");
    assert_eq!(v["entries"], json!([{"name": "blob", "kind": "file", "rev": v["at"], "len": 5}]));
    let (_, v) = call(http.get(format!("{web}/_api/files/"))).await;
    let names: Vec<&str> = v["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bin", "ctl", "message"]);

    // Every refusal carries the protocol's error name and a fitting status.
    let cases = [
        (http.get(file("/nothing")), 404, "NOENT"),
        (http.put(file("/message")).body("x"), 400, "MISSING_ARG"),
        (http.put(file("/bad_name?rev=0")).body("x"), 400, "BAD_PATH"),
        (http.put(file("/ctl?rev=-1")).body("x"), 409, "ISDIR"),
        (http.put(file("/message/below?rev=-1")).body("x"), 409, "NOTDIR"),
        (http.get(file("/message?rev=abc")), 400, "OTHER"),
        (http.delete(file("/message?rev=1")), 409, "REV_MISMATCH"),
        (http.get(format!("{web}/_api/walk?glob=/a_b")), 400, "OTHER"),
        (http.put(file("/big?rev=0")).body(vec![b'x'; (1 << 20) + 1]), 413, "OTHER"),
    ];
    for (req, status, code) in cases {
        let (s, v) = call(req).await;
        assert_eq!((s, v["error"].as_str()), (status, Some(code)), "{v}");
    }
    assert_eq!(
        c.get("/message", None).await.unwrap(),
        (bytes::Bytes::from("second"), r2),
        "a refused write changed nothing"
    );

    // Walk at a revision.
    let (_, v) = call(http.get(format!("{web}/_api/walk?glob=/*&rev={r2}"))).await;
    assert_eq!(v["files"], json!([{"path": "/message", "rev": r2, "len": 6, "body": "second"}]));

    // DEL with CAS; deleting a missing file succeeds and changes nothing.
    let (s, v) = call(http.delete(file(&format!("/message?rev={r2}")))).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["rev"].as_i64().unwrap() > r2);
    assert_eq!(c.get("/message", None).await.unwrap().1, 0);
    let rev = c.rev().await.unwrap();
    let (s, v) = call(http.delete(file("/message?rev=-1"))).await;
    assert_eq!((s, &v["rev"]), (200, &Value::Null));
    assert_eq!(c.rev().await.unwrap(), rev);
}

#[tokio::test]
async fn old_revisions_are_too_late_and_future_ones_are_waited_for() {
    let d = web_node(&["-hist", "5"]);
    let (web, http, c) = (base(&d), reqwest::Client::new(), client(&d.addr).await);
    for i in 0..20 {
        c.set("/n", -1, format!("{i}")).await.unwrap();
    }
    let (s, v) = call(http.get(format!("{web}/_api/files/n?rev=2"))).await;
    assert_eq!((s, v["error"].as_str()), (410, Some("TOO_LATE")), "{v}");
    let (s, v) = call(http.get(format!("{web}/_api/watch?from=2"))).await;
    assert_eq!((s, v["error"].as_str()), (410, Some("TOO_LATE")), "{v}");

    let next = c.rev().await.unwrap() + 1;
    let read = tokio::spawn(call(http.get(format!("{web}/_api/files/n?rev={next}"))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!read.is_finished(), "a read at a future revision waits for it");
    c.set("/n", -1, "later").await.unwrap();
    let (s, v) = read.await.unwrap();
    assert_eq!((s, v["body"].as_str(), v["at"].as_i64()), (200, Some("later"), Some(next)));
}

/// Reads JSON lines from a streaming response until `n` have come.
async fn read_lines(res: &mut reqwest::Response, n: usize) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut lines = Vec::new();
    let start = Instant::now();
    while lines.len() < n {
        assert!(start.elapsed() < DEADLINE, "only {} of {n} lines arrived", lines.len());
        let chunk = tokio::time::timeout(DEADLINE, res.chunk()).await.expect("a chunk in time").expect("chunk");
        let Some(chunk) = chunk else { break };
        buf.extend_from_slice(&chunk);
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            lines.push(serde_json::from_slice(&line).expect("a JSON line"));
        }
    }
    lines
}

#[tokio::test]
async fn watch_stream_delivers_1000_rapid_changes_in_order() {
    let d = web_node(&[]);
    let (web, http, c) = (base(&d), reqwest::Client::new(), client(&d.addr).await);
    let from = c.rev().await.unwrap() + 1;
    let mut res = http.get(format!("{web}/_api/watch?glob=/w/**&from={from}&limit=1000")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    // 1000 pipelined writes from 10 connections, interleaved with changes the glob excludes.
    let mut writers = Vec::new();
    for w in 0..10 {
        let c = client(&d.addr).await;
        writers.push(tokio::spawn(async move {
            for i in 0..100 {
                c.set(&format!("/w/{w}/{i}"), 0, format!("{w}.{i}")).await.unwrap();
                if i % 10 == 0 {
                    c.set("/elsewhere", -1, "x").await.unwrap();
                }
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    let events = read_lines(&mut res, 1000).await;
    assert_eq!(events.len(), 1000);
    let revs: Vec<i64> = events.iter().map(|e| e["rev"].as_i64().unwrap()).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "revisions in order");
    // Each is the change the store made at that revision.
    for e in &events {
        let path = e["path"].as_str().unwrap();
        assert!(path.starts_with("/w/"), "{e}");
        let (body, rev) = c.get(path, None).await.unwrap();
        assert_eq!(
            (e["body"].as_str().unwrap().as_bytes(), e["rev"].as_i64().unwrap(), e["kind"].as_str()),
            (&body[..], rev, Some("set"))
        );
    }
    let mut seen: Vec<&str> = events.iter().map(|e| e["path"].as_str().unwrap()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 1000, "every change once");
    // The limit ends the stream.
    assert_eq!(tokio::time::timeout(DEADLINE, res.chunk()).await.unwrap().unwrap(), None);
}

#[tokio::test]
async fn server_sent_events_resume_from_last_event_id() {
    let d = web_node(&[]);
    let (web, http, c) = (base(&d), reqwest::Client::new(), client(&d.addr).await);
    let mut revs = Vec::new();
    for i in 0..6 {
        revs.push(c.set(&format!("/s/{i}"), 0, format!("{i}")).await.unwrap());
    }
    let res = http
        .get(format!("{web}/_api/watch?glob=/s/*&limit=3"))
        .header("accept", "text/event-stream")
        .header("last-event-id", revs[2].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let text = tokio::time::timeout(DEADLINE, res.text()).await.unwrap().unwrap();
    let ids: Vec<i64> = text.lines().filter_map(|l| l.strip_prefix("id: ")).map(|v| v.parse().unwrap()).collect();
    assert_eq!(ids, revs[3..6]);
    assert!(text.contains("event: set\ndata: {\"rev\":"), "{text}");
}

#[tokio::test]
async fn secrets_grant_what_they_grant() {
    let d = web_node_env(&[], &[("DOOZER_RWSECRET", "wsecret"), ("DOOZER_ROSECRET", "rsecret")]);
    let (web, http) = (base(&d), reqwest::Client::new());
    let url = format!("{web}/_api/files/f?rev=0");
    let (s, v) = call(http.get(format!("{web}/_api/files/ctl"))).await;
    assert_eq!((s, v["error"].as_str()), (401, Some("OTHER")), "{v}");
    let (s, _) = call(http.get(format!("{web}/_api/files/ctl")).bearer_auth("rsecret")).await;
    assert_eq!(s, 200);
    let (s, _) = call(http.put(&url).bearer_auth("rsecret").body("x")).await;
    assert_eq!(s, 403, "the read-only secret does not write");
    let (s, _) = call(http.put(&url).bearer_auth("wrong").body("x")).await;
    assert_eq!(s, 401);
    let (s, v) = call(http.put(&url).bearer_auth("wsecret").body("x")).await;
    assert_eq!(s, 200, "{v}");
    let (s, _) = call(http.get(format!("{web}/_api/watch")).bearer_auth("nope")).await;
    assert_eq!(s, 401);
    for open in ["/healthz", "/metrics", "/", "/_/app.js"] {
        assert_eq!(http.get(format!("{web}{open}")).send().await.unwrap().status(), 200, "{open}");
    }
    // The page's socket asks for a secret, and takes the right one.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/_ws", d.web.as_ref().unwrap())).await.unwrap();
    ws.send(Message::text(json!({"from": 0}).to_string())).await.unwrap();
    let m = next_json(&mut ws).await;
    assert_eq!((m["type"].as_str(), m["auth"].as_bool()), (Some("error"), Some(true)), "{m}");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/_ws", d.web.as_ref().unwrap())).await.unwrap();
    ws.send(Message::text(json!({"from": 0, "secret": "rsecret"}).to_string())).await.unwrap();
    let m = next_json(&mut ws).await;
    assert_eq!(m["rights"], json!({"read": true, "write": false}));
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next message about the tree; the cluster pushes in between are skipped.
async fn next_json(ws: &mut Socket) -> Value {
    loop {
        let m = next_message(ws).await;
        if m["type"] != "cluster" {
            return m;
        }
    }
}

async fn next_message(ws: &mut Socket) -> Value {
    loop {
        let m = tokio::time::timeout(DEADLINE, ws.next()).await.expect("a message in time").expect("open").unwrap();
        if let Message::Text(t) = m {
            return serde_json::from_str(&t).unwrap();
        }
    }
}

async fn open_socket(web: &str, hello: Value) -> Socket {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{web}/_ws")).await.unwrap();
    ws.send(Message::text(hello.to_string())).await.unwrap();
    let m = next_json(&mut ws).await;
    assert_eq!(m["type"], "hello", "{m}");
    ws
}

/// Reads messages until one of `kind` comes (progress messages are skipped).
async fn next_of(ws: &mut Socket, pred: impl Fn(&Value) -> bool) -> Value {
    loop {
        let m = next_json(ws).await;
        if pred(&m) {
            return m;
        }
    }
}

#[tokio::test]
async fn page_socket_sends_the_tree_then_changes_and_resumes_without_loss() {
    let d = web_node(&[]);
    let (web, c) = (d.web.clone().unwrap(), client(&d.addr).await);
    c.set("/a/one", 0, "1").await.unwrap();
    let mut ws = open_socket(&web, json!({"glob": "/a/**", "from": 0})).await;
    let snap = next_json(&mut ws).await;
    assert_eq!(snap["type"], "snapshot");
    assert_eq!(snap["files"], json!([{"path": "/a/one", "rev": snap["rev"], "len": 1, "body": "1"}]));
    let r = c.set("/a/two", 0, "2").await.unwrap();
    let m = next_of(&mut ws, |m| m["events"].as_array().is_some_and(|e| !e.is_empty())).await;
    assert_eq!(m["events"], json!([{"rev": r, "path": "/a/two", "kind": "set", "len": 1, "body": "2"}]));
    let (seen, mark) = (m["rev"].as_i64().unwrap(), m["mark"].clone());
    drop(ws);

    // Changes made while the page is away arrive when it comes back: no snapshot.
    let r3 = c.set("/a/three", 0, "3").await.unwrap();
    c.del("/a/one", -1).await.unwrap();
    let mut ws = open_socket(&web, json!({"glob": "/a/**", "from": seen + 1, "mark": mark})).await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["type"], "events", "{m}");
    let got: Vec<(&str, &str)> = m["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [("/a/three", "set"), ("/a/one", "del")]);
    assert!(m["rev"].as_i64().unwrap() > r3);

    // A mark from another history (say, before a restart) gets the tree afresh.
    let mut ws = open_socket(&web, json!({"glob": "/a/**", "from": seen + 1, "mark": "0123456789abcdef"})).await;
    let m = next_json(&mut ws).await;
    assert_eq!(m["type"], "snapshot", "{m}");
    let paths: Vec<&str> = m["files"].as_array().unwrap().iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["/a/three", "/a/two"]);

    // Long bodies are previews, marked truncated.
    c.set("/a/long", 0, vec![b'x'; 5000]).await.unwrap();
    let m = next_of(&mut ws, |m| m["events"].as_array().is_some_and(|e| !e.is_empty())).await;
    let e = &m["events"][0];
    assert_eq!(
        (e["len"].as_i64(), e["truncated"].as_bool(), e["body"].as_str().map(str::len)),
        (Some(5000), Some(true), Some(2048))
    );
}

#[tokio::test]
async fn metrics_count_requests_and_show_the_node() {
    let d = web_node(&[]);
    let (web, http, c) = (base(&d), reqwest::Client::new(), client(&d.addr).await);
    for i in 0..7 {
        c.set(&format!("/m/{i}"), 0, "x").await.unwrap();
    }
    assert!(c.set("/m/0", 0, "x").await.is_err());
    let held = {
        let c = c.clone();
        let rev = c.rev().await.unwrap();
        tokio::spawn(async move { c.wait("/never", rev + 1).await })
    };
    let scrape = || async { http.get(format!("{web}/metrics")).send().await.unwrap().text().await.unwrap() };
    eventually("the held WAIT to show", || async { scrape().await.contains("\ndoozer_held_waits 1\n") }).await;
    let text = scrape().await;
    let rev = c.rev().await.unwrap();
    let id = String::from_utf8(c.self_id().await.unwrap().to_vec()).unwrap();
    for want in [
        "doozer_requests_total{verb=\"SET\",result=\"OK\"} 7\n".to_string(),
        "doozer_requests_total{verb=\"SET\",result=\"REV_MISMATCH\"} 1\n".to_string(),
        "doozer_request_duration_seconds_count{verb=\"SET\"} 8\n".to_string(),
        "doozer_client_connections 1\n".to_string(),
        format!("doozer_store_revision {rev}\n"),
        "doozer_raft_is_leader 1\n".to_string(),
        format!("doozer_raft_leader_info{{leader=\"{id}\",self=\"{id}\"}} 1\n"),
        "doozer_raft_voters 1\n".to_string(),
        "doozer_ready 1\n".to_string(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = line.rsplit_once(' ').expect("name value");
        assert!(value.parse::<f64>().is_ok(), "not a sample: {line}");
    }
    held.abort();
    let res = http.get(format!("{web}/healthz")).send().await.unwrap();
    assert_eq!((res.status().as_u16(), res.text().await.unwrap()), (200, "ok\n".to_string()));
    assert_eq!(http.get(format!("{web}/readyz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn cluster_panel_and_readiness_follow_the_cluster() {
    let nodes = cluster(3, &["-w", "127.0.0.1:0", "-timeout", "60"]).await;
    let http = reqwest::Client::new();
    let (s, v) = call(http.get(format!("{}/_api/cluster", base(&nodes[1])))).await;
    assert_eq!(s, 200, "{v}");
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{v}");
    assert_eq!(members.iter().filter(|m| m["leader"] == true).count(), 1, "{v}");
    assert!(members.iter().all(|m| m["voter"] == true && m["applied"].as_i64().is_some_and(|r| r > 0)), "{v}");
    let addrs: Vec<&str> = members.iter().map(|m| m["addr"].as_str().unwrap()).collect();
    for n in &nodes {
        assert!(addrs.contains(&n.addr.as_str()));
        assert_eq!(http.get(format!("{}/readyz", base(n))).send().await.unwrap().status(), 200);
    }
    // With two of three gone, the last one is alive but not ready.
    let mut nodes = nodes;
    let last = nodes.pop().unwrap();
    let survivor = base(&last);
    drop(nodes);
    eventually("the survivor to say it is not ready", || async {
        http.get(format!("{survivor}/readyz")).send().await.unwrap().status() == 503
    })
    .await;
    let why = http.get(format!("{survivor}/readyz")).send().await.unwrap().text().await.unwrap();
    assert!(why.starts_with("not ready: "), "{why}");
    assert_eq!(http.get(format!("{survivor}/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_page_is_self_contained() {
    let d = web_node(&[]);
    let (web, http) = (base(&d), reqwest::Client::new());
    for (path, kind) in
        [("/", "text/html"), ("/ctl/", "text/html"), ("/_/app.js", "text/javascript"), ("/_/style.css", "text/css")]
    {
        let res = http.get(format!("{web}{path}")).send().await.unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.headers()["content-type"].to_str().unwrap().starts_with(kind), "{path}");
        let body = res.text().await.unwrap();
        assert!(!body.contains("http://") && !body.contains("https://"), "{path} loads nothing from elsewhere");
    }
    let (s, v) = call(http.post(format!("{web}/")).body("x")).await;
    assert_eq!(s, 405, "{v}");
}

#[test]
fn a_busy_web_port_leaves_the_node_serving() {
    let first = web_node(&[]);
    let taken = first.web.clone().unwrap();
    let second = Doozerd::start(&["-w", &taken]);
    assert_eq!(second.web, None);
    let out = doozer(&second.uri(), &["rev"], b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[tokio::test]
async fn a_lazy_page_gets_reset_then_changes_and_the_cluster_pushed() {
    let d = web_node(&[]);
    let (web, c) = (d.web.clone().unwrap(), client(&d.addr).await);
    c.set("/a/one", 0, "1").await.unwrap();
    // "tree": false: no snapshot, a reset at the current revision instead.
    let mut ws = open_socket(&web, json!({"glob": "/**", "from": 0, "tree": false})).await;
    let reset = next_json(&mut ws).await;
    assert_eq!((reset["type"].as_str(), reset["rev"].as_i64()), (Some("reset"), Some(c.rev().await.unwrap())));
    let r = c.set("/a/two", 0, "2").await.unwrap();
    let m = next_of(&mut ws, |m| m["events"].as_array().is_some_and(|e| !e.is_empty())).await;
    assert_eq!(m["events"][0]["rev"].as_i64(), Some(r));
    // The cluster is pushed, unasked, with this node as the reachable leader.
    let cluster = loop {
        let m = next_message(&mut ws).await;
        if m["type"] == "cluster" {
            break m["cluster"].clone();
        }
    };
    let me = &cluster["members"][0];
    assert_eq!(
        (me["addr"].as_str(), me["leader"].as_bool(), me["reachable"].as_bool()),
        (Some(d.addr.as_str()), Some(true), Some(true))
    );
    // A mark from another history: reset again, not a tree.
    let mut ws = open_socket(&web, json!({"glob": "/**", "from": r, "mark": "0123456789abcdef", "tree": false})).await;
    assert_eq!(next_json(&mut ws).await["type"], "reset");
}

#[tokio::test]
async fn log_paged_directories_and_the_history_floor() {
    let d = web_node(&[]);
    let (web, http, c) = (base(&d), reqwest::Client::new(), client(&d.addr).await);
    let r1 = c.set("/cfg/a", 0, "one").await.unwrap();
    let r2 = c.set("/cfg/a", -1, "two").await.unwrap();
    c.set("/cfg/b", 0, "b").await.unwrap();
    c.del("/cfg/a", -1).await.unwrap();
    // A path's changes, newest first; at or before a revision; limited.
    let (s, v) = call(http.get(format!("{web}/_api/log?glob=/cfg/a"))).await;
    assert_eq!(s, 200, "{v}");
    let kinds: Vec<(i64, &str)> = v["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["rev"].as_i64().unwrap(), e["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds[1..], [(r2, "set"), (r1, "set")]);
    assert_eq!(kinds[0].1, "del");
    let (_, v) = call(http.get(format!("{web}/_api/log?glob=/cfg/**&rev={r2}&limit=1"))).await;
    assert_eq!((v["changes"][0]["body"].as_str(), v["truncated"].as_bool()), (Some("two"), Some(true)));
    assert_eq!(v["at"].as_i64(), Some(r2));
    let (s, v) = call(http.get(format!("{web}/_api/log?glob=/[bad"))).await;
    assert_eq!(s, 400, "{v}");
    // The floor of the history window.
    let (_, v) = call(http.get(format!("{web}/_api/rev"))).await;
    assert_eq!(v["oldest"].as_i64(), Some(1));
    // A large directory, a page at a time.
    for i in 0..30 {
        c.set(&format!("/many/f{i:02}"), 0, "x").await.unwrap();
    }
    let (_, v) = call(http.get(format!("{web}/_api/files/many?offset=10&limit=5"))).await;
    let names: Vec<&str> = v["entries"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["f10", "f11", "f12", "f13", "f14"]);
    assert_eq!((v["total"].as_i64(), v["truncated"].as_bool()), (Some(30), Some(true)));
    let (_, v) = call(http.get(format!("{web}/_api/files/many?offset=25"))).await;
    assert_eq!((v["entries"].as_array().unwrap().len(), v["truncated"].as_bool()), (5, Some(false)));
    // Bounded by bytes, not only by count: 20 changes of 1 MiB stop at the 16 MiB budget.
    for _ in 0..20 {
        c.set("/big", -1, vec![b'x'; 1 << 20]).await.unwrap();
    }
    let (_, v) = call(http.get(format!("{web}/_api/log?glob=/big&limit=100"))).await;
    let n = v["changes"].as_array().unwrap().len();
    assert!((1..=16).contains(&n) && v["truncated"] == json!(true), "{n} changes, {}", v["truncated"]);
}

#[tokio::test]
async fn leases_over_http_grant_attach_keep_alive_list_revoke_and_count() {
    let d = web_node(&[]);
    let (web, http, c) = (base(&d), reqwest::Client::new(), client(&d.addr).await);
    let (s, v) = call(http.post(format!("{web}/_api/leases?ttl=30"))).await;
    assert_eq!(s, 201, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["ttl"], 30);
    let (s, v) = call(http.put(format!("{web}/_api/files/svc/a?rev=0&lease={id}")).body("x")).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(http.get(format!("{web}/_api/leases/{id}"))).await;
    assert_eq!((s, &v["files"], &v["granted"]), (200, &json!(["/svc/a"]), &json!(30)), "{v}");
    assert!(v["ttl"].as_i64().is_some_and(|t| (29..=30).contains(&t)), "{v}");
    let (s, v) = call(http.post(format!("{web}/_api/leases/{id}/keepalive"))).await;
    assert_eq!((s, &v["ttl"]), (200, &json!(30)), "{v}");
    let (s, v) = call(http.get(format!("{web}/_api/leases"))).await;
    assert_eq!((s, &v["count"], &v["leases"][0]["files"]), (200, &json!(1), &json!(1)), "{v}");
    let (_, metrics) = call(http.get(format!("{web}/metrics"))).await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    assert!(metrics.contains("doozer_leases 1\n") && metrics.contains("doozer_leased_files 1\n"), "{metrics}");
    assert!(metrics.contains("doozer_requests_total") && metrics.contains("doozer_lease_expiries_total 0"));
    let (s, v) = call(http.delete(format!("{web}/_api/leases/{id}"))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(c.get_file("/svc/a", None).await.unwrap(), None);
    // Errors: unknown lease, bad id, bad TTL, a leased write to an unknown lease.
    let (s, v) = call(http.get(format!("{web}/_api/leases/{id}"))).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("NOENT")), "{v}");
    let (s, _) = call(http.get(format!("{web}/_api/leases/nothex"))).await;
    assert_eq!(s, 400);
    for ttl in ["0", "86401", "x", "-1"] {
        let (s, v) = call(http.post(format!("{web}/_api/leases?ttl={ttl}"))).await;
        assert_eq!(s, 400, "ttl {ttl}: {v}");
    }
    let (s, v) = call(http.put(format!("{web}/_api/files/svc/b?rev=0&lease={id}")).body("x")).await;
    assert_eq!((s, v["error"].as_str()), (404, Some("NOENT")), "{v}");
    // A lease left alone expires, and the expiry is counted.
    let (_, v) = call(http.post(format!("{web}/_api/leases?ttl=1"))).await;
    assert!(v["id"].is_string());
    eventually("the expiry to be counted", || async {
        let (_, m) = call(http.get(format!("{web}/metrics"))).await;
        m.as_str().is_some_and(|m| m.contains("doozer_lease_expiries_total 1\n"))
    })
    .await;
}
