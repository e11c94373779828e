//! Real doozerd processes for a fault-injection run, each behind its proxy.
//!
//! Slot `i` runs on 127.0.0.(10+i). A node restarted in a slot is a new
//! process with a new id, a new port and a new proxy, attached through a live
//! member, exactly as an operator would restart one. In a durable cluster
//! (`--data-dir` on every node) a restarted node is the same member: same
//! data dir, same port, same proxy.

use crate::proxy::Proxy;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Slot {
    pub ip: IpAddr,
    pub proxy: Proxy,
    /// The node's own address, where clients connect.
    pub addr: String,
    listen: std::net::SocketAddr,
    child: Child,
    pub incarnation: usize,
    paused: bool,
}

pub struct Cluster {
    pub slots: Vec<Slot>,
    doozerd: PathBuf,
    args: Vec<String>,
    pub dir: PathBuf,
    /// Every node keeps its state in `dir/data-<slot>`.
    pub durable: bool,
    /// How the harness's own clients connect (TLS in a `--tls` run).
    pub opts: doozer_client::Options,
}

fn slot_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + i as u8))
}

impl Cluster {
    /// Starts `n` nodes: a seed with `n` slots, then `n - 1` attached to it.
    pub async fn start(
        doozerd: &Path,
        n: usize,
        args: &[String],
        dir: &Path,
        durable: bool,
    ) -> Result<Cluster, String> {
        let mut c = Cluster {
            slots: Vec::new(),
            doozerd: doozerd.to_path_buf(),
            args: args.to_vec(),
            dir: dir.to_path_buf(),
            durable,
            opts: doozer_client::Options::default(),
        };
        let seed = c.spawn(0, 0, &["--cal-slots".to_string(), n.to_string()], None).await?;
        c.slots.push(seed);
        let attach = c.slots[0].proxy.addr.to_string();
        for i in 1..n {
            let s = c.spawn(i, 0, &["-a".to_string(), attach.clone()], None).await?;
            c.slots.push(s);
        }
        Ok(c)
    }

    /// Where slot `i` keeps its state in a durable cluster.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("data-{i}"))
    }

    /// Starts a node in slot `i`; with `same`, on that proxy and address.
    async fn spawn(
        &self,
        i: usize,
        incarnation: usize,
        extra: &[String],
        same: Option<(Proxy, std::net::SocketAddr)>,
    ) -> Result<Slot, String> {
        let ip = slot_ip(i);
        let (proxy, listen) = match same {
            Some(same) => same,
            None => {
                let proxy = Proxy::start(ip).await.map_err(|e| format!("proxy on {ip}: {e}"))?;
                // The proxy must forward before the node is ready (peers replicate to a
                // joining node through it), so the node's port is chosen here.
                let port = std::net::TcpListener::bind((ip, 0))
                    .and_then(|l| l.local_addr())
                    .map_err(|e| e.to_string())?
                    .port();
                let listen = std::net::SocketAddr::new(ip, port);
                proxy.forward_to(listen);
                (proxy, listen)
            }
        };
        let data: Vec<String> = match self.durable {
            true => vec!["--data-dir".into(), self.data_dir(i).display().to_string()],
            false => Vec::new(),
        };
        let addr_file = self.dir.join(format!("addr-{i}-{incarnation}"));
        let log =
            std::fs::File::create(self.dir.join(format!("node-{i}-{incarnation}.log"))).map_err(|e| e.to_string())?;
        let child = Command::new(&self.doozerd)
            .args(["-l", &listen.to_string(), "--advertise", &proxy.addr.to_string(), "-w", "false", "--addr-file"])
            .arg(&addr_file)
            .args(&self.args)
            .args(&data)
            .args(extra)
            .env("RUST_LOG", "warn,doozer_server=info")
            .env_remove("DOOZER_RWSECRET")
            .env_remove("DOOZER_ROSECRET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.doozerd.display()))?;
        let mut slot = Slot { ip, proxy, addr: String::new(), listen, child, incarnation, paused: false };
        let start = Instant::now();
        loop {
            if let Ok(s) = std::fs::read_to_string(&addr_file) {
                if let Some(a) = s.strip_suffix('\n').and_then(|s| s.lines().next()) {
                    slot.addr = a.to_string();
                    break;
                }
            }
            if let Ok(Some(status)) = slot.child.try_wait() {
                return Err(format!("node {i}.{incarnation} exited while starting: {status}"));
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = slot.child.kill();
                return Err(format!("node {i}.{incarnation} did not start within 60s"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(slot)
    }

    pub fn kill(&mut self, i: usize) {
        let s = &mut self.slots[i];
        let _ = s.child.kill();
        let _ = s.child.wait();
    }

    fn signal(&self, i: usize, sig: &str) {
        let _ = Command::new("kill").args(["-s", sig, &self.slots[i].child.id().to_string()]).status();
    }

    pub fn pause(&mut self, i: usize) {
        self.signal(i, "STOP");
        self.slots[i].paused = true;
    }

    pub fn resume(&mut self, i: usize) {
        self.signal(i, "CONT");
        self.slots[i].paused = false;
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        matches!(self.slots[i].child.try_wait(), Ok(None))
    }

    /// Starts slot `i` again (the old process must be gone): in a durable
    /// cluster the same member from its data dir, else a new node.
    pub async fn restart(&mut self, i: usize) -> Result<(), String> {
        if !self.durable {
            return self.replace(i).await;
        }
        let old = self.slots.remove(i);
        let incarnation = old.incarnation + 1;
        let listen = old.listen;
        let spawned = self.spawn(i, incarnation, &[], Some((old.proxy, listen))).await;
        let slot = spawned?;
        self.slots.insert(i, slot);
        Ok(())
    }

    /// Starts a new node in slot `i` (the old process must be gone; in a
    /// durable cluster its data dir is emptied), attached through any
    /// running member.
    pub async fn replace(&mut self, i: usize) -> Result<(), String> {
        if self.durable {
            let _ = std::fs::remove_dir_all(self.data_dir(i));
        }
        let running: Vec<usize> = (0..self.slots.len()).filter(|&j| j != i && self.is_running(j)).collect();
        let attach: Vec<String> =
            running.iter().filter(|&&j| !self.slots[j].paused).map(|&j| self.slots[j].proxy.addr.to_string()).collect();
        let mut extra = Vec::new();
        for a in attach {
            extra.push("-a".to_string());
            extra.push(a);
        }
        let incarnation = self.slots[i].incarnation + 1;
        let slot = self.spawn(i, incarnation, &extra, None).await?;
        self.slots[i] = slot;
        Ok(())
    }

    /// Leaves slot `i`'s newest log segment as a crash in the middle of a
    /// write leaves it: a copy of its last frame appended, as if the next
    /// group commit were being written, then the segment truncated by `cut`
    /// bytes (at least one, at most that whole frame) into it. Cutting into
    /// frames already synced instead would take back writes the node had
    /// acknowledged, which a crash cannot do and Raft does not survive on a
    /// majority. Returns the bytes of the torn frame left, 0 if the segment
    /// holds no frame.
    pub fn tear_tail(&self, i: usize, cut: u64) -> Result<u64, String> {
        let wal = self.data_dir(i).join("wal");
        let mut segs: Vec<PathBuf> = std::fs::read_dir(&wal)
            .map_err(|e| format!("{}: {e}", wal.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        segs.sort();
        let Some(seg) = segs.pop() else { return Ok(0) };
        let mut bytes = std::fs::read(&seg).map_err(|e| format!("{}: {e}", seg.display()))?;
        let Some((last, end)) = last_frame(&bytes) else { return Ok(0) };
        let frame = bytes[last as usize..end as usize].to_vec();
        let left = frame.len() as u64 - (1 + cut % frame.len() as u64);
        // Into the preallocated room after the frames, if there is room.
        bytes.truncate(end as usize);
        bytes.extend_from_slice(&frame[..left as usize]);
        let file = std::fs::OpenOptions::new().write(true).open(&seg).map_err(|e| e.to_string())?;
        std::os::unix::fs::FileExt::write_all_at(&file, &bytes[end as usize..], end).map_err(|e| e.to_string())?;
        Ok(left)
    }

    /// Cuts the links between these pairs of slots, both ways.
    pub fn cut(&self, pairs: &[(usize, usize)]) {
        for &(a, b) in pairs {
            self.slots[a].proxy.block(&[self.slots[b].ip]);
            self.slots[b].proxy.block(&[self.slots[a].ip]);
        }
    }

    pub fn heal(&self) {
        for s in &self.slots {
            s.proxy.heal();
        }
    }

    /// Client addresses of the nodes that are running and not paused.
    pub fn live(&mut self) -> Vec<(usize, String)> {
        let running: Vec<usize> = (0..self.slots.len()).filter(|&i| self.is_running(i)).collect();
        running.into_iter().filter(|&i| !self.slots[i].paused).map(|i| (i, self.slots[i].addr.clone())).collect()
    }

    /// The slot whose advertised address is `advertised`.
    pub fn slot_of(&self, advertised: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.proxy.addr.to_string() == advertised)
    }
}

/// Where the last frame of a log segment begins and ends (its format is in
/// the server's `consensus/wal.rs`: a 16-byte header, then frames of a
/// 12-byte head whose first word is the payload's length, none empty; zeros
/// after them are preallocated room).
fn last_frame(seg: &[u8]) -> Option<(u64, u64)> {
    let mut at = 16usize;
    let mut last = None;
    while let Some(head) = seg.get(at..at + 12) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len == 0 || at + 12 + len > seg.len() {
            break;
        }
        last = Some((at as u64, (at + 12 + len) as u64));
        at += 12 + len;
    }
    last
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.slots {
            if s.paused {
                let _ = Command::new("kill").args(["-s", "CONT", &s.child.id().to_string()]).status();
            }
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }
}
