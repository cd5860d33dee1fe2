//! The `fanout-worker` program itself, as an operator runs it: its log on standard error,
//! without colour when redirected and without the DTLS library's per-handshake warnings.
#![cfg(all(feature = "media", feature = "client"))]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fanout_worker::api::JoinRequest;
use fanout_worker::client::WorkerClient;
use fanout_worker::media::peer::TestPeer;
use fanout_worker::room::{Direction, PeerId};

/// The running program, killed when dropped.
struct Program(Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the worker with `env`, on a free HTTP port; returns it, its REST URL, and the
/// lines of its standard error (read by a thread).
fn start(env: &[(&str, &str)], rtc_ports: (u16, u16)) -> (Program, String, std::sync::mpsc::Receiver<String>) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fanout-worker"));
    command
        .args(["--listen-ip", "127.0.0.1", "--http-port", "0"])
        .args(["--rtc-min-port", &rtc_ports.0.to_string(), "--rtc-max-port", &rtc_ports.1.to_string()])
        // The ICE-TCP port is one per worker: these programs run side by side.
        .args(["--enable-tcp", "false"])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("the worker starts");
    let stderr = child.stderr.take().expect("piped");
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let program = Program(child);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let url = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = received.recv_timeout(left).unwrap_or_else(|_| panic!("no 'worker started' line; stderr: {seen:#?}"));
        if line.contains("worker started") {
            let address = line.split("http_addr=").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("http_addr");
            break format!("http://{address}");
        }
        seen.push(line);
    };
    (program, url, received)
}

/// Connects one transport through ICE and DTLS, as a browser would.
async fn handshake(url: &str) {
    let client = WorkerClient::new(None, Duration::from_secs(5));
    client.join(url, "r", &JoinRequest::new("p")).await.expect("joins");
    let transport = client.create_transport(url, "r", &PeerId::from("p"), Direction::Send).await.expect("transport");
    let mut peer = TestPeer::for_transport(&transport).await.expect("peer");
    client.connect_transport(url, "r", &transport.id, &peer.dtls_parameters()).await.expect("connect");
    peer.connect(Duration::from_secs(5)).await.expect("ICE and DTLS complete");
}

/// What the program logged within `wait` from now.
fn lines_within(lines: &std::sync::mpsc::Receiver<String>, wait: Duration) -> Vec<String> {
    let deadline = std::time::Instant::now() + wait;
    let mut out = Vec::new();
    while let Ok(line) = lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
        out.push(line);
    }
    out
}

#[tokio::test]
async fn a_redirected_log_has_no_colour_codes_and_no_dtls_library_warnings() {
    let (_program, url, lines) = start(&[], (47650, 47659));
    handshake(&url).await;
    let log = lines_within(&lines, Duration::from_millis(500));
    assert!(log.iter().all(|line| !line.contains('\u{1b}')), "escape codes in a redirected log: {log:#?}");
    assert!(log.iter().all(|line| !line.contains("rtc_dtls")), "library noise at the default level: {log:#?}");
}

#[tokio::test]
async fn rust_log_still_turns_the_library_logs_on() {
    let (_program, url, lines) = start(&[("RUST_LOG", "debug")], (47660, 47669));
    handshake(&url).await;
    let log = lines_within(&lines, Duration::from_millis(500));
    assert!(log.iter().any(|line| line.contains("rtc_dtls")), "RUST_LOG=debug shows the DTLS library: {log:#?}");
}

#[tokio::test]
async fn three_hundred_rooms_visited_by_one_participant_are_closed_after_the_empty_timeout() {
    let (_program, url, _lines) = start(&[("FANOUT_EMPTY_ROOM_TIMEOUT_SECONDS", "1")], (47670, 47679));
    let client = WorkerClient::new(None, Duration::from_secs(5));
    // A room with its own, longer timeout (the Room object's spec.emptyTimeoutSeconds) stays.
    client.ensure_room_with(&url, "kept", &[], Some(Duration::from_secs(3600))).await.expect("opens");
    let started = std::time::Instant::now();
    for n in 0..300 {
        let room = format!("visit-{n}");
        client.join(&url, &room, &JoinRequest::new("visitor")).await.expect("joins");
        client.leave(&url, &room, &PeerId::from("visitor")).await.expect("leaves");
    }
    println!("300 visits took {} ms; rooms open right after: {}", started.elapsed().as_millis(), client.stats(&url).await.expect("stats").rooms);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let left = loop {
        let rooms = client.stats(&url).await.expect("stats").rooms;
        if rooms <= 1 || std::time::Instant::now() > deadline {
            break rooms;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("rooms open {} ms after the last visit: {left}", started.elapsed().as_millis());
    assert_eq!(left, 1, "only the room with its own long timeout is left");
    client.room_info(&url, "kept").await.expect("the long-timeout room is still open");
}
