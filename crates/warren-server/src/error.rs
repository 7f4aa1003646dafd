//! API errors: one JSON shape, `{"error":{"code","message"}}`, and one place that maps
//! [`warren_core::Error`] kinds to HTTP statuses ([`status_of`]).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use warren_core::Error;

/// The body of every error response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable code and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable code: `invalid_id`, `invalid_path`, `invalid_request`, `not_found`,
    /// `already_exists`, `conflict`, `unsupported`, `timeout`, `io`, `internal`,
    /// `unauthorized`, `forbidden`, `rate_limited`, `payload_too_large`, `method_not_allowed`,
    /// `shutting_down`.
    pub code: String,
    /// What failed and what to do about it.
    pub message: String,
}

/// An error on its way to becoming a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable code (see [`ErrorDetail::code`]).
    pub code: &'static str,
    /// Message.
    pub message: String,
}

/// The HTTP status of each error kind. The one mapping from domain errors to HTTP.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::InvalidId { .. } | Error::InvalidPath { .. } | Error::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::AlreadyExists(_) | Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Unsupported(_) => StatusCode::NOT_IMPLEMENTED,
        Error::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        Error::Exhausted(_) => StatusCode::INSUFFICIENT_STORAGE,
        Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        Error::Io { .. } | Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// An error with a status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    /// 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 401 `unauthorized`. The message says what is wrong with the token, never the token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 413 `payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than this route's limit of {limit} bytes"),
        )
    }

    /// 429 `rate_limited`.
    pub fn rate_limited() -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests for this user: slow down and retry after a second",
        )
    }

    /// 504 `timeout`: the request took longer than the server's request timeout.
    pub fn request_timeout(secs: u64) -> Self {
        Self::new(
            StatusCode::GATEWAY_TIMEOUT,
            "timeout",
            format!("the request took longer than the server's {secs} s request timeout"),
        )
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message.clone() } }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let status = status_of(&e);
        if status.is_server_error() && status != StatusCode::NOT_IMPLEMENTED && status != StatusCode::GATEWAY_TIMEOUT {
            // The details (host paths, errno) go to the log, not to the caller.
            tracing::error!(error = %e, "request failed");
            return Self::new(
                status,
                e.code(),
                format!("internal error ({}); the server log has the details", e.code()),
            );
        }
        Self::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body())).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"warren\""),
            );
        }
        resp
    }
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_status() {
        let io = |k| Error::io("x", std::io::Error::from(k));
        let cases = [
            (Error::InvalidId { kind: "user id", value: "x".into(), rule: "r" }, 400),
            (Error::InvalidPath { path: "x".into(), reason: "r".into() }, 400),
            (Error::InvalidRequest("x".into()), 400),
            (Error::NotFound("x".into()), 404),
            (Error::AlreadyExists("x".into()), 409),
            (Error::Conflict("x".into()), 409),
            (Error::Unsupported("x".into()), 501),
            (Error::Timeout("x".into()), 504),
            (io(std::io::ErrorKind::NotFound), 404),
            (io(std::io::ErrorKind::PermissionDenied), 500),
            (Error::Internal("x".into()), 500),
        ];
        for (e, status) in cases {
            assert_eq!(status_of(&e).as_u16(), status, "{e:?}");
            let api = ApiError::from(e);
            assert_eq!(api.status.as_u16(), status);
        }
    }

    #[test]
    fn internal_details_stay_in_the_log() {
        let api = ApiError::from(Error::io("reading /var/lib/warren/secret", std::io::Error::other("boom")));
        assert!(!api.message.contains("/var/lib"), "{}", api.message);
        assert_eq!(api.code, "io");
    }
}
