//! An embedded server (in this process, port 0) so tests can look inside the
//! node: held WAITs released when connections close, the per-connection
//! pending limit, and a client that never reads its answers.

use bytes::BytesMut;
use doozer_proto::{encode_frame, read_frame, Request, Response, Verb, MAX_FRAME};
use doozer_server::node::{Limits, Node};
use doozer_server::Settings;
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

async fn start(limits: Limits) -> (Arc<Node>, String) {
    let running = doozer_server::start(Settings { limits, ..Settings::local() }).await.unwrap();
    let node = running.node().clone();
    let addr = running.addr.clone();
    // Keep the node running for the rest of the test.
    std::mem::forget(running);
    (node, addr)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn wait_req(tag: i32) -> Request {
    Request {
        tag: Some(tag),
        verb: Some(Verb::Wait as i32),
        path: Some("/never/**".into()),
        rev: Some(1 << 40),
        ..Request::default()
    }
}

fn frame(r: &Request) -> BytesMut {
    let mut b = BytesMut::new();
    encode_frame(r, &mut b);
    b
}

async fn recv(s: &mut TcpStream) -> Response {
    let f = tokio::time::timeout(Duration::from_secs(20), read_frame(s, MAX_FRAME)).await.unwrap().unwrap().unwrap();
    Response::decode(f).unwrap()
}

#[tokio::test]
async fn held_waits_are_released_when_their_connection_closes() {
    let (node, addr) = start(Limits::default()).await;
    let mut conns = vec![];
    for _ in 0..20 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        for tag in 0..10 {
            s.write_all(&frame(&wait_req(tag))).await.unwrap();
        }
        conns.push(s);
    }
    eventually("200 held waits", || node.waiters() == 200).await;
    conns.truncate(5);
    eventually("waits of closed connections released", || node.waiters() == 50).await;
    drop(conns);
    eventually("all waits released", || node.waiters() == 0).await;
}

#[tokio::test]
async fn answered_waits_leave_no_trace() {
    let (node, addr) = start(Limits::default()).await;
    let c = doozer_client::Client::connect(&addr).await.unwrap();
    let from = c.rev().await.unwrap() + 1;
    let waits: Vec<_> = (0..100)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.wait("/x", from).await })
        })
        .collect();
    eventually("100 held waits", || node.waiters() == 100).await;
    c.set("/x", -1, "v").await.unwrap();
    for w in waits {
        assert_eq!(w.await.unwrap().unwrap().rev, from);
    }
    assert_eq!(node.waiters(), 0);
}

#[tokio::test]
async fn pending_limit_per_connection_answers_other() {
    let (node, addr) = start(Limits { max_pending: 8, ..Limits::default() }).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    for tag in 0..8 {
        s.write_all(&frame(&wait_req(tag))).await.unwrap();
    }
    eventually("8 held waits", || node.waiters() == 8).await;
    s.write_all(&frame(&Request { tag: Some(100), verb: Some(Verb::Rev as i32), ..Request::default() })).await.unwrap();
    let r = recv(&mut s).await;
    assert_eq!((r.tag, r.err_code), (Some(100), Some(127)));
    assert!(r.err_detail.unwrap().contains("too many pending requests"));
    // Another connection is unaffected.
    let c = doozer_client::Client::connect(&addr).await.unwrap();
    assert!(c.rev().await.is_ok());
}

#[tokio::test]
async fn node_wide_wait_limit_answers_other() {
    let (node, addr) = start(Limits { max_waiters: 5, ..Limits::default() }).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    for tag in 0..5 {
        s.write_all(&frame(&wait_req(tag))).await.unwrap();
    }
    eventually("5 held waits", || node.waiters() == 5).await;
    s.write_all(&frame(&wait_req(6))).await.unwrap();
    let r = recv(&mut s).await;
    assert_eq!((r.tag, r.err_code), (Some(6), Some(127)));
    assert!(r.err_detail.unwrap().contains("too many held WAITs"));
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_others_go_on() {
    let (node, addr) = start(Limits { max_pending: 64, ..Limits::default() }).await;
    c_set_big(&addr).await;
    // Ask for a 256 KiB body over and over and never read: the socket buffers
    // fill, answers stay pending, and the server must disconnect this client
    // instead of queueing without bound.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let get =
        frame(&Request { tag: Some(1), verb: Some(Verb::Get as i32), path: Some("/big".into()), ..Request::default() });
    let mut sent = 0;
    let cut_off = loop {
        match tokio::time::timeout(Duration::from_secs(20), s.write_all(&get)).await {
            Ok(Ok(())) => sent += 1,
            Ok(Err(_)) => break true,
            Err(_) => break false,
        }
        if sent > 1_000_000 {
            break false;
        }
    };
    assert!(cut_off, "server kept accepting from a client that never reads ({sent} requests)");
    let c = doozer_client::Client::connect(&addr).await.unwrap();
    assert_eq!(c.get("/big", None).await.unwrap().0.len(), 256 * 1024);
    drop(node);
}

async fn c_set_big(addr: &str) {
    let c = doozer_client::Client::connect(addr).await.unwrap();
    c.set("/big", -1, vec![7u8; 256 * 1024]).await.unwrap();
}
