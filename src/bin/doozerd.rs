// jemalloc: the server allocates many small, short-lived objects (tree nodes,
// requests, answers) across threads. With glibc's malloc that was a quarter of
// the profile under write load; jemalloc gave one node 60% more writes/s and,
// unlike mimalloc (same speed), no more resident memory (docs/performance.md).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    doozer_server::main()
}
