//! doozerd's flags: the original's single-dash forms (`-hist 100`, `-l addr`)
//! and GNU long forms (`--hist 100`, `--listen addr`) alike.

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "doozerd",
    about = "Doozer server: a consistent, highly available store for small, critical data",
    disable_version_flag = true,
    // As with Go's flag package, a flag given twice takes the last value.
    args_override_self = true
)]
pub struct Config {
    /// Address to listen on for clients (and the node's address in /ctl).
    #[arg(short = 'l', long = "listen", default_value = "127.0.0.1:8046")]
    pub listen: String,

    /// The address other members and clients are told to use for this node
    /// (default: the -l address as bound); for NAT, proxies or -l 0.0.0.0:PORT.
    #[arg(long = "advertise")]
    pub advertise: Option<String>,

    /// Attach to the cluster member at this address (repeatable).
    #[arg(short = 'a', long = "attach")]
    pub attach: Vec<String>,

    /// DzNS boot URI.
    #[arg(short = 'b', long = "boot", env = "DOOZER_BOOT_URI", hide_env_values = true)]
    pub boot: Option<String>,

    /// Cluster name (default: local, or the name in --restore's backup).
    #[arg(short = 'c', long = "cluster")]
    pub cluster: Option<String>,

    /// Keep this node's Raft log, vote and snapshots here, so it survives a
    /// restart (default: memory only, as the original Doozer).
    #[arg(long = "data-dir", value_name = "DIR")]
    pub data_dir: Option<String>,

    /// Disaster recovery, when a majority of the voters is lost for good: this
    /// node (with --data-dir) becomes the only voter of a new cluster, keeping
    /// its state; refused while a majority answers.
    #[arg(long = "force-new-cluster")]
    pub force_new_cluster: bool,

    /// Start a new cluster from this backup (`doozer backup`): same files, same revisions.
    #[arg(long = "restore")]
    pub restore: Option<String>,

    /// With --restore (or alone): also replay this journal (`doozer journal`), up to its last whole entry.
    #[arg(long = "journal")]
    pub journal: Option<String>,

    /// Web view address (default: host of -l, port 8080); "false" turns it off.
    #[arg(short = 'w', long = "web")]
    pub web: Option<String>,

    /// Seconds a silent member is tolerated before it is removed.
    #[arg(long = "timeout", default_value_t = 60.0)]
    pub timeout: f64,

    /// Slots a new cluster's seed creates in /ctl/cal: the cluster grows to this many voters.
    #[arg(long = "cal-slots", default_value_t = 3)]
    pub cal_slots: usize,

    /// Seconds a write may take to commit before it is answered with an error.
    #[arg(long = "write-timeout", default_value_t = 10.0)]
    pub write_timeout: f64,

    /// Revisions of history kept for reads and WAITs at past revisions.
    #[arg(long = "hist", default_value_t = 2000)]
    pub hist: usize,

    /// Most bytes of paths and bodies the history may hold (the newest revision is always kept).
    #[arg(long = "hist-bytes", default_value_t = 256 << 20)]
    pub hist_bytes: usize,

    /// Unanswered requests one connection may have, held WAITs included.
    #[arg(long = "max-pending", default_value_t = 4096)]
    pub max_pending: usize,

    /// Held WAITs on the whole node.
    #[arg(long = "max-waits", default_value_t = 250_000)]
    pub max_waits: usize,

    /// Client connections open at once (peers do not count); lowered to fit the open-files limit.
    #[arg(long = "max-conns", default_value_t = crate::listen::DEFAULT_MAX_CLIENTS)]
    pub max_conns: usize,

    /// PEM certificate chain: serve clients over TLS (needs -tlskey).
    #[arg(long = "tlscert")]
    pub tlscert: Option<String>,

    /// PEM private key for -tlscert.
    #[arg(long = "tlskey")]
    pub tlskey: Option<String>,

    /// PEM CA certificate: only clients with a certificate it signed may connect (needs -tlscert).
    #[arg(long = "client-ca", value_name = "FILE")]
    pub client_ca: Option<String>,

    /// PEM certificate this node shows its peers; with --peer-key and
    /// --peer-ca, every peer connection is mutual TLS. It must name the
    /// node's address (as -l or --advertise gives it).
    #[arg(long = "peer-cert", value_name = "FILE")]
    pub peer_cert: Option<String>,

    /// PEM private key for --peer-cert.
    #[arg(long = "peer-key", value_name = "FILE")]
    pub peer_key: Option<String>,

    /// PEM CA certificate that signed every member's --peer-cert.
    #[arg(long = "peer-ca", value_name = "FILE")]
    pub peer_ca: Option<String>,

    /// Warn this many days before a certificate expires (SIGHUP reloads the files).
    #[arg(long = "cert-warn-days", default_value_t = 7.0, value_name = "DAYS")]
    pub cert_warn_days: f64,

    /// Log filter, e.g. "debug" or "doozer_server=trace" (default: info; RUST_LOG also works).
    #[arg(long = "log-level")]
    pub log_level: Option<String>,

    /// Log lines as text for people, or one JSON object per line for log collectors.
    #[arg(long = "log-format", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Once listening, write the bound address (useful with -l 127.0.0.1:0) to this file.
    #[arg(long = "addr-file")]
    pub addr_file: Option<String>,

    /// The original's pulse interval; accepted for compatibility, not needed.
    #[arg(long = "pulse", hide = true)]
    pub pulse: Option<f64>,

    /// The original's fill delay; accepted for compatibility, not needed.
    #[arg(long = "fill", hide = true)]
    pub fill: Option<f64>,

    /// Print the version and exit.
    #[arg(short = 'v', long = "version")]
    pub version: bool,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Long names that the original spelled with one dash.
const LONG: &[&str] = &[
    "listen",
    "attach",
    "boot",
    "cluster",
    "web",
    "timeout",
    "hist",
    "hist-bytes",
    "max-pending",
    "max-waits",
    "max-conns",
    "tlscert",
    "tlskey",
    "log-level",
    "log-format",
    "addr-file",
    "pulse",
    "fill",
    "version",
    "help",
];

/// Rewrites `-hist 100` and `-hist=100` as `--hist 100`, as Go's flag package accepts them.
pub fn normalize<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let name = a.strip_prefix('-').filter(|r| !r.starts_with('-')).map(|r| r.split('=').next().unwrap_or(r));
            match name {
                Some(n) if i > 0 && LONG.contains(&n) => format!("-{a}"),
                _ => a,
            }
        })
        .collect()
}

fn listen_host(listen: &str) -> &str {
    listen.rsplit_once(':').map_or(listen, |(h, _)| h)
}

/// What `-w` asks for: off, or an address.
pub fn web_addr(web: Option<&str>, listen: &str) -> Option<String> {
    match web {
        Some("1" | "t" | "T" | "TRUE" | "true" | "True" | "0" | "f" | "F" | "FALSE" | "false" | "False") => None,
        // ":PORT" means the host of -l, as the default does.
        Some(port) if port.starts_with(':') => Some(format!("{}{port}", listen_host(listen))),
        Some(addr) => Some(addr.to_string()),
        None => Some(format!("{}:8080", listen_host(listen))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::parse_from(normalize(args.iter().map(|s| s.to_string())))
    }

    #[test]
    fn single_and_double_dash_forms() {
        let c = parse(&["doozerd", "-hist", "100", "-l", "127.0.0.1:9", "-timeout=5", "-c", "x"]);
        assert_eq!((c.hist, c.listen.as_str(), c.timeout, c.cluster.as_deref()), (100, "127.0.0.1:9", 5.0, Some("x")));
        let c = parse(&["doozerd", "--hist", "7", "--listen", "0.0.0.0:1", "--tlscert=a", "-tlskey", "b"]);
        assert_eq!((c.hist, c.listen.as_str()), (7, "0.0.0.0:1"));
        assert_eq!((c.tlscert.as_deref(), c.tlskey.as_deref()), (Some("a"), Some("b")));
        assert!(parse(&["doozerd", "-v"]).version);
        let c = parse(&["doozerd", "-a", "h:1", "-a", "h:2", "-l", "a:1", "-l", "b:2"]);
        assert_eq!(c.attach, ["h:1", "h:2"]);
        assert_eq!(c.listen, "b:2");
    }

    #[test]
    fn web_defaults_and_off() {
        assert_eq!(web_addr(None, "127.0.0.1:8046").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(web_addr(Some("false"), "x:1"), None);
        assert_eq!(web_addr(Some("0"), "x:1"), None);
        assert_eq!(web_addr(Some(":9000"), "x:1").as_deref(), Some("x:9000"));
    }
}
