//! Creating EBS volumes: a request checked against EBS's rules before any call (the plan),
//! the idempotency token, CreateVolume under the pool's quota, the wait for `available`, and
//! `copy` through a transient snapshot.

use std::collections::BTreeMap;

use tokio::time::Instant;

use super::model::{CreateVolumeInput, Ec2Snapshot, Ec2Volume, Filter, VolumeState};
use super::{
    access_tag, api_err, CreateRequest, DriverVolume, EbsDriver, Error, Result, GIB, TAG_ACCESS,
    TAG_COPY, TAG_FIELD, TAG_OWNER, TAG_VOLUME, VOLUME_TYPES,
};

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

impl EbsDriver {
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
    pub(super) async fn create_volume(
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

    /// EBS has no volume copy: a transient snapshot (tagged with the copy's name, so a retry
    /// reuses it), a volume from it, then the snapshot goes.
    pub(super) async fn copy_volume(
        &self,
        volume_id: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume> {
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
                self.remove_snapshot(&s.id).await?;
            }
        }
        Ok(v)
    }
}
