//! The REST server's limits, probed with a raw TCP client against the real server (the
//! router served by `fanout_worker::http::serve` on loopback, a fake media engine below):
//! what a careless or hostile client gets, and that it leaves nothing open for long.
#![cfg(all(feature = "media", feature = "client"))]

use std::sync::Arc;
use std::time::Duration;

use fanout_worker::control::ControlPlane;
use fanout_worker::control::testing::FakeEngine;
use fanout_worker::http::{ApiState, HttpLimits, serve};
use fanout_worker::room::SequentialIds;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server on a free loopback port with `limits`, until the test ends.
async fn server(limits: HttpLimits, ports: std::ops::RangeInclusive<u16>) -> String {
    let engine = Arc::new(FakeEngine::new(ports));
    let control = Arc::new(ControlPlane::new(engine, SequentialIds::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("address").to_string();
    let state = ApiState::new(control, None).with_limits(limits);
    tokio::spawn(serve(listener, state, std::future::pending()));
    address
}

fn short_limits() -> HttpLimits {
    HttpLimits {
        header_read_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_millis(700),
        ..HttpLimits::default()
    }
}

/// Everything the server sends until it closes the connection (or `within` runs out, which
/// fails the test: the server must answer and close by itself).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> String {
    let mut answer = Vec::new();
    tokio::time::timeout(within, stream.read_to_end(&mut answer))
        .await
        .unwrap_or_else(|_| panic!("the server kept the connection open past {within:?}; it sent {:?}", String::from_utf8_lossy(&answer)))
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

/// The status code of an HTTP/1.1 answer.
fn status(answer: &str) -> u16 {
    answer.split_whitespace().nth(1).and_then(|code| code.parse().ok()).unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"))
}

fn header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().find_map(|line| line.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
}

#[tokio::test]
async fn a_body_announced_as_ten_gigabytes_is_refused_at_once_with_413() {
    let address = server(HttpLimits::default(), 42000..=42009).await;
    let mut stream = TcpStream::connect(&address).await.expect("connects");
    let request = "POST /v1/rooms/r/peers HTTP/1.1\r\nhost: w\r\ncontent-type: application/json\r\ncontent-length: 10000000000\r\n\r\n{\"peerId\":";
    stream.write_all(request.as_bytes()).await.expect("sends");
    // Nothing more of the body is sent: the answer must not wait for it.
    let answer = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(status(&answer), 413, "{answer}");
    assert!(answer.contains("PAYLOAD_TOO_LARGE"), "{answer}");
    assert_eq!(header(&answer, "connection"), Some("close"));
}

#[tokio::test]
async fn a_chunked_body_past_the_limit_is_refused_with_413() {
    let limits = HttpLimits { body_limit: 1024, ..HttpLimits::default() };
    let address = server(limits, 42010..=42019).await;
    let mut stream = TcpStream::connect(&address).await.expect("connects");
    let head = "POST /v1/rooms/r/peers HTTP/1.1\r\nhost: w\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("sends");
    let chunk = format!("800\r\n{}\r\n", "x".repeat(0x800));
    stream.write_all(chunk.as_bytes()).await.expect("sends a chunk over the limit");
    let answer = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(status(&answer), 413, "{answer}");
    assert!(answer.contains("1024 bytes"), "the message names the limit: {answer}");
}

#[tokio::test]
async fn headers_that_never_finish_are_timed_out() {
    let address = server(short_limits(), 42020..=42029).await;
    let mut stream = TcpStream::connect(&address).await.expect("connects");
    stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: w\r\nx-slow: ").await.expect("sends part of the headers");
    let answer = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    // hyper answers 408 or just closes; either way the connection is gone.
    assert!(answer.is_empty() || status(&answer) == 408, "{answer}");
}

#[tokio::test]
async fn a_body_sent_too_slowly_gets_408_request_timeout() {
    let address = server(short_limits(), 42030..=42039).await;
    let mut stream = TcpStream::connect(&address).await.expect("connects");
    let request = "POST /v1/rooms/r/peers HTTP/1.1\r\nhost: w\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"peer";
    stream.write_all(request.as_bytes()).await.expect("sends");
    let answer = read_until_closed(&mut stream, Duration::from_secs(3)).await;
    assert_eq!(status(&answer), 408, "{answer}");
    assert!(answer.contains("REQUEST_TIMEOUT"), "{answer}");
}

#[tokio::test]
async fn three_hundred_unfinished_connections_are_closed_and_the_cap_answers_503() {
    let limits = HttpLimits { max_connections: 300, ..short_limits() };
    let address = server(limits, 42040..=42049).await;
    let mut slow = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(&address).await.expect("connects");
        stream.write_all(b"GET /healthz HTTP/1.1\r\nhost: w\r\n").await.expect("sends");
        slow.push(stream);
    }
    // One more is past the cap: told so at once, with Retry-After.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = TcpStream::connect(&address).await.expect("connects");
    extra.write_all(b"GET /healthz HTTP/1.1\r\nhost: w\r\n\r\n").await.expect("sends");
    let answer = read_until_closed(&mut extra, Duration::from_secs(3)).await;
    assert_eq!(status(&answer), 503, "{answer}");
    assert!(answer.contains("TOO_MANY_CONNECTIONS"), "{answer}");
    assert_eq!(header(&answer, "retry-after"), Some("1"));
    // Every unfinished one is closed by the server within its header timeout.
    for stream in &mut slow {
        read_until_closed(stream, Duration::from_secs(3)).await;
    }
    // And then the server serves again.
    let mut fresh = TcpStream::connect(&address).await.expect("connects");
    fresh.write_all(b"GET /healthz HTTP/1.1\r\nhost: w\r\nconnection: close\r\n\r\n").await.expect("sends");
    let answer = read_until_closed(&mut fresh, Duration::from_secs(3)).await;
    assert_eq!(status(&answer), 200, "{answer}");
}

#[tokio::test]
async fn no_free_port_is_503_with_retry_after() {
    // One port: the second transport finds none.
    let address = server(HttpLimits::default(), 42050..=42050).await;
    let post = |path: &str, body: &str| {
        format!("POST {path} HTTP/1.1\r\nhost: w\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
    };
    let mut answers = Vec::new();
    for request in [
        post("/v1/rooms/r/peers", r#"{"peerId":"p"}"#),
        post("/v1/rooms/r/transports", r#"{"peerId":"p","direction":"send"}"#),
        post("/v1/rooms/r/transports", r#"{"peerId":"p","direction":"recv"}"#),
    ] {
        let mut stream = TcpStream::connect(&address).await.expect("connects");
        stream.write_all(request.as_bytes()).await.expect("sends");
        answers.push(read_until_closed(&mut stream, Duration::from_secs(3)).await);
    }
    assert_eq!(status(&answers[1]), 201, "{}", answers[1]);
    assert_eq!(status(&answers[2]), 503, "{}", answers[2]);
    assert!(answers[2].contains("PORTS_EXHAUSTED"), "{}", answers[2]);
    assert_eq!(header(&answers[2], "retry-after"), Some("5"));
}
