//! Two `fanout-signalling` processes sharing a real `redis-server` and a real worker (over
//! its REST API), with Socket.IO clients on each: what crosses replicas (participant lists,
//! notifications, the peer-to-peer relay, chat and its history) and what happens when one
//! replica is killed.

mod common;

use std::time::{Duration, Instant};

use common::{Process, RedisServer, TestClient};
use fanout_signalling::embedded::{Embedded, EmbeddedOptions, random_secret, start_worker};
use serde_json::{Value, json};

/// The replicas' lease in these tests: a killed replica's participants are gone within
/// 3 s + 1 s (`Lease::removal_bound`).
const LEASE_SECONDS: u64 = 3;

struct Replicas {
    a: Process,
    b: Process,
    _worker: Embedded,
    _redis: RedisServer,
}

async fn replicas(rtc_ports: (u16, u16)) -> Replicas {
    let redis = RedisServer::start().await;
    let options = EmbeddedOptions { rtc_ip: [127, 0, 0, 1].into(), rtc_ports, web_root: "web/dist".into() };
    let worker = start_worker(&options, None).await.expect("worker starts");
    let secret = random_secret();
    let endpoint = worker.worker.endpoint();
    let a = Process::replica(&endpoint, &worker.worker_token, &redis.url(), LEASE_SECONDS, &secret).await;
    let b = Process::replica(&endpoint, &worker.worker_token, &redis.url(), LEASE_SECONDS, &secret).await;
    Replicas { a, b, _worker: worker, _redis: redis }
}

/// `user` connected to `replica` and joined to `room`; its participant id and the join answer.
async fn joined(replica: &Process, user: &str, room: &str) -> (TestClient, String, Value) {
    let token = replica.token(user);
    let mut client = TestClient::connect(&replica.url(), Some(json!({"token": token})), None)
        .await
        .expect("connects");
    let ack = client.request("join-room", json!({"roomId": room})).await;
    assert_eq!(ack["success"], true, "{user} joining {room}: {ack}");
    client.next_event("joined-room").await;
    let id = ack["participantId"].as_str().unwrap().to_owned();
    (client, id, ack)
}

fn participant_ids(answer: &Value) -> Vec<String> {
    let mut ids: Vec<String> = answer["participants"]
        .as_array()
        .unwrap_or_else(|| panic!("no participants in {answer}"))
        .iter()
        .map(|p| p["participantId"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn code(ack: &Value) -> &str {
    ack["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {ack}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn participants_notifications_and_relays_cross_replicas() {
    let cluster = replicas((47000, 47019)).await;
    let (mut ada, ada_id, _) = joined(&cluster.a, "ada", "maths").await;
    let (mut bob, bob_id, bob_join) = joined(&cluster.b, "bob", "maths").await;

    // Bob, on the other replica, sees Ada in the room; Ada is told Bob came.
    assert_eq!(participant_ids(&bob_join), sorted(vec![ada_id.clone(), bob_id.clone()]));
    let came = ada.next_event("participant-joined").await;
    assert_eq!(came["participantId"], bob_id.as_str());
    let listed = ada.request("get-participants", json!({})).await;
    assert_eq!(participant_ids(&listed), sorted(vec![ada_id.clone(), bob_id.clone()]));

    // The relay reaches the other replica's socket, both ways, with `from` set by signalling.
    let ack = ada.request("webrtc-offer", json!({"targetId": bob_id, "sdp": "v=0 offer", "from": "spoofed"})).await;
    assert_eq!(ack["success"], true, "{ack}");
    let offer = bob.next_event("webrtc-offer").await;
    assert_eq!((offer["sdp"].as_str(), offer["from"].as_str()), (Some("v=0 offer"), Some(ada_id.as_str())));
    let ack = bob.request("webrtc-answer", json!({"targetId": ada_id, "sdp": "v=0 answer"})).await;
    assert_eq!(ack["success"], true, "{ack}");
    let answer = ada.next_event("webrtc-answer").await;
    assert_eq!(answer["from"], bob_id.as_str());

    // Nobody by that id anywhere, or somebody in another room on the other replica: refused,
    // and the other room's participant gets nothing.
    let ack = ada.request("ice-candidate", json!({"targetId": format!("{bob_id}9"), "candidate": {}})).await;
    assert_eq!(code(&ack), "TARGET_NOT_FOUND", "{ack}");
    let (mut carol, carol_id, _) = joined(&cluster.b, "carol", "physics").await;
    let ack = ada.request("ice-candidate", json!({"targetId": carol_id, "candidate": {}})).await;
    assert_eq!(code(&ack), "TARGET_NOT_FOUND", "{ack}");
    assert!(!carol.receives("ice-candidate", Duration::from_millis(300)).await);

    // A participant who left is no longer reachable through the other replica.
    let left = bob.request("leave-room", json!({})).await;
    assert_eq!(left["success"], true, "{left}");
    let ack = ada.request("webrtc-offer", json!({"targetId": bob_id, "sdp": "late"})).await;
    assert_eq!(code(&ack), "TARGET_NOT_FOUND", "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_replicas_participants_leave_their_rooms_and_the_others_carry_on() {
    let mut cluster = replicas((47020, 47039)).await;
    let (mut ada, ada_id, _) = joined(&cluster.a, "ada", "maths").await;
    let (mut dave, dave_id, _) = joined(&cluster.a, "dave", "maths").await;
    let (_bob, bob_id, _) = joined(&cluster.b, "bob", "maths").await;
    let (_carol, carol_id, _) = joined(&cluster.b, "carol", "maths").await;
    let everybody = ada.request("get-participants", json!({})).await;
    assert_eq!(participant_ids(&everybody).len(), 4, "{everybody}");

    // SIGKILL: no disconnect handler runs, nothing leaves the worker by itself.
    let killed = Instant::now();
    cluster.b.child.kill().expect("kills replica b");
    let _ = cluster.b.child.wait();

    let mut gone = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while gone.len() < 2 && Instant::now() < deadline {
        if ada.receives("participant-left", Duration::from_millis(200)).await {
            let left = ada.next_event("participant-left").await;
            gone.push(left["participantId"].as_str().unwrap().to_owned());
            println!(
                "figure: {} left the room {:.1} s after its replica was killed (lease {LEASE_SECONDS} s)",
                gone.last().unwrap(),
                killed.elapsed().as_secs_f64()
            );
        }
    }
    assert_eq!(
        sorted(gone),
        sorted(vec![bob_id, carol_id]),
        "the killed replica's participants stayed as ghosts; the other replica's log:\n{}",
        cluster.a.log()
    );
    let listed = ada.request("get-participants", json!({})).await;
    assert_eq!(participant_ids(&listed), sorted(vec![ada_id.clone(), dave_id.clone()]));

    // The surviving replica's participants were never disturbed.
    assert!(!ada.receives("left-room", Duration::from_millis(100)).await);
    let ack = ada.request("webrtc-offer", json!({"targetId": dave_id, "sdp": "still here"})).await;
    assert_eq!(ack["success"], true, "{ack}");
    assert_eq!(dave.next_event("webrtc-offer").await["from"], ada_id.as_str());
}

/// `user` in `role`, connected to `replica` and joined to `room`.
async fn joined_as(replica: &Process, user: &str, role: &str, room: &str) -> (TestClient, Value) {
    let token = common::sign(
        &json!({"sub": user, "name": user, "role": role, "exp": common::now() + 3600}),
        replica.secret.as_bytes(),
    );
    let mut client = TestClient::connect(&replica.url(), Some(json!({"token": token})), None)
        .await
        .expect("connects");
    let ack = client.request("join-room", json!({"roomId": room})).await;
    assert_eq!(ack["success"], true, "{user} joining {room}: {ack}");
    client.next_event("joined-room").await;
    (client, ack)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_messages_history_and_deletes_cross_replicas() {
    let cluster = replicas((47040, 47059)).await;
    let (mut ada, _) = joined_as(&cluster.a, "ada", "student", "maths").await;
    let (mut bob, _) = joined_as(&cluster.b, "bob", "student", "maths").await;

    // Sent on replica A, received on replica B, once.
    let first = ada.request("chat-message", json!({"text": "hello from a"})).await;
    assert_eq!(first["from"]["userId"], "ada", "{first}");
    assert_eq!(ada.next_event("chat-message").await, first, "the sender's own answer");
    assert_eq!(bob.next_event("chat-message").await, first);
    let second = bob.request("chat-message", json!({"text": "hello from b"})).await;
    assert_eq!(bob.next_event("chat-message").await, second, "the sender's own answer");
    assert_eq!(ada.next_event("chat-message").await, second);
    assert!(!ada.receives("chat-message", Duration::from_millis(300)).await, "ada got one twice");
    assert!(!bob.receives("chat-message", Duration::from_millis(300)).await, "bob got one twice");

    // A joiner on replica B gets what was said on both, from the shared Redis.
    let (mut tess, late) = joined_as(&cluster.b, "tess", "teacher", "maths").await;
    let texts: Vec<&str> = late["chat"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["hello from a", "hello from b"], "{late}");

    // A moderator on B deletes A's message: A's socket is told, and the history forgets it.
    let deleted = tess.request("delete-chat-message", json!({"messageId": first["messageId"]})).await;
    assert_eq!(deleted["messageId"], first["messageId"], "{deleted}");
    assert_eq!(tess.next_event("chat-message-deleted").await, deleted, "the deleter's own answer");
    assert_eq!(ada.next_event("chat-message-deleted").await, deleted);
    assert_eq!(bob.next_event("chat-message-deleted").await, deleted);
    let again = ada.request("delete-chat-message", json!({"messageId": first["messageId"]})).await;
    assert_eq!(code(&again), "CHAT_MESSAGE_NOT_FOUND", "{again}");
    // A student on A may not delete B's message.
    let refused = ada.request("delete-chat-message", json!({"messageId": second["messageId"]})).await;
    assert_eq!(code(&refused), "CHAT_DELETE_NOT_ALLOWED", "{refused}");
    let (_cleo, later) = joined_as(&cluster.a, "cleo", "student", "maths").await;
    let texts: Vec<&str> = later["chat"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["hello from b"], "{later}");
}
