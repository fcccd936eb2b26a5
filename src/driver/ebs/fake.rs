//! The fake cloud: an in-process EC2 (volumes, snapshots, instances) behind `Ec2Api` that
//! enforces the AWS rules moto lets through (`reference/backends.md` §1), so the `ebs`
//! driver's state machine has a real oracle:
//!
//! - AttachVolume of an attached volume is `VolumeInUse` (moto silently moves it); across
//!   zones it is `InvalidVolume.ZoneMismatch`; a device name the instance already uses, or a
//!   malformed one, is `InvalidParameterValue`; more than `max_attachments` is
//!   `AttachmentLimitExceeded`.
//! - Attach and detach are asynchronous: `attaching` / `detaching` for a configurable delay,
//!   or forever for a stuck attachment (what `force` detach is for).
//! - CreateVolume honours `ClientToken` (same token and parameters → same volume; other
//!   parameters → `IdempotentParameterMismatch`), validates sizes, types, IOPS and zones, and
//!   a volume made from a snapshot is at least the snapshot's size.
//! - Describe* calls page with `MaxResults` / `NextToken` (and refuse bad tokens).
//! - A snapshot keeps the size and data of its volume at the time it was taken.
//! - Every call can take a fixed latency, and chosen calls can hang until released, to show
//!   that one stuck call does not hold up the others.
//!
//! Volumes hold a little map of "files" so tests can check that snapshots and restores carry
//! data. Tests and benchmarks drive it through the methods on `FakeCloud`; `polly serve` can
//! run a service on it (`[services.ebs.fake_cloud]`) for demos and end-to-end tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::model::{
    ApiError, ApiResult, AttachState, CreateVolumeInput, Ec2Api, Ec2Attachment, Ec2BlockDevice,
    Ec2Instance, Ec2Snapshot, Ec2Volume, Filter, Page, Query, VolumeState,
};

/// Multi-Attach volumes attach to at most this many instances (an EC2 limit).
const MULTI_ATTACH_MAX: usize = 16;
/// The device every fake instance boots from.
const ROOT_DEVICE: &str = "/dev/xvda";

fn default_zones() -> Vec<String> {
    vec!["us-east-1a".into(), "us-east-1b".into()]
}

fn default_max_attachments() -> usize {
    27
}

/// An instance the fake cloud starts with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FakeInstanceConfig {
    /// Availability zone. Required.
    pub zone: String,
    /// Private DNS name (what a Mesos agent usually reports as its hostname).
    #[serde(default)]
    pub hostname: Option<String>,
    /// Private IPv4 address.
    #[serde(default)]
    pub ip: Option<String>,
}

/// How the fake cloud behaves; every delay is in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FakeCloudConfig {
    /// Availability zones of the fake region. Default `us-east-1a`, `us-east-1b`.
    pub zones: Vec<String>,
    /// Instances that exist from the start (ids `i-…1`, `i-…2`, … in this order).
    pub instances: Vec<FakeInstanceConfig>,
    /// Added to every call before it takes effect.
    pub latency_ms: u64,
    /// Time a volume spends `creating`.
    pub create_delay_ms: u64,
    /// Time an attachment spends `attaching`.
    pub attach_delay_ms: u64,
    /// Time an attachment spends `detaching`.
    pub detach_delay_ms: u64,
    /// Time a snapshot spends `pending`.
    pub snapshot_delay_ms: u64,
    /// New attachments stay `attaching` until released (`FakeCloud::unstick`).
    pub stuck_attach: bool,
    /// Non-forced detaches stay `detaching` until released or forced.
    pub stuck_detach: bool,
    /// Attachments per instance (root volume included). Default 27.
    #[serde(default = "default_max_attachments")]
    pub max_attachments: usize,
}

impl Default for FakeCloudConfig {
    fn default() -> Self {
        FakeCloudConfig {
            zones: default_zones(),
            instances: Vec::new(),
            latency_ms: 0,
            create_delay_ms: 0,
            attach_delay_ms: 0,
            detach_delay_ms: 0,
            snapshot_delay_ms: 0,
            stuck_attach: false,
            stuck_detach: false,
            max_attachments: default_max_attachments(),
        }
    }
}

impl FakeCloudConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.zones.is_empty() {
            return Err("fake_cloud.zones must name at least one zone".into());
        }
        if let Some(i) = self
            .instances
            .iter()
            .find(|i| !self.zones.contains(&i.zone))
        {
            return Err(format!(
                "fake_cloud instance zone {:?} is not one of the fake zones {:?}",
                i.zone, self.zones
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Attaching,
    Attached,
    Detaching,
}

#[derive(Debug, Clone)]
struct Att {
    instance: String,
    device: String,
    phase: Phase,
    ready_at: Instant,
    stuck: bool,
}

#[derive(Debug, Clone)]
struct Vol {
    id: String,
    zone: String,
    size_gib: u64,
    volume_type: String,
    iops: Option<u32>,
    multi_attach: bool,
    ready_at: Instant,
    attachments: Vec<Att>,
    tags: BTreeMap<String, String>,
    snapshot_id: Option<String>,
    data: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Snap {
    id: String,
    volume_id: String,
    size_gib: u64,
    ready_at: Instant,
    start_time: u64,
    tags: BTreeMap<String, String>,
    data: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug, Clone)]
struct Inst {
    id: String,
    zone: String,
    state: String,
    private_dns: Option<String>,
    private_ip: Option<String>,
    root_volume: String,
}

/// A call that will hang: operation name, optionally only for one volume, how many more times.
#[derive(Debug, Clone)]
struct Hang {
    op: String,
    volume: Option<String>,
    times: usize,
}

#[derive(Debug, Default)]
struct State {
    volumes: BTreeMap<String, Vol>,
    snapshots: BTreeMap<String, Snap>,
    instances: BTreeMap<String, Inst>,
    /// ClientToken → (parameters, volume id).
    tokens: HashMap<String, (String, String)>,
    /// NextToken → (query, offset).
    pages: HashMap<String, (String, usize)>,
    stuck: BTreeSet<String>,
    /// Volumes with an attachment in `attaching` or `detaching`.
    moving: BTreeSet<String>,
    hangs: Vec<Hang>,
    calls: BTreeMap<String, usize>,
    device_clashes: usize,
    in_use_refusals: usize,
}

/// The fake cloud. Cheap to share (`Arc<FakeCloud>`); all state sits behind one mutex that
/// is never held across an `.await`.
#[derive(Debug)]
pub struct FakeCloud {
    cfg: Mutex<FakeCloudConfig>,
    state: Mutex<State>,
    release: tokio::sync::watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A test that panicked while holding the lock leaves consistent state (every mutation
    // is a few assignments), so carry on rather than poison every later call.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn err(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(code, message)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Size limits (GiB) and IOPS rules per volume type.
struct TypeRules {
    min_gib: u64,
    max_gib: u64,
    /// `None` = IOPS not accepted; `Some((min, max, required))`.
    iops: Option<(u32, u32, bool)>,
    multi_attach: bool,
}

fn type_rules(t: &str) -> Option<TypeRules> {
    let r = |min_gib, max_gib, iops, multi_attach| TypeRules {
        min_gib,
        max_gib,
        iops,
        multi_attach,
    };
    Some(match t {
        "gp3" => r(1, 16_384, Some((3_000, 16_000, false)), false),
        "gp2" => r(1, 16_384, None, false),
        "io1" => r(4, 16_384, Some((100, 64_000, true)), true),
        "io2" => r(4, 65_536, Some((100, 256_000, true)), true),
        "st1" | "sc1" => r(125, 16_384, None, false),
        "standard" => r(1, 1_024, None, false),
        _ => return None,
    })
}

/// Whether EC2 would accept `device` as a Linux EBS device name.
fn valid_device(device: &str) -> bool {
    let Some(rest) = device
        .strip_prefix("/dev/xvd")
        .or_else(|| device.strip_prefix("/dev/sd"))
    else {
        return false;
    };
    let b = rest.as_bytes();
    let letters = |s: &[u8]| s.iter().all(u8::is_ascii_lowercase);
    match b.len() {
        1 | 2 => letters(b),
        _ => false,
    }
}

fn page_size_range(op: &str) -> (u32, u32) {
    match op {
        "DescribeVolumes" => (5, 500),
        _ => (5, 1000),
    }
}

impl FakeCloud {
    pub fn new(cfg: FakeCloudConfig) -> FakeCloud {
        let (release, _) = tokio::sync::watch::channel(0);
        let cloud = FakeCloud {
            cfg: Mutex::new(cfg.clone()),
            state: Mutex::new(State::default()),
            release,
        };
        for i in &cfg.instances {
            cloud.add_instance(&i.zone, i.hostname.as_deref(), i.ip.as_deref());
        }
        cloud
    }

    pub fn config(&self) -> FakeCloudConfig {
        lock(&self.cfg).clone()
    }

    /// Replace the behaviour (latency, delays, stuck flags) for calls from now on.
    pub fn set_config(&self, cfg: FakeCloudConfig) {
        *lock(&self.cfg) = cfg;
    }

    /// Ids count up across every fake cloud of the process, so no two clouds (tests) ever
    /// share an id and an id is never reused.
    fn next_id(_st: &mut State, prefix: &str) -> String {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        format!("{prefix}-{n:017x}")
    }

    /// Launch an instance (running, with a root volume on `/dev/xvda`); returns its id.
    pub fn add_instance(&self, zone: &str, hostname: Option<&str>, ip: Option<&str>) -> String {
        let mut st = lock(&self.state);
        let id = Self::next_id(&mut st, "i");
        let root = Self::next_id(&mut st, "vol");
        let now = Instant::now();
        st.volumes.insert(
            root.clone(),
            Vol {
                id: root.clone(),
                zone: zone.to_string(),
                size_gib: 8,
                volume_type: "gp3".into(),
                iops: Some(3000),
                multi_attach: false,
                ready_at: now,
                attachments: vec![Att {
                    instance: id.clone(),
                    device: ROOT_DEVICE.into(),
                    phase: Phase::Attached,
                    ready_at: now,
                    stuck: false,
                }],
                tags: BTreeMap::new(),
                snapshot_id: None,
                data: BTreeMap::new(),
            },
        );
        st.instances.insert(
            id.clone(),
            Inst {
                id: id.clone(),
                zone: zone.to_string(),
                state: "running".into(),
                private_dns: hostname.map(str::to_string),
                private_ip: ip.map(str::to_string),
                root_volume: root,
            },
        );
        id
    }

    /// Ids of all instances, in launch order.
    pub fn instance_ids(&self) -> Vec<String> {
        lock(&self.state).instances.keys().cloned().collect()
    }

    /// Terminate an instance: its non-root volumes are detached at once (as EC2 does).
    pub fn terminate_instance(&self, id: &str) {
        let mut st = lock(&self.state);
        let root = match st.instances.get_mut(id) {
            Some(i) => {
                i.state = "terminated".into();
                i.root_volume.clone()
            }
            None => return,
        };
        st.volumes.remove(&root);
        for v in st.volumes.values_mut() {
            v.attachments.retain(|a| a.instance != id);
        }
    }

    /// Make attachments of `volume_id` stick in `attaching`/`detaching` until `unstick`.
    pub fn stick(&self, volume_id: &str) {
        lock(&self.state).stuck.insert(volume_id.to_string());
    }

    /// Release stuck attachments of a volume; they complete after their normal delay.
    pub fn unstick(&self, volume_id: &str) {
        let mut st = lock(&self.state);
        st.stuck.remove(volume_id);
        if let Some(v) = st.volumes.get_mut(volume_id) {
            for a in &mut v.attachments {
                a.stuck = false;
            }
        }
    }

    /// The next `times` calls of `op` (e.g. `AttachVolume`), for `volume` or any, hang until
    /// `release_hangs`.
    pub fn hang(&self, op: &str, volume: Option<&str>, times: usize) {
        lock(&self.state).hangs.push(Hang {
            op: op.to_string(),
            volume: volume.map(str::to_string),
            times,
        });
    }

    /// Let every hung call go on.
    pub fn release_hangs(&self) {
        lock(&self.state).hangs.clear();
        self.release.send_modify(|g| *g += 1);
    }

    /// How many times `op` was called (hung calls included).
    pub fn calls(&self, op: &str) -> usize {
        lock(&self.state).calls.get(op).copied().unwrap_or(0)
    }

    /// AttachVolume calls refused because the device name was taken.
    pub fn device_clashes(&self) -> usize {
        lock(&self.state).device_clashes
    }

    /// AttachVolume calls refused with `VolumeInUse`.
    pub fn in_use_refusals(&self) -> usize {
        lock(&self.state).in_use_refusals
    }

    /// Whether a volume (deleted or not yet) exists in this cloud.
    pub fn has_volume(&self, volume_id: &str) -> bool {
        lock(&self.state).volumes.contains_key(volume_id)
    }

    /// Write a "file" into a volume's data (what a mounted file system would hold).
    pub fn write_file(&self, volume_id: &str, rel: &str, data: &[u8]) -> bool {
        match lock(&self.state).volumes.get_mut(volume_id) {
            Some(v) => {
                v.data.insert(rel.to_string(), data.to_vec());
                true
            }
            None => false,
        }
    }

    pub fn read_file(&self, volume_id: &str, rel: &str) -> Option<Vec<u8>> {
        lock(&self.state)
            .volumes
            .get(volume_id)
            .and_then(|v| v.data.get(rel).cloned())
    }

    /// Every attachment of a volume as EC2 reports it (any state).
    pub fn attachments(&self, volume_id: &str) -> Vec<Ec2Attachment> {
        let now = Instant::now();
        let mut st = lock(&self.state);
        Self::settle(&mut st, now);
        st.volumes
            .get(volume_id)
            .map(Self::attachments_of)
            .unwrap_or_default()
    }

    /// Count the call, hang if asked to, then wait the configured latency.
    async fn enter(&self, op: &str, volume: Option<&str>) {
        let mut release = self.release.subscribe();
        let hang = {
            let mut st = lock(&self.state);
            *st.calls.entry(op.to_string()).or_default() += 1;
            let hit = st.hangs.iter_mut().find(|h| {
                h.times > 0 && h.op == op && (h.volume.is_none() || h.volume.as_deref() == volume)
            });
            match hit {
                Some(h) => {
                    h.times -= 1;
                    true
                }
                None => false,
            }
        };
        if hang {
            // Only `release_hangs` (or dropping the caller, e.g. on its timeout) ends it.
            let _ = release.changed().await;
        }
        let latency = lock(&self.cfg).latency_ms;
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
    }

    /// Move attachments whose delay has passed to their next state (only volumes with an
    /// attachment in motion are looked at).
    fn settle(st: &mut State, now: Instant) {
        let moving = std::mem::take(&mut st.moving);
        for id in moving {
            let Some(v) = st.volumes.get_mut(&id) else {
                continue;
            };
            v.attachments.retain_mut(|a| {
                if a.stuck || now < a.ready_at {
                    return true;
                }
                match a.phase {
                    Phase::Attaching => {
                        a.phase = Phase::Attached;
                        true
                    }
                    Phase::Attached => true,
                    Phase::Detaching => false,
                }
            });
            if v.attachments.iter().any(|a| a.phase != Phase::Attached) {
                st.moving.insert(id);
            }
        }
    }

    fn attachments_of(v: &Vol) -> Vec<Ec2Attachment> {
        v.attachments
            .iter()
            .map(|a| Ec2Attachment {
                volume_id: v.id.clone(),
                instance_id: a.instance.clone(),
                device: a.device.clone(),
                state: match a.phase {
                    Phase::Attaching => AttachState::Attaching,
                    Phase::Attached => AttachState::Attached,
                    Phase::Detaching => AttachState::Detaching,
                },
            })
            .collect()
    }

    fn view(v: &Vol, now: Instant) -> Ec2Volume {
        let state = if now < v.ready_at {
            VolumeState::Creating
        } else if v.attachments.is_empty() {
            VolumeState::Available
        } else {
            VolumeState::InUse
        };
        Ec2Volume {
            id: v.id.clone(),
            zone: v.zone.clone(),
            size_gib: v.size_gib,
            volume_type: v.volume_type.clone(),
            iops: v.iops,
            multi_attach: v.multi_attach,
            state,
            attachments: Self::attachments_of(v),
            tags: v.tags.clone(),
            snapshot_id: v.snapshot_id.clone(),
        }
    }

    fn snap_view(s: &Snap, now: Instant) -> Ec2Snapshot {
        Ec2Snapshot {
            id: s.id.clone(),
            volume_id: s.volume_id.clone(),
            size_gib: s.size_gib,
            state: if now < s.ready_at {
                "pending"
            } else {
                "completed"
            }
            .into(),
            start_time: s.start_time,
            tags: s.tags.clone(),
        }
    }

    fn instance_view(st: &State, i: &Inst) -> Ec2Instance {
        let mut block_devices: Vec<Ec2BlockDevice> = st
            .volumes
            .values()
            .flat_map(|v| {
                v.attachments
                    .iter()
                    .filter(|a| a.instance == i.id)
                    .map(|a| Ec2BlockDevice {
                        device: a.device.clone(),
                        volume_id: v.id.clone(),
                    })
            })
            .collect();
        block_devices.sort_by(|a, b| a.device.cmp(&b.device));
        Ec2Instance {
            id: i.id.clone(),
            zone: i.zone.clone(),
            state: i.state.clone(),
            private_dns: i.private_dns.clone(),
            private_ip: i.private_ip.clone(),
            public_dns: None,
            public_ip: None,
            block_devices,
            tags: BTreeMap::new(),
        }
    }

    /// Paging common to every Describe*: ids or filters select, `MaxResults` cuts, `NextToken`
    /// resumes.
    fn page<T: Clone>(
        st: &mut State,
        op: &str,
        q: &Query,
        all: Vec<T>,
        id_of: impl Fn(&T) -> &str,
        matches: impl Fn(&T, &Filter) -> ApiResult<bool>,
        (missing, kind): (&str, &str),
    ) -> ApiResult<Page<T>> {
        if !q.ids.is_empty() && (q.max_results.is_some() || q.next_token.is_some()) {
            return Err(err(
                "InvalidParameterCombination",
                format!("{op}: MaxResults and NextToken cannot be used with ids"),
            ));
        }
        for id in &q.ids {
            if !all.iter().any(|x| id_of(x) == id) {
                return Err(err(missing, format!("The {kind} '{id}' does not exist.")));
            }
        }
        let mut selected = Vec::new();
        'items: for x in all {
            if !q.ids.is_empty() && !q.ids.iter().any(|id| id == id_of(&x)) {
                continue;
            }
            for f in &q.filters {
                if !matches(&x, f)? {
                    continue 'items;
                }
            }
            selected.push(x);
        }
        let fingerprint = format!("{op} {:?} {:?}", q.filters, q.max_results);
        let start = match &q.next_token {
            None => 0,
            Some(t) => match st.pages.get(t) {
                Some((fp, off)) if *fp == fingerprint => *off,
                _ => {
                    return Err(err(
                        "InvalidParameterValue",
                        format!("{op}: the pagination token {t:?} is not valid"),
                    ))
                }
            },
        };
        let Some(max) = q.max_results else {
            return Ok(Page {
                items: selected,
                next_token: None,
            });
        };
        let (lo, hi) = page_size_range(op);
        if !(lo..=hi).contains(&max) {
            return Err(err(
                "InvalidParameterValue",
                format!("{op}: MaxResults {max} must be between {lo} and {hi}"),
            ));
        }
        let end = (start + max as usize).min(selected.len());
        let items = selected.get(start..end).unwrap_or_default().to_vec();
        let next_token = (end < selected.len()).then(|| {
            let t = Self::next_id(st, "tok");
            st.pages.insert(t.clone(), (fingerprint, end));
            t
        });
        Ok(Page { items, next_token })
    }
}

fn tag_filter(tags: &BTreeMap<String, String>, f: &Filter) -> Option<bool> {
    if let Some(key) = f.name.strip_prefix("tag:") {
        return Some(tags.get(key).is_some_and(|v| f.values.contains(v)));
    }
    if f.name == "tag-key" {
        return Some(f.values.iter().any(|k| tags.contains_key(k)));
    }
    None
}

fn bad_filter(f: &Filter) -> ApiError {
    err(
        "InvalidParameterValue",
        format!("The filter '{}' is invalid", f.name),
    )
}

fn has(f: &Filter, v: &str) -> bool {
    f.values.iter().any(|x| x == v)
}

fn check_tags(tags: &BTreeMap<String, String>) -> ApiResult<()> {
    if tags.len() > 50 {
        return Err(err(
            "TagLimitExceeded",
            "a resource can have at most 50 tags",
        ));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 128 || v.len() > 256 || k.starts_with("aws:") {
            return Err(err(
                "InvalidParameterValue",
                format!(
                    "tag {k:?}={v:?} is not a valid tag (key 1-128, value 0-256, no aws: prefix)"
                ),
            ));
        }
    }
    Ok(())
}

#[async_trait]
impl Ec2Api for FakeCloud {
    async fn describe_instances(&self, q: &Query) -> ApiResult<Page<Ec2Instance>> {
        self.enter("DescribeInstances", None).await;
        let now = Instant::now();
        let mut st = lock(&self.state);
        Self::settle(&mut st, now);
        // Only the instances asked for (by id) are rendered: a burst of calls over a large
        // cloud must not cost the whole cloud each time.
        let all: Vec<Ec2Instance> = st
            .instances
            .values()
            .filter(|i| q.ids.is_empty() || q.ids.contains(&i.id))
            .map(|i| Self::instance_view(&st, i))
            .collect();
        Self::page(
            &mut st,
            "DescribeInstances",
            q,
            all,
            |i| &i.id,
            |i, f| {
                if let Some(m) = tag_filter(&i.tags, f) {
                    return Ok(m);
                }
                let opt = |o: &Option<String>| o.as_deref().is_some_and(|v| has(f, v));
                Ok(match f.name.as_str() {
                    "instance-id" => has(f, &i.id),
                    "availability-zone" => has(f, &i.zone),
                    "instance-state-name" => has(f, &i.state),
                    "private-dns-name" => opt(&i.private_dns),
                    "private-ip-address" => opt(&i.private_ip),
                    "dns-name" => opt(&i.public_dns),
                    "ip-address" => opt(&i.public_ip),
                    _ => return Err(bad_filter(f)),
                })
            },
            ("InvalidInstanceID.NotFound", "instance ID"),
        )
    }

    async fn create_volume(&self, input: &CreateVolumeInput) -> ApiResult<Ec2Volume> {
        self.enter("CreateVolume", None).await;
        let cfg = self.config();
        let now = Instant::now();
        let mut st = lock(&self.state);
        let params = {
            let mut p = input.clone();
            p.client_token = None;
            format!("{p:?}")
        };
        if let Some(token) = &input.client_token {
            if token.is_empty() || token.len() > 64 {
                return Err(err(
                    "InvalidParameterValue",
                    "ClientToken must be 1-64 characters",
                ));
            }
            if let Some((p, id)) = st.tokens.get(token) {
                if *p != params {
                    return Err(err(
                        "IdempotentParameterMismatch",
                        format!("ClientToken {token:?} was used with other parameters"),
                    ));
                }
                // The original answer, as the volume is now (deleted if it is gone).
                return Ok(match st.volumes.get(id) {
                    Some(v) => Self::view(v, now),
                    None => Ec2Volume {
                        id: id.clone(),
                        zone: input.zone.clone(),
                        size_gib: input.size_gib.unwrap_or(0),
                        volume_type: input.volume_type.clone(),
                        iops: input.iops,
                        multi_attach: input.multi_attach,
                        state: VolumeState::Deleted,
                        attachments: Vec::new(),
                        tags: input.tags.clone(),
                        snapshot_id: input.snapshot_id.clone(),
                    },
                });
            }
        }
        if !cfg.zones.contains(&input.zone) {
            return Err(err(
                "InvalidParameterValue",
                format!("Invalid availability zone: [{}]", input.zone),
            ));
        }
        let rules = type_rules(&input.volume_type).ok_or_else(|| {
            err(
                "InvalidParameterValue",
                format!(
                    "The parameter volumeType must be one of gp2, gp3, io1, io2, st1, sc1, standard (got {:?})",
                    input.volume_type
                ),
            )
        })?;
        let (snap_size, snap_data) = match &input.snapshot_id {
            Some(sid) => {
                let s = st.snapshots.get(sid).ok_or_else(|| {
                    err(
                        "InvalidSnapshot.NotFound",
                        format!("The snapshot '{sid}' does not exist."),
                    )
                })?;
                (Some(s.size_gib), s.data.clone())
            }
            None => (None, BTreeMap::new()),
        };
        let size = match (input.size_gib, snap_size) {
            (Some(s), Some(min)) if s < min => {
                return Err(err(
                    "InvalidParameterValue",
                    format!(
                        "Volume of {s}GiB is too small; minimum is {min}GiB (the snapshot's size)"
                    ),
                ))
            }
            (Some(s), _) => s,
            (None, Some(s)) => s,
            (None, None) => {
                return Err(err(
                    "MissingParameter",
                    "The request must contain the parameter size or snapshotId",
                ))
            }
        };
        if size < rules.min_gib || size > rules.max_gib {
            return Err(err(
                "InvalidParameterValue",
                format!(
                    "Volume of {size}GiB is out of range for {}: {}-{} GiB",
                    input.volume_type, rules.min_gib, rules.max_gib
                ),
            ));
        }
        match (rules.iops, input.iops) {
            (None, Some(_)) => {
                return Err(err(
                    "InvalidParameterCombination",
                    format!(
                        "The parameter iops is not supported for {} volumes",
                        input.volume_type
                    ),
                ))
            }
            (Some((_, _, true)), None) => {
                return Err(err(
                    "MissingParameter",
                    format!(
                        "The request must contain the parameter iops for {} volumes",
                        input.volume_type
                    ),
                ))
            }
            (Some((lo, hi, _)), Some(i)) if i < lo || i > hi => {
                return Err(err(
                    "InvalidParameterValue",
                    format!(
                        "iops {i} is out of range for {}: {lo}-{hi}",
                        input.volume_type
                    ),
                ))
            }
            _ => {}
        }
        if input.multi_attach && !rules.multi_attach {
            return Err(err(
                "InvalidParameterCombination",
                format!(
                    "Multi-Attach is supported only on io1 and io2 volumes, not {}",
                    input.volume_type
                ),
            ));
        }
        check_tags(&input.tags)?;
        let id = Self::next_id(&mut st, "vol");
        let v = Vol {
            id: id.clone(),
            zone: input.zone.clone(),
            size_gib: size,
            volume_type: input.volume_type.clone(),
            iops: input
                .iops
                .or_else(|| (input.volume_type == "gp3").then_some(3000)),
            multi_attach: input.multi_attach,
            ready_at: now + Duration::from_millis(cfg.create_delay_ms),
            attachments: Vec::new(),
            tags: input.tags.clone(),
            snapshot_id: input.snapshot_id.clone(),
            data: snap_data,
        };
        let view = Self::view(&v, now);
        st.volumes.insert(id.clone(), v);
        if let Some(token) = &input.client_token {
            st.tokens.insert(token.clone(), (params, id));
        }
        Ok(view)
    }

    async fn describe_volumes(&self, q: &Query) -> ApiResult<Page<Ec2Volume>> {
        let one = (q.ids.len() == 1).then(|| q.ids[0].as_str());
        self.enter("DescribeVolumes", one).await;
        let now = Instant::now();
        let mut st = lock(&self.state);
        Self::settle(&mut st, now);
        let all: Vec<Ec2Volume> = if q.ids.is_empty() {
            st.volumes.values().map(|v| Self::view(v, now)).collect()
        } else {
            q.ids
                .iter()
                .filter_map(|id| st.volumes.get(id))
                .map(|v| Self::view(v, now))
                .collect()
        };
        Self::page(
            &mut st,
            "DescribeVolumes",
            q,
            all,
            |v| &v.id,
            |v, f| {
                if let Some(m) = tag_filter(&v.tags, f) {
                    return Ok(m);
                }
                Ok(match f.name.as_str() {
                    "volume-id" => has(f, &v.id),
                    "availability-zone" => has(f, &v.zone),
                    "status" => has(f, v.state.as_str()),
                    "volume-type" => has(f, &v.volume_type),
                    "snapshot-id" => v.snapshot_id.as_deref().is_some_and(|s| has(f, s)),
                    "attachment.instance-id" => {
                        v.attachments.iter().any(|a| has(f, &a.instance_id))
                    }
                    _ => return Err(bad_filter(f)),
                })
            },
            ("InvalidVolume.NotFound", "volume"),
        )
    }

    async fn delete_volume(&self, volume_id: &str) -> ApiResult<()> {
        self.enter("DeleteVolume", Some(volume_id)).await;
        let now = Instant::now();
        let mut st = lock(&self.state);
        Self::settle(&mut st, now);
        let v = st.volumes.get(volume_id).ok_or_else(|| {
            err(
                "InvalidVolume.NotFound",
                format!("The volume '{volume_id}' does not exist."),
            )
        })?;
        if !v.attachments.is_empty() {
            return Err(err(
                "VolumeInUse",
                format!(
                    "Volume {volume_id} is currently attached to {}",
                    v.attachments[0].instance
                ),
            ));
        }
        st.volumes.remove(volume_id);
        Ok(())
    }

    async fn attach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        device: &str,
    ) -> ApiResult<Ec2Attachment> {
        self.enter("AttachVolume", Some(volume_id)).await;
        let cfg = self.config();
        let now = Instant::now();
        let mut st = lock(&self.state);
        Self::settle(&mut st, now);
        let inst = st.instances.get(instance_id).cloned().ok_or_else(|| {
            err(
                "InvalidInstanceID.NotFound",
                format!("The instance ID '{instance_id}' does not exist"),
            )
        })?;
        let v = st.volumes.get(volume_id).ok_or_else(|| {
            err(
                "InvalidVolume.NotFound",
                format!("The volume '{volume_id}' does not exist."),
            )
        })?;
        if inst.state != "running" && inst.state != "stopped" {
            return Err(err(
                "IncorrectInstanceState",
                format!(
                    "The instance '{instance_id}' is not 'running' or 'stopped' (it is {})",
                    inst.state
                ),
            ));
        }
        if now < v.ready_at {
            return Err(err(
                "IncorrectState",
                format!("The volume '{volume_id}' is in the 'creating' state."),
            ));
        }
        if v.attachments.iter().any(|a| a.instance == instance_id)
            || (!v.multi_attach && !v.attachments.is_empty())
        {
            st.in_use_refusals += 1;
            return Err(err(
                "VolumeInUse",
                format!("{volume_id} is already attached to an instance"),
            ));
        }
        if v.multi_attach && v.attachments.len() >= MULTI_ATTACH_MAX {
            return Err(err(
                "AttachmentLimitExceeded",
                format!("{volume_id} is attached to {MULTI_ATTACH_MAX} instances already"),
            ));
        }
        if v.zone != inst.zone {
            return Err(err(
                "InvalidVolume.ZoneMismatch",
                format!(
                    "The volume '{volume_id}' is not in the same availability zone as instance '{instance_id}'"
                ),
            ));
        }
        if !valid_device(device) {
            return Err(err(
                "InvalidParameterValue",
                format!("Value ({device}) for parameter device is invalid. {device} is not a valid EBS device name."),
            ));
        }
        let on_instance: Vec<&Att> = st
            .volumes
            .values()
            .flat_map(|v| v.attachments.iter())
            .filter(|a| a.instance == instance_id)
            .collect();
        if on_instance.iter().any(|a| a.device == device) {
            st.device_clashes += 1;
            return Err(err(
                "InvalidParameterValue",
                format!("Invalid value '{device}' for unixDevice. Attachment point {device} is already in use"),
            ));
        }
        if on_instance.len() >= cfg.max_attachments {
            return Err(err(
                "AttachmentLimitExceeded",
                format!(
                    "instance {instance_id} has {} attachments, the most it can hold",
                    on_instance.len()
                ),
            ));
        }
        let stuck = cfg.stuck_attach || st.stuck.contains(volume_id);
        let att = Att {
            instance: instance_id.to_string(),
            device: device.to_string(),
            phase: Phase::Attaching,
            ready_at: now + Duration::from_millis(cfg.attach_delay_ms),
            stuck,
        };
        if let Some(v) = st.volumes.get_mut(volume_id) {
            v.attachments.push(att);
        }
        st.moving.insert(volume_id.to_string());
        Ok(Ec2Attachment {
            volume_id: volume_id.to_string(),
            instance_id: instance_id.to_string(),
            device: device.to_string(),
            state: AttachState::Attaching,
        })
    }

    async fn detach_volume(
        &self,
        volume_id: &str,
        instance_id: &str,
        force: bool,
    ) -> ApiResult<Ec2Attachment> {
        self.enter("DetachVolume", Some(volume_id)).await;
        let cfg = self.config();
        let now = Instant::now();
        let mut st = lock(&self.state);
        Self::settle(&mut st, now);
        let stuck = cfg.stuck_detach || st.stuck.contains(volume_id);
        let v = st.volumes.get_mut(volume_id).ok_or_else(|| {
            err(
                "InvalidVolume.NotFound",
                format!("The volume '{volume_id}' does not exist."),
            )
        })?;
        if v.attachments.is_empty() {
            return Err(err(
                "IncorrectState",
                format!("Volume '{volume_id}' is in the 'available' state."),
            ));
        }
        let a = v
            .attachments
            .iter_mut()
            .find(|a| a.instance == instance_id)
            .ok_or_else(|| {
                err(
                    "InvalidAttachment.NotFound",
                    format!("The volume {volume_id} is not attached to instance {instance_id}"),
                )
            })?;
        if a.phase == Phase::Detaching && !force {
            return Err(err(
                "IncorrectState",
                format!("Volume '{volume_id}' is already detaching from {instance_id}"),
            ));
        }
        a.phase = Phase::Detaching;
        a.ready_at = now + Duration::from_millis(cfg.detach_delay_ms);
        a.stuck = stuck && !force;
        let device = a.device.clone();
        st.moving.insert(volume_id.to_string());
        Ok(Ec2Attachment {
            volume_id: volume_id.to_string(),
            instance_id: instance_id.to_string(),
            device,
            state: AttachState::Detaching,
        })
    }

    async fn modify_volume(&self, volume_id: &str, size_gib: u64) -> ApiResult<()> {
        self.enter("ModifyVolume", Some(volume_id)).await;
        let now = Instant::now();
        let mut st = lock(&self.state);
        let v = st.volumes.get_mut(volume_id).ok_or_else(|| {
            err(
                "InvalidVolume.NotFound",
                format!("The volume '{volume_id}' does not exist."),
            )
        })?;
        if now < v.ready_at {
            return Err(err(
                "IncorrectState",
                format!("The volume '{volume_id}' is in the 'creating' state."),
            ));
        }
        let max = type_rules(&v.volume_type).map_or(16_384, |r| r.max_gib);
        if size_gib < v.size_gib {
            return Err(err(
                "InvalidParameterValue",
                format!(
                    "New size {size_gib}GiB cannot be smaller than the existing size {}GiB",
                    v.size_gib
                ),
            ));
        }
        if size_gib == v.size_gib {
            return Err(err(
                "InvalidParameterValue",
                "The volume modification request has no changes",
            ));
        }
        if size_gib > max {
            return Err(err(
                "InvalidParameterValue",
                format!(
                    "Volume of {size_gib}GiB is too large for {}; maximum is {max}GiB",
                    v.volume_type
                ),
            ));
        }
        // The new size shows as soon as the modification is `optimizing`, at once here.
        v.size_gib = size_gib;
        Ok(())
    }

    async fn create_snapshot(
        &self,
        volume_id: &str,
        tags: &BTreeMap<String, String>,
    ) -> ApiResult<Ec2Snapshot> {
        self.enter("CreateSnapshot", Some(volume_id)).await;
        let cfg = self.config();
        let now = Instant::now();
        let mut st = lock(&self.state);
        check_tags(tags)?;
        let v = st.volumes.get(volume_id).cloned().ok_or_else(|| {
            err(
                "InvalidVolume.NotFound",
                format!("The volume '{volume_id}' does not exist."),
            )
        })?;
        let id = Self::next_id(&mut st, "snap");
        let s = Snap {
            id: id.clone(),
            volume_id: volume_id.to_string(),
            // Frozen at snapshot time (moto keeps a live reference to the volume instead).
            size_gib: v.size_gib,
            ready_at: now + Duration::from_millis(cfg.snapshot_delay_ms),
            start_time: unix_now(),
            tags: tags.clone(),
            data: v.data.clone(),
        };
        let view = Self::snap_view(&s, now);
        st.snapshots.insert(id, s);
        Ok(view)
    }

    async fn describe_snapshots(&self, q: &Query) -> ApiResult<Page<Ec2Snapshot>> {
        self.enter("DescribeSnapshots", None).await;
        let now = Instant::now();
        let mut st = lock(&self.state);
        let all: Vec<Ec2Snapshot> = st
            .snapshots
            .values()
            .map(|s| Self::snap_view(s, now))
            .collect();
        Self::page(
            &mut st,
            "DescribeSnapshots",
            q,
            all,
            |s| &s.id,
            |s, f| {
                if let Some(m) = tag_filter(&s.tags, f) {
                    return Ok(m);
                }
                Ok(match f.name.as_str() {
                    "snapshot-id" => has(f, &s.id),
                    "volume-id" => has(f, &s.volume_id),
                    "status" => has(f, &s.state),
                    _ => return Err(bad_filter(f)),
                })
            },
            ("InvalidSnapshot.NotFound", "snapshot"),
        )
    }

    async fn delete_snapshot(&self, snapshot_id: &str) -> ApiResult<()> {
        self.enter("DeleteSnapshot", None).await;
        let mut st = lock(&self.state);
        st.snapshots.remove(snapshot_id).map(|_| ()).ok_or_else(|| {
            err(
                "InvalidSnapshot.NotFound",
                format!("The snapshot '{snapshot_id}' does not exist."),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud() -> (FakeCloud, String, String) {
        let c = FakeCloud::new(FakeCloudConfig::default());
        let a = c.add_instance(
            "us-east-1a",
            Some("ip-10-0-0-1.ec2.internal"),
            Some("10.0.0.1"),
        );
        let b = c.add_instance("us-east-1b", None, None);
        (c, a, b)
    }

    fn vol(zone: &str, gib: u64) -> CreateVolumeInput {
        CreateVolumeInput {
            zone: zone.into(),
            size_gib: Some(gib),
            volume_type: "gp3".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn rules_moto_does_not_enforce() {
        let (c, a, b) = cloud();
        let v = c.create_volume(&vol("us-east-1a", 10)).await.unwrap();
        // Cross-zone attach.
        let e = c.attach_volume(&v.id, &b, "/dev/xvdf").await.unwrap_err();
        assert_eq!(e.code, "InvalidVolume.ZoneMismatch");
        // Nonsense and taken device names.
        let e = c.attach_volume(&v.id, &a, "foo").await.unwrap_err();
        assert_eq!(e.code, "InvalidParameterValue");
        let e = c.attach_volume(&v.id, &a, ROOT_DEVICE).await.unwrap_err();
        assert!(e.message.contains("already in use"), "{e}");
        c.attach_volume(&v.id, &a, "/dev/xvdf").await.unwrap();
        // Attached elsewhere (moto moves the attachment instead).
        let a2 = c.add_instance("us-east-1a", None, None);
        let e = c.attach_volume(&v.id, &a2, "/dev/xvdf").await.unwrap_err();
        assert_eq!(e.code, "VolumeInUse");
        assert_eq!(c.attachments(&v.id).len(), 1);
        // Shrinking, zero, huge, unknown zone.
        let e = c.modify_volume(&v.id, 5).await.unwrap_err();
        assert_eq!(e.code, "InvalidParameterValue");
        for bad in [
            vol("us-east-1a", 0),
            vol("us-east-1a", 99_999),
            vol("us-east-1z", 1),
        ] {
            assert_eq!(
                c.create_volume(&bad).await.unwrap_err().code,
                "InvalidParameterValue"
            );
        }
        // io2 without IOPS, multi-attach on gp3.
        let mut io2 = vol("us-east-1a", 10);
        io2.volume_type = "io2".into();
        assert_eq!(
            c.create_volume(&io2).await.unwrap_err().code,
            "MissingParameter"
        );
        let mut multi = vol("us-east-1a", 10);
        multi.multi_attach = true;
        assert_eq!(
            c.create_volume(&multi).await.unwrap_err().code,
            "InvalidParameterCombination"
        );
    }

    #[tokio::test]
    async fn client_token_is_idempotent_and_checks_parameters() {
        let (c, _, _) = cloud();
        let mut input = vol("us-east-1a", 10);
        input.client_token = Some("tok-1".into());
        let v1 = c.create_volume(&input).await.unwrap();
        let v2 = c.create_volume(&input).await.unwrap();
        assert_eq!(v1.id, v2.id);
        input.size_gib = Some(11);
        let e = c.create_volume(&input).await.unwrap_err();
        assert_eq!(e.code, "IdempotentParameterMismatch");
        // Two data volumes would show up here; the instances' roots are not in zone b... count.
        let q = Query::filters(vec![Filter::new("volume-id", v1.id.clone())]);
        assert_eq!(c.describe_volumes(&q).await.unwrap().items.len(), 1);
    }

    #[tokio::test]
    async fn pagination_covers_everything_once_and_refuses_bad_tokens() {
        let (c, _, _) = cloud();
        let mut made = BTreeSet::new();
        for _ in 0..12 {
            made.insert(c.create_volume(&vol("us-east-1b", 1)).await.unwrap().id);
        }
        let mut q = Query::filters(vec![Filter::new("availability-zone", "us-east-1b")]);
        q.max_results = Some(5);
        let mut seen = BTreeSet::new();
        let mut pages = 0;
        loop {
            let p = c.describe_volumes(&q).await.unwrap();
            assert!(p.items.len() <= 5);
            pages += 1;
            for v in p.items {
                assert!(seen.insert(v.id));
            }
            match p.next_token {
                Some(t) => q.next_token = Some(t),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        // The root volume of the instance in zone b is there too.
        assert_eq!(seen.len(), made.len() + 1);
        assert!(made.is_subset(&seen));
        q.next_token = Some("forged".into());
        assert_eq!(
            c.describe_volumes(&q).await.unwrap_err().code,
            "InvalidParameterValue"
        );
        q.max_results = Some(1000);
        q.next_token = None;
        assert_eq!(
            c.describe_volumes(&q).await.unwrap_err().code,
            "InvalidParameterValue"
        );
    }

    #[tokio::test]
    async fn attach_and_detach_take_time_and_can_stick() {
        let (c, a, _) = cloud();
        let mut cfg = c.config();
        cfg.attach_delay_ms = 50;
        cfg.detach_delay_ms = 50;
        c.set_config(cfg);
        let v = c.create_volume(&vol("us-east-1a", 1)).await.unwrap();
        c.attach_volume(&v.id, &a, "/dev/xvdf").await.unwrap();
        assert_eq!(c.attachments(&v.id)[0].state, AttachState::Attaching);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(c.attachments(&v.id)[0].state, AttachState::Attached);
        c.detach_volume(&v.id, &a, false).await.unwrap();
        assert_eq!(c.attachments(&v.id)[0].state, AttachState::Detaching);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(c.attachments(&v.id).is_empty());

        c.stick(&v.id);
        c.attach_volume(&v.id, &a, "/dev/xvdf").await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(c.attachments(&v.id)[0].state, AttachState::Attaching);
        c.unstick(&v.id);
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert_eq!(c.attachments(&v.id)[0].state, AttachState::Attached);
        // Detach from the wrong instance, then force.
        let e = c.detach_volume(&v.id, "i-0", false).await.unwrap_err();
        assert_eq!(e.code, "InvalidAttachment.NotFound");
        c.detach_volume(&v.id, &a, true).await.unwrap();
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(c.attachments(&v.id).is_empty());
    }

    #[tokio::test]
    async fn snapshots_freeze_size_and_data() {
        let (c, _, _) = cloud();
        let v = c.create_volume(&vol("us-east-1a", 10)).await.unwrap();
        c.write_file(&v.id, "f", b"one");
        let s = c.create_snapshot(&v.id, &BTreeMap::new()).await.unwrap();
        c.modify_volume(&v.id, 30).await.unwrap();
        c.write_file(&v.id, "f", b"two");
        let q = Query::ids([s.id.clone()]);
        assert_eq!(
            c.describe_snapshots(&q).await.unwrap().items[0].size_gib,
            10
        );
        let mut from = vol("us-east-1b", 5);
        from.snapshot_id = Some(s.id.clone());
        assert_eq!(
            c.create_volume(&from).await.unwrap_err().code,
            "InvalidParameterValue"
        );
        from.size_gib = None;
        let r = c.create_volume(&from).await.unwrap();
        assert_eq!(r.size_gib, 10);
        assert_eq!(c.read_file(&r.id, "f").unwrap(), b"one");
    }

    #[tokio::test]
    async fn hung_calls_wait_for_release_without_holding_others() {
        let (c, _, _) = cloud();
        let c = std::sync::Arc::new(c);
        c.hang("CreateVolume", None, 1);
        let hung = {
            let c = c.clone();
            tokio::spawn(async move { c.create_volume(&vol("us-east-1a", 1)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Other calls go through while the first hangs.
        c.create_volume(&vol("us-east-1a", 1)).await.unwrap();
        assert!(!hung.is_finished());
        c.release_hangs();
        hung.await.unwrap().unwrap();
        assert_eq!(c.calls("CreateVolume"), 2);
    }
}
