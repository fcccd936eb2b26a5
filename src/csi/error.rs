//! The one place CSI errors become gRPC statuses, with the codes the CSI specification gives
//! each condition. The volume manager says "conflict" for several conditions the
//! specification tells apart, so each call names what a conflict means there ([`Conflict`]),
//! having checked the record itself where that decides it.

use tonic::{Code, Status};

use crate::{driver, store, volumes};

/// What a volume-manager conflict means for the call that got it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    /// A volume or snapshot of that name exists, incompatible (ALREADY_EXISTS).
    AlreadyExists,
    /// The volume is held: published elsewhere, attached, has dependants
    /// (FAILED_PRECONDITION).
    InUse,
    /// Another operation on the volume is under way (ABORTED: retry later).
    Pending,
}

/// A CSI call's failure.
#[derive(Debug, thiserror::Error)]
pub enum CsiError {
    /// A required field is missing or a field is invalid or unsupported.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Published elsewhere, attached, outside the volume's zone.
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Aborted(String),
    /// No capacity for it.
    #[error("{0}")]
    Exhausted(String),
    /// A capacity range the back-end cannot meet.
    #[error("{0}")]
    OutOfRange(String),
    /// This instance does not serve CSI now (a follower, or start-up reconciliation).
    #[error("{0}")]
    Unavailable(String),
    /// A volume-manager error, with what a conflict means for this call.
    #[error("{source}")]
    Volume {
        source: volumes::Error,
        conflict: Conflict,
    },
}

pub type Result<T, E = CsiError> = std::result::Result<T, E>;

impl CsiError {
    /// A volume-manager error in a call where a conflict means `conflict`.
    pub fn volume(source: volumes::Error, conflict: Conflict) -> Self {
        CsiError::Volume { source, conflict }
    }

    /// A required field that is empty.
    pub fn missing(field: &str) -> Self {
        CsiError::Invalid(format!("{field} is required"))
    }

    pub fn code(&self) -> Code {
        match self {
            CsiError::Invalid(_) => Code::InvalidArgument,
            CsiError::NotFound(_) => Code::NotFound,
            CsiError::AlreadyExists(_) => Code::AlreadyExists,
            CsiError::FailedPrecondition(_) => Code::FailedPrecondition,
            CsiError::Aborted(_) => Code::Aborted,
            CsiError::Exhausted(_) => Code::ResourceExhausted,
            CsiError::OutOfRange(_) => Code::OutOfRange,
            CsiError::Unavailable(_) => Code::Unavailable,
            CsiError::Volume { source, conflict } => volume_code(source, *conflict),
        }
    }
}

/// The code of a volume-manager error.
fn volume_code(e: &volumes::Error, conflict: Conflict) -> Code {
    match e {
        volumes::Error::NotFound { .. } => Code::NotFound,
        volumes::Error::Conflict(_) => match conflict {
            Conflict::AlreadyExists => Code::AlreadyExists,
            Conflict::InUse => Code::FailedPrecondition,
            Conflict::Pending => Code::Aborted,
        },
        volumes::Error::InvalidArgument(_) => Code::InvalidArgument,
        volumes::Error::InsufficientCapacity(_) => Code::ResourceExhausted,
        // The call may still finish in the back-end: the orchestrator retries, and the retry
        // finds what it did (every call is idempotent).
        volumes::Error::Timeout { .. } => Code::DeadlineExceeded,
        volumes::Error::Driver {
            source: driver::Error::Unavailable(_),
            ..
        } => Code::Unavailable,
        volumes::Error::Driver { .. } => Code::Internal,
        // A deposed leader's write, or an unreachable etcd: another instance (or a later
        // try) can serve it.
        volumes::Error::Store(store::Error::Fenced { .. } | store::Error::Cluster(_)) => {
            Code::Unavailable
        }
        volumes::Error::Store(_) => Code::Internal,
    }
}

impl From<CsiError> for Status {
    fn from(e: CsiError) -> Status {
        let code = e.code();
        if code == Code::Internal {
            tracing::warn!(error = %e, "csi: call failed");
        }
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(e: volumes::Error, c: Conflict) -> Code {
        Status::from(CsiError::volume(e, c)).code()
    }

    #[test]
    fn codes_follow_the_specification() {
        let nf = || volumes::Error::NotFound {
            kind: "volume",
            id: "x".into(),
        };
        assert_eq!(code(nf(), Conflict::Pending), Code::NotFound);
        let conflict = || volumes::Error::Conflict("c".into());
        assert_eq!(
            code(conflict(), Conflict::AlreadyExists),
            Code::AlreadyExists
        );
        assert_eq!(code(conflict(), Conflict::InUse), Code::FailedPrecondition);
        assert_eq!(code(conflict(), Conflict::Pending), Code::Aborted);
        assert_eq!(
            code(
                volumes::Error::InvalidArgument("i".into()),
                Conflict::Pending
            ),
            Code::InvalidArgument
        );
        assert_eq!(
            code(
                volumes::Error::InsufficientCapacity("n".into()),
                Conflict::Pending
            ),
            Code::ResourceExhausted
        );
        let timeout = volumes::Error::Timeout {
            service: "s".into(),
            call: "create",
            secs: 1,
        };
        assert_eq!(code(timeout, Conflict::Pending), Code::DeadlineExceeded);
        let unavailable = volumes::Error::Driver {
            service: "s".into(),
            source: driver::Error::Unavailable("down".into()),
        };
        assert_eq!(code(unavailable, Conflict::Pending), Code::Unavailable);
        let io = volumes::Error::Driver {
            service: "s".into(),
            source: driver::Error::Io("disk".into()),
        };
        assert_eq!(code(io, Conflict::Pending), Code::Internal);
        let s = Status::from(CsiError::missing("name"));
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "name is required")
        );
        assert_eq!(
            Status::from(CsiError::OutOfRange("r".into())).code(),
            Code::OutOfRange
        );
        assert_eq!(
            Status::from(CsiError::Exhausted("r".into())).code(),
            Code::ResourceExhausted
        );
    }
}
