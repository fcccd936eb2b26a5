//! The volume manager's error type: expected outcomes (not found, conflict, invalid,
//! no capacity) are variants, and driver errors are mapped onto them at the one call site.

use crate::{driver, store};

/// Errors of volume operations; expected outcomes are variants, not strings.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{kind} {id:?} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{0}")]
    Conflict(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("insufficient capacity: {0}")]
    InsufficientCapacity(String),
    #[error("service {service:?}: driver call {call} timed out after {secs} s")]
    Timeout {
        service: String,
        call: &'static str,
        secs: u64,
    },
    #[error("service {service:?}: {source}")]
    Driver {
        service: String,
        source: driver::Error,
    },
    #[error(transparent)]
    Store(#[from] store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error that says for sure the side effect did not happen.
pub(super) fn is_definite(e: &Error) -> bool {
    matches!(
        e,
        Error::NotFound { .. }
            | Error::Conflict(_)
            | Error::InvalidArgument(_)
            | Error::InsufficientCapacity(_)
    )
}

/// Expected driver outcomes become the manager's own variants; the rest stay driver errors.
pub(super) fn map_driver_error(service: &str, e: driver::Error) -> Error {
    match e {
        driver::Error::NotFound { kind, id } => Error::NotFound { kind, id },
        driver::Error::InsufficientCapacity { .. } => {
            Error::InsufficientCapacity(format!("service {service:?}: {e}"))
        }
        driver::Error::AlreadyExists { .. }
        | driver::Error::AttachedElsewhere { .. }
        | driver::Error::InUse { .. } => Error::Conflict(format!("service {service:?}: {e}")),
        driver::Error::InvalidArgument(m) => Error::InvalidArgument(m),
        source => Error::Driver {
            service: service.to_string(),
            source,
        },
    }
}
