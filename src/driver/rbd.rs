//! The `rbd` driver: Ceph RBD images through the `rbd` and `ceph` command-line tools with
//! `--format json` (why the CLI and not librbd: ARCHITECTURE.md, "Drivers").
//!
//! - A volume is an image named `<prefix><volume name>` in one of the configured pools; its
//!   Polly metadata (owner prefix, name, access mode, fields) is one image-meta key,
//!   `polly.meta`, set in a single call, so an image is either fully Polly's or not at all.
//!   The key records the image name too, because `rbd cp` and `rbd clone` copy image-meta.
//! - The driver id is `<pool>:<rbd image id>`; Ceph never reuses image ids in a pool.
//! - Attachments are advisory RBD locks (`rbd lock add`) whose lock id is the instance id:
//!   exclusive for single-writer volumes, shared (tag `polly`) otherwise. Ceph refuses a
//!   second exclusive lock, so two Polly processes cannot both attach a volume.
//! - Snapshots are RBD snapshots, id `<pool>:<image id>@<snap id>`; create-from-snapshot is a
//!   clone of the (protected) snapshot; removing a snapshot flattens its clones first.
//! - Capacity per pool is `ceph df`'s `stored + max_avail` and `max_avail`, capped by
//!   `quota_bytes` minus what Polly's images provision.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    AccessMode, AttachOptions, CreateRequest, Driver, DriverAttachment, DriverVolume, Error,
    PoolCapacity, Result, Snapshot,
};

const META_KEY: &str = "polly.meta";
const SHARED_TAG: &str = "polly";

fn default_pools() -> Vec<String> {
    vec!["rbd".to_string()]
}

fn default_prefix() -> String {
    "polly-".to_string()
}

/// Configuration of one `rbd` back-end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RbdConfig {
    /// Path of the ceph.conf the CLIs use.
    pub conf: PathBuf,
    /// Pools served, each a Polly pool; the first is the default.
    #[serde(default = "default_pools")]
    pub pools: Vec<String>,
    /// Ceph client id (`--id`); `None` = the CLI's default (`admin`).
    #[serde(default)]
    pub client_id: Option<String>,
    /// Image-name prefix that marks Polly's images.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Caps the bytes Polly's images may provision, per pool.
    #[serde(default)]
    pub quota_bytes: Option<u64>,
    /// The availability zone the cluster serves, if any.
    #[serde(default)]
    pub zone: Option<String>,
}

impl RbdConfig {
    pub fn new(conf: impl Into<PathBuf>) -> Self {
        RbdConfig {
            conf: conf.into(),
            pools: default_pools(),
            client_id: None,
            prefix: default_prefix(),
            quota_bytes: None,
            zone: None,
        }
    }
}

/// What Polly keeps in an image's `polly.meta`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Meta {
    owner: String,
    image: String,
    name: String,
    access_mode: AccessMode,
    #[serde(default)]
    fields: BTreeMap<String, String>,
}

/// An image of this driver, located.
#[derive(Debug, Clone)]
struct Image {
    pool: String,
    name: String,
    id: String,
    size: u64,
}

impl Image {
    fn spec(&self) -> String {
        format!("{}/{}", self.pool, self.name)
    }
    fn driver_id(&self) -> String {
        format!("{}:{}", self.pool, self.id)
    }
}

#[derive(Debug, Deserialize)]
struct Lock {
    id: String,
    locker: String,
}

#[derive(Debug, Deserialize)]
struct Snap {
    id: u64,
    name: String,
    size: u64,
    protected: String,
    timestamp: String,
}

/// The `rbd` driver. Mutations are serialized in-process; across processes Ceph's own
/// exclusive locks and name uniqueness keep images consistent.
pub struct RbdDriver {
    cfg: RbdConfig,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for RbdDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RbdDriver")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// A failed CLI call: its exit code and stderr.
struct CliError {
    code: Option<i32>,
    msg: String,
}

impl CliError {
    fn not_found(&self) -> bool {
        self.code == Some(2) || self.msg.contains("(2) No such file or directory")
    }
    fn busy(&self) -> bool {
        self.code == Some(16) || self.msg.contains("already held")
    }
}

impl From<CliError> for Error {
    fn from(e: CliError) -> Self {
        Error::Io(e.msg)
    }
}

impl RbdDriver {
    pub fn new(cfg: RbdConfig) -> Result<RbdDriver> {
        if cfg.pools.is_empty() {
            return Err(Error::InvalidArgument(
                "rbd: at least one pool must be configured".into(),
            ));
        }
        if cfg.prefix.is_empty() {
            return Err(Error::InvalidArgument(
                "rbd: the image-name prefix must not be empty (it marks Polly's images)".into(),
            ));
        }
        Ok(RbdDriver {
            cfg,
            lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    async fn cli(&self, program: &str, args: &[&str]) -> std::result::Result<String, CliError> {
        let mut cmd = tokio::process::Command::new(program);
        cmd.arg("-c").arg(&self.cfg.conf);
        if let Some(id) = &self.cfg.client_id {
            cmd.arg("--id").arg(id);
        }
        cmd.args(args).kill_on_drop(true);
        let out = cmd.output().await.map_err(|e| CliError {
            code: None,
            msg: format!("run {program}: {e}"),
        })?;
        if !out.status.success() {
            return Err(CliError {
                code: out.status.code(),
                msg: format!(
                    "{program} {} failed ({}): {}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn rbd(&self, args: &[&str]) -> std::result::Result<String, CliError> {
        self.cli("rbd", args).await
    }

    async fn rbd_json<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let mut all = args.to_vec();
        all.extend(["--format", "json"]);
        let out = self.rbd(&all).await?;
        let out = if out.trim().is_empty() { "{}" } else { &out };
        serde_json::from_str(out)
            .map_err(|e| Error::Io(format!("rbd {}: unexpected output: {e}", args.join(" "))))
    }

    fn pool_for(&self, req: &CreateRequest) -> Result<String> {
        match &req.pool {
            None => Ok(self.cfg.pools[0].clone()),
            Some(p) if self.cfg.pools.contains(p) => Ok(p.clone()),
            Some(p) => Err(Error::NotFound {
                kind: "pool",
                id: p.clone(),
            }),
        }
    }

    fn image_name(&self, name: &str) -> String {
        format!("{}{name}", self.cfg.prefix)
    }

    /// The Polly metadata of an image, if it is fully Polly's.
    async fn meta(&self, pool: &str, name: &str) -> Result<Option<Meta>> {
        let spec = format!("{pool}/{name}");
        let map: BTreeMap<String, String> = self.rbd_json(&["image-meta", "list", &spec]).await?;
        Ok(map
            .get(META_KEY)
            .and_then(|m| serde_json::from_str::<Meta>(m).ok())
            .filter(|m| m.owner == self.cfg.prefix && m.image == name))
    }

    /// `rbd info` of an image, by name or id; `None` when there is none.
    async fn info(&self, pool: &str, by: Lookup<'_>) -> Result<Option<Image>> {
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
    async fn resolve(&self, id: &str) -> Result<Option<(Image, Meta)>> {
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

    async fn get(&self, id: &str) -> Result<(Image, Meta)> {
        self.resolve(id).await?.ok_or_else(|| Error::NotFound {
            kind: "volume",
            id: id.to_string(),
        })
    }

    async fn locks(&self, img: &Image) -> Result<Vec<Lock>> {
        let out = self
            .rbd(&["lock", "ls", &img.spec(), "--format", "json"])
            .await?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&out).map_err(|e| Error::Io(format!("rbd lock ls: {e}")))
    }

    async fn volume(&self, img: &Image, meta: &Meta) -> Result<DriverVolume> {
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
    async fn images(&self) -> Result<Vec<(Image, Meta)>> {
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

    async fn provisioned(&self, pool: &str) -> Result<u64> {
        Ok(self
            .images()
            .await?
            .iter()
            .filter(|(i, _)| i.pool == pool)
            .map(|(i, _)| i.size)
            .fold(0, u64::saturating_add))
    }

    async fn capacities(&self) -> Result<Vec<PoolCapacity>> {
        let df: Value = serde_json::from_str(&self.cli("ceph", &["df", "--format", "json"]).await?)
            .map_err(|e| Error::Io(format!("ceph df: unexpected output: {e}")))?;
        let mut out = Vec::new();
        for pool in &self.cfg.pools {
            let stats = df["pools"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == pool.as_str()))
                .map(|p| &p["stats"])
                .ok_or_else(|| {
                    Error::Unavailable(format!(
                        "ceph df reports no pool {pool:?} (does it exist, and is a mgr running?)"
                    ))
                })?;
            let free = stats["max_avail"].as_u64().unwrap_or(0);
            let mut total = stats["stored"].as_u64().unwrap_or(0).saturating_add(free);
            let mut free_bytes = free;
            if let Some(quota) = self.cfg.quota_bytes {
                let used = self.provisioned(pool).await?;
                total = total.min(quota);
                free_bytes = free_bytes.min(quota.saturating_sub(used));
            }
            out.push(PoolCapacity {
                pool: pool.clone(),
                zone: self.cfg.zone.clone(),
                total_bytes: total,
                free_bytes,
            });
        }
        Ok(out)
    }

    async fn check_quota(&self, pool: &str, wanted: u64) -> Result<()> {
        let Some(quota) = self.cfg.quota_bytes else {
            return Ok(());
        };
        let free = quota.saturating_sub(self.provisioned(pool).await?);
        if wanted > free {
            return Err(Error::InsufficientCapacity {
                pool: pool.to_string(),
                free_bytes: free,
                wanted_bytes: wanted,
            });
        }
        Ok(())
    }

    /// Where a new volume goes, or the existing volume of that name (any pool).
    async fn prepare_create(&self, req: &CreateRequest) -> Result<Result<String, DriverVolume>> {
        if req.size_bytes == 0 {
            return Err(Error::InvalidArgument(format!(
                "volume {:?}: size_bytes must be greater than 0",
                req.name
            )));
        }
        let pool = self.pool_for(req)?;
        if let Some(zone) = &req.zone {
            if self.cfg.zone.as_deref() != Some(zone.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "volume {:?}: zone {zone:?} is not served by this back-end (it serves {:?})",
                    req.name, self.cfg.zone
                )));
            }
        }
        let image = self.image_name(&req.name);
        for p in &self.cfg.pools {
            let Some(img) = self.info(p, Lookup::Name(&image)).await? else {
                continue;
            };
            let meta = match self.meta(p, &image).await? {
                Some(meta) => meta,
                // A create cut short between `rbd create` and the metadata: finish it.
                None => self.tag(&img, req).await?,
            };
            if img.size != req.size_bytes {
                return Err(Error::AlreadyExists {
                    name: req.name.clone(),
                    detail: format!(
                        "existing volume {} has {} bytes, {} requested",
                        img.driver_id(),
                        img.size,
                        req.size_bytes
                    ),
                });
            }
            return Ok(Err(self.volume(&img, &meta).await?));
        }
        self.check_quota(&pool, req.size_bytes).await?;
        Ok(Ok(pool))
    }

    async fn tag(&self, img: &Image, req: &CreateRequest) -> Result<Meta> {
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

    /// After the image exists under its final name: grow it to the size asked, tag it.
    async fn finish_create(&self, pool: &str, req: &CreateRequest) -> Result<DriverVolume> {
        let name = self.image_name(&req.name);
        let img = self
            .info(pool, Lookup::Name(&name))
            .await?
            .ok_or_else(|| Error::Io(format!("image {pool}/{name} vanished after create")))?;
        if img.size < req.size_bytes {
            self.rbd(&["resize", "--size", &bytes(req.size_bytes), &img.spec()])
                .await?;
        }
        let img = Image {
            size: req.size_bytes.max(img.size),
            ..img
        };
        let meta = self.tag(&img, req).await?;
        self.volume(&img, &meta).await
    }

    async fn snaps(&self, img: &Image) -> Result<Vec<Snap>> {
        let out = self
            .rbd(&["snap", "ls", &img.spec(), "--format", "json"])
            .await?;
        if out.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&out).map_err(|e| Error::Io(format!("rbd snap ls: {e}")))
    }

    fn snapshot(img: &Image, s: &Snap) -> Snapshot {
        Snapshot {
            id: format!("{}@{}", img.driver_id(), s.id),
            name: s.name.clone(),
            volume_id: img.driver_id(),
            size_bytes: s.size,
            created_at: parse_ctime(&s.timestamp).unwrap_or(0),
        }
    }

    /// The image and RBD snapshot behind a snapshot id, if both are Polly's.
    async fn resolve_snap(&self, snapshot_id: &str) -> Result<Option<(Image, Snap)>> {
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
}

enum Lookup<'a> {
    Name(&'a str),
    Id(&'a str),
}

/// An `rbd --size` argument in bytes.
fn bytes(n: u64) -> String {
    format!("{n}B")
}

/// Unix seconds of a ctime(3)-style UTC timestamp such as `Thu Nov 26 02:06:17 2026`.
fn parse_ctime(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let parts: Vec<&str> = s.split_whitespace().collect();
    let [_, mon, day, time, year] = parts.as_slice() else {
        return None;
    };
    let m = MONTHS.iter().position(|x| x == mon)? as i64 + 1;
    let d: i64 = day.parse().ok()?;
    let y: i64 = year.parse().ok()?;
    let hms: Vec<i64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    let [h, min, sec] = hms.as_slice() else {
        return None;
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + h * 3600 + min * 60 + sec).ok()
}

#[async_trait]
impl Driver for RbdDriver {
    fn kind(&self) -> &str {
        "rbd"
    }

    async fn capacity(&self) -> Result<Vec<PoolCapacity>> {
        self.capacities().await
    }

    async fn list(&self) -> Result<Vec<DriverVolume>> {
        let mut out = Vec::new();
        for (img, meta) in self.images().await? {
            out.push(self.volume(&img, &meta).await?);
        }
        Ok(out)
    }

    async fn inspect(&self, id: &str) -> Result<DriverVolume> {
        let (img, meta) = self.get(id).await?;
        self.volume(&img, &meta).await
    }

    async fn create(&self, req: &CreateRequest) -> Result<DriverVolume> {
        let _guard = self.lock.lock().await;
        let pool = match self.prepare_create(req).await? {
            Ok(pool) => pool,
            Err(existing) => return Ok(existing),
        };
        let spec = format!("{pool}/{}", self.image_name(&req.name));
        self.rbd(&[
            "create",
            "--size",
            &bytes(req.size_bytes),
            "--image-feature",
            "layering",
            &spec,
        ])
        .await?;
        self.finish_create(&pool, req).await
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        let Some((img, _)) = self.resolve(id).await? else {
            return Ok(());
        };
        let locks = self.locks(&img).await?;
        if !locks.is_empty() {
            return Err(Error::InUse {
                volume: id.to_string(),
                holders: locks.into_iter().map(|l| l.id).collect(),
            });
        }
        let snaps = self.snaps(&img).await?;
        if !snaps.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "volume {id:?} still has snapshots {:?}; remove them first",
                snaps.iter().map(|s| &s.name).collect::<Vec<_>>()
            )));
        }
        match self.rbd(&["rm", "--no-progress", &img.spec()]).await {
            Ok(_) => Ok(()),
            Err(e) if e.not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The device is the image spec (`pool/image`), what `rbd map` takes on the node.
    async fn attach(
        &self,
        id: &str,
        instance_id: &str,
        _opts: &AttachOptions,
    ) -> Result<DriverAttachment> {
        let _guard = self.lock.lock().await;
        let (img, meta) = self.get(id).await?;
        let att = DriverAttachment {
            instance_id: instance_id.to_string(),
            device: img.spec(),
        };
        let locks = self.locks(&img).await?;
        if locks.iter().any(|l| l.id == instance_id) {
            return Ok(att);
        }
        let elsewhere = |holders: Vec<String>| Error::AttachedElsewhere {
            volume: id.to_string(),
            holders,
        };
        if !meta.access_mode.allows_many() && !locks.is_empty() {
            return Err(elsewhere(locks.into_iter().map(|l| l.id).collect()));
        }
        let spec = img.spec();
        let mut args = vec!["lock", "add"];
        if meta.access_mode.allows_many() {
            args.extend(["--shared", SHARED_TAG]);
        }
        args.extend([spec.as_str(), instance_id]);
        match self.rbd(&args).await {
            Ok(_) => Ok(att),
            // Another process took it between our look and our lock.
            Err(e) if e.busy() => {
                let holders = self.locks(&img).await?.into_iter().map(|l| l.id).collect();
                Err(elsewhere(holders))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn detach(&self, id: &str, instance_id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        self.unlock(id, Some(instance_id)).await
    }

    async fn force_detach(&self, id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        self.unlock(id, None).await
    }

    async fn snapshot_create(&self, volume_id: &str, name: &str) -> Result<Snapshot> {
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

    async fn snapshot_list(&self, volume_id: Option<&str>) -> Result<Vec<Snapshot>> {
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

    async fn snapshot_remove(&self, snapshot_id: &str) -> Result<()> {
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

    async fn create_from_snapshot(
        &self,
        snapshot_id: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume> {
        let _guard = self.lock.lock().await;
        let (img, snap) = self
            .resolve_snap(snapshot_id)
            .await?
            .ok_or_else(|| Error::NotFound {
                kind: "snapshot",
                id: snapshot_id.to_string(),
            })?;
        if req.size_bytes < snap.size {
            return Err(Error::InvalidArgument(format!(
                "volume {:?}: size_bytes {} is smaller than its source ({} bytes)",
                req.name, req.size_bytes, snap.size
            )));
        }
        let pool = match self.prepare_create(req).await? {
            Ok(pool) => pool,
            Err(existing) => return Ok(existing),
        };
        let spec = format!("{}@{}", img.spec(), snap.name);
        if snap.protected != "true" {
            self.rbd(&["snap", "protect", &spec]).await?;
        }
        let dest = format!("{pool}/{}", self.image_name(&req.name));
        self.rbd(&["clone", "--image-feature", "layering", &spec, &dest])
            .await?;
        self.finish_create(&pool, req).await
    }

    async fn copy(&self, volume_id: &str, req: &CreateRequest) -> Result<DriverVolume> {
        let _guard = self.lock.lock().await;
        let (img, _) = self.get(volume_id).await?;
        if req.size_bytes < img.size {
            return Err(Error::InvalidArgument(format!(
                "volume {:?}: size_bytes {} is smaller than its source ({} bytes)",
                req.name, req.size_bytes, img.size
            )));
        }
        let pool = match self.prepare_create(req).await? {
            Ok(pool) => pool,
            Err(existing) => return Ok(existing),
        };
        let dest = format!("{pool}/{}", self.image_name(&req.name));
        self.rbd(&["cp", "--no-progress", &img.spec(), &dest])
            .await?;
        self.finish_create(&pool, req).await
    }

    async fn grow(&self, id: &str, new_size_bytes: u64) -> Result<DriverVolume> {
        let _guard = self.lock.lock().await;
        let (img, meta) = self.get(id).await?;
        if new_size_bytes < img.size {
            return Err(Error::InvalidArgument(format!(
                "volume {id:?}: cannot shrink from {} to {new_size_bytes} bytes",
                img.size
            )));
        }
        if new_size_bytes > img.size {
            self.check_quota(&img.pool, new_size_bytes - img.size)
                .await?;
            self.rbd(&[
                "resize",
                "--no-progress",
                "--size",
                &bytes(new_size_bytes),
                &img.spec(),
            ])
            .await?;
        }
        let img = Image {
            size: new_size_bytes,
            ..img
        };
        self.volume(&img, &meta).await
    }
}

impl RbdDriver {
    async fn unlock(&self, id: &str, instance_id: Option<&str>) -> Result<()> {
        let Some((img, _)) = self.resolve(id).await? else {
            return Ok(());
        };
        for l in self.locks(&img).await? {
            if instance_id.is_some_and(|i| i != l.id) {
                continue;
            }
            match self
                .rbd(&["lock", "rm", &img.spec(), &l.id, &l.locker])
                .await
            {
                Ok(_) => {}
                Err(e) if e.not_found() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_timestamps_parse_as_utc() {
        assert_eq!(parse_ctime("Thu Jan  1 00:00:00 1970"), Some(0));
        assert_eq!(parse_ctime("Thu Nov 26 02:06:17 2026"), Some(1_795_658_777));
        assert_eq!(parse_ctime("garbage"), None);
    }

    #[test]
    fn config_defaults() {
        let cfg: RbdConfig = serde_json::from_str(r#"{"conf": "/etc/ceph/ceph.conf"}"#).unwrap();
        assert_eq!(cfg, RbdConfig::new("/etc/ceph/ceph.conf"));
        assert_eq!(cfg.pools, ["rbd"]);
    }

    #[test]
    fn empty_pools_or_prefix_are_refused() {
        let mut cfg = RbdConfig::new("/c");
        cfg.pools.clear();
        assert!(RbdDriver::new(cfg).is_err());
        let mut cfg = RbdConfig::new("/c");
        cfg.prefix.clear();
        assert!(RbdDriver::new(cfg).is_err());
    }
}
