//! The REST server's connections: HTTP/1.1 on hyper, with the limits a server reachable by
//! anything in the cluster needs ([`HttpLimits`]).
//!
//! `axum::serve` has none of them: a client that opens connections and never finishes its
//! headers kept each one open for good (hyper's header-read timeout needs a timer, which it
//! does not set). Here:
//!
//! - **Headers** must arrive within [`HttpLimits::header_read_timeout`] of the connection
//!   opening or, on a kept-alive connection, of the previous response (so idle keep-alive
//!   connections close after it too); hyper answers 408 and closes.
//! - **Connections** are capped at [`HttpLimits::max_connections`]; one more is answered 503
//!   `TOO_MANY_CONNECTIONS` with `Retry-After: 1` and closed, without reading its request.
//! - **Bodies** are the router's business ([`super::router`]): 413 at once for a
//!   `Content-Length` above [`HttpLimits::body_limit`], 413 as soon as a chunked body passes
//!   it, 408 `REQUEST_TIMEOUT` when a request (body included) is not read and answered
//!   within [`HttpLimits::request_timeout`]. Event streams are answered at once, so the
//!   stream itself is not limited.
//!
//! Only HTTP/1.1 is served: the worker's callers (reqwest in signalling and the operator,
//! kubelet probes, Prometheus) speak it, and HTTP/2 without TLS would need its prior-knowledge
//! preface read before any of these limits apply.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

/// The REST server's limits; the defaults suit production (`fanout-worker --help` names the
/// flags that change them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// The largest request body, in bytes.
    pub body_limit: usize,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// How long a request may take, from its headers to its answer (body included).
    pub request_timeout: Duration,
    /// Connections served at once; event streams count (one per followed room per signalling
    /// instance).
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            body_limit: super::BODY_LIMIT,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// The answer to a connection past the cap, written before its request is read.
const TOO_MANY_CONNECTIONS: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 123\r\n\r\n\
{\"error\":{\"code\":\"TOO_MANY_CONNECTIONS\",\"message\":\"the worker serves its limit of connections at once; retry in a second\"}}";

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish (event
/// streams end when the control plane shuts down, which [`crate::server`] does first).
pub async fn serve_with_limits(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: HttpLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let cap = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let connections = Arc::new(Semaphore::new(cap));
    let (closing, closing_seen) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of descriptors, or a connection reset before it was accepted: the
                    // listener is fine, try again shortly.
                    tracing::warn!(%error, "accepting a REST connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone().map_request(|request: hyper::Request<Incoming>| request.map(Body::new)));
        let mut closing = closing_seen.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let closed = async {
                while !*closing.borrow_and_update() {
                    if closing.changed().await.is_err() {
                        break;
                    }
                }
            };
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = closed => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    // Every connection's permit back: all have finished.
    let all = u32::try_from(cap).unwrap_or(u32::MAX);
    let _ = connections.acquire_many(all).await;
    Ok(())
}

/// Answers a connection past the cap and closes it: the answer, then our end closed, then
/// what the client sent is read and dropped for a moment, because closing a socket with
/// unread data resets it, and a reset can destroy the answer before the client reads it.
async fn refuse(mut stream: TcpStream) {
    let answered = async {
        stream.write_all(TOO_MANY_CONNECTIONS).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), answered).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_http_response_with_a_json_error_body() {
        let text = std::str::from_utf8(TOO_MANY_CONNECTIONS).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head.lines().find_map(|l| l.strip_prefix("content-length: ")).unwrap().parse().unwrap();
        assert_eq!(length, body.len());
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["error"]["code"], "TOO_MANY_CONNECTIONS");
    }
}
