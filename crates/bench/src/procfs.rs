//! What the bench reads of local processes from /proc (Linux): which
//! process serves a port, its resident memory, and the CPU time it used.
//! Elsewhere every answer is `None` and the reports say `n/a`.

/// The pid of the local process listening on `port`.
pub fn listener_pid(port: u16) -> Option<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let listening = f.get(3) == Some(&"0A");
            let local_port = f.get(1).and_then(|a| a.rsplit(':').next()).and_then(|p| u16::from_str_radix(p, 16).ok());
            if listening && local_port == Some(port) {
                inodes.extend(f.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                if inodes.iter().any(|i| target.to_string_lossy() == *i) {
                    return Some(pid);
                }
            }
        }
    }
    None
}

/// The pid serving `addr` (HOST:PORT) on this machine.
pub fn server_pid(addr: &str) -> Option<u32> {
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).and_then(listener_pid)
}

/// Resident memory of `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches(" kB").parse().ok()?;
    Some(kib * 1024)
}

/// CPU seconds (user + system) `pid` has used; `None` for this process.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = pid.map_or_else(|| "/proc/self/stat".to_string(), |p| format!("/proc/{p}/stat"));
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may hold spaces), from field 3 on:
    // utime and stime are fields 14 and 15, in USER_HZ ticks (100 a second).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / 100.0)
}

/// CPU used by a set of processes over an interval, as a share of one core.
pub struct CpuMeter {
    /// (name, pid; `None`: this process), and CPU seconds at the start.
    start: Vec<(String, Option<u32>, Option<f64>)>,
    at: std::time::Instant,
}

impl CpuMeter {
    pub fn start(procs: Vec<(String, Option<u32>)>) -> CpuMeter {
        let start = procs.into_iter().map(|(name, pid)| (name, pid, cpu_seconds(pid))).collect();
        CpuMeter { start, at: std::time::Instant::now() }
    }

    /// Each process's CPU since the start, in percent of one core (`n/a` if unknown).
    pub fn percents(&self) -> Vec<(String, String)> {
        let wall = self.at.elapsed().as_secs_f64().max(1e-9);
        let used = |pid, before: Option<f64>| Some((cpu_seconds(pid)? - before?) / wall * 100.0);
        self.start
            .iter()
            .map(|(name, pid, before)| {
                (name.clone(), used(*pid, *before).map_or_else(|| "n/a".to_string(), |p| format!("{p:.0}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_s_cpu_time_is_read_and_grows() {
        let before = cpu_seconds(None).expect("/proc/self/stat");
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 100 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_seconds(None).unwrap() > before);
    }
}
