//! Helpers for tests that run the real binaries: start doozerd on a free port
//! (it binds port 0 and reports the address through --addr-file), speak the raw
//! protocol to it, and run the doozer CLI against it. Every process started
//! here is killed when its handle is dropped.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use doozer_proto::{encode_frame, read_frame, Request, Response, Verb, MAX_FRAME};
use prost::Message;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// How long any single expected thing may take before a test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `cond` until it holds or the deadline passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A doozerd process.
pub struct Doozerd {
    child: Child,
    pub addr: String,
    /// The HTTP address, when started with `-w HOST:PORT`.
    pub web: Option<String>,
    _dir: tempfile::TempDir,
}

impl Doozerd {
    pub fn start(args: &[&str]) -> Doozerd {
        Doozerd::start_env(args, &[])
    }

    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Doozerd {
        Doozerd::spawn(args, env, Stdio::null())
    }

    /// Starts doozerd with its log (stderr) going to `log`.
    pub fn start_logged(args: &[&str], log: &Path) -> Doozerd {
        Doozerd::spawn(args, &[], Stdio::from(std::fs::File::create(log).expect("log file")))
    }

    fn spawn(args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Doozerd {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("addr");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_doozerd"));
        // A later "-l" in `args` overrides this one.
        cmd.args(["-l", "127.0.0.1:0", "-w", "false", "--addr-file"])
            .arg(&file)
            .args(args)
            .env_remove("DOOZER_RWSECRET")
            .env_remove("DOOZER_ROSECRET")
            .env_remove("DOOZER_BOOT_URI")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        let mut child = cmd.spawn().expect("spawn doozerd");
        let (addr, web) = read_addr(&mut child, &file);
        Doozerd { child, addr, web, _dir: dir }
    }

    pub fn uri(&self) -> String {
        format!("doozer:?ca={}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` and waits for the process to exit; returns its status.
    pub fn signal_and_wait(&mut self, sig: &str) -> std::process::ExitStatus {
        self.signal(sig);
        self.wait_exit()
    }
}

/// The client address (first line) and web address (second, if any) that
/// doozerd writes to its --addr-file once it serves.
fn read_addr(child: &mut Child, file: &Path) -> (String, Option<String>) {
    let start = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(file) {
            if s.ends_with('\n') {
                let mut lines = s.lines().map(String::from);
                return (lines.next().unwrap_or_default(), lines.next());
            }
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!("doozerd exited before listening: {status}");
        }
        assert!(start.elapsed() < DEADLINE, "doozerd did not start listening");
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Doozerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A raw protocol connection: frames in, frames out, nothing hidden.
pub struct Raw {
    pub stream: TcpStream,
}

impl Raw {
    pub async fn connect(addr: &str) -> Raw {
        Raw { stream: TcpStream::connect(addr).await.expect("connect") }
    }

    pub async fn send(&mut self, req: &Request) {
        let mut buf = BytesMut::new();
        encode_frame(req, &mut buf);
        self.stream.write_all(&buf).await.expect("send");
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("send");
    }

    /// The next response; panics if none comes within the deadline.
    pub async fn recv(&mut self) -> Response {
        let frame = tokio::time::timeout(DEADLINE, read_frame(&mut self.stream, MAX_FRAME))
            .await
            .expect("timed out waiting for a response")
            .expect("read")
            .expect("connection closed");
        Response::decode(frame).expect("decode")
    }

    /// True if the server closes the connection (within the deadline) without answering.
    pub async fn closed_by_server(&mut self) -> bool {
        match tokio::time::timeout(DEADLINE, read_frame(&mut self.stream, MAX_FRAME)).await {
            Ok(Ok(None)) | Ok(Err(_)) => true,
            Ok(Ok(Some(_))) => false,
            Err(_) => panic!("server neither answered nor closed"),
        }
    }

    pub async fn call(&mut self, req: Request) -> Response {
        self.send(&req).await;
        self.recv().await
    }
}

/// A request with a verb and tag; fill in the rest with struct update syntax.
pub fn req(verb: Verb, tag: i32) -> Request {
    Request { tag: Some(tag), verb: Some(verb as i32), ..Request::default() }
}

pub fn path(verb: Verb, tag: i32, p: &str) -> Request {
    Request { path: Some(p.into()), ..req(verb, tag) }
}

pub fn set(tag: i32, p: &str, rev: i64, body: &[u8]) -> Request {
    Request { rev: Some(rev), value: Some(Bytes::copy_from_slice(body)), ..path(Verb::Set, tag, p) }
}

/// What a CLI run printed and how it exited.
#[derive(Debug)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: String,
    pub code: i32,
}

impl Output {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Runs `doozer` with `args`, feeding `stdin`, against `uri` (DOOZER_URI).
pub fn doozer(uri: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_doozer"))
        .args(args)
        .env("DOOZER_URI", uri)
        .env_remove("DOOZER_BOOT_URI")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn doozer");
    if let Some(mut input) = child.stdin.take() {
        input.write_all(stdin).expect("write stdin");
    }
    let out = child.wait_with_output().expect("doozer output");
    Output {
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

impl Doozerd {
    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal without waiting (e.g. STOP, CONT).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill").args(["-s", sig, &self.pid().to_string()]).status().expect("kill");
        assert!(ok.success());
    }
}

/// Polls an async condition until it holds or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub async fn client(addr: &str) -> doozer_client::Client {
    doozer_client::Client::connect(addr).await.expect("connect")
}

/// Every file (path, revision, body) at `rev`, walked on the node at `addr`.
pub async fn dump(addr: &str, rev: i64) -> Vec<(String, i64, Bytes)> {
    let c = client(addr).await;
    let mut files = Vec::new();
    loop {
        match c.walk("/**", files.len() as i32, Some(rev)).await {
            Ok(e) => files.push((e.path, e.rev, e.body)),
            Err(e) if e.code() == Some(doozer_proto::ErrCode::Range) => return files,
            Err(e) => panic!("walk on {addr}: {e}"),
        }
    }
}

/// (id, role) of every registered member, as the node at `addr` sees it.
pub async fn roles(addr: &str) -> Vec<(String, String)> {
    let Ok(c) = doozer_client::Client::connect(addr).await else { return Vec::new() };
    let Ok(names) = c.getdir_all("/ctl/node", None).await else { return Vec::new() };
    let mut out = Vec::new();
    for n in names {
        if let Ok((role, _)) = c.get(&format!("/ctl/node/{n}/role"), None).await {
            out.push((n, String::from_utf8_lossy(&role).into_owned()));
        }
    }
    out
}

/// The address of the member `id`, read on the node at `addr`.
pub async fn addr_of(addr: &str, id: &str) -> String {
    let (a, _) = client(addr).await.get(&format!("/ctl/node/{id}/addr"), None).await.expect("addr");
    String::from_utf8_lossy(&a).into_owned()
}

/// Starts an `n`-voter cluster: a seed with `n` slots and `n - 1` nodes
/// attached to it; returns once every one of them is a voter.
pub async fn cluster(n: usize, args: &[&str]) -> Vec<Doozerd> {
    let slots = n.to_string();
    let mut seed_args = vec!["--cal-slots", slots.as_str()];
    seed_args.extend_from_slice(args);
    let mut nodes = vec![Doozerd::start(&seed_args)];
    let seed = nodes[0].addr.clone();
    for _ in 1..n {
        let mut a = vec!["-a", seed.as_str()];
        a.extend_from_slice(args);
        nodes.push(Doozerd::start(&a));
    }
    voters_are(&seed, n).await;
    nodes
}

/// Waits until the node at `addr` sees exactly `n` members, all voters (one the leader).
pub async fn voters_are(addr: &str, n: usize) {
    eventually(&format!("{n} voters"), || async {
        let r = roles(addr).await;
        r.len() == n && r.iter().all(|(_, role)| role == "voter" || role == "leader")
    })
    .await;
}

/// The index into `nodes` of the leader named in `/ctl/leader`, once that is
/// one of the `live` nodes (a dead leader's name lingers until a new one writes).
pub async fn leader_index(nodes: &[Doozerd], live: &[usize]) -> usize {
    let start = Instant::now();
    loop {
        for &i in live {
            if let Some(found) = ask_leader(&nodes[i].addr, nodes, live).await {
                return found;
            }
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for a live leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ask_leader(asked: &str, nodes: &[Doozerd], live: &[usize]) -> Option<usize> {
    let c = doozer_client::Client::connect(asked).await.ok()?;
    let (id, _) = c.get("/ctl/leader", None).await.ok()?;
    let id = String::from_utf8_lossy(&id).into_owned();
    let (addr, _) = c.get(&format!("/ctl/node/{id}/addr"), None).await.ok()?;
    live.iter().copied().find(|&i| nodes[i].addr.as_bytes() == &addr[..])
}

impl Doozerd {
    /// Waits for the process to exit by itself; returns its status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(start.elapsed() < DEADLINE, "doozerd did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A running `doozer watch` whose stdout is collected as it arrives.
pub struct WatchProcess {
    pub child: Child,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl WatchProcess {
    /// Runs `doozer <args>` against `uri`.
    pub fn start(uri: &str, args: &[&str]) -> WatchProcess {
        use std::io::Read;
        let mut child = Command::new(env!("CARGO_BIN_EXE_doozer"))
            .args(args)
            .env("DOOZER_URI", uri)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn doozer watch");
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut stdout = child.stdout.take().expect("stdout");
        let sink = seen.clone();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&buf[..n]);
            }
        });
        WatchProcess { child, seen, reader: Some(reader) }
    }

    /// What it has printed so far.
    pub fn output(&self) -> Vec<u8> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits for it to exit by itself (after its stdout closes); returns status and stderr.
    pub fn finish(mut self) -> (std::process::ExitStatus, String) {
        use std::io::Read;
        let status = self.child.wait().expect("wait");
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        (status, stderr)
    }
}

impl Drop for WatchProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes as fast as `clients` pipelining connections can send them, to
/// `prefix`/0..`keys`, for `secs`: many small Raft entries, so that a paused
/// follower falls behind the leader's log and must catch up by a snapshot.
/// Returns the first and last acknowledged revisions.
pub async fn flood(addr: &str, prefix: &str, keys: usize, clients: usize, secs: f64) -> (i64, i64) {
    flood_with(addr, prefix, keys, clients, secs, bytes::Bytes::from_static(b"v")).await
}

/// [`flood`] with another value.
pub async fn flood_with(addr: &str, prefix: &str, keys: usize, clients: usize, secs: f64, value: Bytes) -> (i64, i64) {
    let until = Instant::now() + std::time::Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for t in 0..clients {
        let c = client(addr).await;
        let prefix = prefix.to_string();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let (mut first, mut last, mut i) = (i64::MAX, 0, 0usize);
            while Instant::now() < until {
                let rev = c.set(&format!("{prefix}/{}", (t + i * clients) % keys), -1, value.clone()).await.unwrap();
                first = first.min(rev);
                last = last.max(rev);
                i += 1;
            }
            (first, last)
        }));
    }
    let mut range = (i64::MAX, 0);
    for t in tasks {
        let (f, l) = t.await.unwrap();
        range = (range.0.min(f), range.1.max(l));
    }
    range
}
