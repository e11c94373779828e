//! A fault-injecting TCP proxy in front of one node's peer address.
//!
//! Each node listens on its own loopback IP (127.0.0.10 + slot) and connects
//! to peers from that IP, and advertises this proxy's address instead of its
//! own; so every peer connection to the node arrives here with the sender's IP
//! as its source. Partitioning is refusing (and cutting) connections from some
//! source IPs. The server's code paths are the normal ones: it only sees
//! connections fail, as on a real network.

use parking_lot::Mutex;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

#[derive(Default)]
struct Rules {
    target: Option<SocketAddr>,
    blocked: HashSet<IpAddr>,
    open: Vec<(IpAddr, AbortHandle)>,
    /// Connections accepted while blocked: held silently, as a lost network
    /// would, until the partition heals.
    held: Vec<AbortHandle>,
}

/// A proxy; dropping it stops it.
pub struct Proxy {
    pub addr: SocketAddr,
    rules: Arc<Mutex<Rules>>,
    accept: AbortHandle,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        let mut rules = self.rules.lock();
        for (_, h) in rules.open.drain(..) {
            h.abort();
        }
        for h in rules.held.drain(..) {
            h.abort();
        }
    }
}

impl Proxy {
    /// Listens on `ip` (any port); forwards nowhere until [`Proxy::forward_to`].
    pub async fn start(ip: IpAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await?;
        let addr = listener.local_addr()?;
        let rules: Arc<Mutex<Rules>> = Arc::default();
        let accept = tokio::spawn(accept_loop(listener, rules.clone())).abort_handle();
        Ok(Proxy { addr, rules, accept })
    }

    pub fn forward_to(&self, target: SocketAddr) {
        self.rules.lock().target = Some(target);
    }

    /// Refuses connections from these IPs and cuts the open ones.
    pub fn block(&self, ips: &[IpAddr]) {
        let mut rules = self.rules.lock();
        rules.blocked.extend(ips.iter().copied());
        let blocked = rules.blocked.clone();
        rules.open.retain(|(ip, h)| {
            let cut = blocked.contains(ip);
            if cut {
                h.abort();
            }
            !cut
        });
    }

    pub fn heal(&self) {
        let mut rules = self.rules.lock();
        rules.blocked.clear();
        for h in rules.held.drain(..) {
            h.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, rules: Arc<Mutex<Rules>>) {
    loop {
        let Ok((inbound, from)) = listener.accept().await else { continue };
        let target = {
            let mut r = rules.lock();
            if r.blocked.contains(&from.ip()) {
                let hold = tokio::spawn(async move {
                    let _held = inbound;
                    std::future::pending::<()>().await
                });
                r.held.push(hold.abort_handle());
                continue;
            }
            r.target
        };
        let Some(target) = target else { continue };
        let pump = tokio::spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(target).await else { return };
            let _ = outbound.set_nodelay(true);
            let _ = inbound.set_nodelay(true);
            let mut inbound = inbound;
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
        let mut r = rules.lock();
        r.open.retain(|(_, h)| !h.is_finished());
        r.open.push((from.ip(), pump.abort_handle()));
    }
}
