//! Attaching and detaching: one instance, a pre-empting (force) attach, a force-detach of
//! every holder, and the fence's release of the attachments a lost node held.

use std::collections::BTreeSet;

use super::idents::{check_device_name, check_instance_id};
use super::{now_secs, Error, Manager, Result};
use crate::driver::AttachOptions;
use crate::failpoints::crash_point;
use crate::store::{Attachment, IntentOp, Op, Volume, VolumeStatus};

impl Manager {
    /// Attach a volume to an instance. Attaching to the instance that holds it already
    /// returns that attachment; a single-writer volume held elsewhere is a conflict.
    pub async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        device_hint: Option<String>,
    ) -> Result<Volume> {
        let _g = self.begin_op();
        let res = self.attach_inner(id, instance_id, device_hint, false).await;
        self.outcome("attach", &res);
        res
    }

    /// Attach a volume to an instance, first detaching it from every other instance (the
    /// libStorage `force` attach), all under the volume's lock: no other attach can slip in
    /// between the pre-emption and the attach, so the caller ends up holding the volume.
    pub async fn attach_preempting(
        &self,
        id: &str,
        instance_id: &str,
        device_hint: Option<String>,
    ) -> Result<Volume> {
        let _g = self.begin_op();
        let res = self.attach_inner(id, instance_id, device_hint, true).await;
        self.outcome("attach", &res);
        res
    }

    async fn attach_inner(
        &self,
        id: &str,
        instance_id: &str,
        device_hint: Option<String>,
        preempt: bool,
    ) -> Result<Volume> {
        check_instance_id(instance_id)?;
        if let Some(device) = &device_hint {
            check_device_name(device)?;
        }
        let _g = self.lock(format!("id:{id}")).await;
        let mut v = self.usable(id)?;
        if preempt {
            // A cross-zone attach is refused before anything happens, pre-empting included.
            self.check_attach_zone(&v, instance_id)?;
            let others: Vec<String> = v
                .attachments
                .iter()
                .filter(|a| a.instance_id != instance_id)
                .map(|a| a.instance_id.clone())
                .collect();
            for other in others {
                let _op = self.begin_op();
                let res = self.detach_locked(v, Some(&other)).await;
                self.outcome("detach", &res);
                v = res?;
            }
        }
        if v.attachments.iter().any(|a| a.instance_id == instance_id) {
            return Ok(v);
        }
        self.check_attach_zone(&v, instance_id)?;
        if !v.access_mode.allows_many() && !v.attachments.is_empty() {
            return Err(Error::Conflict(format!(
                "volume {} is attached to {}; detach it first or force-detach",
                v.id,
                holders(&v)
            )));
        }
        let svc = self.service(&v.service)?;
        let driver_id = v.driver_id.clone().unwrap_or_default();
        let intent = self.intent(
            &v,
            IntentOp::Attach {
                instance_id: instance_id.to_string(),
            },
        )?;
        crash_point!("volume.attach.before_intent");
        self.write(vec![Op::PutIntent(intent.clone())]).await?;
        crash_point!("volume.attach.after_intent");
        let opts = AttachOptions { device_hint };
        let res = self
            .call(
                &svc.name,
                "attach",
                svc.driver.attach(&driver_id, instance_id, &opts),
            )
            .await;
        crash_point!("volume.attach.after_driver");
        let out = self
            .conclude(&intent, res, |a| {
                let mut done = v;
                done.attachments.push(Attachment {
                    instance_id: a.instance_id,
                    device: a.device,
                    attached_at: now_secs(),
                });
                done
            })
            .await;
        crash_point!("volume.attach.after_record");
        out
    }

    /// Detach a volume from one instance, or from all (`instance_id: None`, force-detach).
    /// Detaching an instance that holds no attachment succeeds.
    pub async fn detach(&self, id: &str, instance_id: Option<&str>) -> Result<Volume> {
        let _g = self.begin_op();
        let res = self.detach_inner(id, instance_id).await;
        self.outcome(
            if instance_id.is_some() {
                "detach"
            } else {
                "force_detach"
            },
            &res,
        );
        res
    }

    async fn detach_inner(&self, id: &str, instance_id: Option<&str>) -> Result<Volume> {
        let _g = self.lock(format!("id:{id}")).await;
        let v = self.usable(id)?;
        self.detach_locked(v, instance_id).await
    }

    /// Release the attachments `instances` hold on a volume, for a fence: a force-detach
    /// when they hold every attachment, else a detach per instance (other holders of a
    /// shared volume keep theirs). An intent this volume still has (a crash or an uncertain
    /// failure) is resolved against the back-end first, so a detach that already happened is
    /// never sent again. Returns the volume, or `None` when it no longer exists.
    pub async fn fence_detach(
        &self,
        id: &str,
        instances: &BTreeSet<String>,
    ) -> Result<Option<Volume>> {
        let _g = self.lock(format!("id:{id}")).await;
        for i in self.inner.store.intents()? {
            if i.volume_id == id {
                self.resolve_locked(&i).await?;
            }
        }
        let Some(mut v) = self.inner.store.volume(id)? else {
            return Ok(None);
        };
        if v.status != VolumeStatus::Available {
            return Err(Error::Conflict(format!(
                "volume {id} is {:?}; retry shortly",
                v.status
            )));
        }
        let held: Vec<String> = v
            .attachments
            .iter()
            .filter(|a| instances.contains(&a.instance_id))
            .map(|a| a.instance_id.clone())
            .collect();
        if held.is_empty() {
            return Ok(Some(v));
        }
        if held.len() == v.attachments.len() {
            let _g = self.begin_op();
            let res = self.detach_locked(v, None).await;
            self.outcome("force_detach", &res);
            return res.map(Some);
        }
        for i in held {
            let _g = self.begin_op();
            let res = self.detach_locked(v, Some(&i)).await;
            self.outcome("detach", &res);
            v = res?;
        }
        Ok(Some(v))
    }

    async fn detach_locked(&self, v: Volume, instance_id: Option<&str>) -> Result<Volume> {
        let held = match instance_id {
            Some(i) => v.attachments.iter().any(|a| a.instance_id == i),
            None => !v.attachments.is_empty(),
        };
        if !held {
            return Ok(v);
        }
        let svc = self.service(&v.service)?;
        let driver_id = v.driver_id.clone().unwrap_or_default();
        let intent = self.intent(
            &v,
            IntentOp::Detach {
                instance_id: instance_id.map(str::to_string),
            },
        )?;
        crash_point!("volume.detach.before_intent");
        self.write(vec![Op::PutIntent(intent.clone())]).await?;
        crash_point!("volume.detach.after_intent");
        let res = match instance_id {
            Some(i) => {
                self.call(&svc.name, "detach", svc.driver.detach(&driver_id, i))
                    .await
            }
            None => {
                self.call(
                    &svc.name,
                    "force_detach",
                    svc.driver.force_detach(&driver_id),
                )
                .await
            }
        };
        crash_point!("volume.detach.after_driver");
        let out = self
            .conclude(&intent, res, |()| {
                let mut done = v;
                done.attachments
                    .retain(|a| instance_id.is_some_and(|i| a.instance_id != i));
                done
            })
            .await;
        crash_point!("volume.detach.after_record");
        out
    }
}

pub(super) fn holders(v: &Volume) -> String {
    v.attachments
        .iter()
        .map(|a| a.instance_id.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}
