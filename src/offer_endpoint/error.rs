//! The endpoint's errors: why an offer operation did not happen (with the operation state
//! its status reports), why a call's body or an acknowledgement was refused, and why an
//! admin release was.

use crate::mesos::v1::OperationState;
use crate::offers::AcceptError;

/// Why an offer operation did not happen. Its status says so with [`OpError::state`]:
/// OPERATION_ERROR for an operation or ACCEPT that is invalid as asked, OPERATION_DROPPED
/// for one that was not attempted (its offers are gone, or a back-end it needs is known to be
/// down), OPERATION_FAILED for one that went wrong while carried out.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A field the operation needs is missing or of the wrong kind: the text says which, and
    /// where to take it from.
    #[error("{0}")]
    Malformed(&'static str),
    /// A disk under 1 MB: `what` is "CREATE_DISK" or "GROW_VOLUME addition".
    #[error("{what} of {mb} MB: at least 1 MB is needed")]
    TooSmall { what: &'static str, mb: f64 },
    /// LAUNCH or LAUNCH_GROUP.
    #[error("Polly offers storage only: launch tasks through your Mesos master")]
    Launch,
    /// Any other operation type.
    #[error("operation {0} is not supported by Polly")]
    Unsupported(&'static str),
    #[error(
        "offer is unknown, expired, rescinded, already used or not made to this framework; nothing was done"
    )]
    OfferGone,
    #[error("all offers of one ACCEPT must be on one agent")]
    ManyAgents,
    /// The back-end of a pool the ACCEPT works on (the pool a CREATE_DISK or GROW_VOLUME
    /// takes from, the pool of the volume a RESERVE, UNRESERVE, DESTROY_DISK or GROW_VOLUME
    /// acts on) failed its last capacity poll, so the ACCEPT was refused before anything was
    /// done. `error` is what that poll said.
    #[error("{}", unavailable_message(.pool, .volume.as_deref(), .error.as_deref()))]
    PoolUnavailable {
        pool: String,
        volume: Option<String>,
        error: Option<String>,
    },
    /// The offer engine refused the ACCEPT.
    #[error(transparent)]
    Refused(#[from] AcceptError),
    /// What the ACCEPT is checked against could not be read.
    #[error(transparent)]
    Check(crate::store::Error),
    #[error("cannot record the operation: {0}")]
    Record(crate::store::Error),
    /// An operation left pending by a previous run whose request does not read back.
    #[error("the recorded operation cannot be read back")]
    Unreadable,
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Volume(#[from] crate::volumes::Error),
    #[error("pool {0} is not known")]
    UnknownPool(String),
    #[error("agent {0} is not known, and [offers.instances] does not name it")]
    UnknownAgent(String),
    #[error(
        "no instance id is known for agent {agent} (hostname {hostname:?}): no REX-Ray client reported one for that host, the agent has no {attribute:?} attribute, and [offers.instances] does not name it"
    )]
    NoInstance {
        agent: String,
        hostname: String,
        attribute: String,
    },
    /// No instance is known for the agent (`unknown`), and the service's back-end could not
    /// look its host up.
    #[error("{unknown}; service {service:?} could not look up host {hostname:?}: {error}")]
    Lookup {
        unknown: Box<OpError>,
        service: String,
        hostname: String,
        error: crate::driver::Error,
    },
    /// No instance is known for the agent (`unknown`), and the service's back-end did not
    /// answer a lookup of its host in time.
    #[error(
        "{unknown}; service {service:?} did not answer a lookup of host {hostname:?} within 30 s"
    )]
    LookupTimeout {
        unknown: Box<OpError>,
        service: String,
        hostname: String,
    },
    #[error("framework {framework} holds no volume {volume}")]
    NotHeld { framework: String, volume: String },
    #[error("cannot create the volume: {0}")]
    Create(crate::volumes::Error),
    /// A CREATE_DISK's new volume could not be mapped, so it was deleted again (`undo` is
    /// why that failed, when it did).
    #[error(
        "volume {volume} could not be attached to instance {instance} of agent {agent}: {error}{}",
        undo_note(.undo)
    )]
    AttachNew {
        volume: String,
        instance: String,
        agent: String,
        error: Box<crate::volumes::Error>,
        undo: Option<Box<crate::volumes::Error>>,
    },
    #[error("volume {volume} could not be attached to instance {instance}: {error}")]
    Attach {
        volume: String,
        instance: String,
        error: Box<crate::volumes::Error>,
    },
    #[error("cannot detach volume {volume}: {error}")]
    Detach {
        volume: String,
        error: crate::volumes::Error,
    },
    #[error("cannot delete volume {volume}: {error}")]
    Delete {
        volume: String,
        error: crate::volumes::Error,
    },
    #[error(
        "volume {volume} lives in pool {pool}; it can only grow from that pool's share, not from {from}"
    )]
    WrongPool {
        volume: String,
        pool: String,
        from: String,
    },
    #[error("cannot grow volume {volume}: {error}")]
    Grow {
        volume: String,
        error: crate::volumes::Error,
    },
}

fn undo_note(undo: &Option<Box<crate::volumes::Error>>) -> String {
    match undo {
        None => "; it was deleted again".to_string(),
        Some(u) => format!("; deleting it failed too: {u}"),
    }
}

fn unavailable_message(pool: &str, volume: Option<&str>, error: Option<&str>) -> String {
    let why = error.map(|e| format!(" ({e})")).unwrap_or_default();
    match volume {
        Some(v) => format!(
            "volume {v} lives in pool {pool}, whose back-end failed the last capacity poll{why}; nothing was done: retry once Polly offers the volume again"
        ),
        None => format!(
            "pool {pool} is unavailable: its back-end failed the last capacity poll{why}; nothing was done: retry once Polly offers the pool again"
        ),
    }
}

impl OpError {
    /// The state of the operation status that reports this error.
    pub fn state(&self) -> OperationState {
        match self {
            OpError::Malformed(_)
            | OpError::TooSmall { .. }
            | OpError::Launch
            | OpError::Unsupported(_)
            | OpError::ManyAgents
            | OpError::Check(_)
            | OpError::Record(_) => OperationState::OperationError,
            OpError::OfferGone | OpError::PoolUnavailable { .. } => {
                OperationState::OperationDropped
            }
            OpError::Refused(e) => match e {
                AcceptError::UnknownOffer(_) | AcceptError::WrongFramework { .. } => {
                    OperationState::OperationDropped
                }
                _ => OperationState::OperationError,
            },
            OpError::Unreadable
            | OpError::Store(_)
            | OpError::Volume(_)
            | OpError::UnknownPool(_)
            | OpError::UnknownAgent(_)
            | OpError::NoInstance { .. }
            | OpError::Lookup { .. }
            | OpError::LookupTimeout { .. }
            | OpError::NotHeld { .. }
            | OpError::Create(_)
            | OpError::AttachNew { .. }
            | OpError::Attach { .. }
            | OpError::Detach { .. }
            | OpError::Delete { .. }
            | OpError::WrongPool { .. }
            | OpError::Grow { .. } => OperationState::OperationFailed,
        }
    }
}

/// Why a call's body cannot be read (400 "Failed to parse body: …").
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Mesos(#[from] crate::mesos::Error),
    #[error("invalid JSON: {0}")]
    Json(serde_json::Error),
    #[error("invalid JSON: expected an object")]
    NotAnObject,
}

/// Why an ACKNOWLEDGE_OPERATION_STATUS was refused (400).
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("'uuid' must be 16 bytes (the status uuid, base64 in JSON)")]
    BadUuid,
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// Why a release was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{0}")]
    NotFound(String),
    /// Refused while the framework is subscribed, in its grace, or never tore down.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Volume(#[from] crate::volumes::Error),
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}
