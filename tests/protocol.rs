//! The client protocol over a real TCP connection to a started doozerd: every
//! verb, every error, pipelining, WAIT, and bad input.

mod common;

use bytes::Bytes;
use common::{path, req, set, Doozerd, Raw};
use doozer_proto::{ErrCode, Request, Response, Verb};

fn err(r: &Response) -> Option<ErrCode> {
    r.err()
}

async fn rev(c: &mut Raw) -> i64 {
    c.call(req(Verb::Rev, 99)).await.rev.expect("REV has rev")
}

#[tokio::test]
async fn every_verb_round_trip() {
    let d = Doozerd::start(&[]);
    let mut c = Raw::connect(&d.addr).await;

    // SELF: 16 chars of base32, and /ctl laid out for it.
    let id = c.call(req(Verb::SelfId, 1)).await.value.unwrap();
    let id = String::from_utf8(id.to_vec()).unwrap();
    assert_eq!(id.len(), 16);
    assert!(id.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)));
    let cal = c.call(path(Verb::Get, 2, "/ctl/cal/0")).await;
    assert_eq!(cal.value.as_deref(), Some(id.as_bytes()));
    let name = c.call(path(Verb::Get, 3, "/ctl/name")).await;
    assert_eq!(name.value.as_deref(), Some(&b"local"[..]));
    assert_eq!(name.rev, Some(1));
    let addr = c.call(path(Verb::Get, 4, &format!("/ctl/node/{id}/addr"))).await;
    assert_eq!(addr.value.as_deref(), Some(d.addr.as_bytes()));
    for f in ["hostname", "version", "writable"] {
        let r = c.call(path(Verb::Stat, 5, &format!("/ctl/node/{id}/{f}"))).await;
        assert!(r.rev.unwrap() > 0, "{f} exists");
    }

    // SET, GET, STAT, REV.
    let r0 = rev(&mut c).await;
    let s = c.call(set(6, "/a/b", 0, b"hello")).await;
    assert_eq!(s.tag, Some(6));
    assert_eq!(s.rev, Some(r0 + 1));
    assert_eq!(rev(&mut c).await, r0 + 1);
    let g = c.call(path(Verb::Get, 7, "/a/b")).await;
    assert_eq!((g.rev, g.value.as_deref()), (Some(r0 + 1), Some(&b"hello"[..])));
    let st = c.call(path(Verb::Stat, 8, "/a/b")).await;
    assert_eq!((st.rev, st.len), (Some(r0 + 1), Some(5)));
    let st = c.call(path(Verb::Stat, 9, "/a")).await;
    assert_eq!((st.rev, st.len), (Some(-2), Some(1)));
    let st = c.call(path(Verb::Stat, 10, "/nope")).await;
    assert_eq!((st.rev, st.len, err(&st)), (Some(0), Some(0), None));
    // STAT with no path reads "" as missing.
    let st = c.call(req(Verb::Stat, 11)).await;
    assert_eq!((st.rev, err(&st)), (Some(0), None));

    // GET of a missing file is not an error.
    let g = c.call(path(Verb::Get, 12, "/missing")).await;
    assert_eq!((g.rev, err(&g)), (Some(0), None));
    assert!(g.value.unwrap_or_default().is_empty());

    // GET at a past revision, and an absent rev vs rev present.
    c.call(set(13, "/a/b", -1, b"second")).await;
    let old = c.call(Request { rev: Some(r0 + 1), ..path(Verb::Get, 14, "/a/b") }).await;
    assert_eq!(old.value.as_deref(), Some(&b"hello"[..]));
    let now = c.call(path(Verb::Get, 15, "/a/b")).await;
    assert_eq!(now.value.as_deref(), Some(&b"second"[..]));

    // GETDIR pages by offset until RANGE; names only, byte order.
    c.call(set(16, "/a/a.b", 0, b"")).await;
    c.call(set(17, "/a/Z", 0, b"")).await;
    let mut names = vec![];
    for off in 0.. {
        let r = c.call(Request { offset: Some(off), ..path(Verb::Getdir, 18, "/a") }).await;
        if err(&r) == Some(ErrCode::Range) {
            break;
        }
        names.push(r.path.unwrap());
    }
    assert_eq!(names, ["Z", "a.b", "b"]);

    // WALK: files only, per-directory order, flags = 4.
    let mut walked = vec![];
    for off in 0.. {
        let r = c.call(Request { offset: Some(off), ..path(Verb::Walk, 19, "/a/**") }).await;
        if err(&r) == Some(ErrCode::Range) {
            break;
        }
        assert_eq!(r.flags, Some(4));
        walked.push((r.path.unwrap(), r.value.unwrap()));
    }
    assert_eq!(
        walked,
        [("/a/Z".into(), Bytes::new()), ("/a/a.b".into(), Bytes::new()), ("/a/b".into(), Bytes::from("second"))]
    );

    // DEL answers with the tag only; the file is gone.
    let cur = c.call(path(Verb::Get, 20, "/a/b")).await.rev.unwrap();
    let del = c.call(Request { rev: Some(cur), ..path(Verb::Del, 21, "/a/b") }).await;
    assert_eq!(del, Response { tag: Some(21), ..Response::default() });
    assert_eq!(c.call(path(Verb::Stat, 22, "/a/b")).await.rev, Some(0));

    // NOP consumes a revision, and WAIT on /** reports it as path "/", flags 0.
    let before = rev(&mut c).await;
    let nop = c.call(req(Verb::Nop, 23)).await;
    assert_eq!(nop, Response { tag: Some(23), ..Response::default() });
    assert_eq!(rev(&mut c).await, before + 1);
    let w = c.call(Request { rev: Some(before + 1), ..path(Verb::Wait, 24, "/**") }).await;
    assert_eq!((w.path.as_deref(), w.rev, w.flags), (Some("/"), Some(before + 1), Some(0)));

    // WAIT from an old revision answers from history; flags 8 for a delete.
    let w = c.call(Request { rev: Some(r0 + 1), ..path(Verb::Wait, 25, "/a/b") }).await;
    assert_eq!((w.rev, w.flags, w.value.as_deref()), (Some(r0 + 1), Some(4), Some(&b"hello"[..])));
    let w = c.call(Request { rev: Some(cur + 1), ..path(Verb::Wait, 26, "/a/b") }).await;
    assert_eq!(w.flags, Some(8));

    // ACCESS with the empty secret succeeds when no secret is set; a wrong one fails.
    let a = c.call(Request { value: Some(Bytes::new()), ..req(Verb::Access, 27) }).await;
    assert_eq!(err(&a), None);
    let a = c.call(Request { value: Some(Bytes::from("x")), ..req(Verb::Access, 28) }).await;
    assert_eq!((err(&a), a.err_detail.as_deref()), (Some(ErrCode::Other), Some("permission denied")));
}

#[tokio::test]
async fn errors_and_their_numbers() {
    let d = Doozerd::start(&[]);
    let mut c = Raw::connect(&d.addr).await;
    let code = |r: Response| (r.tag, r.err_code);

    // Unknown, removed and missing verbs.
    for (tag, verb) in [(1, Some(0)), (2, Some(4)), (3, Some(8)), (4, Some(10)), (5, Some(4242)), (6, None)] {
        let r = c.call(Request { tag: Some(tag), verb, ..Request::default() }).await;
        assert_eq!(code(r), (Some(tag), Some(2)), "verb {verb:?}");
    }
    // MISSING_ARG for each verb's required fields.
    let missing = [
        req(Verb::Get, 10),
        req(Verb::Set, 11),
        path(Verb::Set, 12, "/x"),
        Request { rev: Some(0), ..req(Verb::Set, 13) },
        path(Verb::Del, 14, "/x"),
        Request { rev: Some(0), ..req(Verb::Del, 15) },
        path(Verb::Wait, 16, "/x"),
        Request { rev: Some(1), ..req(Verb::Wait, 17) },
        path(Verb::Walk, 18, "/**"),
        path(Verb::Getdir, 19, "/"),
        Request { offset: Some(0), ..req(Verb::Getdir, 20) },
    ];
    for r in missing {
        let tag = r.tag;
        assert_eq!(code(c.call(r).await), (tag, Some(7)));
    }
    // BAD_PATH (6) on writes with bad paths; never a crash on empty paths.
    for (tag, p) in [(30, "relative"), (31, "/a/"), (32, "/a b"), (33, "/under_score"), (34, ""), (35, "/a//b")] {
        assert_eq!(code(c.call(set(tag, p, 0, b"x")).await), (Some(tag), Some(6)), "{p:?}");
        let del = c.call(Request { rev: Some(-1), ..path(Verb::Del, tag, p) }).await;
        assert_eq!(del.err_code, Some(6), "{p:?}");
    }
    assert_eq!(c.call(path(Verb::Get, 36, "")).await.err_code, Some(6));
    assert_eq!(c.call(Request { offset: Some(0), ..path(Verb::Getdir, 37, "") }).await.err_code, Some(6));
    // A syntactically odd path reads as missing.
    let g = c.call(path(Verb::Get, 38, "/a/")).await;
    assert_eq!((g.rev, g.err_code), (Some(0), None));

    // REV_MISMATCH (5), ISDIR (21), NOTDIR (20), NOENT (22), RANGE (8).
    let r = c.call(set(40, "/f", 0, b"1")).await.rev.unwrap();
    assert_eq!(code(c.call(set(41, "/f", 0, b"2")).await), (Some(41), Some(5)));
    assert_eq!(code(c.call(set(42, "/f", r - 1, b"2")).await), (Some(42), Some(5)));
    assert_eq!(code(c.call(set(43, "/f", -2, b"2")).await), (Some(43), Some(5)));
    assert_eq!(c.call(set(44, "/f", r + 1000, b"big")).await.err_code, None, "any rev >= the file's succeeds");
    assert_eq!(code(c.call(set(45, "/ctl", 0, b"")).await), (Some(45), Some(21)));
    assert_eq!(code(c.call(set(46, "/", -1, b"")).await), (Some(46), Some(21)));
    assert_eq!(code(c.call(path(Verb::Get, 47, "/ctl")).await), (Some(47), Some(21)));
    assert_eq!(code(c.call(set(48, "/f/sub", 0, b"")).await), (Some(48), Some(20)));
    assert_eq!(code(c.call(Request { offset: Some(0), ..path(Verb::Getdir, 49, "/f") }).await), (Some(49), Some(20)));
    assert_eq!(
        code(c.call(Request { offset: Some(0), ..path(Verb::Getdir, 50, "/none") }).await),
        (Some(50), Some(22))
    );
    assert_eq!(code(c.call(Request { offset: Some(-1), ..path(Verb::Getdir, 51, "/") }).await), (Some(51), Some(8)));
    assert_eq!(code(c.call(Request { offset: Some(99), ..path(Verb::Walk, 52, "/**") }).await), (Some(52), Some(8)));
    // A failed write consumes no revision and writes no /ctl/err.
    let before = rev(&mut c).await;
    c.call(set(53, "/f", 0, b"")).await;
    assert_eq!(rev(&mut c).await, before);
    assert_eq!(c.call(path(Verb::Stat, 54, "/ctl/err")).await.rev, Some(0));

    // DEL below a file fails and leaves the file (the original deleted it).
    let d2 = c.call(Request { rev: Some(-1), ..path(Verb::Del, 55, "/f/x") }).await;
    assert_eq!(d2.err_code, Some(20));
    assert_eq!(c.call(path(Verb::Get, 56, "/f")).await.value.as_deref(), Some(&b"big"[..]));
    // DEL of a missing file succeeds and changes nothing.
    let before = rev(&mut c).await;
    assert_eq!(c.call(Request { rev: Some(0), ..path(Verb::Del, 57, "/nothing") }).await.err_code, None);
    assert_eq!(rev(&mut c).await, before);

    // Bad globs: OTHER (127) "invalid glob pattern: ...".
    for (tag, verb) in [(60, Verb::Wait), (61, Verb::Walk)] {
        let r = c.call(Request { rev: Some(1), offset: Some(0), ..path(verb, tag, "/a[") }).await;
        assert_eq!((r.err_code, r.err_detail.as_deref()), (Some(127), Some("invalid glob pattern: /a[")));
    }
    // Oversized value: OTHER, nothing written.
    let big = vec![b'x'; (1 << 20) + 1];
    let r = c.call(set(62, "/big", -1, &big)).await;
    assert_eq!(r.err_code, Some(127));
    assert!(r.err_detail.unwrap().contains("value too large"));
    let ok = c.call(set(63, "/big", -1, &big[..1 << 20])).await;
    assert_eq!(ok.err_code, None, "a 1 MiB value is accepted");
    assert_eq!(c.call(path(Verb::Stat, 64, "/big")).await.len, Some(1 << 20));
}

#[tokio::test]
async fn history_window_too_late_and_future_revs() {
    let d = Doozerd::start(&["-hist", "5"]);
    let mut c = Raw::connect(&d.addr).await;
    for i in 0..20 {
        c.call(set(1, "/h", -1, format!("{i}").as_bytes())).await;
    }
    let now = rev(&mut c).await;
    for (tag, r) in [
        (2, Request { rev: Some(1), ..path(Verb::Get, 2, "/h") }),
        (3, Request { rev: Some(now - 5), offset: Some(0), ..path(Verb::Getdir, 3, "/") }),
        (4, Request { rev: Some(1), ..path(Verb::Stat, 4, "/h") }),
        (5, Request { rev: Some(1), offset: Some(0), ..path(Verb::Walk, 5, "/**") }),
        (6, Request { rev: Some(now - 5), ..path(Verb::Wait, 6, "/**") }),
        (7, Request { rev: Some(0), ..path(Verb::Wait, 7, "/**") }),
    ] {
        assert_eq!(c.call(r).await.err_code, Some(4), "request {tag}");
    }
    // The oldest revision in the window still reads.
    let oldest = c.call(Request { rev: Some(now - 4), ..path(Verb::Get, 8, "/h") }).await;
    assert_eq!(oldest.err_code, None);

    // A read at a future revision waits for it, without holding up other requests.
    c.send(&Request { rev: Some(now + 1), ..path(Verb::Get, 9, "/h") }).await;
    let r = c.call(req(Verb::Rev, 10)).await;
    assert_eq!(r.tag, Some(10), "REV answered while the future GET waits");
    let mut w = Raw::connect(&d.addr).await;
    w.call(set(1, "/h", -1, b"future")).await;
    let g = c.recv().await;
    assert_eq!((g.tag, g.value.as_deref()), (Some(9), Some(&b"future"[..])));
}

#[tokio::test]
async fn pipelined_requests_complete_out_of_order() {
    let d = Doozerd::start(&[]);
    let mut c = Raw::connect(&d.addr).await;
    let now = rev(&mut c).await;
    // Tag 1 waits; tags 2..=4 are answered while it is held.
    c.send(&Request { rev: Some(now + 1), ..path(Verb::Wait, 1, "/p/**") }).await;
    c.send(&set(2, "/q", -1, b"q")).await;
    c.send(&path(Verb::Get, 3, "/q")).await;
    c.send(&req(Verb::Rev, 4)).await;
    let mut tags = vec![];
    for _ in 0..3 {
        tags.push(c.recv().await.tag.unwrap());
    }
    tags.sort();
    assert_eq!(tags, [2, 3, 4]);
    // Now the write the WAIT was for, from the same connection.
    c.send(&set(5, "/p/x", -1, b"px")).await;
    let mut got = [c.recv().await, c.recv().await];
    got.sort_by_key(|r| r.tag);
    assert_eq!(got[0].tag, Some(1));
    assert_eq!((got[0].path.as_deref(), got[0].value.as_deref()), (Some("/p/x"), Some(&b"px"[..])));
    assert_eq!(got[1].tag, Some(5));
    // A response carries no tag when the request had none.
    let r = c.call(Request { verb: Some(Verb::Rev as i32), ..Request::default() }).await;
    assert_eq!(r.tag, None);
}

/// Answers are written straight to the socket until it is full, then by a
/// writer task until it catches up: a client that stops reading for a while
/// and then reads everything gets every answer whole, however they were split.
#[tokio::test]
async fn a_full_socket_loses_and_mangles_no_answer() {
    let d = Doozerd::start(&[]);
    let mut c = Raw::connect(&d.addr).await;
    let body: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
    c.call(set(1, "/big", -1, &body)).await;
    const N: i32 = 1500; // about 100 MB of answers: far more than socket buffers hold
    let mut buf = bytes::BytesMut::new();
    for tag in 0..N {
        let r = if tag % 3 == 0 { set(tag, &format!("/w/{tag}"), -1, b"w") } else { path(Verb::Get, tag, "/big") };
        doozer_proto::encode_frame(&r, &mut buf);
    }
    c.send_bytes(&buf).await;
    let mut seen = vec![false; N as usize];
    for _ in 0..N {
        let r = c.recv().await;
        let tag = r.tag.expect("a tag") as usize;
        assert!(!seen[tag], "tag {tag} answered twice");
        seen[tag] = true;
        if tag.is_multiple_of(3) {
            assert!(r.rev.is_some() && r.err_code.is_none(), "{r:?}");
        } else {
            assert_eq!(r.value.as_deref(), Some(&body[..]), "tag {tag}");
        }
    }
    assert!(seen.iter().all(|s| *s));
    assert!(rev(&mut c).await > 0, "the connection still works");
}

#[tokio::test]
async fn watch_loop_sees_1000_rapid_writes_in_order() {
    let d = Doozerd::start(&[]);
    let client = doozer_client::Client::connect(&d.addr).await.unwrap();
    let start = client.rev().await.unwrap() + 1;
    let watcher = doozer_client::Client::connect(&d.addr).await.unwrap();
    let watch = tokio::spawn(async move {
        let mut next = start;
        let mut seen = vec![];
        while seen.len() < 1000 {
            let e = watcher.wait("/w/**", next).await.unwrap();
            next = e.rev + 1;
            seen.push((e.rev, e.body));
        }
        seen
    });
    // Pipelined writes from another connection, as fast as they go.
    let mut writes = vec![];
    for i in 0..1000 {
        let c = client.clone();
        writes.push(tokio::spawn(async move { c.set(&format!("/w/k{}", i % 7), -1, format!("{i}")).await.unwrap() }));
    }
    let mut revs = vec![];
    for w in writes {
        revs.push(w.await.unwrap());
    }
    revs.sort();
    let seen = tokio::time::timeout(common::DEADLINE, watch).await.unwrap().unwrap();
    let seen_revs: Vec<i64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(seen_revs, revs, "every write seen once, in revision order");
    assert_eq!(seen_revs, (start..start + 1000).collect::<Vec<_>>());
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let d = Doozerd::start(&[]);
    let mut healthy = Raw::connect(&d.addr).await;
    let bad_inputs: Vec<Vec<u8>> = vec![
        (-1i32).to_be_bytes().to_vec(),                                // negative length
        i32::MIN.to_be_bytes().to_vec(),                               // very negative length
        0x7fff_ffffi32.to_be_bytes().to_vec(),                         // 2 GiB
        (4u32 << 20).to_be_bytes().to_vec(),                           // over the frame limit
        [&5u32.to_be_bytes()[..], &[0xff; 5]].concat(),                // garbage protobuf
        [&2u32.to_be_bytes()[..], &[0x22, 0x05]].concat(),             // path field truncated
        [&2u32.to_be_bytes()[..], &[0x10, 0xff]].concat(),             // varint truncated
        [&3u32.to_be_bytes()[..], &[0x4a, 0x01, 0x00]].concat(),       // rev with the wrong wire type
        [&4u32.to_be_bytes()[..], &[0x22, 0x02, 0xff, 0xfe]].concat(), // path not UTF-8
    ];
    for bytes in bad_inputs {
        let mut c = Raw::connect(&d.addr).await;
        c.send_bytes(&bytes).await;
        assert!(c.closed_by_server().await, "input {bytes:x?} should close the connection");
        assert_eq!(healthy.call(req(Verb::Rev, 1)).await.tag, Some(1), "server still serves after {bytes:x?}");
    }
    // The peer magic with a hello claiming 1 GiB: refused at once, no memory reserved.
    let mut c = Raw::connect(&d.addr).await;
    c.send_bytes(&[0xFF, b'D', b'Z', b'V', 0x3F, 0xFF, 0xFF, 0xFF]).await;
    assert!(c.closed_by_server().await, "an oversized hello closes the connection");
    // The peer magic with garbage for a hello.
    let mut c = Raw::connect(&d.addr).await;
    c.send_bytes(&[0xFF, b'D', b'Z', b'V', 0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    assert!(c.closed_by_server().await, "a garbage hello closes the connection");
    assert_eq!(healthy.call(req(Verb::Rev, 3)).await.tag, Some(3));
    // A frame cut short by the client's close.
    let mut c = Raw::connect(&d.addr).await;
    c.send_bytes(&[0, 0, 0, 10, 1, 2]).await;
    drop(c);
    // An empty frame is a request with no verb.
    let mut c = Raw::connect(&d.addr).await;
    c.send_bytes(&[0, 0, 0, 0]).await;
    assert_eq!(c.recv().await.err_code, Some(ErrCode::UnknownVerb as i32));
    assert_eq!(healthy.call(set(2, "/still", 0, b"ok")).await.err_code, None);
}

#[tokio::test]
async fn closing_a_connection_drops_its_waits() {
    let d = Doozerd::start(&[]);
    // Many connections each hold a WAIT, then go away.
    for _ in 0..50 {
        let mut c = Raw::connect(&d.addr).await;
        c.send(&Request { rev: Some(1_000_000), ..path(Verb::Wait, 1, "/**") }).await;
        c.call(req(Verb::Rev, 2)).await;
    }
    // The server keeps answering and committing writes with no one left to tell.
    let mut c = Raw::connect(&d.addr).await;
    for i in 0..20 {
        assert_eq!(c.call(set(i, "/after", -1, b"x")).await.err_code, None);
    }
}

#[tokio::test]
async fn secrets_control_access() {
    let d = Doozerd::start_env(&[], &[("DOOZER_RWSECRET", "rw-secret"), ("DOOZER_ROSECRET", "ro-secret")]);
    let mut c = Raw::connect(&d.addr).await;
    let denied = |r: &Response| r.err_code == Some(127) && r.err_detail.as_deref() == Some("permission denied");
    // Anonymous: only REV, SELF, ACCESS.
    assert!(c.call(req(Verb::Rev, 1)).await.rev.is_some());
    assert!(c.call(req(Verb::SelfId, 2)).await.value.is_some());
    assert!(denied(&c.call(path(Verb::Get, 3, "/ctl/name")).await));
    assert!(denied(&c.call(set(4, "/x", 0, b"")).await));
    assert!(denied(&c.call(req(Verb::Nop, 5)).await));
    assert!(denied(&c.call(Request { value: Some("wrong".into()), ..req(Verb::Access, 6) }).await));
    // Read-only secret: reads, not writes.
    assert_eq!(c.call(Request { value: Some("ro-secret".into()), ..req(Verb::Access, 7) }).await.err_code, None);
    assert_eq!(c.call(path(Verb::Get, 8, "/ctl/name")).await.value.as_deref(), Some(&b"local"[..]));
    assert!(denied(&c.call(set(9, "/x", 0, b"")).await));
    // Read-write secret: everything; rights only accumulate.
    assert_eq!(c.call(Request { value: Some("rw-secret".into()), ..req(Verb::Access, 10) }).await.err_code, None);
    assert_eq!(c.call(set(11, "/x", 0, b"")).await.err_code, None);
    assert!(denied(&c.call(Request { value: Some("wrong".into()), ..req(Verb::Access, 12) }).await));
    assert_eq!(c.call(set(13, "/x", -1, b"")).await.err_code, None);

    // With only the read-write secret set, anonymous clients can read.
    let d = Doozerd::start_env(&[], &[("DOOZER_RWSECRET", "rw")]);
    let mut c = Raw::connect(&d.addr).await;
    assert_eq!(c.call(path(Verb::Get, 1, "/ctl/name")).await.err_code, None);
    assert!(denied(&c.call(set(2, "/x", 0, b"")).await));
    // The client library sends the URI's secret.
    let client = doozer_client::Client::dial_uri(&format!("doozer:?ca={}&sk=rw", d.addr)).await.unwrap();
    client.set("/y", 0, "v").await.unwrap();
    let wrong = doozer_client::Client::dial_uri(&format!("doozer:?ca={}&sk=no", d.addr)).await;
    assert_eq!(wrong.err().unwrap().to_string(), "OTHER: permission denied");
}

#[tokio::test]
async fn tls_listener_serves_the_protocol() {
    use std::sync::Arc;
    use tokio_rustls::rustls::{self, pki_types::ServerName};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let d = Doozerd::start(&["-tlscert", cert_path.to_str().unwrap(), "-tlskey", key_path.to_str().unwrap()]);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&d.addr).await.unwrap();
    let tls = connector.connect(ServerName::try_from("localhost").unwrap(), tcp).await.unwrap();
    let client = doozer_client::Client::over(tls, &d.addr);
    let rev = client.set("/tls", 0, "secure").await.unwrap();
    assert_eq!(client.get("/tls", None).await.unwrap(), (Bytes::from("secure"), rev));

    // A plain-text client gets no service, only an answer saying why, and the server goes on.
    let mut plain = Raw::connect(&d.addr).await;
    let answer = plain.call(req(Verb::Rev, 1)).await;
    assert_eq!(answer.err_code, Some(doozer_proto::ErrCode::Other as i32));
    assert!(answer.err_detail.unwrap_or_default().contains("speaks TLS"));
    assert!(plain.closed_by_server().await);
    assert_eq!(client.rev().await.unwrap(), rev);
}

#[test]
fn flags_version_and_signals() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doozerd")).arg("-v").output().unwrap();
    // The original's version for the protocol level, ours as semver build metadata.
    let version = format!("0.9.0-alpha+doozer-rs.{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("doozerd {version}\n"));
    assert!(out.status.success());

    // Single-dash long flags as in the original, and the cluster name lands in /ctl/name.
    let mut d = Doozerd::start(&["-hist", "100", "-c", "prod", "-timeout", "5"]);
    let out = common::doozer(&d.uri(), &["get", "/ctl/name"], b"");
    assert_eq!(out.out(), "prod");
    assert!(d.signal_and_wait("TERM").success(), "SIGTERM exits cleanly");

    let mut d = Doozerd::start(&[]);
    assert!(d.signal_and_wait("INT").success(), "SIGINT exits cleanly");

    // Bad flag combinations fail at once with a message.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doozerd"))
        .args(["-l", "127.0.0.1:0", "-tlscert", "x.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-tlscert and -tlskey go together"));
}
