//! The worker's per-participant quotas as a participant meets them: signalling in front of a
//! real worker over HTTP passes each refusal's code and sentence through, and one
//! participant at its quota leaves another's requests untouched.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{SECRET, TestClient, rtp_parameters, token};
use fanout_signalling::auth::{JwtConfig, JwtVerifier};
use fanout_signalling::placement::StaticPlacement;
use fanout_signalling::worker::WorkerBackend;
use fanout_signalling::{Limits, Signalling, app};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_at_its_quotas_gets_coded_errors_and_another_is_not_affected() {
    let options = fanout_signalling::embedded::EmbeddedOptions {
        rtc_ip: [127, 0, 0, 1].into(),
        rtc_ports: (45300, 45399),
        web_root: "web/dist".into(),
    };
    let embedded = fanout_signalling::embedded::start_worker(&options, None).await.expect("embedded worker starts");
    let backend = Arc::new(WorkerBackend::new(Some(embedded.worker_token.clone()), Duration::from_secs(5)));
    let state = Signalling::new(
        JwtVerifier::new(&JwtConfig::hs256(SECRET)).unwrap(),
        Arc::new(StaticPlacement::new(embedded.worker.endpoint())),
        backend,
        Limits::default(),
    );
    let router = app(state, &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let connect = |user: &'static str| {
        let url = url.clone();
        async move { TestClient::connect(&url, Some(json!({"token": token(user, "teacher")})), None).await.unwrap() }
    };

    let mallory = connect("mallory").await;
    let alice = connect("alice").await;
    for client in [&mallory, &alice] {
        let joined = client.request("join-room", json!({"roomId": "quotas"})).await;
        assert_eq!(joined["success"], true, "{joined}");
    }

    // Transports until the worker refuses: a code and a sentence, not a lost port range.
    let mut created = 0;
    let mut first = None;
    let refusal = loop {
        let answer = mallory.request("create-transport", json!({"direction": "send"})).await;
        if answer["error"].is_object() {
            break answer;
        }
        first.get_or_insert(answer["id"].clone());
        created += 1;
        assert!(created <= 100, "no transport quota: {answer}");
    };
    assert_eq!(refusal["error"]["code"], "TOO_MANY_TRANSPORTS", "{refusal}");
    assert!(refusal["error"]["message"].as_str().unwrap().contains("close-transport"), "{refusal}");
    println!("mallory's transports before the quota: {created}");

    // appData past its size: refused before it is announced to anyone.
    let produced = mallory
        .request("produce", json!({"transportId": first, "kind": "video", "rtpParameters": rtp_parameters(), "appData": {"blob": "x".repeat(20_000)}}))
        .await;
    assert_eq!(produced["error"]["code"], "APP_DATA_TOO_LARGE", "{produced}");

    // Alice's own quota is whole.
    let transport = alice.request("create-transport", json!({"direction": "send"})).await;
    assert!(transport["id"].is_string(), "{transport}");
    let produced = alice
        .request("produce", json!({"kind": "video", "rtpParameters": rtp_parameters(), "appData": {"source": "camera"}}))
        .await;
    assert!(produced["id"].is_string(), "{produced}");
    embedded.worker.shutdown().await;
}
