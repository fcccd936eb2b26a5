//! The one place admin errors become HTTP statuses and `{"error","message"}` bodies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::{store, volumes};

/// An admin API error: status, a stable machine code and a human message.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

/// The JSON body of every admin error.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub error: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn unauthorized(message: &str) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(status = %self.status, code = self.code, "{}", self.message);
        }
        (
            self.status,
            Json(ErrorBody {
                error: self.code.to_string(),
                message: self.message,
            }),
        )
            .into_response()
    }
}

impl From<volumes::Error> for ApiError {
    fn from(e: volumes::Error) -> Self {
        use volumes::Error as E;
        let (status, code) = match &e {
            E::NotFound { .. } => (StatusCode::NOT_FOUND, "not_found"),
            E::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            E::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            E::InsufficientCapacity(_) => {
                (StatusCode::INSUFFICIENT_STORAGE, "insufficient_capacity")
            }
            E::Timeout { .. } => (StatusCode::GATEWAY_TIMEOUT, "driver_timeout"),
            E::Driver { .. } => (StatusCode::BAD_GATEWAY, "driver_error"),
            // The store's own conflict: a write that would give a name a second volume (a
            // create or adopt racing another, an operation finishing after an erase).
            E::Store(store::Error::NameTaken { .. }) => (StatusCode::CONFLICT, "conflict"),
            // With [ha]: this instance lost its lease mid-write; nothing was written.
            E::Store(store::Error::Fenced { .. }) => (StatusCode::SERVICE_UNAVAILABLE, "no_leader"),
            E::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "store_error"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<store::Error> for ApiError {
    fn from(e: store::Error) -> Self {
        volumes::Error::from(e).into()
    }
}

/// A follower that cannot hand a request to the leader (see `ha::proxy_admin`).
impl From<crate::ha::ProxyError> for ApiError {
    fn from(e: crate::ha::ProxyError) -> Self {
        ApiError::new(e.status(), "no_leader", e.to_string())
    }
}

impl From<crate::offer_endpoint::ReleaseError> for ApiError {
    fn from(e: crate::offer_endpoint::ReleaseError) -> Self {
        use crate::offer_endpoint::ReleaseError as E;
        match e {
            E::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            E::Refused(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            E::Volume(e) => e.into(),
            E::Store(e) => e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(e: store::Error) -> (StatusCode, &'static str) {
        let e = ApiError::from(e);
        (e.status, e.code)
    }

    #[test]
    fn store_conflicts_are_409_and_a_lost_lease_503() {
        let taken = store::Error::NameTaken {
            service: "vfs".into(),
            name: "db".into(),
            holder: "pv-1".into(),
        };
        assert_eq!(status(taken), (StatusCode::CONFLICT, "conflict"));
        let fenced = store::Error::Fenced {
            key: "k".into(),
            expected: 1,
            found: 0,
        };
        assert_eq!(
            status(fenced),
            (StatusCode::SERVICE_UNAVAILABLE, "no_leader")
        );
        assert_eq!(
            status(store::Error::Io("disk gone".into())),
            (StatusCode::INTERNAL_SERVER_ERROR, "store_error")
        );
    }
}
