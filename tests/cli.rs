//! The built `doozer` binary against a started doozerd, compared with what the
//! original printed (../shared/reference-cli.md): stdout, stderr, exit codes.

mod common;

use common::{doozer, wait_until, Doozerd};
use std::process::{Command, Stdio};

fn ok(out: &common::Output) -> String {
    assert_eq!((out.code, out.stderr.as_str()), (0, ""), "stdout {:?}", out.out());
    out.out()
}

fn rev_of(out: &common::Output) -> i64 {
    ok(out).trim_end().parse().expect("a revision")
}

#[test]
fn quickstart_and_formats() {
    let d = Doozerd::start(&[]);
    let u = d.uri();
    let set = doozer(&u, &["set", "/message", "0"], b"hello, world\n");
    let r = rev_of(&set);
    assert_eq!(set.out(), format!("{r}\n"));
    assert_eq!(ok(&doozer(&u, &["get", "/message"], b"")), "hello, world\n");
    assert_eq!(ok(&doozer(&u, &["rev"], b"")), format!("{r}\n"));
    assert_eq!(ok(&doozer(&u, &["stat", "/message"], b"")), format!("{r} 13\n"));
    assert_eq!(ok(&doozer(&u, &["stat", "/"], b"")), "d 2\n");
    let missing = doozer(&u, &["stat", "/nonexistent"], b"");
    assert_eq!(
        (missing.out().as_str(), missing.stderr.as_str(), missing.code),
        ("", "No such file or directory: /nonexistent\n", 2)
    );
    let id = ok(&doozer(&u, &["self"], b""));
    assert_eq!(id.len(), 16, "self prints the id with no newline");
    let find = ok(&doozer(&u, &["find", "/"], b""));
    let expect = format!(
        "/\n/ctl\n/ctl/cal\n/ctl/cal/0\n/ctl/cal/1\n/ctl/cal/2\n/ctl/leader\n/ctl/name\n/ctl/node\n/ctl/node/{id}\n/ctl/node/{id}/addr\n/ctl/node/{id}/hostname\n/ctl/node/{id}/role\n/ctl/node/{id}/version\n/ctl/node/{id}/writable\n/message\n"
    );
    assert_eq!(find, expect);
    assert_eq!(ok(&doozer(&u, &["nop"], b"")), "");
    assert_eq!(ok(&doozer(&u, &["rev"], b"")), format!("{}\n", r + 1));
    // The bare HOST:PORT form works too.
    assert_eq!(ok(&doozer(&d.addr, &["get", "/message"], b"")), "hello, world\n");
}

#[test]
fn revisions_and_errors() {
    let d = Doozerd::start(&[]);
    let u = d.uri();
    let r = rev_of(&doozer(&u, &["set", "/message", "0"], b"hello, world\n"));
    let mismatch = |args: &[&str]| {
        let out = doozer(&u, args, b"x");
        assert_eq!((out.out().as_str(), out.stderr.as_str(), out.code), ("", "Error: REV_MISMATCH\n", 1), "{args:?}");
    };
    mismatch(&["set", "/message", "0"]);
    mismatch(&["add", "/message"]);
    mismatch(&["set", "/message", &(r - 1).to_string()]);
    mismatch(&["del", "/message", "1"]);
    let r2 = rev_of(&doozer(&u, &["set", "/message", &r.to_string()], b"a"));
    let r3 = rev_of(&doozer(&u, &["set", "/message", "999999"], b"b"));
    let r4 = rev_of(&doozer(&u, &["set", "/message", "-1"], b"c"));
    assert!(r < r2 && r2 < r3 && r3 < r4);
    assert_eq!(ok(&doozer(&u, &["del", "/message", &r4.to_string()], b"")), "");
    assert_eq!(doozer(&u, &["stat", "/message"], b"").code, 2);
    assert_eq!(ok(&doozer(&u, &["get", "/message"], b"")), "");
    for rev in ["0", "999999", "-1"] {
        assert_eq!(ok(&doozer(&u, &["del", "/nonexistent", rev], b"")), "");
    }
    let err = |args: &[&str], text: &str| {
        let out = doozer(&u, args, b"");
        assert_eq!((out.out().as_str(), out.stderr.as_str(), out.code), ("", text, 2), "{args:?}");
    };
    err(&["get", "/ctl"], "Error: ISDIR\n");
    err(&["set", "/x", "abc"], "Error: strconv.ParseInt: parsing \"abc\": invalid syntax\n");
    err(
        &["set", "/x", "99999999999999999999"],
        "Error: strconv.ParseInt: parsing \"99999999999999999999\": value out of range\n",
    );
    for p in ["relative", "/a/", "/a b", "/under_score"] {
        err(&["set", p, "0"], "Error: BAD_PATH\n");
    }
    err(&["set", "/ctl", "0"], "Error: ISDIR\n");
    rev_of(&doozer(&u, &["set", "/message", "0"], b"m"));
    err(&["set", "/message/sub", "0"], "Error: NOTDIR\n");

    // touch bumps the revision and keeps the body; on a missing file it creates an empty one.
    let before = ok(&doozer(&u, &["stat", "/message"], b""));
    assert_eq!(ok(&doozer(&u, &["touch", "/message"], b"")), "");
    let after = ok(&doozer(&u, &["stat", "/message"], b""));
    assert_ne!(before, after);
    assert!(after.ends_with(" 1\n"));
    assert_eq!(ok(&doozer(&u, &["get", "/message"], b"")), "m");
    assert_eq!(ok(&doozer(&u, &["touch", "/newtouched"], b"")), "");
    assert!(ok(&doozer(&u, &["stat", "/newtouched"], b"")).ends_with(" 0\n"));
    let added = rev_of(&doozer(&u, &["add", "/added"], b""));
    assert_eq!(ok(&doozer(&u, &["rev"], b"")), format!("{added}\n"));
}

#[test]
fn connection_and_uri_errors() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = doozer(&format!("doozer:?ca=127.0.0.1:{port}"), &["get", "/x"], b"");
    assert_eq!(out.code, 2);
    let first = format!("Error: dial tcp 127.0.0.1:{port}: connect: connection refused");
    assert!(out.stderr.starts_with(&first), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    let out = doozer("not a uri", &["get", "/x"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.starts_with("Error: invalid uri"), "{}", out.stderr);
    // -a overrides DOOZER_URI, before or after the command.
    let d = Doozerd::start(&[]);
    assert_eq!(doozer("bogus", &["-a", &d.uri(), "rev"], b"").code, 0);
    assert_eq!(doozer("bogus", &["rev", "-a", &d.uri()], b"").code, 0);
}

#[test]
fn reads_at_a_revision() {
    let d = Doozerd::start(&["-hist", "5"]);
    let u = d.uri();
    let r1 = rev_of(&doozer(&u, &["set", "/f", "0"], b"one"));
    assert_eq!(ok(&doozer(&u, &["-r", &r1.to_string(), "get", "/f"], b"")), "one");
    doozer(&u, &["set", "/f", "-1"], b"two");
    assert_eq!(ok(&doozer(&u, &["-r", &r1.to_string(), "get", "/f"], b"")), "one", "get honours -r");
    assert_eq!(ok(&doozer(&u, &["get", "/f"], b"")), "two");
    assert_eq!(ok(&doozer(&u, &["-r", &r1.to_string(), "stat", "/f"], b"")), format!("{r1} 3\n"));
    let at = ok(&doozer(&u, &["-r", &(r1 - 1).to_string(), "find", "/"], b""));
    assert!(!at.contains("/f\n"), "find at an older rev does not show /f: {at}");
    // find of a missing path: NOENT on stderr, exit 0; too old a rev: TOO_LATE, exit 0.
    let out = doozer(&u, &["find", "/nope"], b"");
    assert_eq!((out.out().as_str(), out.stderr.as_str(), out.code), ("", "NOENT\n", 0));
    for _ in 0..10 {
        doozer(&u, &["nop"], b"");
    }
    let out = doozer(&u, &["-r", "1", "find", "/"], b"");
    assert_eq!((out.stderr.as_str(), out.code), ("TOO_LATE\n", 0));
    let out = doozer(&u, &["-r", "1", "wait", "/**"], b"");
    assert_eq!((out.stderr.as_str(), out.code), ("Error: TOO_LATE\n", 2));
}

#[test]
fn wait_and_watch_records() {
    let d = Doozerd::start(&[]);
    let u = d.uri();
    let r = rev_of(&doozer(&u, &["set", "/message", "0"], b"hello, world\n"));
    // The first match at or after -r.
    assert_eq!(
        ok(&doozer(&u, &["-r", "1", "wait", "/message"], b"")),
        format!("/message {r} set 13\nhello, world\n\n")
    );
    assert_eq!(ok(&doozer(&u, &["-r", "1", "wait", "/ctl/**"], b"")), "/ctl/name 1 set 5\nlocal\n");
    // A timeout, with -t before or after the command.
    for args in [&["-t", "300ms", "wait", "/quiet"][..], &["wait", "-t", "300ms", "/quiet"][..]] {
        let out = doozer(&u, args, b"");
        assert_eq!((out.out().as_str(), out.stderr.as_str(), out.code), ("", "Error: wait timeout\n", 2));
    }

    // watch prints every change in order from -r: set, del, and an empty body.
    let m0 = rev_of(&doozer(&u, &["set", "/m0", "0"], b"zero"));
    let watch = common::WatchProcess::start(&u, &["-r", &m0.to_string(), "watch", "/m*"]);
    let a = rev_of(&doozer(&u, &["set", "/m1", "0"], b"one"));
    let b = rev_of(&doozer(&u, &["set", "/m2", "0"], b"two\n"));
    let c = rev_of(&doozer(&u, &["set", "/m1", "-1"], b"three"));
    ok(&doozer(&u, &["del", "/m1", "-1"], b""));
    let e = rev_of(&doozer(&u, &["set", "/mempty", "0"], b""));
    let expect = format!(
        "/m0 {m0} set 4\nzero\n/m1 {a} set 3\none\n/m2 {b} set 4\ntwo\n\n/m1 {c} set 5\nthree\n/m1 {} del 0\n\n/mempty {e} set 0\n\n",
        c + 1
    );
    wait_until("all watch records", || watch.output().len() >= expect.len());
    assert_eq!(String::from_utf8(watch.output()).unwrap(), expect);

    // When the server dies, watch says EOF and exits 2.
    drop(d);
    let (status, stderr) = watch.finish();
    assert_eq!((status.code(), stderr.as_str()), (Some(2), "Error: EOF\n"));
}

#[test]
fn wait_blocks_until_a_change() {
    let d = Doozerd::start(&[]);
    let u = d.uri();
    let child = Command::new(env!("CARGO_BIN_EXE_doozer"))
        .args(["wait", "/later"])
        .env("DOOZER_URI", &u)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Whether the waiter reads the current rev before or after this write, the
    // write is at or after it, so it is the record printed.
    let base = rev_of(&doozer(&u, &["rev"], b""));
    let r = rev_of(&doozer(&u, &["set", "/later", "-1"], b"changed\n"));
    assert!(r > base);
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), format!("/later {r} set 8\nchanged\n\n"));
}

#[test]
fn usage_help_and_exit_codes() {
    let u = "doozer:?ca=127.0.0.1:1";
    let out = doozer(u, &[], b"");
    assert_eq!(out.code, 127);
    assert!(out.stderr.starts_with("doozer: missing command\nUse: doozer [options] <command> [options] [args]\n"));
    let out = doozer(u, &["bogus"], b"");
    assert_eq!(out.code, 127);
    assert!(out.stderr.starts_with("Unknown command: bogus\nUse: doozer"));
    let out = doozer(u, &["get"], b"");
    assert_eq!((out.code, out.stderr.as_str()), (127, "get: wrong number of arguments\n"));
    assert_eq!(out.out(), "Use: doozer [options] get [options] <path>\n\nPrints the body of the file at <path>.\n");
    let help = doozer(u, &["help", "set"], b"");
    assert_eq!(help.code, 0);
    assert!(help
        .out()
        .starts_with("Use: doozer [options] set [options] <path> <rev>\n\nSets the body of the file at <path>."));
    assert_eq!(doozer(u, &["set", "-h"], b"").out(), help.out());
    let out = doozer(u, &["-h"], b"");
    assert_eq!(out.code, 0);
    assert!(out.stderr.contains("Commands:\n  add <path>"));
    for name in ["add", "del", "find", "get", "help", "nop", "rev", "self", "set", "stat", "touch", "wait", "watch"] {
        assert!(out.stderr.contains(&format!("\n  {name} ")), "{name} listed");
    }
    assert_eq!(doozer(u, &["-v"], b"").out(), format!("doozer {}\n", env!("CARGO_PKG_VERSION")));
    assert_eq!(doozer(u, &["-z", "rev"], b"").code, 127);
}
