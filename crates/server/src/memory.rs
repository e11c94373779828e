//! Giving memory back to the system after something large was freed.
//!
//! The allocator keeps freed pages to reuse them, and gives them back only
//! as later allocations tick its decay clock: a node that replaced a whole
//! tree (a restore, an installed snapshot) or dropped a restored image from
//! its Raft log and then went quiet kept the peak for good. Measured at
//! 1,000,000 keys: a restored node settled at 320-400 bytes of RSS per key
//! against 193 for the same tree loaded by writes (docs/performance.md).
//!
//! The allocator is the binary's choice (`doozerd` uses jemalloc), so the
//! binary installs the purge with [`on_release`]; without one (tests, the
//! simulator) [`release`] does nothing. Not here: any accounting of memory.

use std::sync::OnceLock;

static PURGE: OnceLock<fn()> = OnceLock::new();

/// Installs the function that returns freed pages (once per process).
pub fn on_release(purge: fn()) {
    let _ = PURGE.set(purge);
}

/// Returns freed pages to the system, off the caller's thread when a runtime
/// is there (a purge walks every arena: milliseconds for hundreds of MB).
pub fn release() {
    let Some(&purge) = PURGE.get() else { return };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(purge)),
        Err(_) => purge(),
    }
}
