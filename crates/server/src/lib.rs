//! doozerd: the Doozer server.
//!
//! Modules, in the order a request meets them: [`config`] (flags), [`conn`]
//! (framing and the per-connection reader and writer), [`session`] (what each
//! verb does), [`node`] (the store, proposals and held WAITs), [`waiters`] (the
//! WAIT index), [`access`] (secrets), [`ctl`] (the `/ctl` files), [`tls`].
//! The data model itself lives in `doozer-store`, the wire format in `doozer-proto`.

pub mod access;
pub mod config;
pub mod conn;
pub mod ctl;
pub mod node;
pub mod session;
pub mod tls;
pub mod waiters;

use access::Secrets;
use clap::Parser;
use config::Config;
use doozer_store::HistoryLimits;
use node::{Limits, Node};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

/// A running server's parts, for `main` and for tests that embed one.
pub struct Server {
    pub node: Arc<Node>,
    pub listener: TcpListener,
    pub secrets: Arc<Secrets>,
    pub tls: Option<TlsAcceptor>,
}

impl Server {
    /// Accepts clients until `shutdown` completes.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                _ = &mut shutdown => return,
                a = self.listener.accept() => a,
            };
            let (stream, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors or similar: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            debug!(%peer, "client connected");
            let _ = stream.set_nodelay(true);
            let (node, secrets) = (self.node.clone(), self.secrets.clone());
            match &self.tls {
                None => {
                    tokio::spawn(conn::serve(stream, node, secrets));
                }
                Some(tls) => {
                    let tls = tls.clone();
                    tokio::spawn(async move {
                        match tls.accept(stream).await {
                            Ok(s) => conn::serve(s, node, secrets).await,
                            Err(e) => debug!(%peer, error = %e, "TLS handshake failed"),
                        }
                    });
                }
            }
        }
    }
}

fn init_logging(level: Option<&str>) {
    let filter = level
        .map(String::from)
        .or_else(|| std::env::var("RUST_LOG").ok())
        .unwrap_or_else(|| "warn,doozer_server=info".to_string());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,doozer_server=info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
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
    init_logging(cfg.log_level.as_deref());
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(run(cfg))
}

async fn run(cfg: Config) -> ExitCode {
    if cfg.listen.is_empty() {
        return fail("require a listen address (-l HOST:PORT)");
    }
    if !cfg.attach.is_empty() || cfg.boot.is_some() {
        return fail("attaching to a cluster (-a, -b) is not available yet: start without them for a one-node cluster");
    }
    let tls = match (&cfg.tlscert, &cfg.tlskey) {
        (None, None) => None,
        (Some(c), Some(k)) => match tls::acceptor(c, k) {
            Ok(t) => Some(t),
            Err(e) => return fail(e),
        },
        _ => return fail("-tlscert and -tlskey go together: give both or neither"),
    };
    let listener = match TcpListener::bind(&cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            return fail(format!(
                "cannot listen on {}: {e} (is another doozerd running? try -l 127.0.0.1:PORT)",
                cfg.listen
            ))
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a.to_string(),
        Err(e) => return fail(format!("cannot read the listen address: {e}")),
    };
    let limits = Limits {
        max_pending: cfg.max_pending.max(1),
        max_waiters: cfg.max_waits,
        history: HistoryLimits {
            revs: cfg.hist.max(1),
            bytes: cfg.hist_bytes,
        },
        ..Limits::default()
    };
    let node = Node::new(ctl::new_id(), limits);
    ctl::bootstrap(&node, &cfg.cluster, &addr);
    let secrets = Arc::new(Secrets {
        rw: std::env::var("DOOZER_RWSECRET").unwrap_or_default(),
        ro: std::env::var("DOOZER_ROSECRET").unwrap_or_default(),
    });
    if let Some(web) = config::web_addr(cfg.web.as_deref(), &addr) {
        debug!(%web, "the web view is not part of this build yet");
    }
    if let Some(path) = &cfg.addr_file {
        if let Err(e) = write_atomically(path, &format!("{addr}\n")) {
            return fail(format!("cannot write --addr-file {path}: {e}"));
        }
    }
    info!(id = node.id(), %addr, cluster = %cfg.cluster, "doozerd {} serving", ctl::VERSION);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("{}", quickstart(&addr));
    }
    Server {
        node,
        listener,
        secrets,
        tls,
    }
    .run(shutdown_signal())
    .await;
    info!("shutting down");
    ExitCode::SUCCESS
}

/// What a person who just started doozerd by hand can do next.
fn quickstart(addr: &str) -> String {
    let uri = if addr == "127.0.0.1:8046" {
        String::new()
    } else {
        format!("DOOZER_URI=doozer:?ca={addr} ")
    };
    format!(
        "doozerd is ready at {addr}. Try, in another terminal:\n  \
         echo \"hello, world\" | {uri}doozer set /message 0\n  \
         {uri}doozer get /message\n\
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
