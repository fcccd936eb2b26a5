//! The one place libStorage errors become HTTP statuses and `{"message","status","error"}`
//! bodies (reference §1). Messages that clients or operators match on are the reference's.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{store, volumes};

/// A libStorage error: status, message and the `error` details (an object of fields, or
/// the message repeated as a string).
#[derive(Debug, Clone)]
pub struct LsError {
    pub status: StatusCode,
    pub message: String,
    pub error: Value,
}

/// The JSON body of every libStorage error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub message: String,
    pub status: u16,
    #[serde(default)]
    pub error: Value,
}

impl LsError {
    pub fn new(status: StatusCode, message: impl Into<String>, error: Value) -> Self {
        LsError {
            status,
            message: message.into(),
            error,
        }
    }

    /// An error whose details are its message repeated as a string.
    pub fn plain(status: StatusCode, message: impl Into<String>) -> Self {
        let message = message.into();
        LsError::new(status, message.clone(), Value::String(message))
    }

    pub fn not_found(resource_id: &str) -> Self {
        LsError::new(
            StatusCode::NOT_FOUND,
            "resource not found",
            json!({"resourceID": resource_id}),
        )
    }

    pub fn missing_instance_id(service: &str) -> Self {
        LsError::new(
            StatusCode::BAD_REQUEST,
            "missing instance ID",
            json!({"service": service}),
        )
    }

    /// A malformed `Libstorage-*` header. The Go server answers 500; Polly answers 400 (the
    /// client's input is at fault) with the Go server's message.
    pub fn bad_header(message: &str, value: &str, why: &str) -> Self {
        LsError::new(
            StatusCode::BAD_REQUEST,
            message,
            json!({"value": value, "reason": why}),
        )
    }

    /// A request body that is not the JSON the route expects (Go: 500 schema error).
    pub fn bad_body(detail: impl std::fmt::Display) -> Self {
        LsError::plain(
            StatusCode::BAD_REQUEST,
            format!("validate req schema: validation error: {detail}"),
        )
    }

    pub fn invalid_token() -> Self {
        LsError::plain(StatusCode::UNAUTHORIZED, "invalid security token")
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            message: self.message.clone(),
            status: self.status.as_u16(),
            error: self.error.clone(),
        }
    }
}

impl IntoResponse for LsError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = %self.status, "libstorage: {}", self.message);
        }
        (self.status, Json(self.body())).into_response()
    }
}

impl From<volumes::Error> for LsError {
    fn from(e: volumes::Error) -> Self {
        use volumes::Error as E;
        match &e {
            E::NotFound { id, .. } => LsError::not_found(id),
            E::InvalidArgument(_) => LsError::plain(StatusCode::BAD_REQUEST, e.to_string()),
            // Everything else is a driver-level failure: the Go server answers 500 with the
            // driver's message, which is what clients print.
            E::Conflict(_)
            | E::InsufficientCapacity(_)
            | E::Timeout { .. }
            | E::Driver { .. }
            | E::Store(_) => LsError::plain(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

/// A follower that cannot hand a request to the leader (see `ha::proxy_libstorage`).
impl From<crate::ha::ProxyError> for LsError {
    fn from(e: crate::ha::ProxyError) -> Self {
        LsError::plain(e.status(), e.to_string())
    }
}

impl From<store::Error> for LsError {
    fn from(e: store::Error) -> Self {
        volumes::Error::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_body_is_the_reference_shape() {
        let b = serde_json::to_value(LsError::not_found("nosuch").body()).unwrap();
        assert_eq!(
            b,
            json!({"message": "resource not found", "status": 404, "error": {"resourceID": "nosuch"}})
        );
    }

    #[test]
    fn token_errors_repeat_the_message() {
        let b = serde_json::to_value(LsError::invalid_token().body()).unwrap();
        assert_eq!(
            b,
            json!({"message": "invalid security token", "status": 401, "error": "invalid security token"})
        );
    }

    #[test]
    fn volume_errors_map_to_statuses() {
        let nf: LsError = volumes::Error::NotFound {
            kind: "volume",
            id: "pv-x".into(),
        }
        .into();
        assert_eq!(nf.status, StatusCode::NOT_FOUND);
        let c: LsError = volumes::Error::Conflict("held".into()).into();
        assert_eq!(c.status, StatusCode::INTERNAL_SERVER_ERROR);
        let i: LsError = volumes::Error::InvalidArgument("x".into()).into();
        assert_eq!(i.status, StatusCode::BAD_REQUEST);
    }
}
