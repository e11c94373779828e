fn main() -> std::process::ExitCode {
    doozer_cli::main()
}
