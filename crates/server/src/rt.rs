//! Where a node gets what the world outside the process gives it: sockets,
//! threads for blocking work, and random numbers.
//!
//! In production this is tokio's TCP, tokio's blocking pool and the OS's
//! random numbers, exactly as if this module were not here: with no
//! [`World`] installed every function below takes its production branch,
//! and the client hot path (plain TCP, split without boxing) is untouched.
//! The simulator (`crates/sim`) installs a [`World`] on its thread for the
//! length of a run: a simulated network, blocking work done inline (a
//! thread would finish at a time the simulation does not control), and one
//! seeded random stream. A whole cluster then runs in one thread, and one
//! seed decides everything it does.
//!
//! Time is not here on purpose: every timer and clock reading in the server
//! is `tokio::time`, which the simulator drives on a virtual clock (tokio's
//! paused time). So `std::time::Instant` is not used anywhere in the server.
//!
//! Not here: what is done with a connection (`listen`, `conn`, `consensus`).

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A boxed future, as the [`World`] trait returns them (`Send`, so that the
/// server's own futures stay `Send` whichever branch they take).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream other than a real TCP socket.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A simulated listener.
pub trait Accept: Send + Sync + 'static {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Box<dyn Io>, SocketAddr)>>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// The outside world, when it is not the real one.
pub trait World {
    /// Listens on `addr`.
    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Accept>>>;
    /// Connects to `addr` (`HOST:PORT`).
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Io>>>;
    /// Fills `out` with random bytes.
    fn fill_random(&self, out: &mut [u8]);
    /// True if the peer message about to be sent should also be sent a
    /// second time, on a connection of its own (so it may arrive before or
    /// after the first): the duplication and reordering a network of
    /// retrying senders makes.
    fn duplicate(&self) -> bool {
        false
    }
}

thread_local! {
    static WORLD: RefCell<Option<Rc<dyn World>>> = const { RefCell::new(None) };
}

/// Installs `world` on this thread until the guard is dropped.
pub fn install(world: Rc<dyn World>) -> Installed {
    WORLD.with(|w| *w.borrow_mut() = Some(world));
    Installed(())
}

/// Uninstalls the [`World`] on drop.
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        WORLD.with(|w| *w.borrow_mut() = None);
    }
}

fn world() -> Option<Rc<dyn World>> {
    WORLD.with(|w| w.borrow().clone())
}

/// True if the simulation wants this peer message sent twice (never in
/// production).
pub fn duplicate() -> bool {
    WORLD.with(|w| w.borrow().as_ref().is_some_and(|w| w.duplicate()))
}

/// True inside a simulation.
pub fn simulated() -> bool {
    WORLD.with(|w| w.borrow().is_some())
}

/// A listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Other(Box<dyn Accept>),
}

impl Listener {
    pub async fn bind(addr: &str) -> io::Result<Listener> {
        // (The world is let go before any await: it is not Send.)
        let simulated = world().map(|w| w.bind(addr));
        match simulated {
            None => Ok(Listener::Tcp(TcpListener::bind(addr).await?)),
            Some(bound) => Ok(Listener::Other(bound.await?)),
        }
    }

    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), peer))
            }
            Listener::Other(l) => {
                let (s, peer) = l.accept().await?;
                Ok((Stream::Other(s), peer))
            }
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr(),
            Listener::Other(l) => l.local_addr(),
        }
    }
}

/// A connection: a real TCP socket (kept as itself, so a client connection
/// splits without boxing) or a simulated one.
pub enum Stream {
    Tcp(TcpStream),
    Other(Box<dyn Io>),
}

impl Stream {
    /// Connects to `addr`, from `bind_ip` if given (real sockets only).
    pub async fn connect(addr: &str, bind_ip: Option<std::net::IpAddr>) -> io::Result<Stream> {
        let simulated = world().map(|w| w.connect(addr));
        match simulated {
            None => tcp_connect(addr, bind_ip).await.map(Stream::Tcp),
            Some(connected) => connected.await.map(Stream::Other),
        }
    }

    /// True if the other side has closed this idle connection or sent
    /// something unasked: it must not be reused.
    pub fn is_stale(&mut self) -> bool {
        match self {
            Stream::Tcp(s) => {
                let mut byte = [0u8; 1];
                !matches!(s.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
            Stream::Other(s) => {
                let mut byte = [0u8; 1];
                let mut buf = ReadBuf::new(&mut byte);
                let mut cx = Context::from_waker(std::task::Waker::noop());
                Pin::new(s).poll_read(&mut cx, &mut buf).is_ready()
            }
        }
    }
}

async fn tcp_connect(addr: &str, bind_ip: Option<std::net::IpAddr>) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{addr} does not resolve"));
    for remote in tokio::net::lookup_host(addr).await? {
        let socket = if remote.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        if let Some(ip) = bind_ip.filter(|ip| ip.is_ipv4() == remote.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        match socket.connect(remote).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// Runs CPU-bound work (applying a command, building or decoding a
/// snapshot) off the async threads; inline in a simulation.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
    if simulated() {
        return Ok(f());
    }
    tokio::task::spawn_blocking(f).await.map_err(io::Error::other)
}

/// Fills `out` with random bytes: the OS's, or the simulation's seeded stream.
pub fn fill_random(out: &mut [u8]) {
    match world() {
        None => rand::RngCore::fill_bytes(&mut rand::rng(), out),
        Some(w) => w.fill_random(out),
    }
}

/// Client options for this node's own connections to other nodes (the
/// DzNS, the web view's cluster probe): in a simulation they dial through it.
pub fn client_options() -> doozer_client::Options {
    let mut opts = doozer_client::Options::default();
    if simulated() {
        opts.dialer = Some(doozer_client::Dialer::new(|addr: String| {
            Box::pin(async move {
                let s = Stream::connect(&addr, None).await?;
                Ok(Box::new(s) as Box<dyn doozer_client::Stream>)
            })
        }));
    }
    opts
}

/// Random numbers for openraft (election timeouts), in rand 0.8's terms,
/// drawn through [`fill_random`].
#[derive(Clone, Copy, Default)]
pub struct RaftRng;

impl rand08::RngCore for RaftRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        fill_random(dest)
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand08::Error> {
        fill_random(dest);
        Ok(())
    }
}
