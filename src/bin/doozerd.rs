// jemalloc: the server allocates many small, short-lived objects (tree nodes,
// requests, answers) across threads. With glibc's malloc that was a quarter of
// the profile under write load; jemalloc gave one node 60% more writes/s and,
// unlike mimalloc (same speed), no more resident memory (docs/performance.md).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Returns every arena's unused dirty pages to the system now, rather than as
/// jemalloc's decay clock is ticked by later allocations (an idle node may
/// never tick it): called after a whole tree was replaced or a restored image
/// left the Raft log (see `doozer_server::memory`).
fn purge() {
    // "arena.<MALLCTL_ARENAS_ALL>.purge": a void control, no value in or out.
    const ALL_ARENAS: &[u8] = b"arena.4096.purge\0";
    // SAFETY: a NUL-terminated name of a control that takes and returns
    // nothing; null pointers with zero lengths are how such a control is called.
    let _ = unsafe {
        tikv_jemalloc_sys::mallctl(
            ALL_ARENAS.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
}

fn main() -> std::process::ExitCode {
    doozer_server::memory::on_release(purge);
    doozer_server::main()
}
