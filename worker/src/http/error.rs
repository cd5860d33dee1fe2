//! The REST layer's one error type, and extractors whose refusals are API errors too, so that
//! every error the worker answers has the body `{"error": {"code", "message"}}`.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::api::ErrorResponse;
use crate::control::ControlError;
use crate::room::check_id;

use super::{BODY_LIMIT, BodyLimit};

/// An error response: a status and the API's error body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body.
    pub body: ErrorResponse,
    /// `Retry-After` in seconds, for errors that go away by themselves.
    retry_after_seconds: Option<u32>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            body: ErrorResponse::new(code, message),
            retry_after_seconds: None,
        }
    }

    /// The same error, telling the client to retry after `seconds`.
    pub fn with_retry_after(mut self, seconds: u32) -> Self {
        self.retry_after_seconds = Some(seconds);
        self
    }

    /// 400 `INVALID_REQUEST`: the body or path could not be read.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    /// 413 `PAYLOAD_TOO_LARGE`: the body is larger than `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PAYLOAD_TOO_LARGE",
            format!("the request body is larger than the limit of {limit} bytes"),
        )
    }

    /// 401 `UNAUTHORIZED`.
    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or wrong bearer token; send 'Authorization: Bearer <token>' with the \
             worker's shared token",
        )
    }
}

impl From<ControlError> for ApiError {
    fn from(error: ControlError) -> Self {
        ApiError {
            status: StatusCode::from_u16(error.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            body: error.to_response(),
            retry_after_seconds: error.retry_after_seconds(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body)).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON request body whose refusals are API errors: 400 `INVALID_REQUEST` with serde's
/// reason (which field, which line and column), 413 `PAYLOAD_TOO_LARGE` past [`BODY_LIMIT`].
///
/// The content type is not checked (callers are our own services, and a missing header is no
/// reason to refuse a valid body), and an empty body reads as `{}`, so that endpoints whose
/// fields are all optional take no body at all while the others name the first missing field.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(BODY_LIMIT, |limit| limit.0);
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::payload_too_large(limit)
                } else {
                    ApiError::invalid_request(format!(
                        "the request body could not be read: {}",
                        rejection.body_text()
                    ))
                }
            })?;
        let json: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        serde_json::from_slice(json).map(JsonBody).map_err(|error| {
            ApiError::invalid_request(bounded(&format!("invalid request body: {error}")))
        })
    }
}

/// Path parameters whose refusals are API errors. Every id in the path must be a valid id
/// ([`check_id`]: a safe path segment, `.` and `..` refused) or the answer is 400
/// `INVALID_ID`, before any lookup; an id that cannot be decoded is 400 `INVALID_REQUEST`.
#[derive(Debug, Clone)]
pub struct PathArgs<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|rejection| ApiError::invalid_request(bounded(&rejection.body_text())))?;
        for (name, value) in &raw {
            let kind = match name {
                "room" => "room",
                "peer" => "peer",
                _ => object_kind(parts.uri.path()),
            };
            check_id(kind, value)
                .map_err(|message| ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ID", message))?;
        }
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| PathArgs(value))
            .map_err(|rejection| ApiError::invalid_request(bounded(&rejection.body_text())))
    }
}

/// What the `{id}` of a path names: `/v1/rooms/{room}/transports/{id}/...` a transport.
fn object_kind(path: &str) -> &'static str {
    ["transport", "producer", "consumer", "recording"]
        .into_iter()
        .find(|kind| path.contains(&format!("/{kind}s/")))
        .unwrap_or("object")
}

/// A message quoting the caller's input (serde's, axum's) cut to a readable length: serde
/// quotes a whole unknown value, which may be most of a 256 KiB body.
fn bounded(message: &str) -> String {
    const MAX: usize = 300;
    match message.char_indices().nth(MAX) {
        None => message.to_owned(),
        Some((cut, _)) => format!("{}… (cut at {MAX} characters)", &message[..cut]),
    }
}
