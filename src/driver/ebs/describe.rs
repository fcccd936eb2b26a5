//! What the ebs driver reads back from EC2: paged DescribeVolumes/DescribeSnapshots, the
//! ownership test by tag, lookups by id and by Polly name, and a volume as the driver
//! reports it.

use std::collections::BTreeMap;

use super::model::{AttachState, Ec2Snapshot, Ec2Volume, Filter, Query, VolumeState};
use super::{
    api_err, parse_access, valid_id, DriverAttachment, DriverVolume, EbsDriver, Error, Result, GIB,
    TAG_ACCESS, TAG_FIELD, TAG_OWNER, TAG_VOLUME,
};

impl EbsDriver {
    pub(super) fn owner_filter(&self) -> Filter {
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
    pub(super) async fn snapshots_where(&self, filters: Vec<Filter>) -> Result<Vec<Ec2Snapshot>> {
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

    pub(super) fn is_ours(&self, tags: &BTreeMap<String, String>) -> bool {
        tags.get(TAG_OWNER) == Some(&self.owner)
    }

    pub(super) fn live(v: &Ec2Volume) -> bool {
        !matches!(v.state, VolumeState::Deleting | VolumeState::Deleted)
    }

    /// Polly's live volume with this id, if there is one.
    pub(super) async fn find(&self, id: &str) -> Result<Option<Ec2Volume>> {
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

    pub(super) async fn get(&self, id: &str) -> Result<Ec2Volume> {
        self.find(id).await?.ok_or_else(|| Error::NotFound {
            kind: "volume",
            id: id.to_string(),
        })
    }

    pub(super) async fn by_name(&self, name: &str) -> Result<Option<Ec2Volume>> {
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

    pub(super) fn to_driver(&self, v: &Ec2Volume) -> DriverVolume {
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

    pub(super) async fn owned_volumes(&self) -> Result<Vec<Ec2Volume>> {
        let mut vols: Vec<Ec2Volume> = self
            .volumes_where(vec![self.owner_filter()])
            .await?
            .into_iter()
            .filter(|v| self.is_ours(&v.tags) && Self::live(v))
            .collect();
        vols.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(vols)
    }
}
