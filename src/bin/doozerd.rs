// mimalloc: the server allocates many small, short-lived objects (tree nodes,
// requests, answers) across threads; glibc's malloc was a quarter of the
// server's profile under write load (docs/performance.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    doozer_server::main()
}
