//! What can go wrong on a node, worded for the person who typed `docker …`: the Docker
//! plugin puts these messages in its `Err` field as they are.

use std::path::PathBuf;

use crate::client;
use crate::mount;

use super::state::StateError;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("no polly volume named {name:?}; create it with `docker volume create --driver polly {name}`")]
    NoSuchVolume { name: String },
    #[error("polly volume {name:?} is in use on node {holders} (single-writer); stop the containers using it there first")]
    HeldElsewhere { name: String, holders: String },
    #[error(
        "polly volume {name:?} is mounted on this node by {users} container(s); stop them first"
    )]
    InUse { name: String, users: usize },
    #[error("{0}")]
    InvalidOption(String),
    #[error("volume name {name:?} is not valid: use letters, digits, '_', '.' and '-', starting with a letter or digit")]
    InvalidName { name: String },
    #[error("cannot reach central polly at {server}: {reason}; is `polly serve` running there?")]
    Unreachable { server: String, reason: String },
    #[error("central polly refused: {message}")]
    Refused { status: u16, message: String },
    #[error("central polly answered unexpectedly: {0}")]
    Protocol(String),
    #[error("mounting polly volume {name:?} at {target}: {source}")]
    Mount {
        name: String,
        target: PathBuf,
        source: Box<mount::Error>,
    },
    #[error("unmounted polly volume {name:?} here, but central polly could not detach it ({reason}); polly node retries the detach in the background")]
    DetachPending { name: String, reason: String },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("polly node internal error: {0}")]
    Internal(String),
}

impl NodeError {
    /// A client error from central, with central's own message when it answered.
    pub fn central(server: &str, e: client::Error) -> NodeError {
        match e {
            client::Error::Connect { source, .. } => NodeError::Unreachable {
                server: server.to_string(),
                reason: root_cause(&source),
            },
            client::Error::Api {
                status, message, ..
            } => NodeError::Refused { status, message },
            client::Error::Decode(m) => NodeError::Protocol(m),
        }
    }
}

/// The innermost cause of a transport error ("connection refused"), which is what the
/// person at the terminal can act on.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
