//! Evidence that Doozer keeps its promises under faults.
//!
//! - [`history`]: what a workload did and saw.
//! - [`wgl`]: the Wing–Gong/porcupine linearizability search.
//! - [`checks`]: every checker, run over a [`history::History`].
//!
//! The fault-injection harness that produces histories from real doozerd
//! processes lives beside them (see the README's "Fault injection").

pub mod checks;
pub mod history;
pub mod wgl;
