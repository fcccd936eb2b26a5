//! RBD snapshots: made once per name, listed, removed (their clones flattened first, so
//! removing one loses no data); a snapshot id is `<pool>:<image id>@<snap id>`.

use serde::Deserialize;
use serde_json::Value;

use super::cli::parse_ctime;
use super::image::Image;
use super::{Error, RbdDriver, Result, Snapshot};

/// One entry of `rbd snap ls`.
#[derive(Debug, Deserialize)]
pub(super) struct Snap {
    id: u64,
    pub(super) name: String,
    pub(super) size: u64,
    pub(super) protected: String,
    timestamp: String,
}

impl RbdDriver {
    pub(super) async fn snaps(&self, img: &Image) -> Result<Vec<Snap>> {
        let out = self
            .rbd(&["snap", "ls", &img.spec(), "--format", "json"])
            .await?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&out).map_err(|e| Error::Io(format!("rbd snap ls: {e}")))
    }

    pub(super) fn snapshot(img: &Image, s: &Snap) -> Snapshot {
        Snapshot {
            id: format!("{}@{}", img.driver_id(), s.id),
            name: s.name.clone(),
            volume_id: img.driver_id(),
            size_bytes: s.size,
            created_at: parse_ctime(&s.timestamp).unwrap_or(0),
        }
    }

    /// The image and RBD snapshot behind a snapshot id, if both are Polly's.
    pub(super) async fn resolve_snap(&self, snapshot_id: &str) -> Result<Option<(Image, Snap)>> {
        let Some((vol, snap_id)) = snapshot_id.split_once('@') else {
            return Ok(None);
        };
        let Ok(snap_id) = snap_id.parse::<u64>() else {
            return Ok(None);
        };
        let Some((img, _)) = self.resolve(vol).await? else {
            return Ok(None);
        };
        let snap = self
            .snaps(&img)
            .await?
            .into_iter()
            .find(|s| s.id == snap_id);
        Ok(snap.map(|s| (img, s)))
    }

    pub(super) async fn create_snapshot(&self, volume_id: &str, name: &str) -> Result<Snapshot> {
        let _guard = self.lock.lock().await;
        let (img, _) = self.get(volume_id).await?;
        if let Some(s) = self.snaps(&img).await?.iter().find(|s| s.name == name) {
            return Ok(Self::snapshot(&img, s));
        }
        let spec = format!("{}@{name}", img.spec());
        self.rbd(&["snap", "create", "--no-progress", &spec])
            .await?;
        let snaps = self.snaps(&img).await?;
        let s = snaps
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| Error::Io(format!("snapshot {spec} vanished after create")))?;
        Ok(Self::snapshot(&img, s))
    }

    pub(super) async fn list_snapshots(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
        let images = match volume_id {
            Some(id) => match self.resolve(id).await? {
                Some(found) => vec![found],
                None => Vec::new(),
            },
            None => self.images().await?,
        };
        let mut out = Vec::new();
        for (img, _) in images {
            for s in self.snaps(&img).await? {
                out.push(Self::snapshot(&img, &s));
            }
        }
        Ok(out)
    }

    pub(super) async fn remove_snapshot(&self, snapshot_id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        let Some((img, snap)) = self.resolve_snap(snapshot_id).await? else {
            return Ok(());
        };
        let spec = format!("{}@{}", img.spec(), snap.name);
        if snap.protected == "true" {
            // Clones made from it become independent first, so removing it loses no data.
            let children: Vec<Value> = match self.rbd_json(&["children", &spec]).await? {
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            for c in children {
                let child = format!(
                    "{}/{}",
                    c["pool"].as_str().unwrap_or_default(),
                    c["image"].as_str().unwrap_or_default()
                );
                self.rbd(&["flatten", "--no-progress", &child]).await?;
            }
            self.rbd(&["snap", "unprotect", &spec]).await?;
        }
        match self.rbd(&["snap", "rm", "--no-progress", &spec]).await {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
