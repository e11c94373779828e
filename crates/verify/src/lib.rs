//! Evidence that Doozer keeps its promises under faults.
//!
//! - [`history`]: what a workload did and saw.
//! - [`wgl`]: the Wing–Gong/porcupine linearizability search.
//! - [`checks`]: every checker, run over a [`history::History`].
//! - [`election`]: election contenders with fenced writes, and their check.
//! - [`lease`]: lease keepers, and the check that no lease ends early.
//!
//! The harness that produces histories from real doozerd processes:
//! [`cluster`] (processes, each behind a [`proxy`]), [`workload`] (clients,
//! watchers, the recorder), [`faults`] (the seeded schedule), [`pki`] (certificates
//! for a TLS run) and [`run`].

pub mod checks;
pub mod cluster;
pub mod election;
pub mod faults;
pub mod fuzz;
pub mod history;
pub mod lease;
pub mod pki;
pub mod proxy;
pub mod run;
pub mod wgl;
pub mod workload;
