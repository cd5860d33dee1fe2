//! The worker's whole REST app (`fanout_worker::http::router` on a control plane with a fake
//! media engine), driven through `tower::ServiceExt::oneshot` as a server would: any sequence
//! of requests with any method, path and body must never panic, and every answer keeps the
//! API's contract: no 500, and every error has the body `{"error": {"code", "message"}}`.
//!
//! Input: text, one request per line, `METHOD PATH BODY` (the body is the rest of the line,
//! possibly empty). Ids are sequential (`transport-1`, `producer-2`, ...), so a sequence can
//! name what an earlier request created: the seed corpus has whole calls (join, transports,
//! connect, produce, consume, pause, close).
#![no_main]

use std::sync::{Arc, OnceLock};

use axum::body::Body;
use fanout_worker::api::ErrorResponse;
use fanout_worker::control::ControlPlane;
use fanout_worker::control::testing::FakeEngine;
use fanout_worker::http::{ApiState, BODY_LIMIT, router};
use fanout_worker::room::SequentialIds;
use http::{Method, Request, StatusCode, header};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

const TOKEN: &str = "fuzz-token";
/// More requests than this in one input add nothing a shorter sequence could not reach.
const MAX_REQUESTS: usize = 48;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

/// `FANOUT_FUZZ_TRACE=1` prints each request's status, to see what an input does.
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FANOUT_FUZZ_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let engine = Arc::new(FakeEngine::new(40000..=40015));
    let control = Arc::new(ControlPlane::new(engine, SequentialIds::new()));
    let app = router(ApiState::new(control, Some(TOKEN.to_owned())));
    runtime().block_on(async {
        for line in text.lines().take(MAX_REQUESTS) {
            let mut parts = line.splitn(3, ' ');
            let (Some(method), Some(path)) = (parts.next(), parts.next()) else { continue };
            let body = parts.next().unwrap_or("").to_owned();
            // What hyper would refuse before the router sees it is not the router's input.
            let Ok(method) = Method::from_bytes(method.as_bytes()) else { continue };
            let Ok(request) = Request::builder()
                .method(method)
                .uri(path)
                .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
            else {
                continue;
            };
            let response = app.clone().oneshot(request).await.expect("the router is infallible");
            let status = response.status();
            if trace() {
                eprintln!("{status} <- {line}");
            }
            assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{line}");
            let is_stream = response
                .headers()
                .get(header::CONTENT_TYPE)
                .is_some_and(|value| value.as_bytes().starts_with(b"text/event-stream"));
            if is_stream {
                // An event stream never ends by itself; that it started is the answer.
                continue;
            }
            let bytes = axum::body::to_bytes(response.into_body(), BODY_LIMIT).await.expect("a bounded body");
            if status.is_client_error() || status.is_server_error() {
                let error: Result<ErrorResponse, _> = serde_json::from_slice(&bytes);
                assert!(
                    error.is_ok_and(|e| !e.error.code.is_empty() && !e.error.message.is_empty()),
                    "{line} -> {status} {}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    });
});
