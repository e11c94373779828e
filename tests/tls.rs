//! TLS as users turn it on: certificates made with `doozer cert`, nodes
//! started with the flags the README gives, clients with `cacert=` in the URI.
//! Peers and clients share each node's one port.

mod common;

use common::*;
use std::path::Path;
use std::time::Duration;

/// A CA and certificates for nodes n1..n4 (127.0.0.1) and a client, alice.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki { dir: tempfile::tempdir().unwrap() };
        pki.cert(&["ca"]);
        for n in ["n1", "n2", "n3", "n4"] {
            pki.cert(&["node", n, "127.0.0.1", "localhost"]);
        }
        pki.cert(&["client", "alice"]);
        pki
    }

    fn cert(&self, args: &[&str]) {
        let dir = self.dir.path().to_str().unwrap();
        let mut all = vec!["cert", args[0], dir];
        all.extend_from_slice(&args[1..]);
        let out = doozer("", &all, b"");
        assert_eq!(out.code, 0, "doozer {all:?}: {}", out.stderr);
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// Peer TLS, client TLS and client certificates, as the README's secure cluster.
    fn node(&self, n: &str) -> Vec<String> {
        let (cert, key, ca) = (self.file(&format!("{n}.pem")), self.file(&format!("{n}-key.pem")), self.file("ca.pem"));
        let flags = ["-tlscert", &cert, "-tlskey", &key, "--client-ca", &ca];
        let peer = ["--peer-cert", &cert, "--peer-key", &key, "--peer-ca", &ca];
        flags.iter().chain(peer.iter()).map(|s| s.to_string()).collect()
    }

    /// Only peer TLS.
    fn peer_only(&self, n: &str) -> Vec<String> {
        self.node(n)[6..].to_vec()
    }

    /// A URI for `addr` with alice's certificate.
    fn uri(&self, addr: &str) -> String {
        let (ca, cert, key) = (self.file("ca.pem"), self.file("alice.pem"), self.file("alice-key.pem"));
        format!("doozer:?ca={addr}&cacert={ca}&cert={cert}&key={key}")
    }
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn with(mut args: Vec<String>, more: &[&str]) -> Vec<String> {
    args.extend(more.iter().map(|s| s.to_string()));
    args
}

fn ok(uri: &str, args: &[&str], stdin: &[u8]) -> String {
    let out = doozer(uri, args, stdin);
    assert_eq!(out.code, 0, "doozer {args:?}: {}", out.stderr);
    out.out()
}

/// A node that tries to join `seed` and must be refused: its stderr.
fn join_refused(seed: &Doozerd, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_doozerd"))
        .args(["-l", "127.0.0.1:0", "-w", "false", "-a", &seed.addr])
        .args(args)
        .env_remove("DOOZER_RWSECRET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    stderr
}

fn log_says(log: &Path, what: &[&str]) {
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.lines().any(|l| what.iter().all(|w| l.contains(w))) {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "the log does not say {what:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `addr` lists `n` members, each a voter or the leader, none unreachable.
fn members_are(uri: &str, n: usize) {
    wait_until(&format!("{n} voters"), || {
        let out = doozer(uri, &["members"], b"");
        let lines: Vec<String> = out.out().lines().skip(1).map(String::from).collect();
        out.code == 0
            && lines.len() == n
            && lines.iter().all(|l| {
                let columns: Vec<&str> = l.split_whitespace().collect();
                matches!(columns[..], [_, _, "voter" | "leader", applied] if applied != "unreachable")
            })
    });
}

#[test]
fn a_tls_cluster_forms_replicates_and_fails_over() {
    let pki = Pki::new();
    let mut nodes = vec![Doozerd::start(&strs(&with(pki.node("n1"), &["--cal-slots", "3"])))];
    let seed = nodes[0].addr.clone();
    for n in ["n2", "n3"] {
        nodes.push(Doozerd::start(&strs(&with(pki.node(n), &["-a", &seed]))));
    }
    members_are(&pki.uri(&seed), 3);
    let rev = ok(&pki.uri(&nodes[1].addr), &["set", "/config", "0"], b"over tls");
    assert_eq!(ok(&pki.uri(&nodes[2].addr), &["get", "-r", rev.trim(), "/config"], b""), "over tls");

    let leader = ok(&pki.uri(&seed), &["get", "/ctl/leader"], b"");
    let leader_addr = ok(&pki.uri(&seed), &["get", &format!("/ctl/node/{leader}/addr")], b"");
    let dead = nodes.iter().position(|d| d.addr == leader_addr).expect("the leader is one of the three");
    nodes[dead].kill();
    let live: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    let (a, b) = (pki.uri(&nodes[live[0]].addr), pki.uri(&nodes[live[1]].addr));
    // (1: REV_MISMATCH, the file is there: a try whose answer was lost went through.)
    wait_until("a write after the leader died", || {
        [0, 1].contains(&doozer(&a, &["set", "/after", "0"], b"failed over").code)
    });
    wait_until("the write on the other survivor", || doozer(&b, &["get", "/after"], b"").out() == "failed over");
}

#[test]
fn a_node_with_a_certificate_from_another_ca_cannot_join() {
    let pki = Pki::new();
    let other = Pki::new();
    let log = pki.dir.path().join("seed.log");
    let seed = Doozerd::start_logged(&strs(&pki.node("n1")), &log);
    let stderr = join_refused(&seed, &strs(&other.peer_only("n2")));
    assert!(stderr.contains("refused this node") && stderr.contains("certificate"), "{stderr}");
    log_says(&log, &["refused a peer connection", "--peer-ca"]);

    // Trusting the cluster's CA is not enough: its own certificate is refused.
    let mixed = ["--peer-cert", &other.file("n2.pem"), "--peer-key", &other.file("n2-key.pem")];
    let stderr = join_refused(&seed, &[&mixed[..], &["--peer-ca", &pki.file("ca.pem")]].concat());
    assert!(stderr.contains("refused this node's certificate"), "{stderr}");
    log_says(&log, &["refused a peer connection", "not one this node trusts"]);
    ok(&pki.uri(&seed.addr), &["set", "/still", "0"], b"serving");
}

#[test]
fn a_node_without_peer_tls_cannot_join_a_cluster_with_it() {
    let pki = Pki::new();
    let log = pki.dir.path().join("seed.log");
    let seed = Doozerd::start_logged(&strs(&pki.peer_only("n1")), &log);
    let stderr = join_refused(&seed, &[]);
    assert!(stderr.contains("peers speak TLS") && stderr.contains("--peer-cert"), "{stderr}");
    log_says(&log, &["refused a peer connection", "does not speak TLS"]);
    // And the other way round: a peer-TLS node cannot join a plain cluster,
    // nor one serving clients over TLS without peer TLS.
    let plain = Doozerd::start(&[]);
    let stderr = join_refused(&plain, &strs(&pki.peer_only("n2")));
    assert!(stderr.contains("does not take peer TLS"), "{stderr}");
    let clients_only = Doozerd::start(&strs(&pki.node("n3")[..6]));
    let stderr = join_refused(&clients_only, &strs(&pki.peer_only("n4")));
    assert!(stderr.contains("does not take peer TLS"), "{stderr}");
}

#[test]
fn client_certificates_are_required_with_client_ca() {
    let pki = Pki::new();
    let other = Pki::new();
    let node = Doozerd::start(&strs(&pki.node("n1")));
    let uri = pki.uri(&node.addr);
    ok(&uri, &["set", "/who", "0"], b"alice");

    let no_cert = format!("doozer:?ca={}&cacert={}", node.addr, pki.file("ca.pem"));
    let out = doozer(&no_cert, &["get", "/who"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("--client-ca") && out.stderr.contains("--cert"), "{}", out.stderr);

    let wrong = format!("{no_cert}&cert={}&key={}", other.file("alice.pem"), other.file("alice-key.pem"));
    let out = doozer(&wrong, &["get", "/who"], b"");
    assert_eq!(out.code, 2, "a certificate from another CA: {}", out.stderr);

    let out = doozer(&format!("doozer:?ca={}", node.addr), &["get", "/who"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("speaks TLS"), "{}", out.stderr);
    assert_eq!(ok(&uri, &["get", "/who"], b""), "alice", "the refusals cost the node nothing");
}

#[tokio::test]
async fn plain_bytes_to_a_tls_port_and_tls_to_a_plain_port_fail_cleanly() {
    let pki = Pki::new();
    let tls = Doozerd::start(&strs(&pki.node("n1")));
    let mut raw = Raw::connect(&tls.addr).await;
    raw.send_bytes(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(raw.closed_by_server().await);
    let mut raw = Raw::connect(&tls.addr).await;
    let answer = raw.call(req(doozer_proto::Verb::Rev, 7)).await;
    assert!(answer.err_detail.unwrap_or_default().contains("speaks TLS"));
    let mut raw = Raw::connect(&tls.addr).await;
    raw.send_bytes(&[0x16, 3, 1, 0, 9, 1, 2, 3]).await;
    drop(raw);
    ok(&pki.uri(&tls.addr), &["set", "/ok", "0"], b"still");

    let plain = Doozerd::start(&[]);
    let out = doozer(&pki.uri(&plain.addr), &["rev"], b"");
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("TLS with"), "{}", out.stderr);
    ok(&plain.uri(), &["set", "/ok", "0"], b"still");

    // Peer TLS alone: clients stay plain, and a TLS client is closed.
    let peers = Doozerd::start(&strs(&pki.peer_only("n2")));
    assert_eq!(doozer(&pki.uri(&peers.addr), &["rev"], b"").code, 2);
    ok(&peers.uri(), &["set", "/ok", "0"], b"still");
}

#[tokio::test]
async fn sighup_swaps_the_certificates_for_new_connections() {
    let first = Pki::new();
    let second = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::copy(first.file("n1.pem"), &cert).unwrap();
    std::fs::copy(first.file("n1-key.pem"), &key).unwrap();
    let log = dir.path().join("node.log");
    let node = Doozerd::start_logged(&["-tlscert", cert.to_str().unwrap(), "-tlskey", key.to_str().unwrap()], &log);
    let trusting = |pki: &Pki| format!("doozer:?ca={}&cacert={}", node.addr, pki.file("ca.pem"));
    let tls = |pki: &Pki| doozer_client::Options {
        tls: Some(doozer_client::Tls::from_files(&pki.file("ca.pem"), None, None).unwrap()),
        ..doozer_client::Options::default()
    };
    let open = doozer_client::Client::connect_with(&node.addr, &tls(&first)).await.unwrap();
    assert_eq!(doozer(&trusting(&second), &["rev"], b"").code, 2);

    std::fs::copy(second.file("n1.pem"), &cert).unwrap();
    std::fs::copy(second.file("n1-key.pem"), &key).unwrap();
    node.signal("HUP");
    log_says(&log, &["certificates reloaded"]);
    ok(&trusting(&second), &["set", "/swapped", "0"], b"yes");
    assert_eq!(doozer(&trusting(&first), &["rev"], b"").code, 2, "new connections show the new certificate");
    open.rev().await.expect("a connection opened before the swap keeps going");

    std::fs::write(&cert, "not a certificate").unwrap();
    node.signal("HUP");
    log_says(&log, &["cannot reload", "keeping the ones in use"]);
    ok(&trusting(&second), &["get", "/swapped"], b"");
}

#[test]
fn a_certificate_near_its_end_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let end = now + Duration::from_secs(3 * 86_400 + 3600);
    params.not_after = rcgen::date_time_ymd(1970, 1, 1) + end;
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let args = ["-tlscert", cert_path.to_str().unwrap(), "-tlskey", key_path.to_str().unwrap()];

    let log = dir.path().join("warned.log");
    let _node = Doozerd::start_logged(&args, &log);
    log_says(&log, &["WARN", cert_path.to_str().unwrap(), "expires in 3 days"]);

    let quiet = dir.path().join("quiet.log");
    let mut node = Doozerd::start_logged(&[&args[..], &["--cert-warn-days", "1"]].concat(), &quiet);
    node.signal_and_wait("TERM");
    let text = std::fs::read_to_string(&quiet).unwrap();
    assert!(!text.contains("expires"), "--cert-warn-days 1: {text}");
}

/// The README's "A secure 3-node cluster", line for line, on free ports.
#[test]
fn the_readme_secure_cluster_works_as_written() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section =
        readme.split("## A secure 3-node cluster").nth(1).expect("the section").split("\n## ").next().unwrap();
    let block = section.split("\n\n").find(|p| p.starts_with("    doozer cert ca")).expect("the commands");
    let mut script: String = block.lines().map(|l| format!("{}\n", l.trim_start())).collect();
    for old in ["127.0.0.1:8246", "127.0.0.1:8247", "127.0.0.1:8248"] {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        script = script.replace(old, &free);
    }
    let dir = tempfile::tempdir().unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_doozerd")).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let mut shell = std::process::Command::new("bash");
    std::os::unix::process::CommandExt::process_group(&mut shell, 0);
    // Into files: the nodes it leaves running hold them open.
    let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = shell
        .args(["-ec", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .env_remove("DOOZER_URI")
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    // The nodes run on in the script's process group: stopped however the test ends.
    struct Group(u32);
    impl Drop for Group {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").args(["--", &format!("-{}", self.0)]).status();
        }
    }
    let _group = Group(child.id());
    let status = child.wait().unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    assert!(status.success(), "{stdout}{}", std::fs::read_to_string(&err_path).unwrap());
    assert!(stdout.contains("hello, securely"), "{stdout}");
    assert!(stdout.contains("ID ") && stdout.contains("leader"), "{stdout}");
}
