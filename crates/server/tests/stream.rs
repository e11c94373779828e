//! STREAM and STOP (protocol extensions 38 and 39) against an embedded node,
//! on the wire and through the Rust client's `Subscription` and `Watch`.

use bytes::BytesMut;
use doozer_client::{Client, ErrCode, Error, Watch};
use doozer_proto::{encode_frame, read_frame, Request, Response, Verb, MAX_FRAME};
use doozer_server::node::{Limits, Node};
use doozer_server::Settings;
use doozer_store::HistoryLimits;
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const DEADLINE: Duration = Duration::from_secs(30);

async fn start(limits: Limits) -> (Arc<Node>, String) {
    let running = doozer_server::start(Settings { limits, ..Settings::local() }).await.unwrap();
    let (node, addr) = (running.node().clone(), running.addr.clone());
    std::mem::forget(running);
    (node, addr)
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn stream(tag: i32, glob: &str, rev: i64) -> Request {
    Request {
        tag: Some(tag),
        verb: Some(Verb::Stream as i32),
        path: Some(glob.into()),
        rev: Some(rev),
        ..Request::default()
    }
}

async fn send(s: &mut TcpStream, r: &Request) {
    let mut b = BytesMut::new();
    encode_frame(r, &mut b);
    s.write_all(&b).await.unwrap();
}

async fn recv(s: &mut TcpStream) -> Response {
    let f = tokio::time::timeout(DEADLINE, read_frame(s, MAX_FRAME)).await.expect("no answer").unwrap().unwrap();
    Response::decode(f).unwrap()
}

#[tokio::test]
async fn a_stream_sends_past_and_new_events_in_order_until_stopped() {
    let (node, addr) = start(Limits::default()).await;
    let c = Client::connect(&addr).await.unwrap();
    let first = c.set("/s/a", -1, "1").await.unwrap();
    c.set("/other", -1, "x").await.unwrap();
    c.set("/s/b", -1, "2").await.unwrap();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    send(&mut s, &stream(5, "/s/*", first)).await;
    let mut got = vec![];
    for _ in 0..2 {
        let r = recv(&mut s).await;
        assert_eq!((r.tag, r.err_code), (Some(5), None));
        got.push((r.path.unwrap(), r.value.unwrap()));
    }
    c.del("/s/a", -1).await.unwrap();
    let r = recv(&mut s).await;
    assert_eq!((r.path.as_deref(), r.flags), (Some("/s/a"), Some(doozer_proto::FLAG_DEL)));
    assert_eq!(got, vec![("/s/a".to_string(), "1".into()), ("/s/b".to_string(), "2".into())]);
    // Another request on the same connection is answered meanwhile.
    send(&mut s, &Request { tag: Some(6), verb: Some(Verb::Rev as i32), ..Request::default() }).await;
    assert_eq!(recv(&mut s).await.tag, Some(6));
    // STOP: answered, and no event of the stream after it.
    send(&mut s, &Request { tag: Some(7), verb: Some(Verb::Stop as i32), other_tag: Some(5), ..Request::default() })
        .await;
    assert_eq!(recv(&mut s).await.tag, Some(7));
    eventually("the stream's waiter dropped", || node.waiters() == 0).await;
    c.set("/s/c", -1, "3").await.unwrap();
    send(&mut s, &Request { tag: Some(8), verb: Some(Verb::Rev as i32), ..Request::default() }).await;
    let r = recv(&mut s).await;
    assert_eq!(r.tag, Some(8), "an event came after STOP: {r:?}");
}

#[tokio::test]
async fn a_stream_needs_a_free_tag_a_glob_and_a_rev() {
    let (_node, addr) = start(Limits::default()).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    send(&mut s, &stream(1, "/x/**", 1 << 40)).await;
    send(&mut s, &stream(1, "/y/**", 1 << 40)).await;
    let r = recv(&mut s).await;
    assert_eq!((r.tag, r.err_code), (Some(1), Some(ErrCode::TagInUse as i32)));
    send(
        &mut s,
        &Request { tag: Some(2), verb: Some(Verb::Stream as i32), path: Some("/x".into()), ..Request::default() },
    )
    .await;
    assert_eq!(recv(&mut s).await.err_code, Some(ErrCode::MissingArg as i32));
    send(&mut s, &stream(3, "/x/[", 1)).await;
    let r = recv(&mut s).await;
    assert_eq!((r.tag, r.err_code), (Some(3), Some(ErrCode::Other as i32)));
}

#[tokio::test]
async fn a_stream_behind_the_window_ends_too_late_with_its_next_rev() {
    let history = HistoryLimits { revs: 50, ..HistoryLimits::default() };
    let (_node, addr) = start(Limits { history, ..Limits::default() }).await;
    let c = Client::connect(&addr).await.unwrap();
    for i in 0..200 {
        c.set("/w", -1, i.to_string()).await.unwrap();
    }
    let mut s = TcpStream::connect(&addr).await.unwrap();
    send(&mut s, &stream(1, "/**", 2)).await;
    let r = recv(&mut s).await;
    assert_eq!((r.err_code, r.rev), (Some(ErrCode::TooLate as i32), Some(2)));
}

/// A client that never reads: the node stops its stream once 8 MiB wait
/// unread, and tells it where the gap begins. Nothing before that is missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_is_not_read_is_cut_off_and_says_where() {
    let (node, addr) = start(Limits::default()).await;
    let c = Client::connect(&addr).await.unwrap();
    let from = c.rev().await.unwrap() + 1;
    // A small receive buffer, so the answers wait in the node.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut s = socket.connect(addr.parse().unwrap()).await.unwrap();
    send(&mut s, &stream(1, "/big/*", from)).await;
    eventually("the stream held", || node.waiters() == 1).await;
    let body = vec![7u8; 256 * 1024];
    let mut wrote = 0;
    // 16 MiB of events; the node's socket buffers hold a few.
    while wrote < 64 {
        c.set(&format!("/big/{wrote}"), -1, body.clone()).await.unwrap();
        wrote += 1;
    }
    let mut next = from;
    let end = loop {
        let r = recv(&mut s).await;
        if r.err_code.is_some() {
            break r;
        }
        assert_eq!(r.rev, Some(next), "an event is missing");
        next += 1;
    };
    assert_eq!(end.err_code, Some(ErrCode::Other as i32));
    assert!(end.err_detail.as_deref().unwrap_or("").contains("stream cut off"), "{end:?}");
    assert_eq!(end.rev, Some(next), "the end must name the first revision not sent");
    assert!(next < from + wrote, "the stream was never cut off");
    eventually("the stream's waiter dropped", || node.waiters() == 0).await;
}

#[tokio::test]
async fn a_subscription_follows_and_stops() {
    let (node, addr) = start(Limits::default()).await;
    let c = Client::connect(&addr).await.unwrap();
    let from = c.rev().await.unwrap() + 1;
    let mut sub = c.stream("/sub/**", from).await.unwrap();
    for i in 0..10 {
        c.set(&format!("/sub/{i}"), -1, "v").await.unwrap();
    }
    for i in 0..10 {
        let e = tokio::time::timeout(DEADLINE, sub.next()).await.unwrap().unwrap();
        assert_eq!((e.path.as_str(), e.rev), (format!("/sub/{i}").as_str(), from + i));
    }
    assert_eq!(sub.next_rev(), from + 10);
    sub.stop().await.unwrap();
    assert_eq!(node.waiters(), 0);
    // The connection goes on.
    assert!(c.rev().await.is_ok());
}

/// More events than the subscription buffers before it is read: it gives
/// those it kept, then says it fell behind; a `Watch` mends that by itself
/// and misses nothing.
#[tokio::test]
async fn a_slow_subscriber_is_told_and_a_watch_resumes_without_a_gap() {
    // Not the default window (2,000): the watch below starts reading only
    // after all 4,596 writes, and must find them in the history.
    let history = HistoryLimits { revs: 10_000, ..HistoryLimits::default() };
    let (_node, addr) = start(Limits { history, ..Limits::default() }).await;
    let c = Client::connect(&addr).await.unwrap();
    let from = c.rev().await.unwrap() + 1;
    let mut sub = c.stream("/slow/*", from).await.unwrap();
    let mut watch = Watch::new(&addr, "/slow/*", from).unwrap();
    let n = doozer_client::STREAM_BUFFER as i64 + 500;
    for i in 0..n {
        c.set(&format!("/slow/{}", i % 7), -1, "v").await.unwrap();
    }
    let mut kept = 0;
    let behind = loop {
        match tokio::time::timeout(DEADLINE, sub.next()).await.unwrap() {
            Ok(e) => {
                assert_eq!(e.rev, from + kept);
                kept += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(behind, Error::Behind(_)), "{behind}");
    assert!(kept < n, "all {kept} events were kept");
    assert!(behind.to_string().contains(&format!("rev {}", from + kept)), "{behind}");
    for i in 0..n {
        let e = tokio::time::timeout(DEADLINE, watch.next()).await.unwrap().unwrap();
        assert_eq!(e.rev, from + i, "the watch skipped or repeated an event");
    }
}

/// A server without STREAM (as the original, and doozerd before it) answers
/// UNKNOWN_VERB: a `Watch` falls back to WAIT loops.
#[tokio::test]
async fn a_watch_falls_back_to_wait_on_an_old_server() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        loop {
            let Ok(Some(f)) = read_frame(&mut s, MAX_FRAME).await else { return };
            let req = Request::decode(f).unwrap();
            let answer = match req.verb.and_then(Verb::from_i32) {
                Some(Verb::Wait) => Response {
                    tag: req.tag,
                    path: Some("/old".into()),
                    rev: req.rev,
                    value: Some("v".into()),
                    flags: Some(doozer_proto::FLAG_SET),
                    ..Response::default()
                },
                Some(Verb::Rev) => Response { tag: req.tag, rev: Some(1), ..Response::default() },
                _ => Response::error(req.tag, doozer_proto::ErrCode::UnknownVerb, ""),
            };
            let mut b = BytesMut::new();
            encode_frame(&answer, &mut b);
            s.write_all(&b).await.unwrap();
        }
    });
    let mut watch = Watch::new(&addr, "/old", 10).unwrap();
    for rev in 10..13 {
        let e = tokio::time::timeout(DEADLINE, watch.next()).await.unwrap().unwrap();
        assert_eq!((e.path.as_str(), e.rev), ("/old", rev));
    }
}

/// Many small events unread: the count of unread answers (`--max-pending`,
/// 16 here to keep the test small) ends the stream long before 8 MiB do,
/// so the client's next request is not refused as a flood.
#[tokio::test]
async fn many_small_events_unread_cut_a_stream_off_at_the_pending_limit() {
    let running =
        doozer_server::start(Settings { limits: Limits { max_pending: 16, ..Limits::default() }, ..Settings::local() })
            .await
            .unwrap();
    let c = Client::connect(&running.addr).await.unwrap();
    let from = c.rev().await.unwrap() + 1;
    // A pipe that holds 1 KiB: nearly every answer waits in the node.
    let (mut client, server) = tokio::io::duplex(1024);
    let mut req = BytesMut::new();
    encode_frame(&stream(1, "/small/*", from), &mut req);
    let first: [u8; 4] = req[..4].try_into().unwrap();
    client.write_all(&req[4..]).await.unwrap();
    let cluster = running.cluster.clone();
    let secrets = Arc::new(doozer_server::access::Secrets::default());
    tokio::spawn(doozer_server::conn::serve(server, first, cluster, secrets));
    eventually("the stream held", || running.node().waiters() == 1).await;
    for i in 0..200 {
        c.set(&format!("/small/{}", i % 5), -1, "v").await.unwrap();
    }
    let mut next = from;
    let end = loop {
        let f = tokio::time::timeout(DEADLINE, read_frame(&mut client, MAX_FRAME)).await.unwrap().unwrap().unwrap();
        let r = Response::decode(f).unwrap();
        if r.err_code.is_some() {
            break r;
        }
        assert_eq!(r.rev, Some(next), "an event is missing");
        next += 1;
    };
    assert!(end.err_detail.as_deref().unwrap_or("").contains("stream cut off"), "{end:?}");
    assert_eq!(end.rev, Some(next));
    assert!(next < from + 200, "the stream was never cut off");
}

/// A subscription's buffer is bounded by bytes too: large events unread
/// make it fall behind long before 4,096 of them.
#[tokio::test]
async fn a_subscription_buffers_at_most_32_mib() {
    let (_node, addr) = start(Limits::default()).await;
    let c = Client::connect(&addr).await.unwrap();
    let from = c.rev().await.unwrap() + 1;
    let mut sub = c.stream("/large/*", from).await.unwrap();
    let body = vec![1u8; 1_000_000];
    for i in 0..48 {
        c.set(&format!("/large/{i}"), -1, body.clone()).await.unwrap();
    }
    let mut kept = 0;
    let behind = loop {
        match tokio::time::timeout(DEADLINE, sub.next()).await.unwrap() {
            Ok(e) => {
                assert_eq!((e.rev, e.body.len()), (from + kept, 1_000_000));
                kept += 1;
            }
            Err(e) => break e,
        }
    };
    assert!(matches!(behind, Error::Behind(_)), "{behind}");
    let most = (doozer_client::STREAM_BUFFER_BYTES / 1_000_000) as i64;
    assert!(kept <= most + 1, "kept {kept} events of 1 MB, more than 32 MiB");
}
