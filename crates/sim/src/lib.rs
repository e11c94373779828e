//! Deterministic simulation of whole doozerd clusters.
//!
//! 3, 5 or 7 real nodes (the server crate, unchanged) run in one thread on
//! turmoil's simulated network and tokio's paused, virtual clock; clients
//! and watchers speak the Doozer protocol to them through that network; the
//! faults are drawn from one seed ([`plan`]), as is everything else: node
//! ids, election timeouts, message latencies, which ready task runs first.
//! So `doozer-sim --seed N` replays a run exactly (its trace hash is the
//! same every time), and a failing seed is a bug report.
//!
//! - [`plan`]: a run's shape and faults, from its seed.
//! - [`world`]: what a node's runtime seam ([`doozer_server::rt`]) gets in a simulation.
//! - [`mod@run`]: the loop that steps the simulation, injects the faults and
//!   checks the invariants (election safety at every step; liveness after
//!   the faults; the history through every checker of `doozer-verify`).
//!
//! Not here: the checkers (`doozer-verify`), the process-level torture runs
//! (`doozer-torture`), which exercise real sockets, signals and timing that
//! a simulation does not.

#[cfg(not(tokio_unstable))]
compile_error!(
    "doozer-sim needs `--cfg tokio_unstable` to seed tokio's runtimes (it is in .cargo/config.toml; \
     a RUSTFLAGS environment variable replaces that list: add `--cfg tokio_unstable` to it)"
);

pub mod plan;
pub mod run;
pub mod world;

pub use plan::Plan;
pub use run::{run, Outcome, Trace};
