//! One error type for every handler. It becomes a JSON [`ErrorBody`] with a 4xx/5xx status; the
//! details of internal failures go to the log, never to the client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use parley_api::{ErrorBody, SendFailure, StaleDevices};

use crate::store::StoreError;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed or violates a documented rule.
    #[error("{0}")]
    BadRequest(String),
    /// Missing or wrong credentials.
    #[error("missing or invalid credentials")]
    Unauthorized,
    /// The account or resource does not exist (or is not visible to the caller).
    #[error("{0}")]
    NotFound(String),
    /// The credentials are valid but do not allow this request.
    #[error("{0}")]
    Forbidden(String),
    /// The caller's account is suspended: it cannot send.
    #[error("this account is suspended and cannot send messages")]
    Suspended,
    /// The request conflicts with the resource's state.
    #[error("{0}")]
    Conflict(String),
    /// The username is taken.
    #[error("the username is already taken")]
    UsernameTaken,
    /// The send's device set is stale.
    #[error("the recipient's device list has changed")]
    StaleDevices {
        /// Devices to add.
        missing: Vec<u32>,
        /// Devices to drop.
        extra: Vec<u32>,
    },
    /// A recipient device's queue is full.
    #[error("the queue of the recipient's device {0} is full; try again later")]
    QueueFull(u32),
    /// Too many requests.
    #[error("too many requests; retry in {0} seconds")]
    RateLimited(u64),
    /// The body is too large.
    #[error("{0}")]
    TooLarge(String),
    /// Unsupported media type.
    #[error("the body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// Method not allowed on this path.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// Anything else: logged, reported generically.
    #[error("internal error")]
    Internal(String),
    /// The server is shutting down.
    #[error("the server is shutting down")]
    Unavailable,
    /// The account has no key-transparency entry yet (registered after the latest epoch).
    #[error("not in the key-transparency directory yet; it will be in the next epoch")]
    NotPublished,
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UsernameTaken => Self::UsernameTaken,
            StoreError::NotFound => Self::NotFound("not found".into()),
            StoreError::QueueFull(d) => Self::QueueFull(d),
            StoreError::TooManyPrekeys => {
                Self::BadRequest("too many one-time prekeys stored for this device".into())
            }
            StoreError::DuplicatePrekey => {
                Self::BadRequest("a one-time prekey id was uploaded twice".into())
            }
            StoreError::AlreadyResolved => {
                Self::Conflict("this report was already resolved".into())
            }
            StoreError::Closed => Self::Unavailable,
            other => Self::Internal(other.to_string()),
        }
    }
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::NotPublished => (StatusCode::NOT_FOUND, "not_published"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Suspended => (StatusCode::FORBIDDEN, "suspended"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::UsernameTaken => (StatusCode::CONFLICT, "username_taken"),
            Self::StaleDevices { .. } => (StatusCode::CONFLICT, "stale_devices"),
            Self::QueueFull(_) => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
            Self::RateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

const STALE_MESSAGE: &str =
    "the recipient's device list has changed: add the missing devices and drop the extra ones";

impl ApiError {
    /// Seconds the client should wait before retrying, if the error says.
    fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited(s) => Some(*s),
            Self::QueueFull(_) => Some(60),
            _ => None,
        }
    }

    fn log_internal(&self) {
        if let Self::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
    }

    /// The answer to a refused `send` frame on `/v1/ws`: the same status, code and details
    /// as the HTTP answer to `POST /v1/messages`.
    pub(crate) fn into_send_failure(self, message_id: String) -> SendFailure {
        let (status, code) = self.status_and_code();
        self.log_internal();
        let retry_after_secs = self.retry_after();
        let (message, missing_devices, extra_devices) = match self {
            Self::StaleDevices { missing, extra } => (STALE_MESSAGE.to_string(), missing, extra),
            other => (other.to_string(), Vec::new(), Vec::new()),
        };
        SendFailure {
            message_id,
            status: status.as_u16(),
            error: code.into(),
            message,
            retry_after_secs,
            missing_devices,
            extra_devices,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        self.log_internal();
        if let Self::StaleDevices { missing, extra } = self {
            let body = StaleDevices {
                error: code.into(),
                message: STALE_MESSAGE.into(),
                missing_devices: missing,
                extra_devices: extra,
            };
            return (status, Json(body)).into_response();
        }
        let retry = self.retry_after();
        let body =
            ErrorBody { error: code.into(), message: self.to_string(), retry_after_secs: retry };
        let mut resp = (status, Json(body)).into_response();
        if let Some(v) = retry.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
