//! The `fanout-signalling` binary. Until the signalling issue lands it refuses to start, so
//! nobody mistakes it for a working server.

fn main() -> std::process::ExitCode {
    eprintln!("fanout-signalling: the signalling server is not built yet (see the signalling issue); refusing to start");
    std::process::ExitCode::from(2)
}
