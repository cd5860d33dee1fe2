//! The `fanout-worker` binary. The media plane is built in the worker issue; until it lands this
//! binary refuses to start rather than pretend to be an SFU.

fn main() -> std::process::ExitCode {
    eprintln!("fanout-worker: the media plane is not built yet (see the worker issue); refusing to start");
    std::process::ExitCode::from(2)
}
