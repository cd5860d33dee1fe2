//! Signalling load benchmark: 5,000 authenticated Socket.IO connections joining 500 rooms on
//! one signalling process with its embedded worker. Prints join latency (p50/p99/max) and the
//! server's memory per idle connection (targets: p99 under 20 ms on loopback, under 30 KiB per
//! idle connection).
//!
//! Run: `cargo bench -p fanout-signalling --bench connections` (CONNECTIONS and ROOMS in the
//! environment change the counts). The server runs as its own process (the release binary in
//! embedded mode), so its RSS is measured apart from the clients'.
//!
//! Known limitation, to fix before its figures count: the `rust_socketio` client saturates a
//! core at about 8 connections per second, so 5,000 connections take over ten minutes and
//! early connections miss the server's pings and are closed before they join. The client side
//! must become a light one (raw Socket.IO frames over tokio-tungstenite) for this to measure
//! the server.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::Payload;
use serde_json::{json, Value};
use tokio::sync::oneshot;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").trim().to_string())))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

async fn connect(url: &str, token: &str) -> Client {
    let (tx, rx) = oneshot::channel::<()>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let client = ClientBuilder::new(url)
        .reconnect(false)
        .auth(json!({ "token": token }))
        .on(rust_socketio::Event::Connect, move |_, _| {
            if let Some(tx) = tx.lock().unwrap().take() {
                let _ = tx.send(());
            }
            async {}.boxed()
        })
        .connect()
        .await
        .expect("connects");
    tokio::time::timeout(Duration::from_secs(30), rx).await.expect("accepted in time").expect("accepted");
    client
}

/// Emits join-room and returns the time until its acknowledgement.
async fn join(client: &Client, room: &str) -> Duration {
    let (tx, rx) = oneshot::channel::<Value>();
    let tx = Arc::new(Mutex::new(Some(tx)));
    let started = Instant::now();
    client
        .emit_with_ack("join-room", json!({ "roomId": room }), Duration::from_secs(30), move |payload, _| {
            if let (Some(tx), Payload::Text(values)) = (tx.lock().unwrap().take(), payload) {
                let _ = tx.send(values.into_iter().next().unwrap_or(Value::Null));
            }
            async {}.boxed()
        })
        .await
        .expect("emits");
    let ack = tokio::time::timeout(Duration::from_secs(30), rx).await.expect("ack in time").expect("ack");
    let ack = match ack {
        Value::Array(mut a) if !a.is_empty() => a.swap_remove(0),
        other => other,
    };
    assert_eq!(ack["success"], true, "join refused: {ack}");
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let connections = env_usize("CONNECTIONS", 5000);
    let rooms = env_usize("ROOMS", 500);
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = std::process::Command::new(env!("CARGO_BIN_EXE_fanout-signalling"))
        .env("PORT", port.to_string())
        .env("FANOUT_LISTEN_ADDR", "127.0.0.1")
        .env("FANOUT_RTC_MIN_PORT", "43000")
        .env("FANOUT_RTC_MAX_PORT", "43999")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts fanout-signalling");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    for _ in 0..200 {
        if http.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token: Value = http.get(format!("{base}/dev/token?name=bench")).send().await.unwrap().json().await.unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let pid = server.id();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_start = rss_kib(pid);

    // Connect everyone (in batches, as a crowd arriving), then let it settle.
    let url = format!("{base}/");
    let mut clients = Vec::with_capacity(connections);
    let started = Instant::now();
    for batch in (0..connections).collect::<Vec<_>>().chunks(250) {
        let joined = futures::future::join_all(batch.iter().map(|_| connect(&url, &token))).await;
        clients.extend(joined);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_connected = rss_kib(pid);

    // Join 500 rooms, 10 participants each, with up to 250 joins in flight.
    let mut latencies = Vec::with_capacity(connections);
    let started = Instant::now();
    for batch in clients.iter().enumerate().collect::<Vec<_>>().chunks(250) {
        let times = futures::future::join_all(batch.iter().map(|(i, c)| {
            let room = format!("room-{}", i % rooms);
            async move { join(c, &room).await }
        }))
        .await;
        latencies.extend(times);
    }
    let join_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_joined = rss_kib(pid);
    latencies.sort();

    println!("signalling load: {connections} connections, {rooms} rooms, embedded worker, loopback");
    println!("  connect: {connections} in {connect_secs:.2} s");
    println!(
        "  join-room latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({connections} joins in {join_secs:.2} s, {:.0} joins/s)",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3,
        connections as f64 / join_secs
    );
    println!(
        "  server memory: {rss_start} KiB idle; +{:.1} KiB per connected idle connection; +{:.1} KiB per joined connection (incl. the worker's peer)",
        rss_connected.saturating_sub(rss_start) as f64 / connections as f64,
        rss_joined.saturating_sub(rss_start) as f64 / connections as f64,
    );
    println!("  targets: join p99 < 20 ms, < 30 KiB per idle connection");
    for c in clients {
        let _ = c.disconnect().await;
    }
    let _ = server.kill();
}
