//! Records the store keeps: volumes, instances and operation intents (serialized as JSON).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::driver::{AccessMode, CreateRequest};

/// Lifecycle of a Polly volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeStatus {
    /// An intent to create exists; the back-end may or may not have the volume yet.
    Creating,
    /// Exists on the back-end; may have attachments.
    Available,
    /// An intent to delete exists; the back-end may still have the volume.
    Deleting,
}

/// One instance (host) a volume is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub instance_id: String,
    /// Device path or attach token the instance uses.
    pub device: String,
    /// Unix seconds.
    pub attached_at: u64,
}

/// A volume Polly manages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Polly's id, assigned before the back-end is asked for anything.
    pub id: String,
    /// The service (configured back-end) the volume lives in.
    pub service: String,
    /// The back-end's id; `None` until the create has reached the back-end.
    pub driver_id: Option<String>,
    /// Unique within the service.
    pub name: String,
    pub size_bytes: u64,
    pub pool: Option<String>,
    pub zone: Option<String>,
    pub access_mode: AccessMode,
    pub labels: BTreeMap<String, String>,
    /// When non-empty, only these services may see and use the volume.
    pub restrict_services: BTreeSet<String>,
    /// When non-empty, only these Mesos frameworks are offered the volume.
    pub restrict_frameworks: BTreeSet<String>,
    pub status: VolumeStatus,
    pub attachments: Vec<Attachment>,
    /// Unix seconds.
    pub created_at: u64,
    /// Where the data lives on the Polly host, when the back-end exposes a path.
    #[serde(default)]
    pub path: Option<String>,
}

/// A host that reported itself through libStorage or the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    pub driver: String,
    pub instance_id: String,
    pub hostname: Option<String>,
    /// Unix seconds.
    pub last_seen: u64,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// What an unfinished operation was about to do to the back-end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum IntentOp {
    Create {
        request: CreateRequest,
    },
    Attach {
        instance_id: String,
    },
    /// `instance_id: None` is a force-detach of every attachment.
    Detach {
        instance_id: Option<String>,
    },
    Delete,
    Grow {
        size_bytes: u64,
    },
}

/// An operation persisted before its back-end side effect; removed when the operation ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    pub id: u64,
    pub volume_id: String,
    pub service: String,
    #[serde(flatten)]
    pub op: IntentOp,
    /// Unix seconds.
    pub created_at: u64,
}
