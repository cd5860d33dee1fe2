//! `fanout-load`: the media benchmark (README, "Performance"). Starts a worker (or uses a
//! running one), drives it with synthetic publishers and N real subscribers, and prints what it
//! cost the worker per forwarded packet next to what a minimal relay costs on this machine.
//!
//! `cargo build --release -p fanout-worker --bins && target/release/fanout-load --sweep`

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use fanout_worker::load::procfs::pin_this_thread;
use fanout_worker::os::raise_open_file_limit;
use fanout_worker::load::relay::{run_relay, RelayRun};
use fanout_worker::load::report::{self, row, table, Row};
use fanout_worker::load::worker_run::{run_worker, Timing, WorkerRun, WorkerTarget};
use fanout_worker::load::{Media, SubscriberLayers, Transport};

/// Media benchmark: forwarding cost of a Fanout worker against this machine's own limit.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Subscribers of a single run (each consumes every publisher's video and audio).
    #[arg(long, default_value_t = 100)]
    subscribers: usize,
    /// Run several subscriber counts and print a table (default 10,100,500,1000,2000).
    #[arg(long, num_args = 0..=1, default_missing_value = "10,100,500,1000,2000", value_delimiter = ',')]
    sweep: Option<Vec<usize>>,
    /// Publishers, each sending a 1 Mbps VP8-like video and an opus-like audio stream.
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Publishers send three simulcast encodings (RIDs r0, r1, r2: about 0.12, 0.33 and
    /// 1 Mbps, VP8 L1T3) instead of one stream; each subscriber's consumer gets one of them.
    #[arg(long)]
    simulcast: bool,
    /// With --simulcast: which encoding subscribers get (`top`: the highest, `spread`:
    /// subscriber i prefers encoding i mod 3).
    #[arg(long, value_enum, default_value_t = SubscriberLayers::Top, requires = "simulcast")]
    layers: SubscriberLayers,
    /// How subscribers reach the worker (and the relay): `udp`, or `tcp` (ICE-TCP, one
    /// connection each to the worker's TCP port, RFC 4571 framing).
    #[arg(long, value_enum, default_value_t = Transport::Udp)]
    transport: Transport,
    /// Rooms of several publishers run after the sweep, as PUBLISHERSxSUBSCRIBERS: the
    /// default pair loads the worker about half as much as 1 x 1000 does, in the shape of a
    /// meeting, where each packet reaches fewer subscribers. `--rooms` alone: none.
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "10x100,20x50", value_parser = parse_room)]
    rooms: Vec<Room>,
    /// Seconds of media before measuring (keyframes reach new consumers, queues settle).
    #[arg(long, default_value_t = 3)]
    warmup_secs: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    window_secs: u64,
    /// A running worker's REST endpoint instead of starting one (needs --worker-pid).
    #[arg(long, requires = "worker_pid")]
    worker_url: Option<String>,
    /// The running worker's process id, for its CPU and memory accounting.
    #[arg(long)]
    worker_pid: Option<u32>,
    /// Bearer token of the running worker's API.
    #[arg(long, env = "FANOUT_API_TOKEN")]
    api_token: Option<String>,
    /// The worker binary to start (default: fanout-worker next to this program).
    #[arg(long)]
    worker_bin: Option<PathBuf>,
    /// First UDP port of the started worker's range.
    #[arg(long, default_value_t = 20000)]
    rtc_min_port: u16,
    /// Record each run's room (one recording of every publisher's producers): what recording
    /// costs forwarding. A worker this program starts records to a directory under the
    /// system's temporary one, removed after the run; one of --worker-url needs its own
    /// --recording-dir.
    #[arg(long)]
    record: bool,
    /// Skip the in-process relay (the machine's limit).
    #[arg(long)]
    no_relay: bool,
    /// Don't pin the worker and the load program to separate cores.
    #[arg(long)]
    no_pin: bool,
}

/// One run's room: every subscriber consumes every publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Room {
    publishers: usize,
    subscribers: usize,
}

fn parse_room(text: &str) -> Result<Room, String> {
    let invalid = || format!("`{text}` is not a room shape: write PUBLISHERSxSUBSCRIBERS, such as 10x100");
    let (p, n) = text.trim().split_once('x').ok_or_else(invalid)?;
    let (publishers, subscribers) = (p.parse().map_err(|_| invalid())?, n.parse().map_err(|_| invalid())?);
    if publishers == 0 || subscribers == 0 {
        return Err(invalid());
    }
    Ok(Room { publishers, subscribers })
}

/// The runs asked for: a sweep of subscriber counts (then the rooms of several publishers), or
/// one run.
fn runs(args: &Args) -> Vec<Room> {
    match &args.sweep {
        Some(counts) => {
            let sweep = counts.iter().map(|&subscribers| Room { publishers: args.publishers, subscribers });
            sweep.chain(args.rooms.iter().copied()).collect()
        }
        None => vec![Room { publishers: args.publishers, subscribers: args.subscribers }],
    }
}

/// Worker started for one run, on its own core when there is one to spare.
struct StartedWorker {
    child: Child,
    endpoint: String,
}

impl Drop for StartedWorker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_worker(args: &Args, ports: usize, cpu: Option<usize>, recording_dir: Option<&std::path::Path>) -> anyhow::Result<StartedWorker> {
    let bin = match &args.worker_bin {
        Some(bin) => bin.clone(),
        None => std::env::current_exe()?.with_file_name("fanout-worker"),
    };
    if !bin.exists() {
        bail!("{} not found: build it with `cargo build --release -p fanout-worker --bins`, or pass --worker-bin", bin.display());
    }
    let http_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    // A free port of its own, not the default one another worker on the machine may hold.
    let tcp_port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let max_port = args.rtc_min_port as usize + ports + 16;
    if max_port > u16::MAX as usize {
        bail!("--rtc-min-port {} leaves no room for {ports} transports", args.rtc_min_port);
    }
    let mut command = Command::new(&bin);
    command
        .args(["--listen-ip", "127.0.0.1", "--http-port", &http_port.to_string()])
        .args(["--rtc-min-port", &args.rtc_min_port.to_string(), "--rtc-max-port", &max_port.to_string()])
        .args(["--rtc-tcp-port", &tcp_port.to_string()])
        // Subscribers are all set up over the REST API before any of them runs ICE, and each
        // request rebuilds the room's table: at 1,000 subscribers of a simulcast publisher
        // that takes over a minute, so the first transports would reach the default 30 s
        // ICE timeout (and be closed) before their turn. Browsers connect right after setup.
        .args(["--ice-timeout-seconds", "600"])
        .args(["--media-threads", "1"])
        .args(recording_dir.iter().flat_map(|dir| [std::ffi::OsStr::new("--recording-dir"), dir.as_os_str()]))
        .env_remove("FANOUT_API_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(cpu) = cpu {
        // SAFETY: only an async-signal-safe system call between fork and exec.
        unsafe {
            command.pre_exec(move || {
                pin_this_thread(cpu);
                Ok(())
            });
        }
    }
    let child = command.spawn().with_context(|| format!("starting {}", bin.display()))?;
    let endpoint = format!("http://127.0.0.1:{http_port}");
    let worker = StartedWorker { child, endpoint };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", http_port)).is_err() {
        if Instant::now() > deadline {
            bail!("the worker did not open its HTTP port within 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(worker)
}

fn describe(w: &WorkerRun, r: &Row, relay: Option<&RelayRun>) {
    let rec = &w.receiver;
    eprintln!(
        "  worker: {} received from publishers, {:.2} µs per packet received",
        w.received,
        w.cpu_seconds * 1e6 / w.received.max(1) as f64
    );
    eprintln!(
        "  worker: {} forwarded in {:.1} s, process CPU {:.2} s, its core busy {}, media threads {}, setup {:.1} s",
        w.forwarded,
        w.window.as_secs_f64(),
        w.cpu_seconds,
        w.core_busy_seconds.map_or("-".into(), |s| format!("{s:.2} s")),
        w.media_cpu_seconds.map_or("-".into(), |s| format!("{s:.2} s, {:.2} µs/pkt", s * 1e6 / w.forwarded.max(1) as f64)),
        w.setup.as_secs_f64()
    );
    if let Some(extra) = report::other_work_on_core(w) {
        eprintln!(
            "  warning: the worker's core was busy {:.0}% longer than the worker: another program shared it, or the kernel's softirq thread \
             took work the process accounting does not see. Figures of this run are unreliable; run on a quiet machine.",
            extra * 100.0
        );
    }
    eprintln!(
        "  subscribers received {} packets: lost {}, reordered {}, corrupt {}, undecryptable {}, dropped by the load program's socket {}, ICE-TCP connections lost {}",
        rec.packets, rec.counts.lost, rec.counts.reordered, rec.corrupt, rec.undecryptable, rec.socket_drops, rec.connections_lost
    );
    let busy = rec.busy_seconds / w.window.as_secs_f64().max(1e-9);
    eprintln!(
        "  the load program's receiving thread was {:.0}% busy{}",
        busy * 100.0,
        if busy > 0.8 { ": near saturation, so latency and loss here are partly the load program's" } else { "" }
    );
    eprintln!(
        "  worker RSS {} KiB with the publishers, {} KiB with {} subscribers: {:.1} KiB per subscriber, {:.1} KiB per consumer",
        w.rss_before_kib, w.rss_after_kib, w.subscribers, r.rss_per_subscriber_kib, r.rss_per_consumer_kib
    );
    if let Some(relay) = relay {
        eprintln!(
            "  relay: {} forwarded, thread CPU {:.2} s, its core busy {}; subscribers lost {}, latency p50 {:.2} ms p99 {:.2} ms",
            relay.forwarded,
            relay.cpu_seconds,
            relay.core_busy_seconds.map_or("-".into(), |s| format!("{s:.2} s")),
            relay.receiver.counts.lost,
            relay.receiver.latency.quantile_ms(0.5),
            relay.receiver.latency.quantile_ms(0.99)
        );
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_open_file_limit();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    // The worker gets core 1 and the load program core 0, so neither's work shows in the
    // other's accounting and the relay later runs on the same core the worker had.
    let (load_cpu, worker_cpu) = if cores >= 2 && !args.no_pin { (Some(0), Some(1)) } else { (None, None) };
    if let Some(cpu) = load_cpu {
        pin_this_thread(cpu);
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let runs = runs(&args);
    let media = Media { simulcast: args.simulcast.then_some(args.layers), transport: args.transport, record: args.record };
    let recording_dir = args.record.then(|| std::env::temp_dir().join(format!("fanout-load-recordings-{}", std::process::id())));
    eprintln!(
        "fanout-load: {}: publishers of {} ({:.0} video pkt/s) + opus-like audio (50 pkt/s); rooms (publishers x subscribers) {}; warm-up {} s, window {} s; {} cores{}",
        media.label(),
        if args.simulcast { "3 simulcast encodings of VP8-like video, ~0.12/0.33/1 Mbps" } else { "~1 Mbps VP8-like video" },
        media.video_packets_per_second(),
        runs.iter().map(|r| format!("{}x{}", r.publishers, r.subscribers)).collect::<Vec<_>>().join(", "),
        args.warmup_secs,
        args.window_secs,
        cores,
        if worker_cpu.is_some() { " (worker pinned to core 1, load program to core 0)" } else { "" }
    );
    let (warmup, window) = (Duration::from_secs(args.warmup_secs), Duration::from_secs(args.window_secs));
    let mut rows = Vec::new();
    for &Room { publishers, subscribers: n } in &runs {
        eprintln!("\n{publishers} x {n}:");
        let (target, _started) = match (&args.worker_url, args.worker_pid) {
            (Some(url), Some(pid)) => (WorkerTarget { endpoint: url.clone(), pid, api_token: args.api_token.clone(), cpu: None }, None),
            _ => {
                let started = start_worker(&args, n + publishers, worker_cpu, recording_dir.as_deref())?;
                let pid = started.child.id();
                (WorkerTarget { endpoint: started.endpoint.clone(), pid, api_token: None, cpu: worker_cpu }, Some(started))
            }
        };
        let worker = match runtime.block_on(run_worker(&target, n, publishers, media, Timing::new(&media, warmup, window))) {
            Ok(worker) => worker,
            Err(e) => {
                eprintln!("  no figures for {publishers} x {n}: {e}");
                continue;
            }
        };
        drop(_started);
        if let Some(dir) = &recording_dir {
            // The files are not what is measured (the recording's status was printed).
            let _ = std::fs::remove_dir_all(dir);
        }
        let relay = if args.no_relay { None } else { Some(run_relay(n, publishers, media, warmup, window, worker_cpu)?) };
        let r = row(&worker, relay.as_ref());
        describe(&worker, &r, relay.as_ref());
        rows.push(r);
    }
    println!("\n{}", table(&rows));
    summary(&rows);
    Ok(())
}

/// The figures against the targets of the media benchmark issue.
fn summary(rows: &[Row]) {
    let load = |r: &Row| r.media_thread_load.unwrap_or(0.0);
    let Some(heaviest) = rows.iter().max_by(|a, b| a.forwarded_per_second.total_cmp(&b.forwarded_per_second)) else { return };
    println!("Targets (one media thread, alone on its core):");
    println!(
        "- forwarded packets per second per core: {:.0} at {} × {}, the heaviest run (target 300,000), i.e. {:.0} consumers of a 1 Mbps stream",
        heaviest.packets_per_second_per_core, heaviest.publishers, heaviest.subscribers, heaviest.video_consumers_per_core
    );
    if let Some(worst) = rows.iter().filter_map(|r| r.ratio_to_relay).reduce(f64::max) {
        println!("- worker cost / minimal relay cost: at most {worst:.2}x over these runs (target 1.5x)");
    }
    // Half load: the runs that kept the media thread 35-65% busy, each a room shape.
    let half: Vec<&Row> = rows.iter().filter(|r| (0.35..=0.65).contains(&load(r))).collect();
    if half.is_empty() {
        println!("- latency at half load: no run kept the media thread 35-65% busy");
    }
    for h in half {
        println!(
            "- half load, {} × {} (worker core {:.0}% busy): latency p99 {:.2} ms (target 2 ms; the relay's {}), loss {:.3}% (target 0)",
            h.publishers,
            h.subscribers,
            load(h) * 100.0,
            h.latency_p99_ms,
            h.relay_latency_p99_ms.map_or("was not run".to_string(), |v| format!("{v:.2} ms")),
            h.loss_percent
        );
    }
    if let Some(mem) = rows.iter().map(|r| r.rss_per_consumer_kib).reduce(f64::max) {
        println!("- worker memory per consumer: at most {mem:.1} KiB (target 64 KiB)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_shapes_are_read_and_bad_ones_explained() {
        assert_eq!(parse_room("10x100"), Ok(Room { publishers: 10, subscribers: 100 }));
        for bad in ["10", "x100", "0x100", "10x0", "ten x 100"] {
            let error = parse_room(bad).unwrap_err();
            assert!(error.contains("PUBLISHERSxSUBSCRIBERS"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_sweep_runs_its_counts_then_the_rooms_and_a_single_run_runs_one() {
        let args = Args::parse_from(["fanout-load", "--sweep", "10,100", "--publishers", "2"]);
        let shapes: Vec<(usize, usize)> = runs(&args).iter().map(|r| (r.publishers, r.subscribers)).collect();
        assert_eq!(shapes, [(2, 10), (2, 100), (10, 100), (20, 50)]);
        let args = Args::parse_from(["fanout-load", "--sweep", "--rooms", "5x20"]);
        assert_eq!(runs(&args).len(), 6);
        let args = Args::parse_from(["fanout-load", "--sweep", "100,500", "--rooms", "--transport", "tcp"]);
        assert_eq!(runs(&args).len(), 2, "no rooms");
        let args = Args::parse_from(["fanout-load", "--subscribers", "7"]);
        assert_eq!(runs(&args), [Room { publishers: 1, subscribers: 7 }]);
        assert_eq!((args.simulcast, args.transport), (false, Transport::Udp));
    }

    #[test]
    fn simulcast_and_tcp_are_options_and_layers_need_simulcast() {
        let args = Args::parse_from(["fanout-load", "--simulcast", "--layers", "spread", "--transport", "tcp"]);
        assert_eq!((args.simulcast, args.layers, args.transport), (true, SubscriberLayers::Spread, Transport::Tcp));
        assert!(Args::try_parse_from(["fanout-load", "--layers", "spread"]).is_err(), "--layers without --simulcast");
        assert!(Args::try_parse_from(["fanout-load", "--transport", "quic"]).is_err());
    }
}
