//! Careless and hostile input against the real server (a real Socket.IO client, raw frames
//! where a client library would not send them, raw TCP): tokens with extreme claims, payloads
//! that cannot be read, ids that are paths or huge, floods, clients that stop reading or never
//! finish a request. Each is refused with a code, bounded, and harms nobody else.

mod common;

use std::time::{Duration, Instant};

use common::{Call, RawClient, Server, TestClient, now, sign, token};
use fanout_signalling::Limits;
use fanout_signalling::auth::JwtConfig;
use fanout_signalling::http::HttpLimits;
use fanout_signalling::placement::StaticPlacement;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn code(ack: &Value) -> &str {
    ack["error"]["code"].as_str().unwrap_or("ok")
}

async fn refusal(server: &Server, claims: Value) -> String {
    let token = sign(&claims, common::SECRET);
    match TestClient::connect(&server.url(), Some(json!({ "token": token })), None).await {
        Ok(_) => panic!("connection accepted with {claims}"),
        Err(message) => message,
    }
}

// ---- tokens ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_with_a_huge_exp_connects_and_is_served() {
    let server = Server::start().await;
    for exp in [10_000_000_000_000_000_000_u64, u64::MAX] {
        let huge = sign(&json!({"sub": "u1", "exp": exp}), common::SECRET);
        let client = TestClient::connect(&server.url(), Some(json!({ "token": huge })), None)
            .await
            .expect("connects");
        let ack = client.request("join-room", json!({"roomId": "maths"})).await;
        assert_eq!(ack["success"], true, "exp {exp}: {ack}");
        client.request("leave-room", json!({})).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_not_valid_yet_is_refused_with_token_not_yet_valid() {
    let server = Server::start().await;
    for nbf in [now() + 3600, u64::MAX] {
        let message = refusal(&server, json!({"sub": "u1", "exp": now() + 7200, "nbf": nbf})).await;
        assert!(message.contains("TOKEN_NOT_YET_VALID: "), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_exp_is_refused_saying_exp_is_missing() {
    let server = Server::start().await;
    let message = refusal(&server, json!({"sub": "u1", "iat": now()})).await;
    assert!(message.contains("TOKEN_INVALID: "), "{message}");
    assert!(message.contains("exp claim") && message.contains("missing"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_inside_the_leeway_keeps_its_session_only_for_what_is_left_of_it() {
    // Leeway 3 s; the token expired 2 s ago: the session has about 1 s, not 3.
    let jwt = JwtConfig {
        leeway_seconds: 3,
        ..JwtConfig::hs256(common::SECRET)
    };
    let server =
        Server::start_configured(StaticPlacement::new(common::WORKER), Limits::default(), jwt).await;
    let late = sign(&json!({"sub": "u1", "exp": now() - 2}), common::SECRET);
    let started = Instant::now();
    let mut client = TestClient::connect(&server.url(), Some(json!({ "token": late })), None)
        .await
        .expect("accepted inside the leeway");
    let ended = client.next_event("error").await;
    let lasted = started.elapsed();
    assert_eq!(ended["code"], "TOKEN_EXPIRED");
    println!("figure: session of a token 2 s past exp with 3 s leeway lasted {lasted:?}");
    assert!(lasted < Duration::from_millis(2500), "the session lasted {lasted:?}");
}

// ---- payloads ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_nested_1000_deep_is_invalid_payload_not_an_empty_one() {
    let server = Server::start().await;
    let (client, _) = server.joined("u1", "student", "maths").await;
    let mut raw = RawClient::connect(server.addr, &token("u2", "student")).await;
    raw.send(r#"421["join-room",{"roomId":"maths"}]"#).await;
    let joined = raw.ack(1).await;
    assert_eq!(joined["success"], true, "{joined}");
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    raw.send(format!(r#"422["leave-room",{deep}]"#)).await;
    let ack = raw.ack(2).await;
    assert_eq!(code(&ack), "INVALID_PAYLOAD", "{ack}");
    assert!(ack["error"]["message"].as_str().unwrap().contains("not readable JSON"), "{ack}");
    // Still in the room: the unreadable leave did nothing.
    let info = client.request("get-participants", json!({})).await;
    assert_eq!(info["participants"].as_array().unwrap().len(), 2, "{info}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_payload_still_works() {
    let server = Server::start().await;
    let (_client, _) = server.joined("u1", "student", "maths").await;
    let mut raw = RawClient::connect(server.addr, &token("u2", "student")).await;
    raw.send(r#"421["join-room",{"roomId":"maths"}]"#).await;
    let joined = raw.ack(1).await;
    assert_eq!(joined["success"], true, "{joined}");
    raw.send(r#"422["get-participants"]"#).await;
    let participants = raw.ack(2).await;
    assert_eq!(participants["participants"].as_array().map(Vec::len), Some(2), "{participants}");
    raw.send(r#"423["leave-room",null]"#).await;
    assert_eq!(raw.ack(3).await["success"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_with_binary_attachments_keeps_its_fields() {
    let server = Server::start().await;
    let mut raw = RawClient::connect(server.addr, &token("u1", "teacher")).await;
    raw.send(r#"421["join-room",{"roomId":"maths"}]"#).await;
    raw.ack(1).await;
    raw.send(r#"422["create-transport",{"direction":"send"}]"#).await;
    raw.ack(2).await;
    let produce = json!(["produce", {
        "kind": "video",
        "rtpParameters": common::rtp_parameters(),
        "appData": {"thumbnail": {"_placeholder": true, "num": 0}},
    }]);
    raw.send(format!("451-3{produce}")).await;
    raw.send_binary(vec![7, 8, 9]).await;
    let ack = raw.ack(3).await;
    assert!(ack["id"].is_string(), "{ack}");
    let Call::Produce { request, .. } = server
        .backend
        .wait_for_call(|c| matches!(c, Call::Produce { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(request.app_data.get("thumbnail"), Some(&json!([7, 8, 9])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_unknown_ids_are_not_echoed_back() {
    let server = Server::start().await;
    let (mut client, _) = server.joined("u1", "student", "maths").await;
    let huge = "x".repeat(50_000);
    for (event, payload) in [
        ("close-producer", json!({"producerId": huge})),
        ("connect-transport", json!({"transportId": huge, "dtlsParameters": {}})),
        ("webrtc-offer", json!({"targetId": huge, "sdp": "v=0"})),
        ("leave-room", json!({"roomId": huge})),
        ("create-transport", json!({"direction": huge})),
    ] {
        let ack = client.request(event, payload).await;
        assert_eq!(code(&ack), "INVALID_PAYLOAD", "{event}: {:.200}", ack.to_string());
        let answer = ack.to_string();
        assert!(answer.len() < 400, "{event}: {} bytes echoed: {:.300}", answer.len(), answer);
        let event = client.next_event("error").await;
        assert!(event.to_string().len() < 400, "{:.300}", event.to_string());
    }
}

// ---- ids that are paths ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_ids_that_are_paths_or_outside_the_rule_never_reach_the_worker() {
    let server = Server::start().await;
    let client = server.client("u1", "student").await;
    for room in [".", "..", "../peers", "a/b", "a%2F", "Maths", "a b", "", &"r".repeat(64)] {
        let ack = client.request("join-room", json!({ "roomId": room })).await;
        assert_eq!(code(&ack), "INVALID_ROOM_ID", "{room:?}: {ack}");
        let message = ack["error"]["message"].as_str().unwrap();
        assert!(message.contains("lowercase letters"), "{message}");
    }
    assert!(
        !server.backend.calls().iter().any(|c| matches!(c, Call::Join { .. })),
        "{:?}",
        server.backend.calls()
    );
    let ack = client.request("join-room", json!({"roomId": "maths-101"})).await;
    assert_eq!(ack["success"], true, "{ack}");
}

// ---- floods and clients that stop reading ----

/// With raw frames: rust_socketio 0.6 itself panics on a few hundred acknowledgements in
/// flight ("removal index should be < len" in its ack bookkeeping).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_of_a_1000_request_burst_is_answered() {
    let server = Server::start().await;
    let mut client = RawClient::connect(server.addr, &token("u1", "student")).await;
    let started = Instant::now();
    for id in 0..1000 {
        client.send(format!(r#"42{id}["get-participants",{{}}]"#)).await;
    }
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    let mut acked = std::collections::BTreeSet::new();
    let mut errors = 0;
    while acked.len() < 1000 || errors < 1000 {
        let Some(text) = client.text().await else {
            panic!("closed after {} answers: {codes:?}", acked.len());
        };
        if let Some(rest) = text.strip_prefix("43") {
            let split = rest.find('[').expect("an ack body");
            let id: u64 = rest[..split].parse().expect("an ack id");
            let body: Value = serde_json::from_str(&rest[split..]).expect("JSON");
            assert!(acked.insert(id), "ack {id} twice");
            *codes.entry(code(&body[0]).to_owned()).or_default() += 1;
        } else if text.starts_with(r#"42["error""#) {
            errors += 1;
        }
    }
    println!("figure: 1000-request burst answered in {:?}: {codes:?}", started.elapsed());
    assert_eq!(acked.len(), 1000);
    assert!(codes.get("RATE_LIMITED").is_some_and(|n| *n >= 800), "{codes:?}");
    assert!(codes.keys().all(|c| c == "RATE_LIMITED" || c == "NOT_IN_ROOM"), "{codes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_without_reading_is_disconnected() {
    let limits = Limits {
        max_queued_packets: 32,
        slow_client_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let server = Server::start_with(StaticPlacement::new(common::WORKER), limits).await;
    let (bystander, _) = server.joined("u2", "student", "maths").await;
    // A small receive buffer, never read: the server's answers pile up on its side.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(server.addr).await.unwrap();
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", server.addr);
    let (ws, _) = tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(tcp))
        .await
        .unwrap();
    let mut flooder = RawClient { ws };
    flooder.text().await.expect("open");
    flooder.send(format!("40{}", json!({"token": token("u1", "student")}))).await;
    flooder.text().await.expect("connected");
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(10) {
        let frame = format!(r#"42{sent}["get-participants",{{}}]"#);
        use futures::SinkExt as _;
        let send = flooder.ws.send(tokio_tungstenite::tungstenite::Message::Text(frame.into()));
        match tokio::time::timeout(Duration::from_millis(200), send).await {
            Ok(Ok(())) => sent += 1,
            // Blocked (the server stopped reading) or refused (it closed).
            _ => break,
        }
    }
    let metrics = || async {
        reqwest::get(format!("{}metrics", server.url())).await.unwrap().text().await.unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics().await;
        if text.contains("fanout_signalling_slow_clients_closed_total 1") {
            break;
        }
        assert!(Instant::now() < deadline, "not disconnected after {sent} requests:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("figure: a client sending without reading was closed after {sent} requests, {:?}", started.elapsed());
    // The others are served as before.
    let ack = bystander.request("get-participants", json!({})).await;
    assert!(ack["participants"].is_array(), "{ack}");
}

// ---- HTTP ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_that_never_finish_their_headers_are_closed() {
    let server = Server::start_with_http(HttpLimits {
        header_read_timeout: Duration::from_secs(1),
        ..HttpLimits::default()
    })
    .await;
    let mut connections = Vec::new();
    for _ in 0..300 {
        let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        connections.push(tcp);
    }
    let started = Instant::now();
    let mut open = 0;
    for tcp in &mut connections {
        let mut buf = [0u8; 256];
        // The server answers 408 or just closes: either way the read ends.
        match tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        {
            Ok(()) => {}
            Err(_) => open += 1,
        }
    }
    println!("figure: 300 unfinished requests closed within {:?}", started.elapsed());
    assert_eq!(open, 0, "{open} of 300 connections still open");
    // A well-behaved client is served meanwhile and after.
    assert!(reqwest::get(format!("{}healthz", server.url())).await.unwrap().status().is_success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_and_the_others_served() {
    let server = Server::start_with_http(HttpLimits {
        max_connections: 5,
        ..HttpLimits::default()
    })
    .await;
    let mut held = Vec::new();
    for i in 0..5 {
        held.push(RawClient::connect(server.addr, &token(&format!("u{i}"), "student")).await);
    }
    let mut extra = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), extra.read_to_end(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "served beyond the limit: {read:?} {buf:?}");
    // The websockets within the limit still work, and a closed one frees its slot.
    held[0].send(r#"421["get-participants",{}]"#).await;
    assert_eq!(code(&held[0].ack(1).await), "NOT_IN_ROOM");
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Ok(response) = reqwest::get(format!("{}healthz", server.url())).await
            && response.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot is not reused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Found by the `socketio` fuzz target: engineioxide answered each with a bare 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_cannot_be_decoded_is_a_400_not_a_500_or_a_panic() {
    let server = Server::start().await;
    let http = reqwest::Client::new();
    let polling = format!("{}socket.io/?EIO=4&transport=polling", server.url());
    let open = async || {
        let open = http.get(&polling).send().await.unwrap().text().await.unwrap();
        let open: Value = serde_json::from_str(open.trim_start_matches('0')).expect("the open packet");
        format!("{polling}&sid={}", open["sid"].as_str().unwrap())
    };
    let post = async |session: &str, body: &'static [u8]| {
        let response = http.post(session).body(body).send().await.unwrap();
        response.status().as_u16()
    };

    // A binary packet ("b" then base64) that is not base64, after a packet that reads.
    let session = open().await;
    let token = format!("40{}", json!({ "token": token("u1", "student") }));
    assert_eq!(http.post(&session).body(token).send().await.unwrap().status(), 200);
    assert_eq!(post(&session, b"42[\"get-participants\",{}]\x1eb!!").await, 400);

    // Pings the server never asked for: the heartbeat channel holds one (and the heartbeat
    // task may take one when it starts), the third is refused.
    let session = open().await;
    assert_eq!(post(&session, b"2\x1e2\x1e2").await, 400);

    // A close after a message that cannot be parsed (which has closed the session already).
    let session = open().await;
    assert_eq!(post(&session, b"4x\x1e1").await, 200);

    // Six bytes whose first character is two bytes long: engineioxide's check for "2probe"
    // sliced the text inside that character and panicked (the connection was dropped).
    let session = open().await;
    assert_eq!(post(&session, "ɚ;no-".as_bytes()).await, 400);

    // Others are served meanwhile.
    let client = server.client("u2", "student").await;
    assert_eq!(code(&client.request("get-participants", json!({})).await), "NOT_IN_ROOM");
}
