//! The `fanout-signalling` binary as its own process (embedded mode): what a hostile client's
//! large input costs the process's memory, and what `main` wires up (where it listens, the
//! development tokens in RS256 mode, its logs). One behaviour per test.

mod common;

use std::time::Duration;

use common::{Process, RawClient};
use futures::SinkExt as _;
use serde_json::json;
use tokio::io::AsyncWriteExt as _;
use tokio_tungstenite::tungstenite::Message;

const MIB: usize = 1024 * 1024;

/// How much the process's RSS may grow while refusing one oversized message: the limit
/// itself is 128 KiB, and the rest is allocator noise.
const GROWTH_LIMIT_KIB: u64 = 4 * 1024;

/// Sends `message` as one websocket message over `ws` without waiting for the server; its
/// refusal may come before the last byte is sent.
async fn push(client: &mut RawClient, message: Message) {
    let _ = tokio::time::timeout(Duration::from_secs(10), client.ws.send(message)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mb_websocket_frame_closes_the_connection_before_it_is_buffered() {
    let server = Process::start(&[], (46000, 46009)).await;
    let mut client = RawClient::connect(server.addr, &server.token("u1")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.peak_rss_kib();
    // 16 MB, just under tungstenite's own 16 MiB frame limit.
    let frame = format!("42[\"leave-room\",{{\"pad\":\"{}\"}}]", "x".repeat(16_000_000));
    push(&mut client, Message::Text(frame.into())).await;
    assert!(client.closed_within(Duration::from_secs(5)).await, "the connection stays open");
    let after = server.peak_rss_kib();
    println!("figure: server peak RSS {before} KiB before a 16 MB frame, {after} KiB after");
    assert!(after < before + GROWTH_LIMIT_KIB, "peak RSS grew from {before} to {after} KiB");
    // And the server still serves others.
    RawClient::connect(server.addr, &server.token("u2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_packet_with_a_60_mb_token_is_refused_before_it_is_read() {
    let server = Process::start(&[], (46010, 46019)).await;
    let mut client = RawClient::open(server.addr).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.peak_rss_kib();
    // In frames of 1 MB, each under every frame limit: only the message's size can refuse it.
    let connect = format!("40{}", json!({ "token": "a".repeat(60_000_000) }));
    let _ = tokio::time::timeout(Duration::from_secs(20), client.send_fragmented(&connect, 1_000_000)).await;
    assert!(client.closed_within(Duration::from_secs(5)).await, "the connection stays open");
    let after = server.peak_rss_kib();
    println!("figure: server peak RSS {before} KiB before a 60 MB connect packet, {after} KiB after");
    assert!(after < before + GROWTH_LIMIT_KIB, "peak RSS grew from {before} to {after} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_polling_body_over_the_limit_is_refused() {
    let server = Process::start(&[], (46020, 46029)).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", server.addr);
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let sid = serde_json::from_str::<serde_json::Value>(&open[1..]).unwrap()["sid"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = server.peak_rss_kib();
    let body = format!("40{}", json!({ "token": "a".repeat(20 * MIB) }));
    let answer = http.post(format!("{base}&sid={sid}")).body(body).send().await;
    let after = server.peak_rss_kib();
    println!("figure: server peak RSS {before} KiB before a 20 MiB polling body, {after} KiB after");
    if let Ok(answer) = answer {
        assert!(!answer.status().is_success(), "accepted: {}", answer.status());
    }
    assert!(after < before + GROWTH_LIMIT_KIB, "RSS grew from {before} to {after} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_packet_announcing_countless_binary_attachments_closes_the_connection() {
    let server = Process::start(&[], (46030, 46039)).await;
    let mut client = RawClient::connect(server.addr, &server.token("u1")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.peak_rss_kib();
    client.send("451000000000-[\"leave-room\",{}]").await;
    // Were they buffered, these 100 x 64 KiB would stay in memory until the billionth.
    for _ in 0..100 {
        if client.ws.send(Message::Binary(vec![0u8; 64 * 1024].into())).await.is_err() {
            break;
        }
    }
    assert!(client.closed_within(Duration::from_secs(5)).await, "the connection stays open");
    let after = server.peak_rss_kib();
    println!("figure: server peak RSS {before} KiB before 6.4 MB of announced attachments, {after} KiB after");
    assert!(after < before + GROWTH_LIMIT_KIB, "RSS grew from {before} to {after} KiB");
}

/// Where the process listens, from the kernel's table of listening TCP sockets.
fn listening_addresses(port: u16) -> Vec<String> {
    let mut found = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else { continue };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is HEX_IP:HEX_PORT; state 0A is LISTEN.
            if let (Some(local), Some("0A")) = (fields.get(1), fields.get(3).copied())
                && let Some((ip, hex_port)) = local.split_once(':')
                && u16::from_str_radix(hex_port, 16) == Ok(port)
            {
                found.push(ip.to_owned());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_listens_on_loopback_by_default() {
    let server = Process::start(&[], (46040, 46049)).await;
    // 127.0.0.1, little-endian in hex.
    assert_eq!(listening_addresses(server.addr.port()), vec!["0100007F".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_mode_refuses_another_address_without_dev_on_network() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_fanout-signalling"))
        .args(["--placement", "embedded", "--listen-addr", "0.0.0.0", "--port", "0"])
        .env("FANOUT_RTC_MIN_PORT", "46050")
        .env("FANOUT_RTC_MAX_PORT", "46059")
        .env_remove("FANOUT_LISTEN_ADDR")
        .output()
        .expect("runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--dev-on-network"), "{stderr}");
    assert!(stderr.contains("/dev/token"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_on_network_listens_where_asked() {
    let server = Process::start(&["--listen-addr", "0.0.0.0", "--dev-on-network"], (46060, 46069)).await;
    assert_eq!(listening_addresses(server.addr.port()), vec!["00000000".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_rs256_mode_dev_token_says_why_it_cannot_sign() {
    let key = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa_public.pem");
    let server = Process::start(&[&format!("--jwt-public-key-file={key}")], (46070, 46079)).await;
    let answer = reqwest::get(format!("http://{}/dev/token?name=Ada", server.addr)).await.unwrap();
    assert_eq!(answer.status(), 409);
    let body: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(body["error"]["code"], "DEV_TOKENS_UNAVAILABLE");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("RS256") && message.contains("--jwt-public-key-file"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_written_to_a_pipe_have_no_colour_codes_and_no_library_chatter() {
    let server = Process::start(&[], (46080, 46089)).await;
    // A call's worth of activity: a connection that joins and leaves.
    let mut client = RawClient::connect(server.addr, &server.token("u1")).await;
    client.send(r#"421["join-room",{"roomId":"logs"}]"#).await;
    assert_eq!(client.ack(1).await["success"], true);
    drop(client);
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log();
    assert!(log.contains("signalling listening"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in a redirected log:\n{log}");
    for line in log.lines() {
        assert!(
            line.contains("fanout_") || line.contains("WARN") || line.contains("ERROR"),
            "a library's info line by default: {line}"
        );
    }
}

#[test]
fn a_bad_worker_url_stops_start_up_with_the_entry_and_what_to_write() {
    for (urls, says) in [
        ("http://127.0.0.1:3000,10.0.0.8:3000", "\"10.0.0.8:3000\": needs the http:// scheme"),
        ("http://127.0.0.1:3000,,http://127.0.0.1:3001", "\"\": empty"),
        ("http://127.0.0.1:3000,http://127.0.0.1:3000/", "is listed twice"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_fanout-signalling"))
            .args(["--worker-url", urls, "--jwt-secret", "s", "--port", "0"])
            .env_remove("KUBERNETES_SERVICE_HOST")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{urls}: started anyway");
        assert!(stderr.contains("--worker-url entry") && stderr.contains(says), "{urls}: {stderr}");
    }
}
