//! `daytona-daemon`: the static binary that starts a sandbox and serves its toolbox.
//!
//! Modes, chosen by the first argument:
//! - `setup`: the isolation runtime's setup stage, run on the host by the runner.
//! - `init`: PID 1 inside the sandbox; reaps orphans and supervises the toolbox server.
//! - `toolbox`: the toolbox API server.
//! - `launcher`: the process that starts the toolbox server's workloads in the sandbox's one
//!   Landlock domain; the toolbox server runs it.

mod init;
mod toolbox;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "setup" => daytona_isolation::setup::main(),
        "init" => init::main(),
        "toolbox" => toolbox::main(),
        "launcher" => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_target(false)
                .init();
            daytona_isolation::launcher::main()
        }
        _ => {
            eprintln!("usage: daytona-daemon setup|init|toolbox|launcher");
            std::process::exit(2);
        }
    }
}
