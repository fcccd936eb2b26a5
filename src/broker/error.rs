//! The broker's errors and the one place they become OSB answers: the status the spec names
//! for each case and its error body, `{"error": Code, "description": ...}` with `error` only
//! for the spec's codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::volumes;

/// Why a broker request failed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// 400: malformed or missing data, an unknown id or parameter.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no or wrong credentials.
    #[error("unauthorized: send the broker's username and password (HTTP basic auth)")]
    Unauthorized,
    /// 412: no or too old `X-Broker-API-Version`.
    #[error("{0}")]
    Version(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 410 with `{}`: the resource does not exist (deletes, finished deprovisions).
    #[error("gone")]
    Gone,
    /// 409: the same id with other attributes.
    #[error("{0}")]
    Conflict(String),
    /// 422 with one of the spec's error codes, or none.
    #[error("{description}")]
    Unprocessable {
        code: Option<&'static str>,
        description: String,
    },
    /// 503 with `Retry-After`: not leading, or still starting.
    #[error("{0}")]
    Unavailable(String),
    /// 500: the volume manager or the store failed.
    #[error("{0}")]
    Internal(String),
}

pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

impl BrokerError {
    /// 422 ConcurrencyError: another operation on the instance is running.
    pub fn concurrency(what: &str) -> BrokerError {
        BrokerError::Unprocessable {
            code: Some("ConcurrencyError"),
            description: format!(
                "another operation for {what} is in progress; retry when it has finished"
            ),
        }
    }

    /// 422 without a code.
    pub fn unprocessable(description: impl Into<String>) -> BrokerError {
        BrokerError::Unprocessable {
            code: None,
            description: description.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            BrokerError::BadRequest(_) => StatusCode::BAD_REQUEST,
            BrokerError::Unauthorized => StatusCode::UNAUTHORIZED,
            BrokerError::Version(_) => StatusCode::PRECONDITION_FAILED,
            BrokerError::NotFound(_) => StatusCode::NOT_FOUND,
            BrokerError::Gone => StatusCode::GONE,
            BrokerError::Conflict(_) => StatusCode::CONFLICT,
            BrokerError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            BrokerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            BrokerError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<volumes::Error> for BrokerError {
    fn from(e: volumes::Error) -> Self {
        match &e {
            volumes::Error::InvalidArgument(_) => BrokerError::BadRequest(e.to_string()),
            volumes::Error::InsufficientCapacity(_) | volumes::Error::Conflict(_) => {
                BrokerError::unprocessable(e.to_string())
            }
            volumes::Error::NotFound { .. } => BrokerError::NotFound(e.to_string()),
            _ => BrokerError::Internal(e.to_string()),
        }
    }
}

impl From<crate::store::Error> for BrokerError {
    fn from(e: crate::store::Error) -> Self {
        BrokerError::Internal(format!("store: {e}"))
    }
}

impl IntoResponse for BrokerError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = match &self {
            BrokerError::Gone => json!({}),
            BrokerError::Unprocessable {
                code: Some(code),
                description,
            } => json!({ "error": code, "description": description }),
            other => json!({ "description": other.to_string() }),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        match self {
            BrokerError::Unauthorized => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"polly broker\""),
                );
            }
            BrokerError::Unavailable(_) => {
                resp.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        resp
    }
}
