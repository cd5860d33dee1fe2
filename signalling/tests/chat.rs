//! Room chat through a real Socket.IO client against one signalling server (in-memory
//! history): who a message is from, who gets it, the history a joiner gets, the limits, and
//! who may delete. `tests/replicas.rs` has chat across two replicas sharing Redis.

mod common;

use std::time::Duration;

use common::{Server, TestClient};
use fanout_signalling::Limits;
use fanout_signalling::chat::ChatRules;
use fanout_signalling::placement::StaticPlacement;
use serde_json::{Value, json};

const QUIET: Duration = Duration::from_millis(300);

fn code(ack: &Value) -> &str {
    ack["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {ack}"))
}

async fn server_with(chat: ChatRules) -> Server {
    Server::start_with(StaticPlacement::new(common::WORKER), Limits { chat, ..Limits::default() }).await
}

/// `user` in `role` joined to `room`: the client and its join answer.
async fn join(server: &Server, user: &str, role: &str, room: &str) -> (TestClient, Value) {
    let mut client = server.client(user, role).await;
    let ack = client.request("join-room", json!({"roomId": room})).await;
    assert_eq!(ack["success"], true, "{ack}");
    client.next_event("joined-room").await;
    (client, ack)
}

/// Sends `text` and returns the acknowledgement, after checking the sender's own
/// `chat-message` (the named answer) says the same.
async fn send(client: &mut TestClient, text: &str) -> Value {
    let ack = client.request("chat-message", json!({"text": text})).await;
    if ack.get("error").is_none() {
        let answer = client.next_event("chat-message").await;
        assert_eq!(answer, ack, "the sender's chat-message is its acknowledgement");
    }
    ack
}

fn texts(history: &Value) -> Vec<&str> {
    history
        .as_array()
        .unwrap_or_else(|| panic!("no history array: {history}"))
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_the_room_once_each_with_the_tokens_identity() {
    let server = Server::start().await;
    let (mut ada, ada_join) = join(&server, "ada", "student", "maths").await;
    let (mut bob, _) = join(&server, "bob", "student", "maths").await;
    let (mut carol, _) = join(&server, "carol", "student", "physics").await;

    // Identity in the payload is ignored: the token says who sent it.
    let ack = ada
        .request(
            "chat-message",
            json!({"text": "  hello everyone \n", "from": {"userId": "mallory"}, "userId": "mallory", "fullName": "Mallory"}),
        )
        .await;
    assert_eq!(ack["text"], "hello everyone", "trimmed: {ack}");
    assert_eq!(ack["roomId"], "maths");
    assert_eq!(ack["from"]["userId"], "ada");
    assert_eq!(ack["from"]["fullName"], "ada name");
    assert_eq!(ack["from"]["role"], "student");
    assert_eq!(ack["from"]["participantId"], ada_join["participantId"]);
    assert_eq!(ack["messageId"].as_str().map(str::len), Some(32), "{ack}");
    let at = ack["at"].as_u64().expect("at in milliseconds");
    assert!(at > 1_700_000_000_000, "{at}");

    // Everybody in the room gets exactly one chat-message of it, the sender as its answer.
    assert_eq!(ada.next_event("chat-message").await, ack);
    assert_eq!(bob.next_event("chat-message").await, ack);
    assert!(!ada.receives("chat-message", QUIET).await, "the sender got it twice");
    assert!(!bob.receives("chat-message", QUIET).await, "bob got it twice");
    assert!(!carol.receives("chat-message", QUIET).await, "another room's participant got it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_gets_the_last_messages_oldest_first_in_its_join_answer() {
    let server = server_with(ChatRules { history: 3, ..ChatRules::default() }).await;
    let (mut ada, first) = join(&server, "ada", "student", "maths").await;
    assert_eq!(first["chat"], json!([]), "a new room has no history: {first}");
    for text in ["one", "two", "three", "four", "five"] {
        send(&mut ada, text).await;
    }
    let (_bob, late) = join(&server, "bob", "student", "maths").await;
    assert_eq!(texts(&late["chat"]), ["three", "four", "five"]);
    assert_eq!(late["chat"][2]["from"]["userId"], "ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_history_goes_with_its_last_participant() {
    let server = Server::start().await;
    let (mut ada, _) = join(&server, "ada", "student", "maths").await;
    send(&mut ada, "anyone here?").await;
    let left = ada.request("leave-room", json!({})).await;
    assert_eq!(left["success"], true, "{left}");
    let (_bob, answer) = join(&server, "bob", "student", "maths").await;
    assert_eq!(answer["chat"], json!([]), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_or_misplaced_messages_are_refused_with_their_codes_and_reach_nobody() {
    let server = Server::start().await;
    let outsider = server.client("eve", "student").await;
    let ack = outsider.request("chat-message", json!({"text": "hi"})).await;
    assert_eq!(code(&ack), "NOT_IN_ROOM", "{ack}");

    let (mut ada, _) = join(&server, "ada", "student", "maths").await;
    let (mut bob, _) = join(&server, "bob", "student", "maths").await;
    let cases = [
        (json!({"roomId": "physics", "text": "hi"}), "NOT_IN_ROOM"),
        (json!({"text": 42}), "INVALID_PAYLOAD"),
        (json!({"text": {"html": "<b>"}}), "INVALID_PAYLOAD"),
        (json!({}), "INVALID_PAYLOAD"),
        (json!({"text": " \n\t "}), "CHAT_MESSAGE_EMPTY"),
        (json!({"text": "x".repeat(2001)}), "CHAT_MESSAGE_TOO_LONG"),
        (json!({"text": "€".repeat(667)}), "CHAT_MESSAGE_TOO_LONG"),
        (json!({"text": "x".repeat(100_000)}), "PAYLOAD_TOO_LARGE"),
    ];
    for (payload, expected) in cases {
        let ack = ada.request("chat-message", payload.clone()).await;
        assert_eq!(code(&ack), expected, "{ack}");
        let refusal = ada.next_event("error").await;
        assert_eq!((refusal["event"].as_str(), refusal["code"].as_str()), (Some("chat-message"), Some(expected)));
    }
    let too_long = ada.request("chat-message", json!({"text": "x".repeat(2001)})).await;
    let message = too_long["error"]["message"].as_str().unwrap();
    assert!(message.contains("2001 bytes") && message.contains("2000"), "{message}");
    assert!(!bob.receives("chat-message", QUIET).await, "a refused message reached the room");
    // None of them cost the allowance: 2000 bytes exactly still goes, with four more.
    for _ in 0..5 {
        let ack = send(&mut ada, &"x".repeat(2000)).await;
        assert!(ack["messageId"].is_string(), "{ack}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_sending_too_fast_is_rate_limited_and_can_send_again_later() {
    let server = Server::start().await;
    let (mut ada, _) = join(&server, "ada", "student", "maths").await;
    for i in 0..5 {
        let ack = send(&mut ada, &format!("message {i}")).await;
        assert!(ack["messageId"].is_string(), "burst message {i}: {ack}");
    }
    let ack = send(&mut ada, "one too many").await;
    assert_eq!(code(&ack), "RATE_LIMITED", "{ack}");
    let message = ack["error"]["message"].as_str().unwrap();
    assert!(message.contains("5 in a row") && message.contains("1 per second"), "{message}");
    // Leaving and joining again does not refill it: the allowance is the connection's.
    ada.request("leave-room", json!({})).await;
    ada.request("join-room", json!({"roomId": "maths"})).await;
    assert_eq!(code(&send(&mut ada, "rejoined").await), "RATE_LIMITED");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ack = send(&mut ada, "after a second").await;
    assert!(ack["messageId"].is_string(), "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authors_and_moderators_delete_messages_and_the_room_and_history_follow() {
    let server = Server::start().await;
    let (mut ada, _) = join(&server, "ada", "student", "maths").await;
    let (mut bob, _) = join(&server, "bob", "student", "maths").await;
    let (mut tess, tess_join) = join(&server, "tess", "teacher", "maths").await;
    let first = send(&mut ada, "first").await;
    let second = send(&mut ada, "second").await;
    let third = send(&mut ada, "third").await;
    for _ in 0..3 {
        bob.next_event("chat-message").await;
        tess.next_event("chat-message").await;
    }

    // Another student may not delete ada's message.
    let ack = bob.request("delete-chat-message", json!({"messageId": first["messageId"]})).await;
    assert_eq!(code(&ack), "CHAT_DELETE_NOT_ALLOWED", "{ack}");
    assert!(ack["error"]["message"].as_str().unwrap().contains("teacher"), "{ack}");

    // The author may: everybody gets one chat-message-deleted.
    let ack = ada.request("delete-chat-message", json!({"messageId": first["messageId"]})).await;
    assert_eq!(ack["messageId"], first["messageId"], "{ack}");
    assert_eq!(ack["by"]["userId"], "ada");
    assert_eq!(ada.next_event("chat-message-deleted").await, ack);
    assert_eq!(bob.next_event("chat-message-deleted").await, ack);
    assert_eq!(tess.next_event("chat-message-deleted").await, ack);

    // A moderator role may delete anybody's.
    let ack = tess.request("delete-chat-message", json!({"roomId": "maths", "messageId": second["messageId"]})).await;
    assert_eq!(ack["by"]["participantId"], tess_join["participantId"], "{ack}");
    assert_eq!(ack["by"]["role"], "teacher");
    assert_eq!(bob.next_event("chat-message-deleted").await["messageId"], second["messageId"]);

    // Deleted twice, unknown, too long, another room's: refused, and nobody is told anything.
    let again = tess.request("delete-chat-message", json!({"messageId": second["messageId"]})).await;
    assert_eq!(code(&again), "CHAT_MESSAGE_NOT_FOUND", "{again}");
    let unknown = tess.request("delete-chat-message", json!({"messageId": "no-such-message"})).await;
    assert_eq!(code(&unknown), "CHAT_MESSAGE_NOT_FOUND", "{unknown}");
    assert!(unknown["error"]["message"].as_str().unwrap().contains("no-such-message"), "{unknown}");
    let long = tess.request("delete-chat-message", json!({"messageId": "m".repeat(500)})).await;
    assert_eq!(code(&long), "INVALID_PAYLOAD", "{long}");
    let numeric = tess.request("delete-chat-message", json!({"messageId": 7})).await;
    assert_eq!(code(&numeric), "INVALID_PAYLOAD", "{numeric}");
    let wrong_room = tess.request("delete-chat-message", json!({"roomId": "physics", "messageId": third["messageId"]})).await;
    assert_eq!(code(&wrong_room), "NOT_IN_ROOM", "{wrong_room}");
    let (mut pat, _) = join(&server, "pat", "teacher", "physics").await;
    let elsewhere = pat.request("delete-chat-message", json!({"messageId": third["messageId"]})).await;
    assert_eq!(code(&elsewhere), "CHAT_MESSAGE_NOT_FOUND", "another room's message: {elsewhere}");
    assert!(!bob.receives("chat-message-deleted", QUIET).await);
    assert!(!pat.receives("chat-message-deleted", QUIET).await);

    // A late joiner's history has what is left.
    let (_cleo, late) = join(&server, "cleo", "student", "maths").await;
    assert_eq!(texts(&late["chat"]), ["third"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moderator_roles_are_the_servers_setting() {
    let server = server_with(ChatRules { moderator_roles: vec!["ta".into()], ..ChatRules::default() }).await;
    let (mut ada, _) = join(&server, "ada", "student", "maths").await;
    let (teacher, teacher_join) = join(&server, "tess", "teacher", "maths").await;
    let (ta, ta_join) = join(&server, "tim", "ta", "maths").await;
    // The join answer tells each participant whether it moderates (for its delete buttons).
    assert_eq!((teacher_join["chatModerator"].as_bool(), ta_join["chatModerator"].as_bool()), (Some(false), Some(true)));
    let message = send(&mut ada, "hello").await;
    let refused = teacher.request("delete-chat-message", json!({"messageId": message["messageId"]})).await;
    assert_eq!(code(&refused), "CHAT_DELETE_NOT_ALLOWED", "{refused}");
    let deleted = ta.request("delete-chat-message", json!({"messageId": message["messageId"]})).await;
    assert_eq!(deleted["messageId"], message["messageId"], "{deleted}");
}
