//! A typed client for the worker's REST API.
//!
//! One [`WorkerClient`] holds a pooled keep-alive connection set and can talk to any worker:
//! callers name the worker's base URL per call, because rooms live on different workers.

use std::time::Duration;

use crate::api::{ErrorResponse, WorkerStats};

/// Why a call to a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The worker could not be reached (connection refused, timeout, DNS): it may be down.
    #[error("worker at {endpoint} is unavailable: {reason}")]
    Unavailable { endpoint: String, reason: String },
    /// The worker answered with an error response.
    #[error("worker refused the request ({status} {code}): {message}")]
    Api { status: u16, code: String, message: String },
    /// The worker answered something that is not the API's JSON.
    #[error("worker at {endpoint} sent an unreadable response: {reason}")]
    Protocol { endpoint: String, reason: String },
}

impl ClientError {
    /// True when the worker answered that the named object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClientError::Api { status: 404, .. })
    }
}

/// Typed access to workers' `/v1` API, authenticated with the shared bearer token.
#[derive(Clone)]
pub struct WorkerClient {
    http: reqwest::Client,
    token: Option<String>,
}

impl WorkerClient {
    /// `token` is the bearer token shared by workers, signalling and the operator.
    pub fn new(token: Option<String>, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            // Only a broken TLS backend makes this fail, and this client is built without TLS.
            .expect("reqwest client without TLS always builds");
        WorkerClient { http, token }
    }

    /// `GET /v1/stats`.
    pub async fn stats(&self, endpoint: &str) -> Result<WorkerStats, ClientError> {
        let request = self.http.get(url(endpoint, "/v1/stats"));
        let response = self.send(endpoint, request).await?;
        response.json().await.map_err(|e| ClientError::Protocol {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })
    }

    /// `DELETE /v1/rooms/{room}`: closes the room's router, and with it every peer's
    /// transports, producers and consumers. A room the worker does not know is not an error.
    pub async fn close_room(&self, endpoint: &str, room: &str) -> Result<(), ClientError> {
        let path = format!("/v1/rooms/{}", encode_segment(room));
        let request = self.http.delete(url(endpoint, &path));
        match self.send(endpoint, request).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn send(
        &self,
        endpoint: &str,
        mut request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| ClientError::Unavailable {
            endpoint: endpoint.to_string(),
            reason: e.to_string(),
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(match serde_json::from_slice::<ErrorResponse>(&body) {
            Ok(ErrorResponse { error }) => ClientError::Api {
                status: status.as_u16(),
                code: error.code,
                message: error.message,
            },
            Err(_) => ClientError::Api {
                status: status.as_u16(),
                code: "HTTP_ERROR".into(),
                message: String::from_utf8_lossy(&body).chars().take(200).collect(),
            },
        })
    }
}

fn url(endpoint: &str, path: &str) -> String {
    format!("{}{}", endpoint.trim_end_matches('/'), path)
}

/// Percent-encodes a path segment: room names come from users.
fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names_are_encoded_as_one_path_segment() {
        assert_eq!(encode_segment("maths-101"), "maths-101");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn endpoint_trailing_slash_does_not_double() {
        assert_eq!(url("http://10.0.0.1:3000/", "/v1/stats"), "http://10.0.0.1:3000/v1/stats");
    }
}
