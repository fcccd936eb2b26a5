//! The `ebs` driver: AWS EBS volumes through the EC2 API.
//!
//! The driver is a state machine over a small trait of EC2 calls (`model::Ec2Api`), so the
//! same code runs against the real SDK client (`sdk.rs`, cargo feature `ebs`) and against
//! the in-process fake cloud (`fake.rs`, always built; how and why: ARCHITECTURE.md).
//!
//! - Ownership: every volume and snapshot Polly makes carries the tags `polly:owner`
//!   (the service's owner string) and `polly:volume` (the Polly name), applied atomically by
//!   CreateVolume. Lists filter on them; a volume without them is never touched.
//! - Create is idempotent by name (looked up by tag) and by `ClientToken` (derived from owner,
//!   name and parameters), so a lost reply retried even before DescribeVolumes shows the new
//!   volume does not make a second one.
//! - Pools are volume types (`gp3`, `io2`, ...); zones are the configured availability
//!   zones. Capacity is the configured quota per zone and type minus what Polly's volumes
//!   provision there (EBS has no "free space").
//! - Attach checks the zone of volume and instance before any AttachVolume, picks a device
//!   name no other attachment of the instance uses (names from DescribeInstances plus those
//!   this process handed out and has not yet seen come back), then waits for `attached` up to
//!   `attach_timeout_secs`. A timed-out attach stays on the cloud; a retry waits for the same
//!   attachment and never issues a second AttachVolume. Detach always names the instance.
//! - One operation at a time per volume (in this process); every EC2 call is bounded by
//!   `call_timeout_secs`, so a hung call holds only its own volume.

pub mod fake;
pub mod model;
#[cfg(feature = "ebs")]
pub mod sdk;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use self::fake::{FakeCloud, FakeCloudConfig};
use self::model::{
    ApiError, ApiResult, AttachState, CreateVolumeInput, Ec2Api, Ec2Instance, Ec2Snapshot,
    Ec2Volume, Filter, Query, VolumeState,
};
use super::{
    AccessMode, AttachOptions, CreateRequest, Driver, DriverAttachment, DriverVolume, Error,
    PoolCapacity, Result, Snapshot,
};
use crate::keyed_lock::KeyedLocks;

/// Tag naming the owner (one Polly service) of a volume or snapshot.
pub const TAG_OWNER: &str = "polly:owner";
/// Tag holding a volume's Polly name.
pub const TAG_VOLUME: &str = "polly:volume";
/// Tag holding a volume's access mode.
pub const TAG_ACCESS: &str = "polly:access-mode";
/// Tag holding a snapshot's Polly name.
pub const TAG_SNAPSHOT: &str = "polly:snapshot";
/// Tag of the transient snapshot behind `copy`, naming the copy.
pub const TAG_COPY: &str = "polly:copy-for";
/// Prefix of the tags holding a volume's free-form fields.
pub const TAG_FIELD: &str = "polly:field:";

const GIB: u64 = 1 << 30;
/// Volume types EBS offers.
pub const VOLUME_TYPES: &[&str] = &["gp3", "gp2", "io1", "io2", "st1", "sc1", "standard"];

fn default_type() -> String {
    "gp3".into()
}
fn default_quota_gib() -> u64 {
    // EC2's default per-region storage quota for gp3 (50 TiB).
    51_200
}
fn default_attach_timeout() -> f64 {
    45.0
}
fn default_call_timeout() -> f64 {
    20.0
}
fn default_poll_ms() -> u64 {
    1000
}
fn default_page_size() -> u32 {
    500
}

/// A storage quota for one volume type, in one zone or in each zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbsQuota {
    /// Volume type (`gp3`, `io2`, ...). Required.
    pub volume_type: String,
    /// Zone; `None` = this quota applies to each configured zone separately.
    #[serde(default)]
    pub zone: Option<String>,
    /// GiB Polly may provision of this type in the zone. Required.
    pub gib: u64,
}

/// `[services.ebs]`: one EBS back-end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbsConfig {
    /// AWS region; `None` = the standard chain (`AWS_REGION`, profile, instance metadata).
    #[serde(default)]
    pub region: Option<String>,
    /// EC2 endpoint URL (moto, a VPC endpoint); `None` = the region's.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Availability zones served, the first the default. Required.
    pub zones: Vec<String>,
    /// Type of volumes created without a pool. Default `gp3`.
    #[serde(default = "default_type")]
    pub default_type: String,
    /// Quotas per type and zone; a served pool without one gets `default_quota_gib`.
    #[serde(default)]
    pub quotas: Vec<EbsQuota>,
    /// Default 51200 (EC2's default regional gp3 quota, 50 TiB).
    #[serde(default = "default_quota_gib")]
    pub default_quota_gib: u64,
    /// Value of the `polly:owner` tag; default `polly-<service name>`. Never change it for
    /// a service that has volumes: they would become orphans.
    #[serde(default)]
    pub owner: Option<String>,
    /// How long attach/detach/create wait for EC2 to finish. Default 45; keep it below
    /// `driver_timeout_secs`.
    #[serde(default = "default_attach_timeout")]
    pub attach_timeout_secs: f64,
    /// Bound on any single EC2 call. Default 20.
    #[serde(default = "default_call_timeout")]
    pub call_timeout_secs: f64,
    /// Poll period while waiting for a state. Default 1000.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// `MaxResults` of list calls (5-500). Default 500.
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Run against an in-process fake cloud instead of EC2 (demos, tests). Default: none.
    #[serde(default)]
    pub fake_cloud: Option<FakeCloudConfig>,
}

impl EbsConfig {
    /// A config serving `zones` with every default.
    pub fn new(zones: Vec<String>) -> Self {
        EbsConfig {
            region: None,
            endpoint: None,
            zones,
            default_type: default_type(),
            quotas: Vec::new(),
            default_quota_gib: default_quota_gib(),
            owner: None,
            attach_timeout_secs: default_attach_timeout(),
            call_timeout_secs: default_call_timeout(),
            poll_interval_ms: default_poll_ms(),
            page_size: default_page_size(),
            fake_cloud: None,
        }
    }

    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.zones.is_empty() {
            return Err("ebs.zones must name at least one availability zone".into());
        }
        let types = |t: &str| VOLUME_TYPES.contains(&t);
        if !types(&self.default_type) {
            return Err(format!(
                "ebs.default_type {:?} is not an EBS volume type ({})",
                self.default_type,
                VOLUME_TYPES.join(", ")
            ));
        }
        for q in &self.quotas {
            if !types(&q.volume_type) {
                return Err(format!(
                    "ebs.quotas: volume_type {:?} is not an EBS volume type ({})",
                    q.volume_type,
                    VOLUME_TYPES.join(", ")
                ));
            }
            if let Some(z) = &q.zone {
                if !self.zones.contains(z) {
                    return Err(format!(
                        "ebs.quotas: zone {z:?} is not one of ebs.zones {:?}",
                        self.zones
                    ));
                }
            }
        }
        for (name, v) in [
            ("attach_timeout_secs", self.attach_timeout_secs),
            ("call_timeout_secs", self.call_timeout_secs),
        ] {
            if !(v.is_finite() && v > 0.0 && v < 1e6) {
                return Err(format!("ebs.{name} must be a positive number of seconds"));
            }
        }
        if self.poll_interval_ms == 0 {
            return Err("ebs.poll_interval_ms must be positive".into());
        }
        if !(5..=500).contains(&self.page_size) {
            return Err(format!(
                "ebs.page_size {} must be between 5 and 500 (EC2's MaxResults range)",
                self.page_size
            ));
        }
        if let Some(f) = &self.fake_cloud {
            f.validate()?;
        }
        Ok(())
    }
}

/// A device name this process gave to an attach and may not yet see in DescribeInstances.
#[derive(Debug, Clone)]
struct Reservation {
    /// When the AttachVolume call ended (`None` = still in flight). A DescribeInstances
    /// started after that shows the name (or its absence) by itself.
    settled_at: Option<Instant>,
}

/// The `ebs` driver.
pub struct EbsDriver {
    cfg: EbsConfig,
    owner: String,
    api: Arc<dyn Ec2Api>,
    volume_locks: KeyedLocks,
    name_locks: KeyedLocks,
    pool_locks: KeyedLocks,
    /// instance id → device → reservation.
    devices: Mutex<HashMap<String, HashMap<String, Reservation>>>,
    /// instance id → zone (immutable for an instance's life).
    zones: Mutex<HashMap<String, String>>,
}

impl std::fmt::Debug for EbsDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EbsDriver")
            .field("owner", &self.owner)
            .field("zones", &self.cfg.zones)
            .finish_non_exhaustive()
    }
}

/// Device names handed out, in order: `/dev/xvdf`…`/dev/xvdz`, then `/dev/xvdba`…`/dev/xvdbz`
/// and `/dev/xvdca`…`/dev/xvdcz` (the names EC2 recommends for data volumes on Linux).
fn device_names() -> impl Iterator<Item = String> {
    let single = (b'f'..=b'z').map(|c| format!("/dev/xvd{}", c as char));
    let double = [b'b', b'c']
        .into_iter()
        .flat_map(|p| (b'a'..=b'z').map(move |c| format!("/dev/xvd{}{}", p as char, c as char)));
    single.chain(double)
}

/// The same name as seen by a Linux guest: `/dev/sdf` and `/dev/xvdf` are one slot.
fn device_slot(device: &str) -> &str {
    device
        .strip_prefix("/dev/xvd")
        .or_else(|| device.strip_prefix("/dev/sd"))
        .unwrap_or(device)
}

fn valid_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .is_some_and(|h| (8..=17).contains(&h.len()) && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn access_tag(m: AccessMode) -> &'static str {
    match m {
        AccessMode::SingleWriter => "single_writer",
        AccessMode::MultiReader => "multi_reader",
        AccessMode::MultiWriter => "multi_writer",
    }
}

fn parse_access(s: Option<&String>) -> AccessMode {
    match s.map(String::as_str) {
        Some("multi_reader") => AccessMode::MultiReader,
        Some("multi_writer") => AccessMode::MultiWriter,
        _ => AccessMode::SingleWriter,
    }
}

/// FNV-1a, 64 bits: a stable hash for idempotency tokens (std's hasher may change between
/// Rust releases, and a token must not).
fn fnv1a(seed: u64, data: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// What a validated create asks of EC2.
#[derive(Debug, Clone)]
struct Plan {
    zone: String,
    volume_type: String,
    gib: u64,
    iops: Option<u32>,
    multi_attach: bool,
}

/// Maps an EC2 failure to a driver error; the message names the call and carries the code.
fn api_err(op: &str, e: ApiError) -> Error {
    let msg = format!("ec2 {op}: {e}");
    match e.code.as_str() {
        model::TRANSPORT
        | "RequestLimitExceeded"
        | "Throttling"
        | "ServiceUnavailable"
        | "Unavailable"
        | "InternalError"
        | "InsufficientVolumeCapacity"
        | "IncorrectState"
        | "IncorrectModificationState" => Error::Unavailable(msg),
        c if c.starts_with("InvalidParameter")
            || c == "MissingParameter"
            || c == "InvalidVolume.ZoneMismatch"
            || c == "InvalidZone.NotFound"
            || c == "IdempotentParameterMismatch"
            || c == "AttachmentLimitExceeded"
            || c == "VolumeLimitExceeded"
            || c == "MaxIOPSLimitExceeded"
            || c == "UnauthorizedOperation"
            || c == "AuthFailure" =>
        {
            Error::InvalidArgument(msg)
        }
        _ => Error::Io(msg),
    }
}

impl EbsDriver {
    /// A driver over any EC2 implementation. `service` names the default owner.
    pub fn new(cfg: EbsConfig, service: &str, api: Arc<dyn Ec2Api>) -> Result<EbsDriver> {
        cfg.validate()
            .map_err(|e| Error::InvalidArgument(format!("service {service:?}: {e}")))?;
        let owner = cfg
            .owner
            .clone()
            .unwrap_or_else(|| format!("polly-{service}"));
        if owner.is_empty() || owner.len() > 256 {
            return Err(Error::InvalidArgument(format!(
                "service {service:?}: ebs.owner must be 1-256 characters"
            )));
        }
        Ok(EbsDriver {
            cfg,
            owner,
            api,
            volume_locks: KeyedLocks::default(),
            name_locks: KeyedLocks::default(),
            pool_locks: KeyedLocks::default(),
            devices: Mutex::new(HashMap::new()),
            zones: Mutex::new(HashMap::new()),
        })
    }

    /// The driver a service's config asks for: the fake cloud when `fake_cloud` is set,
    /// else the SDK client (feature `ebs`), else an error saying how to get one.
    pub fn from_config(cfg: EbsConfig, service: &str) -> Result<EbsDriver> {
        if let Some(f) = &cfg.fake_cloud {
            let mut f = f.clone();
            if f.zones.is_empty() {
                f.zones = cfg.zones.clone();
            }
            return EbsDriver::new(cfg, service, Arc::new(FakeCloud::new(f)));
        }
        Self::sdk(cfg, service)
    }

    #[cfg(feature = "ebs")]
    fn sdk(cfg: EbsConfig, service: &str) -> Result<EbsDriver> {
        let api = sdk::SdkEc2::new(cfg.region.clone(), cfg.endpoint.clone());
        EbsDriver::new(cfg, service, Arc::new(api))
    }

    #[cfg(not(feature = "ebs"))]
    fn sdk(_cfg: EbsConfig, service: &str) -> Result<EbsDriver> {
        Err(Error::InvalidArgument(format!(
            "service {service:?}: driver ebs needs Polly built with the `ebs` feature \
             (cargo build --release --features ebs), or [services.ebs.fake_cloud] for a fake cloud"
        )))
    }

    /// The owner tag value of this driver's volumes.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The EC2 implementation behind this driver.
    pub fn api(&self) -> &Arc<dyn Ec2Api> {
        &self.api
    }

    /// One EC2 call, bounded by `call_timeout_secs`.
    async fn call<T>(
        &self,
        op: &str,
        fut: impl std::future::Future<Output = ApiResult<T>>,
    ) -> ApiResult<T> {
        let limit = Duration::from_secs_f64(self.cfg.call_timeout_secs);
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(ApiError::transport(format!(
                "{op} got no answer within {}s",
                self.cfg.call_timeout_secs
            ))),
        }
    }

    fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.cfg.poll_interval_ms)
    }

    fn wait_limit(&self) -> Duration {
        Duration::from_secs_f64(self.cfg.attach_timeout_secs)
    }

    fn owner_filter(&self) -> Filter {
        Filter::new(format!("tag:{TAG_OWNER}"), self.owner.clone())
    }

    /// Every page of a DescribeVolumes.
    async fn volumes_where(&self, filters: Vec<Filter>) -> Result<Vec<Ec2Volume>> {
        let mut q = Query::filters(filters);
        q.max_results = Some(self.cfg.page_size);
        let mut out = Vec::new();
        loop {
            let page = self
                .call("DescribeVolumes", self.api.describe_volumes(&q))
                .await
                .map_err(|e| api_err("DescribeVolumes", e))?;
            out.extend(page.items);
            match page.next_token {
                Some(t) => q.next_token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }

    /// Every page of a DescribeSnapshots.
    async fn snapshots_where(&self, filters: Vec<Filter>) -> Result<Vec<Ec2Snapshot>> {
        let mut q = Query::filters(filters);
        q.max_results = Some(self.cfg.page_size);
        let mut out = Vec::new();
        loop {
            let page = self
                .call("DescribeSnapshots", self.api.describe_snapshots(&q))
                .await
                .map_err(|e| api_err("DescribeSnapshots", e))?;
            out.extend(page.items);
            match page.next_token {
                Some(t) => q.next_token = Some(t),
                None => break,
            }
        }
        Ok(out)
    }

    fn is_ours(&self, tags: &BTreeMap<String, String>) -> bool {
        tags.get(TAG_OWNER) == Some(&self.owner)
    }

    fn live(v: &Ec2Volume) -> bool {
        !matches!(v.state, VolumeState::Deleting | VolumeState::Deleted)
    }

    /// Polly's live volume with this id, if there is one.
    async fn find(&self, id: &str) -> Result<Option<Ec2Volume>> {
        if !valid_id(id, "vol-") {
            return Ok(None);
        }
        match self
            .call(
                "DescribeVolumes",
                self.api.describe_volumes(&Query::ids([id])),
            )
            .await
        {
            Ok(p) => Ok(p
                .items
                .into_iter()
                .find(|v| v.id == id && self.is_ours(&v.tags) && Self::live(v))),
            Err(e) if e.is("InvalidVolume.NotFound") => Ok(None),
            Err(e) => Err(api_err("DescribeVolumes", e)),
        }
    }

    async fn get(&self, id: &str) -> Result<Ec2Volume> {
        self.find(id).await?.ok_or_else(|| Error::NotFound {
            kind: "volume",
            id: id.to_string(),
        })
    }

    async fn by_name(&self, name: &str) -> Result<Option<Ec2Volume>> {
        let mut found: Vec<Ec2Volume> = self
            .volumes_where(vec![
                self.owner_filter(),
                Filter::new(format!("tag:{TAG_VOLUME}"), name),
            ])
            .await?
            .into_iter()
            .filter(|v| Self::live(v) && v.tags.get(TAG_VOLUME).map(String::as_str) == Some(name))
            .collect();
        found.sort_by(|a, b| a.id.cmp(&b.id));
        if found.len() > 1 {
            tracing::warn!(name, ids = ?found.iter().map(|v| &v.id).collect::<Vec<_>>(),
                "several EBS volumes carry one Polly name; using the first");
        }
        Ok(found.into_iter().next())
    }

    fn to_driver(&self, v: &Ec2Volume) -> DriverVolume {
        let fields = v
            .tags
            .iter()
            .filter_map(|(k, val)| {
                k.strip_prefix(TAG_FIELD)
                    .map(|k| (k.to_string(), val.clone()))
            })
            .collect();
        let mut attachments: Vec<DriverAttachment> = v
            .attachments
            .iter()
            .filter(|a| a.state != AttachState::Detached)
            .map(|a| DriverAttachment {
                instance_id: a.instance_id.clone(),
                device: a.device.clone(),
            })
            .collect();
        attachments.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        DriverVolume {
            id: v.id.clone(),
            name: v.tags.get(TAG_VOLUME).cloned().unwrap_or_default(),
            size_bytes: v.size_gib.saturating_mul(GIB),
            pool: v.volume_type.clone(),
            zone: Some(v.zone.clone()),
            access_mode: parse_access(v.tags.get(TAG_ACCESS)),
            attachments,
            fields,
            path: None,
        }
    }

    /// Validate a create request against EBS's rules, before any call.
    fn plan(&self, req: &CreateRequest) -> Result<Plan> {
        let name = &req.name;
        if req.size_bytes == 0 {
            return Err(Error::InvalidArgument(format!(
                "volume {name:?}: size_bytes must be greater than 0"
            )));
        }
        let volume_type = match (&req.pool, req.fields.get("type")) {
            (Some(p), _) => p.clone(),
            (None, Some(t)) if VOLUME_TYPES.contains(&t.as_str()) => t.clone(),
            (None, _) => self.cfg.default_type.clone(),
        };
        if !VOLUME_TYPES.contains(&volume_type.as_str()) {
            return Err(Error::NotFound {
                kind: "pool",
                id: volume_type,
            });
        }
        let zone = match &req.zone {
            Some(z) if self.cfg.zones.contains(z) => z.clone(),
            Some(z) => {
                return Err(Error::InvalidArgument(format!(
                "volume {name:?}: zone {z:?} is not served by this EBS service (it serves {:?})",
                self.cfg.zones
            )))
            }
            None => self.cfg.zones[0].clone(),
        };
        let gib = req.size_bytes.div_ceil(GIB);
        let (min, max) = match volume_type.as_str() {
            "io1" => (4, 16_384),
            "io2" => (4, 65_536),
            "st1" | "sc1" => (125, 16_384),
            "standard" => (1, 1_024),
            _ => (1, 16_384),
        };
        if !(min..=max).contains(&gib) {
            return Err(Error::InvalidArgument(format!(
                "volume {name:?}: {gib} GiB is outside {min}-{max} GiB, the sizes of EBS {volume_type} volumes"
            )));
        }
        let iops = match req.fields.get("iops") {
            None => None,
            Some(s) => Some(s.parse::<u32>().map_err(|_| {
                Error::InvalidArgument(format!("volume {name:?}: iops {s:?} is not a whole number"))
            })?),
        };
        let iops_range = match volume_type.as_str() {
            "gp3" => Some((3_000, 16_000, false)),
            "io1" => Some((100, 64_000, true)),
            "io2" => Some((100, 256_000, true)),
            _ => None,
        };
        match (iops_range, iops) {
            (None, Some(_)) => {
                return Err(Error::InvalidArgument(format!(
                    "volume {name:?}: EBS {volume_type} volumes take no iops (only gp3, io1 and io2 do)"
                )))
            }
            (Some((_, _, true)), None) => {
                return Err(Error::InvalidArgument(format!(
                    "volume {name:?}: EBS {volume_type} volumes need an iops field"
                )))
            }
            (Some((lo, hi, _)), Some(i)) if !(lo..=hi).contains(&i) => {
                return Err(Error::InvalidArgument(format!(
                    "volume {name:?}: iops {i} is outside {lo}-{hi}, the range of EBS {volume_type}"
                )))
            }
            _ => {}
        }
        let multi_attach = req.access_mode.allows_many();
        if multi_attach && !matches!(volume_type.as_str(), "io1" | "io2") {
            return Err(Error::InvalidArgument(format!(
                "volume {name:?}: access mode {} needs EBS Multi-Attach, which only io1 and io2 volumes have (asked for {volume_type})",
                access_tag(req.access_mode)
            )));
        }
        for (k, v) in &req.fields {
            if k.is_empty() || TAG_FIELD.len() + k.len() > 128 || v.len() > 256 {
                return Err(Error::InvalidArgument(format!(
                    "volume {name:?}: field {k:?} does not fit an EC2 tag (key up to {} characters, value up to 256)",
                    128 - TAG_FIELD.len()
                )));
            }
        }
        if req.fields.len() > 40 {
            return Err(Error::InvalidArgument(format!(
                "volume {name:?}: at most 40 fields fit in an EBS volume's tags"
            )));
        }
        if name.len() > 256 {
            return Err(Error::InvalidArgument(format!(
                "volume {name:?}: names longer than 256 characters do not fit an EC2 tag"
            )));
        }
        Ok(Plan {
            zone,
            volume_type,
            gib,
            iops,
            multi_attach,
        })
    }

    fn quota_gib(&self, zone: &str, volume_type: &str) -> u64 {
        let for_type = |q: &&EbsQuota| q.volume_type == volume_type;
        self.cfg
            .quotas
            .iter()
            .filter(for_type)
            .find(|q| q.zone.as_deref() == Some(zone))
            .or_else(|| {
                self.cfg
                    .quotas
                    .iter()
                    .filter(for_type)
                    .find(|q| q.zone.is_none())
            })
            .map_or(self.cfg.default_quota_gib, |q| q.gib)
    }

    /// Pools served: the default type, then every type with a quota.
    fn pool_types(&self) -> Vec<String> {
        let mut out = vec![self.cfg.default_type.clone()];
        for q in &self.cfg.quotas {
            if !out.contains(&q.volume_type) {
                out.push(q.volume_type.clone());
            }
        }
        out
    }

    async fn owned_volumes(&self) -> Result<Vec<Ec2Volume>> {
        let mut vols: Vec<Ec2Volume> = self
            .volumes_where(vec![self.owner_filter()])
            .await?
            .into_iter()
            .filter(|v| self.is_ours(&v.tags) && Self::live(v))
            .collect();
        vols.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(vols)
    }

    async fn provisioned_gib(&self, zone: &str, volume_type: &str) -> Result<u64> {
        // Filtered here rather than by EC2 filters: moto lacks some (`volume-type`).
        Ok(self
            .owned_volumes()
            .await?
            .iter()
            .filter(|v| v.zone == zone && v.volume_type == volume_type)
            .map(|v| v.size_gib)
            .fold(0, u64::saturating_add))
    }

    async fn check_quota(&self, zone: &str, volume_type: &str, more_gib: u64) -> Result<()> {
        let quota = self.quota_gib(zone, volume_type);
        let free = quota.saturating_sub(self.provisioned_gib(zone, volume_type).await?);
        if more_gib > free {
            return Err(Error::InsufficientCapacity {
                pool: volume_type.to_string(),
                free_bytes: free.saturating_mul(GIB),
                wanted_bytes: more_gib.saturating_mul(GIB),
            });
        }
        Ok(())
    }

    fn client_token(&self, name: &str, plan: &Plan, snapshot: Option<&str>, nonce: &str) -> String {
        let key = format!(
            "{}\0{name}\0{}\0{}\0{}\0{:?}\0{}\0{}\0{nonce}",
            self.owner,
            plan.zone,
            plan.volume_type,
            plan.gib,
            plan.iops,
            plan.multi_attach,
            snapshot.unwrap_or("")
        );
        let b = key.as_bytes();
        format!(
            "polly-{:016x}{:016x}",
            fnv1a(0, b),
            fnv1a(0x9e37_79b9_7f4a_7c15, b)
        )
    }

    /// Create (or find) the volume named `req.name`, from a snapshot when given.
    async fn create_volume(
        &self,
        req: &CreateRequest,
        snapshot: Option<&Ec2Snapshot>,
    ) -> Result<DriverVolume> {
        let plan = self.plan(req)?;
        if let Some(s) = snapshot {
            if plan.gib < s.size_gib {
                return Err(Error::InvalidArgument(format!(
                    "volume {:?}: {} GiB is smaller than its source snapshot {} ({} GiB)",
                    req.name, plan.gib, s.id, s.size_gib
                )));
            }
        }
        let _name = self.name_locks.lock(&req.name).await;
        if let Some(existing) = self.by_name(&req.name).await? {
            if existing.size_gib != plan.gib {
                return Err(Error::AlreadyExists {
                    name: req.name.clone(),
                    detail: format!(
                        "existing volume {} has {} GiB, {} GiB requested",
                        existing.id, existing.size_gib, plan.gib
                    ),
                });
            }
            let v = self.wait_available(&existing.id).await?;
            return Ok(self.to_driver(&v));
        }
        let mut tags = BTreeMap::from([
            (TAG_OWNER.to_string(), self.owner.clone()),
            (TAG_VOLUME.to_string(), req.name.clone()),
            (
                TAG_ACCESS.to_string(),
                access_tag(req.access_mode).to_string(),
            ),
            ("Name".to_string(), req.name.clone()),
        ]);
        for (k, v) in &req.fields {
            tags.insert(format!("{TAG_FIELD}{k}"), v.clone());
        }
        let snapshot_id = snapshot.map(|s| s.id.clone());
        let created = {
            let _pool = self
                .pool_locks
                .lock(&format!("{}/{}", plan.zone, plan.volume_type))
                .await;
            self.check_quota(&plan.zone, &plan.volume_type, plan.gib)
                .await?;
            let mut nonce = String::new();
            loop {
                let input = CreateVolumeInput {
                    zone: plan.zone.clone(),
                    size_gib: Some(plan.gib),
                    volume_type: plan.volume_type.clone(),
                    iops: plan.iops,
                    multi_attach: plan.multi_attach,
                    snapshot_id: snapshot_id.clone(),
                    tags: tags.clone(),
                    client_token: Some(self.client_token(
                        &req.name,
                        &plan,
                        snapshot_id.as_deref(),
                        &nonce,
                    )),
                };
                let v = self
                    .call("CreateVolume", self.api.create_volume(&input))
                    .await
                    .map_err(|e| api_err("CreateVolume", e))?;
                // The token named a volume of this name that was deleted since: make a new one.
                if !Self::live(&v) && nonce.is_empty() {
                    nonce = uuid::Uuid::new_v4().simple().to_string();
                    continue;
                }
                break v;
            }
        };
        tracing::info!(volume = %created.id, name = %req.name, zone = %plan.zone,
            r#type = %plan.volume_type, gib = plan.gib, "created EBS volume");
        let v = self.wait_available(&created.id).await?;
        Ok(self.to_driver(&v))
    }

    /// Poll a volume until it leaves `creating`.
    async fn wait_available(&self, id: &str) -> Result<Ec2Volume> {
        let deadline = Instant::now() + self.wait_limit();
        loop {
            let v = self.get(id).await?;
            match v.state {
                VolumeState::Creating => {}
                VolumeState::Error => {
                    return Err(Error::Io(format!(
                        "EBS volume {id} is in the error state; remove it and create it again"
                    )))
                }
                _ => return Ok(v),
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "EBS volume {id} is still creating after {}s; retry to wait for it",
                    self.cfg.attach_timeout_secs
                )));
            }
            tokio::time::sleep(self.poll_interval()).await;
        }
    }

    /// The instance, described (its zone cached for later).
    async fn instance(&self, instance_id: &str) -> Result<Ec2Instance> {
        if !valid_id(instance_id, "i-") {
            return Err(Error::InvalidArgument(format!(
                "{instance_id:?} is not an EC2 instance id (i-…); EBS volumes attach to EC2 instances"
            )));
        }
        let not_found = || Error::NotFound {
            kind: "instance",
            id: instance_id.to_string(),
        };
        let page = match self
            .call(
                "DescribeInstances",
                self.api.describe_instances(&Query::ids([instance_id])),
            )
            .await
        {
            Ok(p) => p,
            Err(e) if e.is("InvalidInstanceID.NotFound") => return Err(not_found()),
            Err(e) => return Err(api_err("DescribeInstances", e)),
        };
        let inst = page
            .items
            .into_iter()
            .find(|i| i.id == instance_id && i.state != "terminated")
            .ok_or_else(not_found)?;
        self.zones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(inst.id.clone(), inst.zone.clone());
        Ok(inst)
    }

    fn cached_zone(&self, instance_id: &str) -> Option<String> {
        self.zones
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(instance_id)
            .cloned()
    }

    fn zone_mismatch(vol: &Ec2Volume, instance_id: &str, zone: &str) -> Error {
        Error::InvalidArgument(format!(
            "volume {} is in zone {} and instance {instance_id} in zone {zone}; EBS attaches only within one zone (snapshot the volume and restore it in {zone})",
            vol.id, vol.zone
        ))
    }

    /// Pick a free device name on the instance and reserve it. `in_use` comes from a
    /// DescribeInstances started at `seen_at`.
    fn reserve_device(
        &self,
        instance_id: &str,
        in_use: &[String],
        seen_at: Instant,
        hint: Option<&str>,
    ) -> Option<String> {
        let mut all = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        let mine = all.entry(instance_id.to_string()).or_default();
        // Settled before the describe began: the describe speaks for them.
        mine.retain(|_, r| r.settled_at.is_none_or(|t| t >= seen_at));
        let taken = |d: &str| {
            in_use.iter().any(|u| device_slot(u) == device_slot(d))
                || mine.keys().any(|m| device_slot(m) == device_slot(d))
        };
        let hinted = hint
            .filter(|h| device_names().any(|n| n == *h))
            .map(str::to_string);
        let pick = hinted
            .filter(|h| !taken(h))
            .or_else(|| device_names().find(|d| !taken(d)))?;
        mine.insert(pick.clone(), Reservation { settled_at: None });
        Some(pick)
    }

    /// The AttachVolume call for a reserved name ended (either way).
    fn settle_device(&self, instance_id: &str, device: &str, free: bool) {
        let mut all = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mine) = all.get_mut(instance_id) {
            if free {
                mine.remove(device);
            } else if let Some(r) = mine.get_mut(device) {
                r.settled_at = Some(Instant::now());
            }
        }
    }

    /// Poll until the volume's attachment to the instance is `attached`.
    async fn wait_attached(&self, id: &str, instance_id: &str) -> Result<DriverAttachment> {
        let deadline = Instant::now() + self.wait_limit();
        loop {
            let v = self.get(id).await?;
            let state = match v.attachments.iter().find(|a| a.instance_id == instance_id) {
                Some(a) if a.state == AttachState::Attached => {
                    return Ok(DriverAttachment {
                        instance_id: instance_id.to_string(),
                        device: a.device.clone(),
                    })
                }
                Some(a) => a.state.as_str(),
                None => {
                    return Err(Error::Unavailable(format!(
                        "EBS volume {id} lost its attachment to {instance_id} while attaching; retry the attach"
                    )))
                }
            };
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "EBS volume {id} is still {state} on instance {instance_id} after {}s; the attachment stays, a retry waits for it, force-detach gives it up",
                    self.cfg.attach_timeout_secs
                )));
            }
            tokio::time::sleep(self.poll_interval()).await;
        }
    }

    /// Poll until the instance (or, with `None`, every instance) holds no attachment.
    async fn wait_detached(&self, id: &str, instance_id: Option<&str>) -> Result<()> {
        let deadline = Instant::now() + self.wait_limit();
        loop {
            let Some(v) = self.find(id).await? else {
                return Ok(());
            };
            let left: Vec<&str> = v
                .attachments
                .iter()
                .filter(|a| a.state != AttachState::Detached)
                .filter(|a| instance_id.is_none_or(|i| a.instance_id == i))
                .map(|a| a.state.as_str())
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "EBS volume {id} is still {} after {}s; retry, or force-detach",
                    left.join(", "),
                    self.cfg.attach_timeout_secs
                )));
            }
            tokio::time::sleep(self.poll_interval()).await;
        }
    }

    async fn attach_inner(
        &self,
        id: &str,
        instance_id: &str,
        opts: &AttachOptions,
    ) -> Result<DriverAttachment> {
        let vol = self.get(id).await?;
        // The zone check first, from cache when possible, so a cross-zone attach is refused
        // before it costs more than the describe of the volume.
        if let Some(zone) = self.cached_zone(instance_id) {
            if zone != vol.zone {
                return Err(Self::zone_mismatch(&vol, instance_id, &zone));
            }
        }
        if let Some(a) = vol
            .attachments
            .iter()
            .find(|a| a.instance_id == instance_id)
        {
            match a.state {
                AttachState::Attached => {
                    return Ok(DriverAttachment {
                        instance_id: instance_id.to_string(),
                        device: a.device.clone(),
                    })
                }
                // An earlier attach (perhaps one that timed out) is still on its way.
                AttachState::Attaching | AttachState::Busy => {
                    return self.wait_attached(id, instance_id).await
                }
                AttachState::Detaching | AttachState::Detached => {
                    self.wait_detached(id, Some(instance_id)).await?;
                }
            }
        }
        let access = parse_access(vol.tags.get(TAG_ACCESS));
        let holders: Vec<String> = vol
            .attachments
            .iter()
            .filter(|a| a.instance_id != instance_id && a.state != AttachState::Detached)
            .map(|a| a.instance_id.clone())
            .collect();
        let shareable = access.allows_many() && vol.multi_attach;
        if !holders.is_empty() && !shareable {
            return Err(Error::AttachedElsewhere {
                volume: id.to_string(),
                holders,
            });
        }
        for _attempt in 0..4 {
            let seen_at = Instant::now();
            let inst = self.instance(instance_id).await?;
            if inst.zone != vol.zone {
                return Err(Self::zone_mismatch(&vol, instance_id, &inst.zone));
            }
            let in_use: Vec<String> = inst
                .block_devices
                .iter()
                .map(|b| b.device.clone())
                .collect();
            let device = self
                .reserve_device(instance_id, &in_use, seen_at, opts.device_hint.as_deref())
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "instance {instance_id} has no free EBS device name left ({} in use)",
                        in_use.len()
                    ))
                })?;
            let res = self
                .call(
                    "AttachVolume",
                    self.api.attach_volume(id, instance_id, &device),
                )
                .await;
            match res {
                Ok(_) => {
                    self.settle_device(instance_id, &device, false);
                    tracing::info!(volume = id, instance = instance_id, %device, "attaching EBS volume");
                    return self.wait_attached(id, instance_id).await;
                }
                Err(e) if e.is("InvalidParameterValue") && e.message.contains("already in use") => {
                    // Someone outside this process took the name: a fresh describe will show it.
                    self.settle_device(instance_id, &device, false);
                    tracing::warn!(volume = id, instance = instance_id, %device,
                        "device name taken on the instance; trying another");
                }
                Err(e) if e.is("VolumeInUse") => {
                    self.settle_device(instance_id, &device, true);
                    let now = self.get(id).await?;
                    if now.attachments.iter().any(|a| a.instance_id == instance_id) {
                        return self.wait_attached(id, instance_id).await;
                    }
                    return Err(Error::AttachedElsewhere {
                        volume: id.to_string(),
                        holders: now
                            .attachments
                            .iter()
                            .map(|a| a.instance_id.clone())
                            .collect(),
                    });
                }
                Err(e) if e.is("InvalidInstanceID.NotFound") => {
                    self.settle_device(instance_id, &device, true);
                    return Err(Error::NotFound {
                        kind: "instance",
                        id: instance_id.to_string(),
                    });
                }
                Err(e) if e.is("InvalidVolume.NotFound") => {
                    self.settle_device(instance_id, &device, true);
                    return Err(Error::NotFound {
                        kind: "volume",
                        id: id.to_string(),
                    });
                }
                Err(e) => {
                    // A lost answer may still have attached: keep the name until a describe
                    // started later speaks for it.
                    let ambiguous = e.is(model::TRANSPORT);
                    self.settle_device(instance_id, &device, !ambiguous);
                    return Err(api_err("AttachVolume", e));
                }
            }
        }
        Err(Error::Unavailable(format!(
            "could not find a free device name on instance {instance_id} after 4 tries (names taken outside Polly meanwhile); retry"
        )))
    }

    async fn detach_one(&self, id: &str, instance_id: &str, force: bool) -> Result<()> {
        match self
            .call(
                "DetachVolume",
                self.api.detach_volume(id, instance_id, force),
            )
            .await
        {
            Ok(_) => Ok(()),
            // Gone or going already: the wait below sees to the rest.
            Err(e)
                if e.is("InvalidAttachment.NotFound")
                    || e.is("IncorrectState")
                    || e.is("InvalidVolume.NotFound") =>
            {
                Ok(())
            }
            Err(e) => Err(api_err("DetachVolume", e)),
        }
    }

    fn snapshot_of(&self, s: &Ec2Snapshot) -> Snapshot {
        Snapshot {
            id: s.id.clone(),
            name: s.tags.get(TAG_SNAPSHOT).cloned().unwrap_or_default(),
            volume_id: s.volume_id.clone(),
            size_bytes: s.size_gib.saturating_mul(GIB),
            created_at: s.start_time,
        }
    }

    async fn find_snapshot(&self, snapshot_id: &str) -> Result<Option<Ec2Snapshot>> {
        if !valid_id(snapshot_id, "snap-") {
            return Ok(None);
        }
        match self
            .call(
                "DescribeSnapshots",
                self.api.describe_snapshots(&Query::ids([snapshot_id])),
            )
            .await
        {
            Ok(p) => Ok(p
                .items
                .into_iter()
                .find(|s| s.id == snapshot_id && self.is_ours(&s.tags))),
            Err(e) if e.is("InvalidSnapshot.NotFound") => Ok(None),
            Err(e) => Err(api_err("DescribeSnapshots", e)),
        }
    }

    /// A snapshot of `volume_id` tagged `tag` = `value`, made once.
    async fn snapshot_tagged(
        &self,
        volume_id: &str,
        tag: &str,
        value: &str,
    ) -> Result<Ec2Snapshot> {
        let _lock = self
            .name_locks
            .lock(&format!("{volume_id}@{tag}={value}"))
            .await;
        self.get(volume_id).await?;
        let existing = self
            .snapshots_where(vec![
                self.owner_filter(),
                Filter::new(format!("tag:{tag}"), value),
                Filter::new("volume-id", volume_id),
            ])
            .await?
            .into_iter()
            .filter(|s| {
                s.volume_id == volume_id && s.tags.get(tag).map(String::as_str) == Some(value)
            })
            .min_by(|a, b| a.id.cmp(&b.id));
        if let Some(s) = existing {
            return Ok(s);
        }
        let tags = BTreeMap::from([
            (TAG_OWNER.to_string(), self.owner.clone()),
            (tag.to_string(), value.to_string()),
        ]);
        self.call("CreateSnapshot", self.api.create_snapshot(volume_id, &tags))
            .await
            .map_err(|e| match e {
                e if e.is("InvalidVolume.NotFound") => Error::NotFound {
                    kind: "volume",
                    id: volume_id.to_string(),
                },
                e => api_err("CreateSnapshot", e),
            })
    }

    /// The instance id of an agent known by hostname or IP address (private or public).
    async fn instance_for_host(&self, host: &str) -> Result<Option<String>> {
        if valid_id(host, "i-") {
            return Ok(Some(host.to_string()));
        }
        for filter in [
            "private-dns-name",
            "private-ip-address",
            "dns-name",
            "ip-address",
        ] {
            let mut q = Query::filters(vec![
                Filter::new(filter, host),
                Filter {
                    name: "instance-state-name".into(),
                    values: vec![
                        "pending".into(),
                        "running".into(),
                        "stopping".into(),
                        "stopped".into(),
                    ],
                },
            ]);
            q.max_results = Some(5);
            let page = self
                .call("DescribeInstances", self.api.describe_instances(&q))
                .await
                .map_err(|e| api_err("DescribeInstances", e))?;
            if let Some(i) = page.items.into_iter().next() {
                self.zones
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(i.id.clone(), i.zone.clone());
                return Ok(Some(i.id));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl Driver for EbsDriver {
    fn kind(&self) -> &str {
        "ebs"
    }

    async fn capacity(&self) -> Result<Vec<PoolCapacity>> {
        let vols = self.owned_volumes().await?;
        let mut out = Vec::new();
        for t in self.pool_types() {
            for z in &self.cfg.zones {
                let total = self.quota_gib(z, &t);
                let used = vols
                    .iter()
                    .filter(|v| &v.zone == z && v.volume_type == t)
                    .map(|v| v.size_gib)
                    .fold(0, u64::saturating_add);
                out.push(PoolCapacity {
                    pool: t.clone(),
                    zone: Some(z.clone()),
                    total_bytes: total.saturating_mul(GIB),
                    free_bytes: total.saturating_sub(used).saturating_mul(GIB),
                });
            }
        }
        Ok(out)
    }

    async fn list(&self) -> Result<Vec<DriverVolume>> {
        Ok(self
            .owned_volumes()
            .await?
            .iter()
            .map(|v| self.to_driver(v))
            .collect())
    }

    async fn inspect(&self, id: &str) -> Result<DriverVolume> {
        Ok(self.to_driver(&self.get(id).await?))
    }

    async fn create(&self, req: &CreateRequest) -> Result<DriverVolume> {
        self.create_volume(req, None).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let _lock = self.volume_locks.lock(id).await;
        let Some(v) = self.find(id).await? else {
            return Ok(());
        };
        let holders: Vec<String> = v
            .attachments
            .iter()
            .filter(|a| a.state != AttachState::Detached)
            .map(|a| a.instance_id.clone())
            .collect();
        if !holders.is_empty() {
            return Err(Error::InUse {
                volume: id.to_string(),
                holders,
            });
        }
        match self.call("DeleteVolume", self.api.delete_volume(id)).await {
            Ok(()) => {
                tracing::info!(volume = id, "deleted EBS volume");
                Ok(())
            }
            Err(e) if e.is("InvalidVolume.NotFound") => Ok(()),
            Err(e) if e.is("VolumeInUse") => {
                let holders = match self.find(id).await? {
                    Some(v) => v
                        .attachments
                        .iter()
                        .map(|a| a.instance_id.clone())
                        .collect(),
                    None => Vec::new(),
                };
                Err(Error::InUse {
                    volume: id.to_string(),
                    holders,
                })
            }
            Err(e) => Err(api_err("DeleteVolume", e)),
        }
    }

    async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        opts: &AttachOptions,
    ) -> Result<DriverAttachment> {
        let _lock = self.volume_locks.lock(id).await;
        self.attach_inner(id, instance_id, opts).await
    }

    async fn detach(&self, id: &str, instance_id: &str) -> Result<()> {
        let _lock = self.volume_locks.lock(id).await;
        let Some(v) = self.find(id).await? else {
            return Ok(());
        };
        let Some(a) = v.attachments.iter().find(|a| a.instance_id == instance_id) else {
            return Ok(());
        };
        if a.state != AttachState::Detaching {
            self.detach_one(id, instance_id, false).await?;
        }
        self.wait_detached(id, Some(instance_id)).await
    }

    async fn force_detach(&self, id: &str) -> Result<()> {
        let _lock = self.volume_locks.lock(id).await;
        let Some(v) = self.find(id).await? else {
            return Ok(());
        };
        for a in &v.attachments {
            if a.state != AttachState::Detached {
                tracing::warn!(volume = id, instance = %a.instance_id, "force-detaching EBS volume");
                self.detach_one(id, &a.instance_id, true).await?;
            }
        }
        self.wait_detached(id, None).await
    }

    async fn snapshot_create(&self, volume_id: &str, name: &str) -> Result<Snapshot> {
        if name.is_empty() || name.len() > 256 {
            return Err(Error::InvalidArgument(format!(
                "snapshot name {name:?} must be 1-256 characters"
            )));
        }
        let s = self.snapshot_tagged(volume_id, TAG_SNAPSHOT, name).await?;
        Ok(self.snapshot_of(&s))
    }

    async fn snapshot_list(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
        let mut filters = vec![self.owner_filter()];
        if let Some(v) = volume_id {
            if !valid_id(v, "vol-") {
                return Ok(Vec::new());
            }
            filters.push(Filter::new("volume-id", v));
        }
        let mut out: Vec<Snapshot> = self
            .snapshots_where(filters)
            .await?
            .iter()
            .filter(|s| self.is_ours(&s.tags) && s.tags.contains_key(TAG_SNAPSHOT))
            .filter(|s| volume_id.is_none_or(|v| s.volume_id == v))
            .map(|s| self.snapshot_of(s))
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn snapshot_remove(&self, snapshot_id: &str) -> Result<()> {
        if self.find_snapshot(snapshot_id).await?.is_none() {
            return Ok(());
        }
        match self
            .call("DeleteSnapshot", self.api.delete_snapshot(snapshot_id))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is("InvalidSnapshot.NotFound") => Ok(()),
            Err(e) if e.is("InvalidSnapshot.InUse") => Err(Error::InUse {
                volume: snapshot_id.to_string(),
                holders: Vec::new(),
            }),
            Err(e) => Err(api_err("DeleteSnapshot", e)),
        }
    }

    async fn create_from_snapshot(
        &self,
        snapshot_id: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume> {
        let s = self
            .find_snapshot(snapshot_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "snapshot",
                id: snapshot_id.to_string(),
            })?;
        self.create_volume(req, Some(&s)).await
    }

    /// EBS has no volume copy: a transient snapshot (tagged with the copy's name, so a retry
    /// reuses it), a volume from it, then the snapshot goes.
    async fn copy(&self, volume_id: &str, req: &CreateRequest) -> Result<DriverVolume> {
        let src = self.get(volume_id).await?;
        let plan = self.plan(req)?;
        if plan.gib < src.size_gib {
            return Err(Error::InvalidArgument(format!(
                "volume {:?}: {} GiB is smaller than its source {} ({} GiB)",
                req.name, plan.gib, src.id, src.size_gib
            )));
        }
        let v = if self.by_name(&req.name).await?.is_some() {
            self.create_volume(req, None).await?
        } else {
            let snap = self.snapshot_tagged(volume_id, TAG_COPY, &req.name).await?;
            self.create_volume(req, Some(&snap)).await?
        };
        // The transient snapshot, also one left by a copy cut short after its create.
        let leftovers = self
            .snapshots_where(vec![
                self.owner_filter(),
                Filter::new(format!("tag:{TAG_COPY}"), req.name.clone()),
            ])
            .await?;
        for s in leftovers {
            if self.is_ours(&s.tags) && s.tags.get(TAG_COPY) == Some(&req.name) {
                self.snapshot_remove(&s.id).await?;
            }
        }
        Ok(v)
    }

    async fn grow(&self, id: &str, new_size_bytes: u64) -> Result<DriverVolume> {
        let _lock = self.volume_locks.lock(id).await;
        let v = self.get(id).await?;
        let gib = new_size_bytes.div_ceil(GIB);
        if gib < v.size_gib {
            return Err(Error::InvalidArgument(format!(
                "volume {id}: cannot shrink an EBS volume from {} to {gib} GiB",
                v.size_gib
            )));
        }
        if gib == v.size_gib {
            return Ok(self.to_driver(&v));
        }
        {
            let _pool = self
                .pool_locks
                .lock(&format!("{}/{}", v.zone, v.volume_type))
                .await;
            self.check_quota(&v.zone, &v.volume_type, gib - v.size_gib)
                .await?;
            self.call("ModifyVolume", self.api.modify_volume(id, gib))
                .await
                .map_err(|e| api_err("ModifyVolume", e))?;
        }
        let deadline = Instant::now() + self.wait_limit();
        loop {
            let now = self.get(id).await?;
            if now.size_gib >= gib {
                return Ok(self.to_driver(&now));
            }
            if Instant::now() >= deadline {
                return Err(Error::Unavailable(format!(
                    "EBS volume {id} still shows {} GiB after {}s of modification to {gib} GiB",
                    now.size_gib, self.cfg.attach_timeout_secs
                )));
            }
            tokio::time::sleep(self.poll_interval()).await;
        }
    }

    async fn resolve_instance(&self, host: &str) -> Result<Option<String>> {
        self.instance_for_host(host).await
    }
}

#[cfg(test)]
mod tests;
