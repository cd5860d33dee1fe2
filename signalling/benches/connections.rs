//! Signalling load benchmark: 5,000 authenticated Socket.IO connections joining 500 rooms
//! (10 participants each) on one signalling process with its embedded worker. Prints join
//! latency (p50/p99/max) and the server's memory per idle connection, next to the targets
//! (join p99 under 20 ms on loopback, under 30 KiB per idle connection).
//!
//! Run: `cargo bench -p fanout-signalling --bench connections`. The environment changes the
//! defaults: `CONNECTIONS` (5000), `ROOMS` (500), `RATE` (arrivals per second, 500),
//! `IDLE_SECS` (how long everyone sits idle before the memory reading, 5).
//!
//! How it runs:
//! - The server is the release `fanout-signalling` binary in embedded mode, started as a child
//!   process with a known `FANOUT_JWT_SECRET`, so its RSS (`/proc/<pid>/status`) is measured
//!   apart from the clients'. Tokens are minted here (HS256, one user per connection, with the
//!   claims the dev token endpoint gives), so no HTTP request inflates the server's baseline.
//! - Clients are light: raw Engine.IO v4 / Socket.IO v5 text frames over tokio-tungstenite,
//!   one task per connection (websocket transport directly, no polling), answering the
//!   server's pings while idle.
//! - Arrival pattern: connections arrive at a steady `RATE` per second; each one connects,
//!   authenticates (`40{"token":...}`), and at once emits `join-room` with an ack id. Rooms
//!   fill one after another, like classes arriving: connection `i` joins room `i / 10`, so
//!   the ten members of a room arrive within a few milliseconds of each other and each join
//!   after the first also sends `participant-joined` to those already in.
//! - Join latency: from writing `42<id>["join-room",{...}]` to reading its ack `43<id>[...]`,
//!   over all joins.
//! - Memory per idle connection: (server RSS with everyone connected, joined and idle for
//!   `IDLE_SECS`) minus (server RSS before the first connection), over the number of
//!   connections. It includes the embedded worker's peer per participant.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

const JOIN_ACK_ID: u32 = 1;

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

/// Raises this process's open-file soft limit to its hard limit (5,000 sockets need it).
fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
        limit.rlim_cur as u64
    }
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
    index: usize,
    connect: Option<Duration>,
    join: Option<Duration>,
    error: Option<String>,
}

/// One client: connect, authenticate, join, then answer pings until told to stop.
async fn client(
    index: usize,
    url: String,
    token: String,
    room: Option<String>,
    results: Arc<Mutex<Vec<Outcome>>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut outcome = Outcome { index, ..Outcome::default() };
    let started = Instant::now();
    let (mut ws, _) =
        match tokio_tungstenite::connect_async_with_config(url.as_str(), None, true).await {
            Ok(ws) => ws,
            Err(e) => {
                outcome.error = Some(format!("websocket: {e}"));
                results.lock().unwrap().push(outcome);
                return;
            }
        };
    let mut join_sent: Option<Instant> = None;
    let mut reported = false;
    loop {
        let message = tokio::select! {
            message = ws.next() => message,
            _ = stop.wait_for(|s| *s) => break,
        };
        let text = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_))) | None => {
                outcome.error.get_or_insert_with(|| "closed by the server".into());
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                outcome.error.get_or_insert_with(|| format!("websocket: {e}"));
                break;
            }
        };
        let text = text.as_str();
        let reply: Option<String> = if text == "2" {
            // Engine.IO ping: answer, or the server closes the connection.
            Some("3".into())
        } else if text.starts_with('0') {
            // Engine.IO open: connect to the "/" namespace with the token.
            Some(format!("40{}", json!({ "token": token })))
        } else if text.starts_with("40") {
            outcome.connect = Some(started.elapsed());
            if let Some(room) = &room {
                join_sent = Some(Instant::now());
                Some(format!(
                    "42{JOIN_ACK_ID}{}",
                    json!(["join-room", { "roomId": room }])
                ))
            } else {
                results.lock().unwrap().push(std::mem::take(&mut outcome));
                reported = true;
                None
            }
        } else if let Some(refusal) = text.strip_prefix("44") {
            outcome.error = Some(format!("connect refused: {refusal}"));
            break;
        } else if let Some(ack) = text.strip_prefix(&format!("43{JOIN_ACK_ID}")) {
            let elapsed = join_sent.map(|t| t.elapsed());
            let body: Value = serde_json::from_str(ack).unwrap_or(Value::Null);
            if body[0]["success"] == true {
                outcome.join = elapsed;
            } else {
                outcome.error = Some(format!("join refused: {ack}"));
            }
            results.lock().unwrap().push(std::mem::take(&mut outcome));
            reported = true;
            None
        } else {
            // joined-room, participant-joined...: nothing to do.
            None
        };
        if let Some(reply) = reply
            && let Err(e) = ws.send(Message::Text(reply.into())).await
        {
            outcome.error = Some(format!("websocket: {e}"));
            break;
        }
    }
    if !reported {
        outcome.error.get_or_insert_with(|| "stopped before the join".into());
        results.lock().unwrap().push(outcome);
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

#[tokio::main]
async fn main() {
    let connections = env_usize("CONNECTIONS", 5000);
    let rooms = env_usize("ROOMS", 500).max(1);
    let rate = env_usize("RATE", 500).max(1);
    let idle_secs = env_usize("IDLE_SECS", 5) as u64;
    let per_room = connections.div_ceil(rooms);
    // JOIN=0: connect and authenticate only (to tell connection memory from room memory).
    let join = env_usize("JOIN", 1) != 0;
    let fd_limit = raise_fd_limit();
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
    let wrapper = std::env::var("WRAPPER").unwrap_or_default();
    let mut words = wrapper.split_whitespace();
    let mut server = match words.next() {
        Some(w) => { let mut c = std::process::Command::new(w); c.args(words).arg(env!("CARGO_BIN_EXE_fanout-signalling")); c }
        None => std::process::Command::new(env!("CARGO_BIN_EXE_fanout-signalling")),
    };
    server
        .env("PORT", port.to_string())
        .env("FANOUT_LISTEN_ADDR", "127.0.0.1")
        .env("FANOUT_PLACEMENT", "embedded")
        .env("FANOUT_JWT_SECRET", &secret)
        .env("FANOUT_RTC_MIN_PORT", "43000")
        .env("FANOUT_RTC_MAX_PORT", "43999")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    let mut server = server
        .spawn()
        .expect("starts fanout-signalling");
    let pid = server.id();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..2000 {
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

    println!(
        "signalling load: {connections} connections, {rooms} rooms x {per_room}, embedded worker, loopback"
    );
    println!(
        "  arrival: steady {rate} connections/s ({:.1} s); each connects, authenticates and joins at once; \
         connection i joins room i / {per_room} (rooms fill one after another)",
        connections as f64 / rate as f64
    );

    let url = format!("ws://127.0.0.1:{port}/socket.io/?EIO=4&transport=websocket");
    let results = Arc::new(Mutex::new(Vec::with_capacity(connections)));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(connections);
    let started = tokio::time::Instant::now();
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    for (i, token) in tokens.into_iter().enumerate() {
        tokio::time::sleep_until(started + period * i as u32).await;
        tasks.push(tokio::spawn(client(
            i,
            url.clone(),
            token,
            join.then(|| format!("room-{}", i / per_room)),
            results.clone(),
            stop_rx.clone(),
        )));
    }
    // Every connection reports once, after its join's ack (or its failure).
    let deadline = Instant::now() + Duration::from_secs(60);
    while results.lock().unwrap().len() < connections && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrival_secs = started.elapsed().as_secs_f64();

    tokio::time::sleep(Duration::from_secs(idle_secs)).await;
    let rss_idle = rss_kib(pid);
    let stats: Value = match http.get(format!("{base}/dev/stats")).send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };

    if std::env::var_os("BREAKDOWN").is_some() {
        let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
        for line in metrics.lines().filter(|l| l.contains("join-room")) {
            println!("  {line}");
        }
    }
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = task.await;
    }
    let _ = server.kill();
    let _ = server.wait();

    let results = std::mem::take(&mut *results.lock().unwrap());
    let mut joins: Vec<Duration> = results.iter().filter_map(|o| o.join).collect();
    let mut connects: Vec<Duration> = results.iter().filter_map(|o| o.connect).collect();
    joins.sort();
    connects.sort();
    let mut errors: Vec<&str> = results.iter().filter_map(|o| o.error.as_deref()).collect();
    errors.sort();
    errors.dedup();
    let failed = results.iter().filter(|o| o.error.is_some()).count() + (connections - results.len());

    let per_conn = rss_idle.saturating_sub(rss_start) as f64 / connections as f64;
    let p50 = percentile(&joins, 0.50);
    let p99 = percentile(&joins, 0.99);
    let max = joins.last().copied().unwrap_or_default();
    println!(
        "  all joined after {arrival_secs:.1} s; {} joined, {failed} failed; worker: {} rooms, {} peers",
        joins.len(),
        stats["rooms"],
        stats["peers"]
    );
    for error in errors.iter().take(5) {
        println!("  error: {error}");
    }
    println!(
        "  connect + auth (websocket handshake to `40`): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&connects, 0.50)),
        ms(percentile(&connects, 0.99)),
        ms(connects.last().copied().unwrap_or_default())
    );
    println!(
        "  server RSS: {rss_start} KiB before the first connection, {rss_idle} KiB with all connected, \
         joined and idle for {idle_secs} s (+{} KiB)",
        rss_idle.saturating_sub(rss_start)
    );
    if std::env::var_os("BREAKDOWN").is_some() {
        for position in 0..per_room {
            let mut at: Vec<Duration> = results.iter().filter(|o| o.index % per_room == position).filter_map(|o| o.join).collect();
            at.sort();
            let slow = at.iter().filter(|d| **d > Duration::from_millis(20)).count();
            println!("  position {position}: p50 {:.2} ms, p99 {:.2} ms, {slow} over 20 ms", ms(percentile(&at, 0.5)), ms(percentile(&at, 0.99)));
        }
        let slow: Vec<usize> = results.iter().filter(|o| o.join.is_some_and(|d| d > Duration::from_millis(20))).map(|o| o.index).collect();
        println!("  slow indices: {:?}", &slow[..slow.len().min(60)]);
    }
    println!();
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    let all_joined = failed == 0 && joins.len() == connections;
    println!("  | measure                       | measured    | target    |      |");
    println!("  |-------------------------------|-------------|-----------|------|");
    println!("  | join-room latency p50         | {:>8.2} ms | -         |      |", ms(p50));
    println!(
        "  | join-room latency p99         | {:>8.2} ms | < 20 ms   | {:<4} |",
        ms(p99),
        verdict(p99 < Duration::from_millis(20) && all_joined)
    );
    println!("  | join-room latency max         | {:>8.2} ms | -         |      |", ms(max));
    println!(
        "  | server memory per idle conn.  | {per_conn:>7.1} KiB | < 30 KiB  | {:<4} |",
        verdict(per_conn < 30.0 && all_joined)
    );
    println!(
        "  | connections joined            | {:>5} / {:<4}| all       | {:<4} |",
        joins.len(),
        connections,
        verdict(all_joined)
    );
}
