//! The simulated outside world a node sees ([`doozer_server::rt::World`]):
//! turmoil's TCP, one random stream seeded by the run, and the share of
//! peer messages sent twice.
//!
//! Every host runs on the simulation's one thread, in an order turmoil
//! fixes, so one shared generator hands out the same numbers in the same
//! order on every run of a seed.

use doozer_server::rt::{Accept, BoxFuture, Io, World};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use turmoil::net::{TcpListener, TcpStream};

pub struct Simulated {
    rng: RefCell<SmallRng>,
    /// The share of peer messages sent twice (the duplication fault).
    twice: Cell<f64>,
}

impl Simulated {
    pub fn new(seed: u64) -> Simulated {
        Simulated { rng: RefCell::new(SmallRng::seed_from_u64(seed)), twice: Cell::new(0.0) }
    }

    /// From now on, this share of peer messages is sent twice.
    pub fn send_twice(&self, share: f64) {
        self.twice.set(share);
    }
}

struct Listener(TcpListener);

impl Accept for Listener {
    fn accept(&self) -> BoxFuture<'_, io::Result<(Box<dyn Io>, SocketAddr)>> {
        Box::pin(async move {
            let (s, peer) = self.0.accept().await?;
            Ok((Box::new(s) as Box<dyn Io>, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl World for Simulated {
    fn bind(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Accept>>> {
        let addr = addr.to_string();
        Box::pin(async move { Ok(Box::new(Listener(TcpListener::bind(addr).await?)) as Box<dyn Accept>) })
    }

    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<Box<dyn Io>>> {
        let addr = addr.to_string();
        Box::pin(async move { Ok(Box::new(TcpStream::connect(addr).await?) as Box<dyn Io>) })
    }

    fn fill_random(&self, out: &mut [u8]) {
        self.rng.borrow_mut().fill_bytes(out)
    }

    fn duplicate(&self) -> bool {
        let share = self.twice.get();
        share > 0.0 && self.rng.borrow_mut().random_bool(share)
    }
}
