//! The built `doozer` binary against a started doozerd, compared with what the
//! original printed: stdout, stderr, exit codes.

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
        "/\n/ctl\n/ctl/cal\n/ctl/cal/0\n/ctl/cal/1\n/ctl/cal/2\n/ctl/leader\n/ctl/name\n/ctl/node\n/ctl/node/{id}\n/ctl/node/{id}/addr\n/ctl/node/{id}/hostname\n/ctl/node/{id}/role\n/ctl/node/{id}/version\n/ctl/node/{id}/writable\n/ctl/ns\n/ctl/ns/local\n/ctl/ns/local/{id}\n/message\n"
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
    // BAD_PATH keeps the original's words first and names the rule after them.
    let rules = [
        ("relative", "does not start with /"),
        ("/a/", "ends with /"),
        ("/a b", "has the character ' '"),
        ("/under_score", "has the character '_'"),
    ];
    for (p, rule) in rules {
        let out = doozer(&u, &["set", p, "0"], b"");
        assert_eq!((out.out().as_str(), out.code), ("", 2), "{p}");
        assert!(out.stderr.starts_with("Error: BAD_PATH: ") && out.stderr.contains(rule), "{p}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "one line");
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
    // find of a missing path is an error, with the path (the original printed
    // NOENT and exited 0); so is too old a rev (the original: TOO_LATE, exit 0).
    let out = doozer(&u, &["find", "/nope"], b"");
    assert_eq!(out.out(), "");
    assert!(out.stderr.starts_with("Error: /nope: no such file or directory"), "{}", out.stderr);
    assert_eq!(out.code, 2);
    for _ in 0..10 {
        doozer(&u, &["nop"], b"");
    }
    let out = doozer(&u, &["-r", "1", "find", "/"], b"");
    assert_eq!((out.stderr.as_str(), out.code), ("Error: TOO_LATE\n", 2));
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

#[test]
fn help_version_and_generated_documents() {
    let u = "doozer:?ca=127.0.0.1:1";
    // `doozer help` alone lists every command, one line each, on stdout.
    let out = doozer(u, &["help"], b"");
    assert_eq!((out.code, out.stderr.as_str()), (0, ""));
    for name in ["get", "set", "log", "status", "members", "completion", "man", "backup", "journal"] {
        assert!(out.out().contains(&format!("\n  {name} ")), "{name} listed: {}", out.out());
    }
    assert_eq!(doozer(u, &["--help"], b"").code, 0);
    assert_eq!(doozer(u, &["get", "--help"], b"").out(), doozer(u, &["help", "get"], b"").out());
    assert_eq!(doozer(u, &["--version"], b"").out(), format!("doozer {}\n", env!("CARGO_PKG_VERSION")));
    for shell in ["bash", "zsh", "fish"] {
        let out = doozer(u, &["completion", shell], b"");
        assert_eq!(out.code, 0, "{shell}: {}", out.stderr);
        assert!(out.out().contains("doozer") && out.out().contains("watch"), "{shell}");
    }
    assert_eq!(doozer(u, &["completion", "tcsh"], b"").code, 2);
    let man = doozer(u, &["man"], b"");
    assert_eq!(man.code, 0);
    assert!(man.out().starts_with(".ie") || man.out().contains(".TH doozer"), "{}", man.out());
    assert!(man.out().contains("DOOZER_URI"));
}

#[test]
fn timeouts_bound_every_command_that_waits() {
    let d = Doozerd::start(&[]);
    let u = d.uri();
    // A read at a future revision says what it waits for, and -t ends it.
    for cmd in [&["get", "/x"][..], &["stat", "/"], &["find", "/"], &["log", "/x"]] {
        let args: Vec<&str> = ["-r", "999999", "-t", "300ms"].iter().copied().chain(cmd.iter().copied()).collect();
        let out = doozer(&u, &args, b"");
        assert_eq!((out.out().as_str(), out.code), ("", 2), "{cmd:?}");
        assert!(out.stderr.contains("waiting for revision 999999"), "{cmd:?}: {}", out.stderr);
        assert!(out.stderr.contains("timed out after 300ms (-t)"), "{cmd:?}: {}", out.stderr);
    }
    let out = doozer(&u, &["-t", "200ms", "wait", "/never"], b"");
    assert_eq!((out.stderr.as_str(), out.code), ("Error: wait timeout\n", 2));
    let out = doozer(&u, &["-t", "200ms", "watch", "/never"], b"");
    assert_eq!((out.stderr.as_str(), out.code), ("Error: watch timed out after 200ms (-t)\n", 2));
    // A silent address (accepts, never answers) is bounded too.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("doozer:?ca={}", silent.local_addr().unwrap());
    let out = doozer(&uri, &["-t", "300ms", "get", "/x"], b"");
    assert_eq!(out.code, 2, "{}", out.stderr);
}

#[test]
fn errors_say_what_to_do() {
    let d = Doozerd::start_env(&["-w", "127.0.0.1:0"], &[("DOOZER_RWSECRET", "s3cret")]);
    let u = d.uri();
    // Only a read-write secret: anyone may read, writing needs the secret.
    let out = doozer(&u, &["set", "/x", "0"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.starts_with("Error: OTHER: permission denied") && out.stderr.contains("sk="), "{}", out.stderr);
    let u = format!("{u}&sk=s3cret");
    // Over the limit: refused before anything is sent, not "Broken pipe".
    let out = doozer(&u, &["set", "/big", "0"], &vec![b'x'; (1 << 20) + 1]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("at most 1048576"), "{}", out.stderr);
    assert_eq!(doozer(&u, &["stat", "/big"], b"").code, 2, "nothing was written");
    // Pointed at the web port.
    let web = d.web.clone().expect("web address");
    let out = doozer(&format!("doozer:?ca={web}"), &["get", "/x"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("speaks HTTP"), "{}", out.stderr);
}

#[test]
fn json_output_one_object_per_line() {
    let d = Doozerd::start(&[]);
    let u = d.uri();
    let set = doozer(&u, &["--json", "set", "/j/a", "0"], b"one");
    let v: serde_json::Value = serde_json::from_str(&ok(&set)).unwrap();
    let r = v["rev"].as_i64().unwrap();
    assert_eq!(v["path"], "/j/a");
    let get: serde_json::Value = serde_json::from_str(&ok(&doozer(&u, &["-w", "json", "get", "/j/a"], b""))).unwrap();
    assert_eq!((get["body"].as_str(), get["rev"].as_i64(), get["len"].as_i64()), (Some("one"), Some(r), Some(3)));
    let missing: serde_json::Value = serde_json::from_str(&ok(&doozer(&u, &["--json", "get", "/j/no"], b""))).unwrap();
    assert_eq!(missing["exists"], false);
    doozer(&u, &["set", "/j/bin", "0"], &[0xff, 0x00]);
    let bin: serde_json::Value = serde_json::from_str(&ok(&doozer(&u, &["--json", "get", "/j/bin"], b""))).unwrap();
    assert_eq!(bin["body_base64"], "/wA=");
    let stat: serde_json::Value = serde_json::from_str(&ok(&doozer(&u, &["--json", "stat", "/j"], b""))).unwrap();
    assert_eq!((stat["dir"].as_bool(), stat["entries"].as_i64()), (Some(true), Some(2)));
    let found = ok(&doozer(&u, &["--json", "find", "/j"], b""));
    let paths: Vec<String> = found
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["/j", "/j/a", "/j/bin"]);
    let rev: serde_json::Value = serde_json::from_str(&ok(&doozer(&u, &["--json", "rev"], b""))).unwrap();
    assert!(rev["rev"].as_i64().unwrap() >= r);
    let id: serde_json::Value = serde_json::from_str(&ok(&doozer(&u, &["--json", "self"], b""))).unwrap();
    assert_eq!(id["id"].as_str().unwrap().len(), 16);
    let r1 = r.to_string();
    let wait = ok(&doozer(&u, &["--json", "-r", &r1, "wait", "/j/*"], b""));
    let e: serde_json::Value = serde_json::from_str(&wait).unwrap();
    assert_eq!((e["kind"].as_str(), e["rev"].as_i64(), e["body"].as_str()), (Some("set"), Some(r), Some("one")));
    for line in ok(&doozer(&u, &["--json", "status"], b"")).lines() {
        let m: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!((m["reachable"].as_bool(), m["lag"].as_i64()), (Some(true), Some(0)));
    }
}

#[test]
fn log_lists_a_paths_changes_newest_first() {
    let d = Doozerd::start(&[]);
    let u = d.uri();
    let r1 = rev_of(&doozer(&u, &["set", "/cfg", "0"], b"one"));
    doozer(&u, &["set", "/other", "0"], b"x");
    let r2 = rev_of(&doozer(&u, &["set", "/cfg", "-1"], b"two"));
    assert_eq!(ok(&doozer(&u, &["del", "/cfg", "-1"], b"")), "");
    let r3 = rev_of(&doozer(&u, &["rev"], b""));
    let log = ok(&doozer(&u, &["log", "/cfg"], b""));
    assert_eq!(log, format!("/cfg {r3} del 0\n\n/cfg {r2} set 3\ntwo\n/cfg {r1} set 3\none\n"));
    // -r: the changes at or before that revision; a glob matches several paths.
    let at = ok(&doozer(&u, &["-r", &r2.to_string(), "log", "/cfg"], b""));
    assert_eq!(at, format!("/cfg {r2} set 3\ntwo\n/cfg {r1} set 3\none\n"));
    let both = ok(&doozer(&u, &["-r", &r2.to_string(), "log", "/*"], b""));
    assert_eq!(both.matches(" set ").count(), 3, "{both}");
    assert_eq!(ok(&doozer(&u, &["log", "/never"], b"")), "");
}

#[test]
fn log_stops_at_the_default_history_window() {
    // Past the default window (2000 revisions) the oldest changes are gone,
    // and log lists what is left without an error.
    let d = Doozerd::start(&[]);
    let u = d.uri();
    let first = rev_of(&doozer(&u, &["set", "/w", "0"], b"first"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = common::client(&d.addr).await;
        let writes: Vec<_> = (0..2100).map(|i| c.set("/w", -1, format!("{i}"))).collect();
        for w in writes {
            w.await.unwrap();
        }
    });
    let log = ok(&doozer(&u, &["log", "/w"], b""));
    let count = log.matches("/w ").count();
    assert!((1900..=2000).contains(&count), "{count} changes listed");
    assert!(!log.contains(&format!("/w {first} ")), "the first change has left the window");
    assert!(log.starts_with("/w ") && log.contains("\n2099\n"), "newest first");
}

#[test]
fn tls_from_the_cli() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (ca, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    std::fs::write(&key, cert.signing_key.serialize_pem()).unwrap();
    let d = Doozerd::start(&["-tlscert", ca.to_str().unwrap(), "-tlskey", key.to_str().unwrap()]);
    let u = d.uri();
    let ca = ca.to_str().unwrap();
    let r = rev_of(&doozer(&u, &["--cacert", ca, "set", "/tls", "0"], b"secure"));
    assert_eq!(ok(&doozer(&u, &["-cacert", ca, "get", "/tls"], b"")), "secure");
    assert_eq!(
        ok(&doozer(&u, &["-cacert", ca, "-r", &r.to_string(), "wait", "/tls"], b"")),
        format!("/tls {r} set 6\nsecure\n")
    );
    // Without the CA, the TLS port is recognised.
    let out = doozer(&u, &["get", "/tls"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("speaks TLS") && out.stderr.contains("--cacert"), "{}", out.stderr);
    // A bad CA file is one line saying which file.
    let out = doozer(&u, &["--cacert", "/nonexistent.pem", "get", "/tls"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("/nonexistent.pem"), "{}", out.stderr);
}
