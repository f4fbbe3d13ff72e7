//! `mcpsec`: the gateway in one process, and its command line (`serve`, `validate`, `check`).

fn main() -> std::process::ExitCode {
    mcpsec_gateway::cli::main()
}
