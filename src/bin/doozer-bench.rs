fn main() -> std::process::ExitCode {
    doozer_bench::main()
}
