//! Attaching and detaching EBS volumes: the instance and its zone, device names and the
//! reservations that keep two attaches to one instance off one name, AttachVolume and
//! DetachVolume, and the waits for `attached` and `detached`.

use tokio::time::Instant;

use super::model::{self, AttachState, Ec2Instance, Ec2Volume, Filter, Query};
use super::{
    api_err, parse_access, valid_id, AttachOptions, DriverAttachment, EbsDriver, Error, Result,
    TAG_ACCESS,
};

/// A device name this process gave to an attach and may not yet see in DescribeInstances.
#[derive(Debug, Clone)]
pub(super) struct Reservation {
    /// When the AttachVolume call ended (`None` = still in flight). A DescribeInstances
    /// started after that shows the name (or its absence) by itself.
    settled_at: Option<Instant>,
}

/// Device names handed out, in order: `/dev/xvdf`…`/dev/xvdz`, then `/dev/xvdba`…`/dev/xvdbz`
/// and `/dev/xvdca`…`/dev/xvdcz` (the names EC2 recommends for data volumes on Linux).
pub(super) fn device_names() -> impl Iterator<Item = String> {
    let single = (b'f'..=b'z').map(|c| format!("/dev/xvd{}", c as char));
    let double = [b'b', b'c']
        .into_iter()
        .flat_map(|p| (b'a'..=b'z').map(move |c| format!("/dev/xvd{}{}", p as char, c as char)));
    single.chain(double)
}

/// The same name as seen by a Linux guest: `/dev/sdf` and `/dev/xvdf` are one slot.
pub(super) fn device_slot(device: &str) -> &str {
    device
        .strip_prefix("/dev/xvd")
        .or_else(|| device.strip_prefix("/dev/sd"))
        .unwrap_or(device)
}

impl EbsDriver {
    /// The instance, described (its zone cached for later).
    pub(super) async fn instance(&self, instance_id: &str) -> Result<Ec2Instance> {
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

    pub(super) async fn attach_inner(
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

    /// The instance id of an agent known by hostname or IP address (private or public).
    pub(super) async fn instance_for_host(&self, host: &str) -> Result<Option<String>> {
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

    pub(super) async fn detach_volume(&self, id: &str, instance_id: &str) -> Result<()> {
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

    pub(super) async fn force_detach_all(&self, id: &str) -> Result<()> {
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
}
