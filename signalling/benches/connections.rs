//! Signalling load benchmark: 5,000 authenticated Socket.IO connections joining 500 rooms
//! (10 participants each) on one signalling process with its embedded worker. Prints join
//! latency (p50/p99/max) and the server's memory per idle connection, next to the targets
//! (join p99 under 20 ms on loopback, under 30 KiB per idle connection).
//!
//! Run: `cargo bench -p fanout-signalling --bench connections` (about 40 s after the build).
//! The environment changes the defaults: `CONNECTIONS` (5000), `ROOMS` (500), `RATE`
//! (arrivals per second, 500), `IDLE_SECS` (how long everyone sits idle before a memory
//! reading, 5).
//!
//! How it runs:
//! - The server is the release `fanout-signalling` binary in embedded mode, started as a child
//!   process with a known `FANOUT_JWT_SECRET`, so that its RSS (`/proc/<pid>/status`) is
//!   measured apart from the clients'. Tokens are minted here (HS256, one user per connection,
//!   the claims `/dev/token` gives), so no HTTP request inflates the server's baseline.
//! - Clients are light: raw Engine.IO v4 / Socket.IO v5 text frames over tokio-tungstenite
//!   (websocket transport from the start, no polling), one task per connection, answering the
//!   server's pings while idle.
//! - Arrival pattern, in two phases on the same server:
//!   1. connect: connections arrive at a steady `RATE` per second; each opens a websocket and
//!      authenticates (`40{"token":...}`). Everyone then sits idle for `IDLE_SECS`.
//!   2. join: at the same steady rate, each connection emits `join-room` with an ack id.
//!      Rooms fill one after another, like classes arriving: connection `i` joins room
//!      `i / 10`, so a room's ten members arrive within 20 ms of each other, and each join
//!      after the first also sends `participant-joined` to those already in. Everyone then
//!      sits idle for `IDLE_SECS` again.
//! - Join latency: from writing `42<id>["join-room",{...}]` to reading its ack `43<id>[...]`.
//! - Memory per idle connection: (server RSS with everyone connected, joined and idle) minus
//!   (server RSS before the first connection), over the number of connections. It includes the
//!   embedded worker's peer and its share of a room. The same figure after phase 1 (connected
//!   and authenticated, in no room) is printed too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

const JOIN_ACK_ID: u32 = 1;
const TARGET_P99: Duration = Duration::from_millis(20);
const TARGET_KIB: f64 = 30.0;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("VmRSS:")
                    .map(|v| v.trim().trim_end_matches("kB").trim().to_string())
            })
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn mint_token(secret: &str, i: usize) -> String {
    let sub = format!("bench-{i}");
    let claims = json!({
        "sub": sub,
        "name": format!("Bench {i}"),
        "email": format!("{sub}@bench.local"),
        "role": "participant",
        "exp": jsonwebtoken::get_current_timestamp() + 3600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token encodes")
}

/// What one connection measured.
#[derive(Default)]
struct Outcome {
    /// Websocket handshake to the namespace's `40`.
    connect: Option<Duration>,
    /// `join-room` to its ack.
    join: Option<Duration>,
    /// Size of the join's ack frame.
    ack_bytes: usize,
    error: Option<String>,
}

/// Shared between the driver and the connection tasks.
struct Shared {
    outcomes: Mutex<Vec<Outcome>>,
    connected: std::sync::atomic::AtomicUsize,
    /// Answers (ack or refusal) to joins.
    answered: std::sync::atomic::AtomicUsize,
    failed: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn fail(&self, i: usize, error: String) {
        let mut outcomes = self.outcomes.lock().unwrap();
        if outcomes[i].error.is_none() {
            outcomes[i].error = Some(error);
            self.failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// The driver's signals: when phase 2 starts (joins are spread over it at the arrival rate),
/// and when to close.
#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Connect,
    Join(tokio::time::Instant),
    Stop,
}

/// One client: connect and authenticate, join when its turn comes, answer pings until told
/// to stop.
async fn client(
    i: usize,
    url: String,
    token: String,
    room: String,
    join_offset: Duration,
    shared: Arc<Shared>,
    mut phase: watch::Receiver<Phase>,
) {
    use std::sync::atomic::Ordering::SeqCst;
    let started = Instant::now();
    let (mut ws, _) =
        match tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await {
            Ok(ws) => ws,
            Err(e) => return shared.fail(i, format!("websocket: {e}")),
        };
    let mut join_at: Option<tokio::time::Instant> = None;
    let mut join_sent: Option<Instant> = None;
    loop {
        let turn_at = join_at.filter(|_| join_sent.is_none());
        let turn = async move {
            match turn_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let message = tokio::select! {
            message = ws.next() => message,
            changed = phase.changed() => {
                match (changed, *phase.borrow_and_update()) {
                    (Ok(()), Phase::Join(start)) => join_at = Some(start + join_offset),
                    _ => break,
                }
                continue;
            }
            () = turn => {
                join_sent = Some(Instant::now());
                let join = format!("42{JOIN_ACK_ID}{}", json!(["join-room", { "roomId": room }]));
                if let Err(e) = ws.send(Message::Text(join.into())).await {
                    shared.fail(i, format!("websocket: {e}"));
                    break;
                }
                continue;
            }
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                shared.fail(i, "closed by the server".into());
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                shared.fail(i, format!("websocket: {e}"));
                break;
            }
        };
        let text = text.as_str();
        let reply = if text == "2" {
            // Engine.IO ping: answer, or the server closes the connection.
            Some("3".to_owned())
        } else if text.starts_with('0') {
            // Engine.IO open: connect to the "/" namespace with the token.
            Some(format!("40{}", json!({ "token": token })))
        } else if text.starts_with("40") {
            shared.outcomes.lock().unwrap()[i].connect = Some(started.elapsed());
            shared.connected.fetch_add(1, SeqCst);
            None
        } else if let Some(refusal) = text.strip_prefix("44") {
            shared.fail(i, format!("connect refused: {refusal}"));
            break;
        } else if let Some(ack) = text.strip_prefix(&format!("43{JOIN_ACK_ID}")) {
            let elapsed = join_sent.map(|t| t.elapsed());
            let body: Value = serde_json::from_str(ack).unwrap_or(Value::Null);
            if body[0]["success"] == true {
                let mut outcomes = shared.outcomes.lock().unwrap();
                outcomes[i].join = elapsed;
                outcomes[i].ack_bytes = text.len();
            } else {
                shared.fail(i, format!("join refused: {ack}"));
            }
            shared.answered.fetch_add(1, SeqCst);
            None
        } else {
            // joined-room, participant-joined...: nothing to do.
            None
        };
        if let Some(reply) = reply
            && let Err(e) = ws.send(Message::Text(reply.into())).await
        {
            shared.fail(i, format!("websocket: {e}"));
            break;
        }
    }
    let _ = ws.close(None).await;
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Waits until `done` holds or nothing has changed for 10 s; whether it holds.
async fn wait_for(done: impl Fn() -> bool, progress: impl Fn() -> usize) -> bool {
    let mut last = (progress(), Instant::now());
    while !done() {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = progress();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(10) {
            return false;
        }
    }
    true
}

#[tokio::main]
async fn main() {
    use std::sync::atomic::Ordering::SeqCst;
    let connections = env_usize("CONNECTIONS", 5000).max(1);
    let rooms = env_usize("ROOMS", 500).clamp(1, connections);
    let rate = env_usize("RATE", 500).max(1);
    let idle = Duration::from_secs(env_usize("IDLE_SECS", 5) as u64);
    let per_room = connections.div_ceil(rooms);
    let fd_limit = fanout_worker::os::raise_open_file_limit().unwrap_or(0);
    assert!(
        fd_limit as usize > connections + 100,
        "the open-file limit ({fd_limit}) is too low for {connections} connections"
    );

    let secret = fanout_signalling::embedded::random_secret();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_fanout-signalling"))
        .env("PORT", port.to_string())
        .env("FANOUT_LISTEN_ADDR", "127.0.0.1")
        .env("FANOUT_PLACEMENT", "embedded")
        .env("FANOUT_JWT_SECRET", &secret)
        .env("FANOUT_RTC_MIN_PORT", "43000")
        .env("FANOUT_RTC_MAX_PORT", "43999")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("starts fanout-signalling");
    let pid = server.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        let _ = server.kill();
        panic!("fanout-signalling did not answer /healthz");
    }
    let tokens: Vec<String> = (0..connections).map(|i| mint_token(&secret, i)).collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_start = rss_kib(pid);

    let spread = Duration::from_secs_f64(connections as f64 / rate as f64);
    println!(
        "signalling load: {connections} connections, {rooms} rooms of {per_room}, embedded worker, loopback, pid {pid}"
    );
    println!(
        "  arrival: phase 1, connections arrive at a steady {rate}/s ({:.1} s) and authenticate; idle {} s;",
        spread.as_secs_f64(),
        idle.as_secs()
    );
    println!(
        "           phase 2, they emit join-room at a steady {rate}/s ({:.1} s), connection i into room i / {per_room}; idle {} s",
        spread.as_secs_f64(),
        idle.as_secs()
    );

    // Phase 1: connect and authenticate.
    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    let shared = Arc::new(Shared {
        outcomes: Mutex::new((0..connections).map(|_| Outcome::default()).collect()),
        connected: Default::default(),
        answered: Default::default(),
        failed: Default::default(),
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Connect);
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tasks = Vec::with_capacity(connections);
    let started = tokio::time::Instant::now();
    for (i, token) in tokens.into_iter().enumerate() {
        tokio::time::sleep_until(started + period * i as u32).await;
        tasks.push(tokio::spawn(client(
            i,
            url.clone(),
            token,
            format!("room-{}", i / per_room),
            period * i as u32,
            shared.clone(),
            phase_rx.clone(),
        )));
    }
    let all_connected = wait_for(
        || shared.connected.load(SeqCst) + shared.failed.load(SeqCst) >= connections,
        || shared.connected.load(SeqCst) + shared.failed.load(SeqCst),
    )
    .await;
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(idle).await;
    let rss_connected = rss_kib(pid);

    // Phase 2: join.
    let started = tokio::time::Instant::now();
    phase_tx.send_replace(Phase::Join(started));
    let all_answered = wait_for(
        || shared.answered.load(SeqCst) + shared.failed.load(SeqCst) >= connections,
        || shared.answered.load(SeqCst) + shared.failed.load(SeqCst),
    )
    .await;
    let join_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(idle).await;
    let rss_joined = rss_kib(pid);
    let stats: Value = match http.get(format!("{base}/dev/stats")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };

    phase_tx.send_replace(Phase::Stop);
    for task in tasks {
        let _ = task.await;
    }
    let _ = server.kill();
    let _ = server.wait();

    let outcomes = std::mem::take(&mut *shared.outcomes.lock().unwrap());
    let mut joins: Vec<Duration> = outcomes.iter().filter_map(|o| o.join).collect();
    let mut connects: Vec<Duration> = outcomes.iter().filter_map(|o| o.connect).collect();
    joins.sort();
    connects.sort();
    let mut errors: Vec<&str> = outcomes.iter().filter_map(|o| o.error.as_deref()).collect();
    errors.sort();
    errors.dedup();
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    let ack_bytes = outcomes.iter().map(|o| o.ack_bytes).max().unwrap_or(0);

    let per_connection = |rss: u64| rss.saturating_sub(rss_start) as f64 / connections as f64;
    let (idle_connected, idle_joined) = (per_connection(rss_connected), per_connection(rss_joined));
    let (p50, p99) = (percentile(&joins, 0.50), percentile(&joins, 0.99));
    let max = joins.last().copied().unwrap_or_default();
    println!(
        "  phase 1: {} connected in {connect_secs:.1} s; websocket handshake to `40`: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        connects.len(),
        ms(percentile(&connects, 0.50)),
        ms(percentile(&connects, 0.99)),
        ms(connects.last().copied().unwrap_or_default())
    );
    println!(
        "  phase 2: {} joined in {join_secs:.1} s ({failed} failed); worker: {} rooms, {} peers; join ack up to {ack_bytes} bytes",
        joins.len(),
        stats["rooms"],
        stats["peers"]
    );
    if !all_connected || !all_answered {
        println!("  (gave up waiting: no progress for 10 s)");
    }
    for error in errors.iter().take(5) {
        println!("  error: {error}");
    }
    println!(
        "  server RSS: {rss_start} KiB before the first connection, {rss_connected} KiB connected and idle, \
         {rss_joined} KiB joined and idle"
    );
    println!();
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    let all_joined = failed == 0 && joins.len() == connections;
    println!("  | measure                                   |     measured | target   |        |");
    println!("  |-------------------------------------------|--------------|----------|--------|");
    println!(
        "  | connections joined                        | {:>12} | all      | {:<6} |",
        format!("{} / {connections}", joins.len()),
        verdict(all_joined)
    );
    println!("  | join-room latency p50                     | {:>9.2} ms |          |        |", ms(p50));
    println!(
        "  | join-room latency p99                     | {:>9.2} ms | < 20 ms  | {:<6} |",
        ms(p99),
        verdict(all_joined && p99 < TARGET_P99)
    );
    println!("  | join-room latency max                     | {:>9.2} ms |          |        |", ms(max));
    println!(
        "  | server memory per idle connection, joined | {idle_joined:>8.1} KiB | < 30 KiB | {:<6} |",
        verdict(all_joined && idle_joined < TARGET_KIB)
    );
    println!(
        "  |   (connected and authenticated, no room)  | {idle_connected:>8.1} KiB |          |        |"
    );
}
