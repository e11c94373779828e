//! doozerd: the Doozer server.
//!
//! Modules, in the order a request meets them: [`config`] (flags), [`conn`]
//! (framing and the per-connection reader and writer), [`session`] (what each
//! verb does), [`consensus`] (Raft: writes, membership, peers), [`node`] (the
//! store and held WAITs), [`waiters`] (the WAIT index), [`access`] (secrets),
//! [`ctl`] (the `/ctl` files), [`dzns`] (booting by name through another
//! cluster), [`tls`], [`memory`] (freed pages back to the system). The data model lives in
//! `doozer-store`, the wire format in `doozer-proto`.

pub mod access;
pub mod config;
pub mod conn;
pub mod consensus;
pub mod ctl;
pub mod dzns;
pub mod listen;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod rt;
pub mod session;
pub mod tls;
pub mod waiters;
pub mod web;

use access::Secrets;
use clap::Parser;
use config::Config;
use consensus::Consensus;
use doozer_store::HistoryLimits;
use node::{Limits, Node};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// What a node needs to start.
#[derive(Clone)]
pub struct Settings {
    /// Address to listen on; port 0 picks a free one.
    pub listen: String,
    /// The address members and clients are told (default: the bound address).
    pub advertise: Option<String>,
    /// Members to attach to; empty: start a new cluster (a seed), or ask `boot`.
    pub attach: Vec<String>,
    /// A DzNS URI (`-b`): where to find the members, or to win the right to
    /// start the cluster, when `attach` is empty or fails.
    pub boot: Option<String>,
    pub limits: Limits,
    pub secrets: Secrets,
    pub cluster: consensus::Options,
    /// A new cluster starts from this store image (`--restore`).
    pub restore: Option<bytes::Bytes>,
    /// Where to serve HTTP (the web view, API, metrics); `None`: nowhere.
    pub web: Option<String>,
    /// Most client connections at once (`--max-conns`).
    pub max_clients: usize,
    /// Where Raft's state is kept (`--data-dir`); `None`: in memory only.
    pub data_dir: Option<Arc<consensus::DataDir>>,
}

impl Settings {
    /// A one-node cluster on a free loopback port, as tests want it.
    pub fn local() -> Settings {
        Settings {
            listen: "127.0.0.1:0".into(),
            advertise: None,
            attach: Vec::new(),
            boot: None,
            limits: Limits::default(),
            secrets: Secrets::default(),
            cluster: consensus::Options {
                cluster: "local".into(),
                secret: String::new(),
                write_timeout: Duration::from_secs(10),
                member_timeout: Duration::from_secs(60),
                cal_slots: 3,
                tls: None,
            },
            restore: None,
            web: None,
            max_clients: listen::DEFAULT_MAX_CLIENTS,
            data_dir: None,
        }
    }
}

impl Settings {
    /// What the flags ask for (no TLS, no restore: those read files).
    pub fn from_config(cfg: &Config, cluster: &str, secrets: Secrets) -> Settings {
        Settings {
            listen: cfg.listen.clone(),
            advertise: cfg.advertise.clone(),
            attach: cfg.attach.clone(),
            boot: cfg.boot.clone().filter(|b| !b.is_empty()),
            limits: Limits {
                max_pending: cfg.max_pending.max(1),
                max_waiters: cfg.max_waits,
                history: HistoryLimits { revs: cfg.hist.max(1), bytes: cfg.hist_bytes },
                ..Limits::default()
            },
            cluster: consensus::Options {
                cluster: cluster.to_string(),
                secret: secrets.rw.clone(),
                write_timeout: Duration::from_secs_f64(cfg.write_timeout.max(0.1)),
                member_timeout: Duration::from_secs_f64(cfg.timeout.max(0.1)),
                cal_slots: cfg.cal_slots.max(1),
                tls: None,
            },
            secrets,
            restore: None,
            web: config::web_addr(cfg.web.as_deref(), &cfg.listen),
            max_clients: cfg.max_conns,
            data_dir: None,
        }
    }
}

/// A started node: it accepts connections until [`Running::stop`].
pub struct Running {
    pub addr: String,
    /// The bound HTTP address, if the web side is on.
    pub web: Option<String>,
    pub cluster: Arc<Consensus>,
    stop: CancellationToken,
}

impl Running {
    pub fn node(&self) -> &Arc<Node> {
        self.cluster.node()
    }

    /// Stops accepting connections and stops consensus.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.cluster.shutdown().await;
    }
}

/// Binds, starts consensus, seeds a new cluster or joins one, and serves.
/// Returns once the node has caught up and answers clients.
pub async fn start(settings: Settings) -> Result<Running, String> {
    let listener = rt::Listener::bind(&settings.listen).await.map_err(|e| {
        format!("cannot listen on {}: {e} (is another doozerd running? try -l 127.0.0.1:PORT)", settings.listen)
    })?;
    let bound = listener.local_addr().map_err(|e| format!("cannot read the listen address: {e}"))?;
    let addr = bound.to_string();
    let bind_ip = Some(bound.ip()).filter(|ip| !ip.is_unspecified());
    if bind_ip.is_none() && settings.advertise.is_none() {
        return Err(format!("listening on {addr} (all interfaces): give --advertise HOST:PORT, the address other nodes and clients should use"));
    }
    let advertised = settings.advertise.clone().unwrap_or_else(|| addr.clone());
    let saved = match &settings.data_dir {
        Some(dir) => Some(consensus::Saved::load(dir.clone(), &settings.cluster.cluster)?),
        None => None,
    };
    let resumed = saved.as_ref().and_then(|s| s.node()).map(|(id, at)| (id.to_string(), at.to_string()));
    if let Some((_, at)) = resumed.as_ref().filter(|(_, at)| *at != advertised) {
        return Err(format!(
            "this node's data dir says it is at {at}, not {advertised}: start it with -l {at} (or --advertise {at}), \
             or empty the directory and it joins as a new member"
        ));
    }
    if resumed.is_some() && settings.restore.is_some() {
        return Err(
            "--restore starts a new cluster, but --data-dir holds a member of one: give an empty directory".into()
        );
    }
    let id = resumed.as_ref().map_or_else(ctl::new_id, |(id, _)| id.clone());
    let node = Node::new(id.clone(), settings.limits.clone());
    let cluster = Consensus::start(node.clone(), advertised.clone(), bind_ip, settings.cluster.clone(), saved).await?;
    let stop = CancellationToken::new();
    let secrets = Arc::new(settings.secrets.clone());
    let accept = listen::accept_loop(
        listener,
        cluster.clone(),
        secrets.clone(),
        settings.cluster.tls.clone(),
        settings.max_clients,
        stop.clone(),
    );
    tokio::spawn(accept);
    let joined = match resumed {
        // Ready (serving clients) once caught up; see `Consensus::resume`.
        Some(_) => {
            cluster.resume();
            Ok(())
        }
        None => seed_or_join(&cluster, &settings, &id, &advertised).await.map(|_| node.set_ready()),
    };
    if let Err(e) = joined {
        stop.cancel();
        cluster.shutdown().await;
        return Err(e);
    }
    if let Some(boot) = &settings.boot {
        dzns::keep_registered(boot.clone(), settings.cluster.secret.clone(), cluster.clone());
    }
    let web = match &settings.web {
        None => None,
        // The web view is a convenience: a busy port must not keep the node from serving.
        Some(w) => match web::serve(w, cluster.clone(), secrets, stop.clone()).await {
            Ok(bound) => Some(bound),
            Err(e) => {
                warn!("{e}; the web view is off");
                None
            }
        },
    };
    Ok(Running { addr, web, cluster, stop })
}

/// The default log filter: doozerd's own news at INFO, everyone else's
/// warnings. openraft is off: it logs an ERROR for every failed heartbeat to
/// a down peer (about two a second) and names members by its internal
/// numbers; the peer layer reports a down peer once, by its `/ctl` id, and
/// once again when it is back. `--log-level openraft=debug` turns it on.
const DEFAULT_LOG: &str = "warn,openraft=off,doozer_server=info";

/// Seeds a new cluster or joins one: through `-a` first, then through the
/// DzNS, as the original did.
async fn seed_or_join(cluster: &Consensus, settings: &Settings, id: &str, addr: &str) -> Result<(), String> {
    if !settings.attach.is_empty() {
        let attached = cluster.join(&settings.attach).await;
        match (&attached, &settings.boot) {
            (Ok(()), _) | (Err(_), None) => return attached,
            (Err(e), Some(_)) => info!(error = %e, "cannot attach through -a; booting through the DzNS"),
        }
    }
    let Some(boot) = &settings.boot else { return cluster.seed(settings.restore.clone()).await };
    match dzns::boot(boot, &settings.cluster.secret, cluster.cluster(), id, addr).await? {
        dzns::Boot::Seed => cluster.seed(settings.restore.clone()).await,
        dzns::Boot::Attach(addrs) => cluster.join(&addrs).await,
    }
}

fn init_logging(level: Option<&str>, json: bool) {
    let filter = level.map(String::from).or_else(|| std::env::var("RUST_LOG").ok());
    let filter = filter.unwrap_or_else(|| DEFAULT_LOG.to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("doozerd: ignoring --log-level {filter:?} ({e}); using {DEFAULT_LOG:?}");
        tracing_subscriber::EnvFilter::new(DEFAULT_LOG)
    });
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        fmt.json().flatten_event(true).init();
    } else {
        fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init();
    }
}

/// A server holds a descriptor per client: take the soft limit up to the hard
/// one. Returns the limit, if known.
fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => {
            debug!(limit = n, "open files");
            Some(n)
        }
        Err(e) => {
            warn!(error = %e, "cannot raise the open-files limit");
            None
        }
    }
}

/// Descriptors kept for peers, the web side, handshakes and the process itself.
const RESERVED_FDS: u64 = 2048;

/// The client cap: as asked, but leaving [`RESERVED_FDS`] of the open-files
/// limit free, so clients alone can never use every descriptor.
fn client_cap(asked: usize, open_files: Option<u64>) -> usize {
    let Some(limit) = open_files else { return asked };
    let room = usize::try_from(limit.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX).max(64);
    // Said only to someone who asked for more: the default fits itself quietly.
    if asked > room && asked != listen::DEFAULT_MAX_CLIENTS {
        warn!(asked, room, open_files = limit, "--max-conns lowered to fit the open-files limit");
    }
    asked.min(room)
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("doozerd: {msg}");
    ExitCode::from(1)
}

/// doozerd's entry point.
pub fn main() -> ExitCode {
    let cfg = Config::parse_from(config::normalize(std::env::args()));
    if cfg.version {
        println!("doozerd {}", ctl::VERSION);
        return ExitCode::SUCCESS;
    }
    init_logging(cfg.log_level.as_deref(), cfg.log_format == config::LogFormat::Json);
    let open_files = raise_open_files_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(run(cfg, open_files))
}

async fn run(cfg: Config, open_files: Option<u64>) -> ExitCode {
    if cfg.listen.is_empty() {
        return fail("require a listen address (-l HOST:PORT)");
    }
    let tls = match tls_files(&cfg).and_then(tls::Tls::load) {
        Ok(t) => t,
        Err(e) => return fail(e),
    };
    let restored = match load_restore(&cfg) {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    let cluster_name = cfg
        .cluster
        .clone()
        .or_else(|| restored.as_ref().map(|(name, _)| name.clone()))
        .unwrap_or_else(|| "local".to_string());
    let secrets = Secrets {
        rw: std::env::var("DOOZER_RWSECRET").unwrap_or_default(),
        ro: std::env::var("DOOZER_ROSECRET").unwrap_or_default(),
    };
    let data_dir = match &cfg.data_dir {
        Some(path) => match consensus::DataDir::open(std::path::Path::new(path)) {
            Ok(d) => Some(Arc::new(d)),
            Err(e) => return fail(e),
        },
        None => None,
    };
    if cfg.force_new_cluster && data_dir.is_none() {
        return fail(
            "--force-new-cluster needs --data-dir: a running memory-only node is recovered with `doozer force-new-cluster`",
        );
    }
    // A forced new cluster that a crash interrupted is begun again: whatever
    // the seeding had written goes, and the image is seeded anew.
    let recovered = data_dir.as_ref().and_then(|d| d.recovered().map(|image| (d, image)));
    if let Some((dir, _)) = &recovered {
        warn!("finishing a forced new cluster that was interrupted");
        if let Err(e) = dir.wipe() {
            return fail(format!("cannot empty {}: {e}", dir.path().display()));
        }
    }
    let restored = restored.map(|(_, image)| image).or(recovered.map(|(_, image)| image));
    let mut settings = Settings {
        restore: restored,
        max_clients: client_cap(cfg.max_conns, open_files),
        data_dir,
        ..Settings::from_config(&cfg, &cluster_name, secrets)
    };
    settings.cluster.tls = tls.clone();
    if let Some(tls) = tls {
        let warn_before = Duration::from_secs_f64(cfg.cert_warn_days.max(0.0) * 86_400.0);
        tokio::spawn(tls::warn_of_expiry(tls.clone(), warn_before));
        tokio::spawn(reload_on_sighup(tls));
    }
    let running = tokio::select! {
        r = start(settings.clone()) => r,
        _ = shutdown_signal() => return ExitCode::SUCCESS,
    };
    let running = match running {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    if let Some(dir) = settings.data_dir.as_ref().filter(|_| settings.restore.is_some()) {
        dir.forget_recovered();
    }
    if cfg.force_new_cluster {
        match running.cluster.force_new_cluster().await {
            Ok(plan) => warn!("--force-new-cluster: {plan}"),
            Err(e) => {
                running.stop().await;
                return fail(format!("--force-new-cluster refused: {e}"));
            }
        }
    }
    let addr = running.addr.clone();
    if let Some(path) = &cfg.addr_file {
        // The client address on the first line; the web address, if any, on the second.
        let web_line = running.web.as_ref().map(|w| format!("{w}\n")).unwrap_or_default();
        if let Err(e) = write_atomically(path, &format!("{addr}\n{web_line}")) {
            return fail(format!("cannot write --addr-file {path}: {e}"));
        }
    }
    info!(id = running.node().id(), %addr, cluster = %cluster_name, "doozerd {} serving", ctl::VERSION);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("{}", quickstart(&addr, running.web.as_deref()));
    }
    serve_until_shutdown(running, settings).await
}

/// Serves until a shutdown signal. A node the cluster removed (it was cut
/// off or paused for longer than `-timeout`) is still alive and the cluster
/// is short of a member, so it comes back by itself: it stops its old self
/// (closing every connection) and joins again under a new id, with fresh
/// state, through the members it knew, on the same addresses; then it claims
/// a vacant slot like any new node. Its old id is never used again.
async fn serve_until_shutdown(running: Running, settings: Settings) -> ExitCode {
    serve(running, settings, shutdown_signal(), |_| {}).await;
    ExitCode::SUCCESS
}

/// Serves `running` until `shutdown`, rejoining whenever the cluster
/// removes this node: it joins again under a new id; `rejoined` is told of
/// each new self. doozerd and the simulator both run their nodes with this.
pub async fn serve(
    mut running: Running,
    mut settings: Settings,
    shutdown: impl std::future::Future<Output = ()>,
    rejoined: impl Fn(&Running),
) {
    // The restored image (the whole tree, as read from the backup) is in
    // the store now: kept here it would double the node's memory.
    settings.restore = None;
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let event = tokio::select! {
            _ = &mut shutdown => Event::Shutdown,
            _ = running.node().wait_removed() => Event::Removed,
            image = running.cluster.wait_recovery() => Event::Recover(image),
        };
        let old = running.node().id().to_string();
        let mut attach = running.cluster.peer_addrs();
        attach.extend(settings.attach.iter().filter(|a| !attach.contains(a)).cloned().collect::<Vec<_>>());
        if matches!(event, Event::Shutdown) {
            info!("shutting down");
            running.stop().await;
            return;
        }
        running.stop().await;
        let restore = match event {
            Event::Recover(image) => Some(image),
            _ => None,
        };
        // Its old self's state on disk goes with its old id; a forced new
        // cluster's image is kept until the new cluster holds it.
        if let Some(dir) = &settings.data_dir {
            let wiped = match &restore {
                Some(image) => dir.keep_recovered(image).and_then(|_| dir.wipe()),
                None => dir.wipe(),
            };
            if let Err(e) = wiped {
                warn!(error = %e, dir = %dir.path().display(), "cannot empty the data dir");
            }
        }
        let recovering = restore.is_some();
        settings = Settings {
            listen: running.addr.clone(),
            web: running.web.clone().or(settings.web),
            attach: if recovering { Vec::new() } else { attach },
            boot: if recovering { None } else { settings.boot },
            restore,
            ..settings
        };
        if recovering {
            warn!(old_id = %old, "forcing a new cluster: this node is its only voter, with the state it had");
        } else {
            warn!(old_id = %old, "this node was removed from the cluster; rejoining under a new id");
        }
        running = tokio::select! {
            r = rejoin(&settings) => r,
            _ = &mut shutdown => return,
        };
        if let (true, Some(dir)) = (recovering, &settings.data_dir) {
            dir.forget_recovered();
        }
        settings.restore = None;
        info!(id = running.node().id(), old_id = %old, "rejoined the cluster");
        rejoined(&running);
    }
}

/// What ends a node's life in [`serve`].
enum Event {
    Shutdown,
    /// The cluster removed it: it joins again under a new id.
    Removed,
    /// An operator forced a new cluster: it seeds one from this image.
    Recover(bytes::Bytes),
}

/// Starts again until it works: the cluster may still be unreachable.
async fn rejoin(settings: &Settings) -> Running {
    let mut pause = Duration::from_millis(200);
    loop {
        match start(settings.clone()).await {
            Ok(r) => return r,
            Err(e) => {
                info!(error = %e, "cannot rejoin yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// The TLS files the flags name; each set goes together.
fn tls_files(cfg: &Config) -> Result<tls::Files, String> {
    let client = match (&cfg.tlscert, &cfg.tlskey) {
        (None, None) => None,
        (Some(c), Some(k)) => Some((c.clone(), k.clone())),
        _ => return Err("-tlscert and -tlskey go together: give both or neither".into()),
    };
    let peer = match (&cfg.peer_cert, &cfg.peer_key, &cfg.peer_ca) {
        (None, None, None) => None,
        (Some(c), Some(k), Some(ca)) => Some((c.clone(), k.clone(), ca.clone())),
        _ => return Err("--peer-cert, --peer-key and --peer-ca go together: give all three or none".into()),
    };
    Ok(tls::Files { client, client_ca: cfg.client_ca.clone(), peer })
}

/// Reads the certificates again on each SIGHUP: new connections take them.
async fn reload_on_sighup(tls: Arc<tls::Tls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => info!("SIGHUP: certificates reloaded; new connections use them"),
                Err(e) => warn!("SIGHUP: cannot reload the certificates ({e}); keeping the ones in use"),
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}

/// Reads and checks --restore and --journal completely before anything
/// starts: a damaged file stops doozerd with the problem and its byte offset,
/// and nothing is half-restored. Returns the cluster name and the image.
fn load_restore(cfg: &Config) -> Result<Option<(String, bytes::Bytes)>, String> {
    if cfg.restore.is_none() && cfg.journal.is_none() {
        return Ok(None);
    }
    if !cfg.attach.is_empty() {
        return Err("--restore starts a new cluster: it cannot be combined with -a".into());
    }
    let read = |p: &str| std::fs::read(p).map_err(|e| format!("cannot read {p}: {e}"));
    let backup = match &cfg.restore {
        Some(p) => Some(doozer_store::read_backup(&read(p)?[..]).map_err(|e| format!("{p}: {e}"))?),
        None => None,
    };
    let journal = match &cfg.journal {
        Some(p) => {
            let j = doozer_store::read_journal(&read(p)?).map_err(|e| format!("{p}: {e}"))?;
            if let Some(torn) = &j.torn {
                warn!("{p}: ignoring an incomplete last entry ({torn})");
            }
            Some(j)
        }
        None => None,
    };
    let limits = HistoryLimits { revs: cfg.hist.max(1), bytes: cfg.hist_bytes };
    let store = doozer_store::restore(backup.as_ref(), journal.as_ref(), limits).map_err(|e| e.to_string())?;
    let name = backup.map(|b| b.cluster).or(journal.map(|j| j.cluster)).unwrap_or_default();
    let mut image = Vec::new();
    store.image().encode(&mut image);
    info!(rev = store.rev(), "restoring");
    Ok(Some((name, bytes::Bytes::from(image))))
}

/// What a person who just started doozerd by hand can do next.
fn quickstart(addr: &str, web: Option<&str>) -> String {
    let uri = if addr == "127.0.0.1:8046" { String::new() } else { format!("DOOZER_URI=doozer:?ca={addr} ") };
    let view = web.map(|w| format!("Then open http://{w}/ to see the message.\n")).unwrap_or_default();
    format!(
        "doozerd is ready at {addr}. Try, in another terminal:\n  \
         echo \"hello, world\" | {uri}doozer set /message 0\n  \
         {uri}doozer get /message\n\
         {view}\
         Stop it with Ctrl-C."
    )
}

/// Writes through a temporary file and a rename, so a reader never sees half of it.
fn write_atomically(path: &str, text: &str) -> std::io::Result<()> {
    let tmp = format!("{path}.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
