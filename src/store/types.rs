//! Records the store keeps: volumes, instances, operation intents, the storage-offer
//! endpoint's framework reservations and offer operations, lost nodes, and the Open Service
//! Broker's instances and bindings (serialized as JSON).

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

/// Storage a Mesos framework holds through the storage-offer endpoint: one volume, keyed by
/// the framework's id (the one it has at its real Mesos master) and the volume id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub framework_id: String,
    pub role: String,
    pub principal: Option<String>,
    pub volume_id: String,
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: u64,
}

/// An offer operation a framework asked for with an `operation_id`: its latest status, kept
/// until the framework acknowledges it, and for `offers.operation_retention_secs` afterwards
/// (so a repeated id is not run twice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationRecord {
    pub operation_id: String,
    pub framework_id: String,
    pub agent_id: String,
    /// Mesos operation type name, e.g. `CREATE_DISK`.
    pub kind: String,
    /// Mesos `OperationState` name, e.g. `OPERATION_PENDING`.
    pub state: String,
    pub message: Option<String>,
    /// Mesos JSON array of the converted resources (set when finished).
    pub converted_resources: Option<String>,
    pub acknowledged: bool,
    /// The status uuid the framework must echo to acknowledge (hex of 16 bytes).
    pub uuid: String,
    /// The operation as received (Mesos JSON of `Offer.Operation`), to resume it after a crash.
    pub request: String,
    /// The volume the operation created or acts on, once known. CREATE_DISK stores it with
    /// the volume's reservation; UNRESERVE and DESTROY_DISK in the batch that drops the
    /// reservation, so one resumed after a crash knows it released the volume already.
    pub volume_id: Option<String>,
    /// GROW_VOLUME: the size the volume grows to, recorded before the driver is asked, so a
    /// resumed grow never adds the addition twice.
    #[serde(default)]
    pub target_bytes: Option<u64>,
    /// The framework's role and principal when it asked (for the reservation it creates).
    pub role: String,
    pub principal: Option<String>,
    /// Unix seconds.
    pub updated_at: u64,
}

impl OperationRecord {
    /// Terminal states end the operation; only the status remains to be acknowledged.
    pub fn is_terminal(&self) -> bool {
        !matches!(self.state.as_str(), "OPERATION_PENDING")
    }
}

/// Where a node (a Mesos agent, or a host known only from REX-Ray reports) is in fencing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    /// Reported gone; its attachments stay and its volumes are not offered.
    Lost,
    /// Fenced (asserted off); the listed volumes are being released.
    Fencing,
    /// Every attachment it held was released.
    Fenced,
}

/// A lost or fenced node. Written before any attachment is released, so a fence interrupted
/// by a crash is resumed, never skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The agent id, or the instance id of a host known only from REX-Ray reports.
    pub id: String,
    pub hostname: Option<String>,
    pub zone: Option<String>,
    /// Instance ids whose attachments this node holds.
    pub instance_ids: BTreeSet<String>,
    pub state: NodeState,
    /// Why it counts as lost (or `fenced by operator` when fenced while active).
    pub reason: String,
    /// Unix seconds.
    pub lost_at: u64,
    /// `operator` or `auto_release`, once fenced.
    pub fenced_by: Option<String>,
    /// Unix seconds the fence was asked for.
    pub fence_requested_at: Option<u64>,
    /// Volumes still to release (state `fencing`).
    pub pending: Vec<String>,
    /// Volumes released by the fence.
    pub released: Vec<String>,
    /// Unix seconds the last volume was released.
    pub fenced_at: Option<u64>,
}

/// What an Open Service Broker operation on an instance does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerOpKind {
    Provision,
    Update,
    Deprovision,
}

/// Where a broker operation is: the `last_operation` states of the OSB API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BrokerOpState {
    InProgress,
    Succeeded,
    Failed,
}

/// The last operation on a broker instance. Saved `in_progress` before the volume manager
/// is asked, so an operation cut by a crash is found and finished at the next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerOperation {
    /// The `operation` handed to the platform with a 202, and asked for in `last_operation`.
    pub id: String,
    pub kind: BrokerOpKind,
    pub state: BrokerOpState,
    #[serde(default)]
    pub description: Option<String>,
    /// A failed operation: the HTTP status its error maps to (what a request waiting on it
    /// answers).
    #[serde(default)]
    pub failure_status: Option<u16>,
    /// The `X-Broker-API-Originating-Identity` header of the request that started it.
    #[serde(default)]
    pub originating_identity: Option<String>,
    /// Update: the plan and the size asked for (the instance's own fields change only
    /// when the update succeeds), and the parameters as sent.
    #[serde(default)]
    pub plan_id: Option<String>,
    #[serde(default)]
    pub size_bytes: Option<u64>,
    #[serde(default)]
    pub parameters: Option<serde_json::Value>,
    /// Unix seconds.
    pub started_at: u64,
    #[serde(default)]
    pub finished_at: Option<u64>,
}

/// An Open Service Broker service instance: the volume it stands for, as the platform
/// asked for it, and its last operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerInstance {
    /// The platform's instance id.
    pub id: String,
    /// The catalog's service and plan ids.
    pub service_id: String,
    pub plan_id: String,
    /// The Polly service the volume lives in, and the volume's name there.
    pub service: String,
    pub volume_name: String,
    /// Set once the volume exists.
    #[serde(default)]
    pub volume_id: Option<String>,
    pub size_bytes: u64,
    /// The plan's access mode and pool when provisioned (a plan change keeps both).
    pub access_mode: AccessMode,
    #[serde(default)]
    pub pool: Option<String>,
    pub organization_guid: String,
    pub space_guid: String,
    #[serde(default)]
    pub context: serde_json::Value,
    /// The provision's parameters, as sent (compared when the same provision comes again).
    #[serde(default)]
    pub parameters: serde_json::Value,
    pub last_operation: BrokerOperation,
    /// Unix seconds.
    pub created_at: u64,
}

/// An Open Service Broker binding: where an app mounts its instance's volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerBinding {
    pub id: String,
    pub instance_id: String,
    pub service_id: String,
    pub plan_id: String,
    #[serde(default)]
    pub app_guid: Option<String>,
    #[serde(default)]
    pub bind_resource: serde_json::Value,
    #[serde(default)]
    pub parameters: serde_json::Value,
    /// The path in the app's container.
    pub container_dir: String,
    pub read_only: bool,
    #[serde(default)]
    pub originating_identity: Option<String>,
    /// Unix seconds.
    pub created_at: u64,
}
