//! The EC2 calls the `ebs` driver makes, as a small trait (`Ec2Api`) over Polly's own types,
//! so the driver's state machine runs unchanged against the real SDK client (feature `ebs`)
//! and against the in-process fake cloud (`fake.rs`, always built).
//!
//! The types carry only what the driver reads; names follow the EC2 API (`VolumeId`,
//! `AvailabilityZone`, `attachment.instance-id` filters) so the SDK mapping stays mechanical.

use std::collections::BTreeMap;

use async_trait::async_trait;

/// A failed EC2 call: the AWS error code (`InvalidVolume.NotFound`, `VolumeInUse`, ...) and
/// its message. Failures that never reached EC2 (connection, timeout, unparsable reply) use
/// the code `Transport`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            code: code.into(),
            message: message.into(),
        }
    }

    pub fn transport(message: impl Into<String>) -> Self {
        ApiError::new(TRANSPORT, message)
    }

    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }

    /// Whether the code says the named thing does not exist (`*.NotFound`).
    pub fn not_found(&self) -> bool {
        self.code.ends_with(".NotFound")
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The code of failures that never got an answer from EC2.
pub const TRANSPORT: &str = "Transport";

pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// `Volume.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VolumeState {
    Creating,
    Available,
    InUse,
    Deleting,
    Deleted,
    Error,
}

impl VolumeState {
    pub fn as_str(self) -> &'static str {
        match self {
            VolumeState::Creating => "creating",
            VolumeState::Available => "available",
            VolumeState::InUse => "in-use",
            VolumeState::Deleting => "deleting",
            VolumeState::Deleted => "deleted",
            VolumeState::Error => "error",
        }
    }

    pub fn parse(s: &str) -> VolumeState {
        match s {
            "creating" => VolumeState::Creating,
            "available" => VolumeState::Available,
            "in-use" => VolumeState::InUse,
            "deleting" => VolumeState::Deleting,
            "deleted" => VolumeState::Deleted,
            _ => VolumeState::Error,
        }
    }
}

/// `VolumeAttachment.State`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachState {
    Attaching,
    Attached,
    Detaching,
    Detached,
    Busy,
}

impl AttachState {
    pub fn as_str(self) -> &'static str {
        match self {
            AttachState::Attaching => "attaching",
            AttachState::Attached => "attached",
            AttachState::Detaching => "detaching",
            AttachState::Detached => "detached",
            AttachState::Busy => "busy",
        }
    }

    pub fn parse(s: &str) -> AttachState {
        match s {
            "attaching" => AttachState::Attaching,
            "attached" => AttachState::Attached,
            "detaching" => AttachState::Detaching,
            "busy" => AttachState::Busy,
            _ => AttachState::Detached,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Attachment {
    pub volume_id: String,
    pub instance_id: String,
    pub device: String,
    pub state: AttachState,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Volume {
    pub id: String,
    pub zone: String,
    pub size_gib: u64,
    pub volume_type: String,
    pub iops: Option<u32>,
    pub multi_attach: bool,
    pub state: VolumeState,
    pub attachments: Vec<Ec2Attachment>,
    pub tags: BTreeMap<String, String>,
    pub snapshot_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Snapshot {
    pub id: String,
    pub volume_id: String,
    pub size_gib: u64,
    /// `pending`, `completed` or `error`.
    pub state: String,
    /// Unix seconds of `StartTime`.
    pub start_time: u64,
    pub tags: BTreeMap<String, String>,
}

/// One block-device mapping of an instance (root and data volumes alike).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2BlockDevice {
    pub device: String,
    pub volume_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Instance {
    pub id: String,
    pub zone: String,
    /// `pending`, `running`, `stopping`, `stopped`, `shutting-down`, `terminated`.
    pub state: String,
    pub private_dns: Option<String>,
    pub private_ip: Option<String>,
    pub public_dns: Option<String>,
    pub public_ip: Option<String>,
    pub block_devices: Vec<Ec2BlockDevice>,
    pub tags: BTreeMap<String, String>,
}

/// An EC2 `Filter`: a name (`tag:polly:owner`, `volume-id`, ...) and the values any of which
/// matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    pub name: String,
    pub values: Vec<String>,
}

impl Filter {
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        Filter {
            name: name.into(),
            values: vec![value.into()],
        }
    }
}

/// The common shape of the Describe* calls: ids or filters, one page at a time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    pub ids: Vec<String>,
    pub filters: Vec<Filter>,
    /// `MaxResults`; not allowed together with `ids`.
    pub max_results: Option<u32>,
    pub next_token: Option<String>,
}

impl Query {
    pub fn ids(ids: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Query {
            ids: ids.into_iter().map(Into::into).collect(),
            ..Query::default()
        }
    }

    pub fn filters(filters: Vec<Filter>) -> Self {
        Query {
            filters,
            ..Query::default()
        }
    }
}

/// One page of a Describe* answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_token: Option<String>,
}

/// `CreateVolume`'s parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateVolumeInput {
    pub zone: String,
    /// `None` = the snapshot's size.
    pub size_gib: Option<u64>,
    pub volume_type: String,
    pub iops: Option<u32>,
    pub multi_attach: bool,
    pub snapshot_id: Option<String>,
    /// Applied atomically with the create (`TagSpecifications`).
    pub tags: BTreeMap<String, String>,
    /// Idempotency token: a repeat with the same token and parameters returns the same
    /// volume instead of making another.
    pub client_token: Option<String>,
}

/// The EC2 calls the `ebs` driver needs. Implementations translate, they do not decide:
/// every rule lives in EC2 (or in the fake cloud that models it) and every decision in the
/// driver.
#[async_trait]
pub trait Ec2Api: Send + Sync + 'static {
    async fn describe_instances(&self, q: &Query) -> ApiResult<Page<Ec2Instance>>;
    async fn create_volume(&self, input: &CreateVolumeInput) -> ApiResult<Ec2Volume>;
    async fn describe_volumes(&self, q: &Query) -> ApiResult<Page<Ec2Volume>>;
    async fn delete_volume(&self, volume_id: &str) -> ApiResult<()>;
    async fn attach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        device: &str,
    ) -> ApiResult<Ec2Attachment>;
    /// Always with the instance id: EC2 accepts detach without it, moto answers 500.
    async fn detach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        force: bool,
    ) -> ApiResult<Ec2Attachment>;
    async fn modify_volume(&self, volume_id: &str, size_gib: u64) -> ApiResult<()>;
    async fn create_snapshot(
        &self,
        volume_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> ApiResult<Ec2Snapshot>;
    /// Snapshots owned by this account (`OwnerIds = self`).
    async fn describe_snapshots(&self, q: &Query) -> ApiResult<Page<Ec2Snapshot>>;
    async fn delete_snapshot(&self, snapshot_id: &str) -> ApiResult<()>;
}
