//! `daytona-daemon`: the static binary that starts a sandbox and serves its toolbox.
//!
//! Modes, chosen by the first argument:
//! - `setup`: the isolation runtime's setup stage, run on the host by the runner.
//! - `init`: PID 1 inside the sandbox; reaps orphans and supervises the toolbox server.
//! - `toolbox`: the toolbox API server.

mod init;
mod toolbox;

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "setup" => daytona_isolation::setup::main(),
        "init" => init::main(),
        "toolbox" => toolbox::main(),
        _ => {
            eprintln!("usage: daytona-daemon setup|init|toolbox");
            std::process::exit(2);
        }
    }
}
