//! Polly's RBD images: the `polly.meta` key that makes an image Polly's, lookups by name and by
//! image id, the listing of every pool, and an image as the driver reports it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    AccessMode, CreateRequest, DriverAttachment, DriverVolume, Error, RbdDriver, Result, META_KEY,
};

/// What Polly keeps in an image's `polly.meta`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Meta {
    owner: String,
    image: String,
    name: String,
    pub(super) access_mode: AccessMode,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

/// An image of this driver, located.
#[derive(Debug, Clone)]
pub(super) struct Image {
    pub(super) pool: String,
    pub(super) name: String,
    pub(super) id: String,
    pub(super) size: u64,
}

impl Image {
    pub(super) fn spec(&self) -> String {
        format!("{}/{}", self.pool, self.name)
    }
    pub(super) fn driver_id(&self) -> String {
        format!("{}:{}", self.pool, self.id)
    }
}

pub(super) enum Lookup<'a> {
    Name(&'a str),
    Id(&'a str),
}

impl RbdDriver {
    pub(super) fn image_name(&self, name: &str) -> String {
        format!("{}{name}", self.cfg.prefix)
    }

    /// The Polly metadata of an image, if it is fully Polly's.
    pub(super) async fn meta(&self, pool: &str, name: &str) -> Result<Option<Meta>> {
        let spec = format!("{pool}/{name}");
        let map: BTreeMap<String, String> = self.rbd_json(&["image-meta", "list", &spec]).await?;
        Ok(map
            .get(META_KEY)
            .and_then(|m| serde_json::from_str::<Meta>(m).ok())
            .filter(|m| m.owner == self.cfg.prefix && m.image == name))
    }

    /// `rbd info` of an image, by name or id; `None` when there is none.
    pub(super) async fn info(&self, pool: &str, by: Lookup<'_>) -> Result<Option<Image>> {
        let mut args = vec!["info".to_string()];
        match by {
            Lookup::Name(name) => args.push(format!("{pool}/{name}")),
            Lookup::Id(id) => args.extend([
                "--pool".to_string(),
                pool.to_string(),
                "--image-id".to_string(),
                id.to_string(),
            ]),
        }
        args.extend(["--format".to_string(), "json".to_string()]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = match self.rbd(&refs).await {
            Ok(out) => out,
            Err(e) if e.not_found() => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let v: Value = serde_json::from_str(&out)
            .map_err(|e| Error::Io(format!("rbd info: unexpected output: {e}")))?;
        Ok(Some(Image {
            pool: pool.to_string(),
            name: v["name"].as_str().unwrap_or_default().to_string(),
            id: v["id"].as_str().unwrap_or_default().to_string(),
            size: v["size"].as_u64().unwrap_or_default(),
        }))
    }

    /// The image behind a driver id, if it is one of Polly's.
    pub(super) async fn resolve(&self, id: &str) -> Result<Option<(Image, Meta)>> {
        let Some((pool, image_id)) = id.split_once(':') else {
            return Ok(None);
        };
        let valid = !image_id.is_empty() && image_id.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid || !self.cfg.pools.iter().any(|p| p == pool) {
            return Ok(None);
        }
        let Some(img) = self.info(pool, Lookup::Id(image_id)).await? else {
            return Ok(None);
        };
        if !img.name.starts_with(&self.cfg.prefix) {
            return Ok(None);
        }
        Ok(self.meta(pool, &img.name).await?.map(|m| (img, m)))
    }

    pub(super) async fn get(&self, id: &str) -> Result<(Image, Meta)> {
        self.resolve(id).await?.ok_or_else(|| Error::NotFound {
            kind: "volume",
            id: id.to_string(),
        })
    }

    pub(super) async fn volume(&self, img: &Image, meta: &Meta) -> Result<DriverVolume> {
        let attachments = self
            .locks(img)
            .await?
            .into_iter()
            .map(|l| DriverAttachment {
                instance_id: l.id,
                device: img.spec(),
            })
            .collect();
        Ok(DriverVolume {
            id: img.driver_id(),
            name: meta.name.clone(),
            size_bytes: img.size,
            pool: img.pool.clone(),
            zone: self.cfg.zone.clone(),
            access_mode: meta.access_mode,
            attachments,
            fields: meta.fields.clone(),
            path: None,
        })
    }

    /// Polly's images in every pool.
    pub(super) async fn images(&self) -> Result<Vec<(Image, Meta)>> {
        let mut out = Vec::new();
        for pool in &self.cfg.pools {
            // Names only: `rbd ls -l` opens every image and fails outright when one is
            // removed meanwhile (by anyone, in any prefix).
            let names = match self.rbd_json(&["ls", "--pool", pool]).await? {
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            for v in names {
                let Some(name) = v.as_str() else { continue };
                if !name.starts_with(&self.cfg.prefix) {
                    continue;
                }
                // Gone since the listing: not a volume any more.
                let Some(img) = self.info(pool, Lookup::Name(name)).await? else {
                    continue;
                };
                match self.meta(pool, name).await {
                    Ok(Some(meta)) => out.push((img, meta)),
                    Ok(None) => {}
                    Err(_) if self.info(pool, Lookup::Name(name)).await?.is_none() => {}
                    Err(e) => return Err(e),
                }
            }
        }
        out.sort_by_cached_key(|(img, _)| img.driver_id());
        Ok(out)
    }

    pub(super) async fn tag(&self, img: &Image, req: &CreateRequest) -> Result<Meta> {
        let meta = Meta {
            owner: self.cfg.prefix.clone(),
            image: img.name.clone(),
            name: req.name.clone(),
            access_mode: req.access_mode,
            fields: req.fields.clone(),
        };
        let json = serde_json::to_string(&meta)
            .map_err(|e| Error::Io(format!("encode image metadata: {e}")))?;
        self.rbd(&["image-meta", "set", &img.spec(), META_KEY, &json])
            .await?;
        Ok(meta)
    }
}
