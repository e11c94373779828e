fn main() -> std::process::ExitCode {
    doozer_server::main()
}
