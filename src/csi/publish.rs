//! ControllerPublishVolume and ControllerUnpublishVolume: an attach to, or detach from, the
//! instance the node id names, with the single-writer and zone checks every surface's
//! attach gets. The publish context carries where that node finds the data (the manager's
//! `node_source`), so the node's stage call needs nothing more from central.

use std::collections::HashMap;

use super::capabilities;
use super::error::{Conflict, CsiError, Result};
use super::v1;
use super::{Csi, PUBLISH_SOURCE_KEY};
use crate::store::VolumeStatus;
use crate::volumes;

impl Csi {
    pub(super) async fn controller_publish_volume(
        &self,
        req: v1::ControllerPublishVolumeRequest,
    ) -> Result<v1::ControllerPublishVolumeResponse> {
        if req.volume_id.is_empty() {
            return Err(CsiError::missing("volume_id"));
        }
        if req.node_id.is_empty() {
            return Err(CsiError::missing("node_id"));
        }
        let Some(cap) = &req.volume_capability else {
            return Err(CsiError::missing("volume_capability"));
        };
        let wanted = capabilities::check(cap, "volume_capability")?;
        if req.readonly {
            return Err(CsiError::Invalid(
                "readonly publishing is not supported (no PUBLISH_READONLY): a multi-reader volume is mounted read-only by the node".into(),
            ));
        }
        let m = &self.manager;
        let v = self.volume(&req.volume_id)?;
        let here = v.attachments.iter().any(|a| a.instance_id == req.node_id);
        let kind = self.kind(&v.service);
        if let Some(why) = capabilities::unsupported(v.access_mode, &kind, &v.service, &wanted) {
            return Err(if here {
                CsiError::AlreadyExists(format!(
                    "volume {} is published to node {:?}, but {why}",
                    v.id, req.node_id
                ))
            } else {
                CsiError::Invalid(why)
            });
        }
        if !here {
            if !self.known_node(&req.node_id)? {
                return Err(CsiError::NotFound(format!(
                    "node {:?} is not an instance Polly knows: a node reports itself (polly node, or a REX-Ray agent) before volumes are published to it",
                    req.node_id
                )));
            }
            if !v.access_mode.allows_many() {
                if let Some(holder) = v.attachments.first() {
                    return Err(CsiError::FailedPrecondition(format!(
                        "volume {} ({}) is published to node {:?}; a single-writer volume is published to one node at a time",
                        v.id, v.name, holder.instance_id
                    )));
                }
            }
            if let Err(e) = m.check_attach_zone(&v, &req.node_id) {
                return Err(match e {
                    volumes::Error::InvalidArgument(why) => CsiError::FailedPrecondition(why),
                    e => CsiError::volume(e, Conflict::Pending),
                });
            }
        }
        if let Err(e) = m.attach(&v.id, &req.node_id, None).await {
            return Err(self.publish_error(e, &v.id, &req.node_id));
        }
        let source = m
            .node_source(&v.id, &req.node_id)
            .await
            .map_err(|e| self.publish_error(e, &v.id, &req.node_id))?;
        let source = serde_json::to_string(&source).map_err(|e| {
            CsiError::Unavailable(format!("cannot encode the volume's source: {e}"))
        })?;
        Ok(v1::ControllerPublishVolumeResponse {
            publish_context: HashMap::from([(PUBLISH_SOURCE_KEY.to_string(), source)]),
        })
    }

    /// A failed attach: held by another node (FAILED_PRECONDITION), or another operation on
    /// the volume under way (ABORTED).
    fn publish_error(&self, e: volumes::Error, id: &str, node: &str) -> CsiError {
        let conflict = match self.manager.store().volume(id) {
            Ok(Some(v))
                if v.status == VolumeStatus::Available
                    && !v.access_mode.allows_many()
                    && v.attachments.iter().any(|a| a.instance_id != node) =>
            {
                Conflict::InUse
            }
            _ => Conflict::Pending,
        };
        CsiError::volume(e, conflict)
    }

    /// Whether an instance of that id has reported itself (under any driver kind).
    fn known_node(&self, node: &str) -> Result<bool> {
        let mut kinds: Vec<&str> = self.manager.services().map(|s| s.driver.kind()).collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            match self.manager.store().instance(kind, node) {
                Ok(Some(_)) => return Ok(true),
                Ok(None) => {}
                Err(e) => return Err(CsiError::volume(e.into(), Conflict::Pending)),
            }
        }
        Ok(false)
    }

    pub(super) async fn controller_unpublish_volume(
        &self,
        req: v1::ControllerUnpublishVolumeRequest,
    ) -> Result<()> {
        if req.volume_id.is_empty() {
            return Err(CsiError::missing("volume_id"));
        }
        // No node id: from every node it is published to.
        let node = Some(req.node_id.as_str()).filter(|n| !n.is_empty());
        match self.manager.detach(&req.volume_id, node).await {
            // An unknown volume is published nowhere.
            Ok(_) | Err(volumes::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(CsiError::volume(e, Conflict::Pending)),
        }
    }
}
