//! The node agent's volume lifecycle, shared by every node-side surface (the Docker plugin
//! now, CSI's Node service next): mount a volume for a user (attach through central, then
//! mount locally), count its users, unmount and detach when the last one leaves, and put
//! things right after a restart.
//!
//! Order of steps, so that a crash at any point leaves nothing attached or mounted for ever:
//! - mount: state entry `Mounting` saved → central attach → source → local mount → entry
//!   `Mounted` saved → answer. At restart a `Mounting` entry is rolled back (unmount if
//!   mounted, detach, forget).
//! - unmount of the last user: entry `Unmounting` saved → local unmount → central detach →
//!   entry removed and saved → answer. At restart (or later, while central is away) an
//!   `Unmounting` entry is finished.
//! - A `Mounted` entry whose mount is gone at restart (the host rebooted) has no users left:
//!   it is finished like an `Unmounting` one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::Mutex;

use crate::admin::{ReportBody, VolumeView};
use crate::client::AdminClient;
use crate::driver::AccessMode;
use crate::keyed_lock::KeyedLocks;
use crate::mount::{self, Published, Source};
use crate::volumes::CreateVolume;

use super::config::NodeConfig;
use super::error::NodeError;
use super::metrics::NodeMetrics;
use super::state::{Entry, Phase, State, StateFile};

/// The prefix of the mount ids counted for users that mount without one.
const ANONYMOUS: &str = "anonymous-";

pub type Result<T, E = NodeError> = std::result::Result<T, E>;

/// What a surface asks for when it creates a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    pub size_bytes: Option<u64>,
    pub access_mode: Option<AccessMode>,
    pub pool: Option<String>,
    pub service: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub filesystem: Option<String>,
}

/// A volume as a node-side surface shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeInfo {
    pub name: String,
    /// Where it is mounted on this node, if it is.
    pub mountpoint: Option<PathBuf>,
    pub volume: VolumeView,
}

/// The node agent (cheap to clone).
#[derive(Clone)]
pub struct Agent {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NodeConfig,
    client: AdminClient,
    file: StateFile,
    /// The state, saved while held so that saves land in order.
    state: Mutex<State>,
    /// One lifecycle step per volume name at a time.
    locks: KeyedLocks,
    metrics: NodeMetrics,
}

impl Agent {
    /// Open the state file. Nothing is mounted or unmounted yet: see [`Agent::recover`].
    pub fn open(cfg: NodeConfig, metrics: NodeMetrics) -> Result<Agent> {
        let client = AdminClient::with_timeout(
            &cfg.server,
            cfg.token.clone(),
            std::time::Duration::from_secs(cfg.central_timeout_secs),
        );
        let file = StateFile::new(&cfg.state_dir);
        let state = file.load()?;
        metrics.mounts.set(
            state
                .volumes
                .values()
                .filter(|e| e.phase == Phase::Mounted)
                .count() as i64,
        );
        Ok(Agent {
            inner: Arc::new(Inner {
                cfg,
                client,
                file,
                state: Mutex::new(state),
                locks: KeyedLocks::default(),
                metrics,
            }),
        })
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.cfg
    }

    pub fn metrics(&self) -> &NodeMetrics {
        &self.inner.metrics
    }

    fn central(&self, e: crate::client::Error) -> NodeError {
        NodeError::central(&self.inner.cfg.server, e)
    }

    /// Tell central who this node is (instance id, hostname, zone).
    pub async fn report(&self) -> Result<()> {
        let cfg = &self.inner.cfg;
        let body = ReportBody {
            instance_id: cfg.instance_id.clone(),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string()),
            zone: cfg.zone.clone(),
            fields: BTreeMap::from([("agent".to_string(), "polly-node".to_string())]),
        };
        self.inner
            .client
            .report(&body)
            .await
            .map_err(|e| self.central(e))
    }

    /// Look a volume up at central by name.
    async fn lookup(&self, name: &str) -> Result<VolumeView> {
        match self.inner.client.inspect(name, None).await {
            Ok(v) => Ok(v),
            Err(crate::client::Error::Api { status: 404, .. }) => Err(NodeError::NoSuchVolume {
                name: name.to_string(),
            }),
            Err(e) => Err(self.central(e)),
        }
    }

    /// Create a volume at central; a name that exists already is fine unless the size
    /// asked for differs.
    pub async fn create(&self, name: &str, opts: CreateOptions) -> Result<VolumeView> {
        check_name(name)?;
        match self.lookup(name).await {
            Ok(v) => {
                if let Some(size) = opts.size_bytes.filter(|s| *s != v.size_bytes) {
                    return Err(NodeError::InvalidOption(format!(
                        "polly volume {name:?} already exists with size {}, not {}",
                        crate::client::human_size(v.size_bytes),
                        crate::client::human_size(size)
                    )));
                }
                return Ok(v);
            }
            Err(NodeError::NoSuchVolume { .. }) => {}
            Err(e) => return Err(e),
        }
        let services = self
            .inner
            .client
            .services()
            .await
            .map_err(|e| self.central(e))?;
        let wanted = opts
            .service
            .clone()
            .or_else(|| self.inner.cfg.service.clone());
        let service = match wanted {
            Some(s) => services.iter().find(|i| i.name == s).ok_or_else(|| {
                let names: Vec<&str> = services.iter().map(|i| i.name.as_str()).collect();
                NodeError::InvalidOption(format!(
                    "no polly service named {s:?}; central has {names:?}"
                ))
            })?,
            None => match services.as_slice() {
                [one] => one,
                [] => {
                    return Err(NodeError::InvalidOption(
                        "central polly has no storage service configured".into(),
                    ))
                }
                many => {
                    let names: Vec<&str> = many.iter().map(|i| i.name.as_str()).collect();
                    return Err(NodeError::InvalidOption(format!(
                        "central polly has several services {names:?}: pass -o service=NAME (or set [node] service)"
                    )));
                }
            },
        };
        let mut fields = BTreeMap::new();
        if let Some(fs) = opts.filesystem {
            // Central formats loop volumes when it creates them; rbd and ebs volumes are
            // formatted ext4 by the node on their first mount; vfs volumes are directories.
            if service.driver != "loop" {
                return Err(NodeError::InvalidOption(format!(
                    "-o fs applies to loop volumes only; service {:?} is {} ({})",
                    service.name,
                    service.driver,
                    if service.driver == "vfs" {
                        "its volumes are directories"
                    } else {
                        "its volumes are formatted ext4 on first mount"
                    }
                )));
            }
            fields.insert("filesystem".to_string(), fs);
        }
        // A node in a zone its service serves creates its volumes there.
        let zone = self.inner.cfg.zone.clone().filter(|z| {
            service
                .capacity
                .iter()
                .any(|p| p.zone.as_deref() == Some(z.as_str()))
        });
        let req = CreateVolume {
            service: service.name.clone(),
            name: name.to_string(),
            size_bytes: opts.size_bytes.unwrap_or(self.inner.cfg.default_size_bytes),
            pool: opts.pool,
            zone,
            access_mode: opts.access_mode.unwrap_or_default(),
            labels: opts.labels,
            restrict_services: Default::default(),
            restrict_frameworks: Default::default(),
            fields,
        };
        self.inner
            .client
            .create(&req)
            .await
            .map_err(|e| self.central(e))
    }

    /// Delete a volume at central. Refused while containers on this node use it.
    pub async fn remove(&self, name: &str) -> Result<()> {
        let _g = self.inner.locks.lock(name).await;
        if let Some(e) = self.entry(name).await {
            if e.phase == Phase::Unmounting {
                self.finish_unmount(name).await?;
            } else {
                return Err(NodeError::InUse {
                    name: name.to_string(),
                    users: e.mount_ids.len(),
                });
            }
        }
        let v = self.lookup(name).await?;
        self.inner
            .client
            .delete(&v.id, Some(&v.service))
            .await
            .map_err(|e| self.central(e))
    }

    async fn entry(&self, name: &str) -> Option<Entry> {
        self.inner.state.lock().await.volumes.get(name).cloned()
    }

    /// Change the state and save it before returning.
    async fn update(&self, f: impl FnOnce(&mut State)) -> Result<()> {
        let mut state = self.inner.state.lock().await;
        let mut next = state.clone();
        f(&mut next);
        let file = self.inner.file.clone();
        let saved = next.clone();
        tokio::task::spawn_blocking(move || file.save(&saved))
            .await
            .map_err(|e| NodeError::Internal(format!("state save task: {e}")))??;
        *state = next;
        let mounted = state
            .volumes
            .values()
            .filter(|e| e.phase == Phase::Mounted)
            .count();
        self.inner.metrics.mounts.set(mounted as i64);
        let pending = state
            .volumes
            .values()
            .filter(|e| e.phase == Phase::Unmounting)
            .count();
        self.inner.metrics.pending_detaches.set(pending as i64);
        Ok(())
    }

    /// Mount `name` for user `mount_id`; returns the mount point. The first user attaches
    /// and mounts; later ones share that mount. An empty `mount_id` is a user without one:
    /// Cloud Foundry's volume manager mounts and unmounts by name alone, once per container,
    /// so each such mount is counted under an id of its own.
    pub async fn mount(&self, name: &str, mount_id: &str) -> Result<PathBuf> {
        let start = Instant::now();
        let anonymous;
        let mount_id = if mount_id.is_empty() {
            anonymous = format!("{ANONYMOUS}{}", uuid::Uuid::new_v4().simple());
            anonymous.as_str()
        } else {
            mount_id
        };
        let res = self.mount_inner(name, mount_id).await;
        self.inner
            .metrics
            .observe("mount", start.elapsed().as_secs_f64(), res.is_ok());
        res
    }

    async fn mount_inner(&self, name: &str, mount_id: &str) -> Result<PathBuf> {
        check_name(name)?;
        let _g = self.inner.locks.lock(name).await;
        if let Some(e) = self.entry(name).await {
            match e.phase {
                Phase::Mounted => {
                    let id = mount_id.to_string();
                    self.update(|s| {
                        if let Some(e) = s.volumes.get_mut(name) {
                            e.mount_ids.insert(id);
                        }
                    })
                    .await?;
                    return Ok(e.target);
                }
                // A detach central has not taken yet: finish it, then mount afresh.
                Phase::Unmounting | Phase::Mounting => self.finish_unmount(name).await?,
            }
        }
        let v = self.lookup(name).await?;
        let target = self.inner.cfg.mount_root.join(name);
        let entry = Entry {
            volume_id: v.id.clone(),
            service: v.service.clone(),
            phase: Phase::Mounting,
            mount_ids: [mount_id.to_string()].into(),
            target: target.clone(),
            published: None,
        };
        self.update(|s| {
            s.volumes.insert(name.to_string(), entry);
        })
        .await?;
        match self.attach_and_publish(name, &v, &target).await {
            Ok(published) => {
                self.update(|s| {
                    if let Some(e) = s.volumes.get_mut(name) {
                        e.phase = Phase::Mounted;
                        e.published = Some(published);
                    }
                })
                .await?;
                Ok(target)
            }
            Err(err) => {
                // Undo what was done; if central cannot take the detach now, the entry
                // stays `Unmounting` and the background loop retries it.
                if let Err(undo) = self.finish_unmount(name).await {
                    tracing::warn!(volume = name, error = %undo, "could not undo a failed mount; retrying in the background");
                }
                Err(err)
            }
        }
    }

    async fn attach_and_publish(
        &self,
        name: &str,
        v: &VolumeView,
        target: &Path,
    ) -> Result<Published> {
        let instance = &self.inner.cfg.instance_id;
        let client = &self.inner.client;
        if let Err(e) = client.attach(&v.id, Some(&v.service), instance, None).await {
            if let crate::client::Error::Api { status: 409, .. } = e {
                // Name the node that holds it, if that is why.
                if let Ok(now) = client.inspect(&v.id, Some(&v.service)).await {
                    let holders: Vec<String> = now
                        .attachments
                        .iter()
                        .filter(|a| &a.instance_id != instance)
                        .map(|a| format!("{:?}", a.instance_id))
                        .collect();
                    if !holders.is_empty() {
                        return Err(NodeError::HeldElsewhere {
                            name: name.to_string(),
                            holders: holders.join(", "),
                        });
                    }
                }
            }
            return Err(self.central(e));
        }
        let source: Source = client
            .source(&v.id, instance)
            .await
            .map_err(|e| self.central(e))?
            .into();
        let source = self.localize(source);
        let target_owned = target.to_path_buf();
        // A multi-reader volume is shared by several nodes, none of which may write.
        let read_only = v.access_mode == AccessMode::MultiReader;
        tokio::task::spawn_blocking(move || mount::publish_with(&source, &target_owned, read_only))
            .await
            .map_err(|e| NodeError::Internal(format!("mount task: {e}")))?
            .map_err(|source| NodeError::Mount {
                name: name.to_string(),
                target: target.to_path_buf(),
                source: Box::new(source),
            })
    }

    /// Central's paths as this node sees them (`[node] path_map`).
    fn localize(&self, source: Source) -> Source {
        self.inner.cfg.localize(source)
    }

    /// User `mount_id` is done with `name` (an empty id: one of the users that mounted
    /// without one). The last user out unmounts and detaches.
    pub async fn unmount(&self, name: &str, mount_id: &str) -> Result<()> {
        let start = Instant::now();
        let res = self.unmount_inner(name, mount_id).await;
        self.inner
            .metrics
            .observe("unmount", start.elapsed().as_secs_f64(), res.is_ok());
        res
    }

    async fn unmount_inner(&self, name: &str, mount_id: &str) -> Result<()> {
        let _g = self.inner.locks.lock(name).await;
        let Some(e) = self.entry(name).await else {
            // Nothing held here: an Unmount repeated after it succeeded.
            return Ok(());
        };
        if e.phase == Phase::Mounted {
            let mut ids = e.mount_ids.clone();
            if mount_id.is_empty() {
                if let Some(anon) = ids.iter().find(|i| i.starts_with(ANONYMOUS)).cloned() {
                    ids.remove(&anon);
                }
            } else {
                ids.remove(mount_id);
            }
            if !ids.is_empty() {
                self.update(|s| {
                    if let Some(e) = s.volumes.get_mut(name) {
                        e.mount_ids = ids;
                    }
                })
                .await?;
                return Ok(());
            }
        }
        self.finish_unmount(name).await
    }

    /// Unmount locally, detach at central, forget: each step idempotent, the entry saved as
    /// `Unmounting` first so a crash or an unreachable central resumes here.
    async fn finish_unmount(&self, name: &str) -> Result<()> {
        let Some(e) = self.entry(name).await else {
            return Ok(());
        };
        if e.phase != Phase::Unmounting {
            self.update(|s| {
                if let Some(e) = s.volumes.get_mut(name) {
                    e.phase = Phase::Unmounting;
                    e.mount_ids.clear();
                }
            })
            .await?;
        }
        let published = e.published.clone();
        let target = e.target.clone();
        // A mount that never got recorded: the target may still be mounted.
        let published = published.unwrap_or_else(|| Published {
            target: target.clone(),
            device: None,
            attached_here: false,
            source: Source::Directory {
                path: target.clone(),
            },
            read_only: false,
        });
        tokio::task::spawn_blocking(move || mount::unpublish(&published))
            .await
            .map_err(|err| NodeError::Internal(format!("unmount task: {err}")))?
            .map_err(|source| NodeError::Mount {
                name: name.to_string(),
                target: e.target.clone(),
                source: Box::new(source),
            })?;
        let detached = self
            .inner
            .client
            .detach(
                &e.volume_id,
                Some(&e.service),
                Some(self.inner.cfg.instance_id.clone()),
                false,
            )
            .await;
        match detached {
            Ok(_) | Err(crate::client::Error::Api { status: 404, .. }) => {}
            Err(err) => {
                return Err(NodeError::DetachPending {
                    name: name.to_string(),
                    reason: self.central(err).to_string(),
                })
            }
        }
        self.update(|s| {
            s.volumes.remove(name);
        })
        .await
    }

    /// At start: roll back half-done mounts, finish half-done unmounts, and let go of
    /// volumes whose mount is gone (the host rebooted). Volumes central cannot detach now
    /// stay `Unmounting` for [`Agent::retry_pending`].
    pub async fn recover(&self) -> Result<()> {
        let mounted: Vec<PathBuf> = tokio::task::spawn_blocking(mount::mountinfo)
            .await
            .map_err(|e| NodeError::Internal(format!("mountinfo task: {e}")))?
            .map_err(|source| NodeError::Mount {
                name: String::new(),
                target: PathBuf::from("/proc/self/mountinfo"),
                source: Box::new(source),
            })?
            .into_iter()
            .map(|m| m.mount_point)
            .collect();
        let names: Vec<String> = self
            .inner
            .state
            .lock()
            .await
            .volumes
            .keys()
            .cloned()
            .collect();
        for name in names {
            let _g = self.inner.locks.lock(&name).await;
            let Some(e) = self.entry(&name).await else {
                continue;
            };
            let still_mounted = mounted.iter().any(|m| same_path(m, &e.target));
            if e.phase == Phase::Mounted && still_mounted {
                tracing::info!(volume = %name, users = e.mount_ids.len(), target = %e.target.display(), "kept a mount held before the restart");
                continue;
            }
            if e.phase == Phase::Mounted {
                tracing::warn!(volume = %name, target = %e.target.display(), "its mount is gone (host restarted?): releasing the volume");
            }
            if let Err(err) = self.finish_unmount(&name).await {
                tracing::warn!(volume = %name, error = %err, "could not release the volume at start; retrying in the background");
            }
        }
        Ok(())
    }

    /// Retry what central could not take before (detaches after an unmount); the
    /// background loop calls this.
    pub async fn retry_pending(&self) {
        let pending: Vec<String> = self
            .inner
            .state
            .lock()
            .await
            .volumes
            .iter()
            .filter(|(_, e)| e.phase == Phase::Unmounting)
            .map(|(n, _)| n.clone())
            .collect();
        for name in pending {
            let Some(_g) = self.inner.locks.try_lock(&name) else {
                continue;
            };
            match self.finish_unmount(&name).await {
                Ok(()) => {
                    tracing::info!(volume = %name, "released a volume whose detach was pending")
                }
                Err(e) => tracing::debug!(volume = %name, error = %e, "detach still pending"),
            }
        }
    }

    /// Where `name` is mounted on this node, if it is.
    pub async fn path(&self, name: &str) -> Option<PathBuf> {
        self.entry(name)
            .await
            .filter(|e| e.phase == Phase::Mounted)
            .map(|e| e.target)
    }

    /// One volume, with its mount point here.
    pub async fn get(&self, name: &str) -> Result<VolumeInfo> {
        let volume = self.lookup(name).await?;
        Ok(VolumeInfo {
            name: name.to_string(),
            mountpoint: self.path(name).await,
            volume,
        })
    }

    /// Every volume central has (each name once: a name in several services is listed
    /// once, and using it asks for the service).
    pub async fn list(&self) -> Result<Vec<VolumeInfo>> {
        let all = self
            .inner
            .client
            .volumes(false)
            .await
            .map_err(|e| self.central(e))?;
        let state = self.inner.state.lock().await.clone();
        let mut seen = std::collections::BTreeSet::new();
        Ok(all
            .volumes
            .into_iter()
            .filter(|v| seen.insert(v.name.clone()))
            .map(|v| VolumeInfo {
                name: v.name.clone(),
                mountpoint: state
                    .volumes
                    .get(&v.name)
                    .filter(|e| e.phase == Phase::Mounted)
                    .map(|e| e.target.clone()),
                volume: v,
            })
            .collect())
    }

    /// How many volumes are mounted here, and how many detaches wait for central.
    pub async fn counts(&self) -> (usize, usize) {
        let s = self.inner.state.lock().await;
        let mounted = s
            .volumes
            .values()
            .filter(|e| e.phase == Phase::Mounted)
            .count();
        let pending = s
            .volumes
            .values()
            .filter(|e| e.phase == Phase::Unmounting)
            .count();
        (mounted, pending)
    }
}

/// Docker's own rule for volume names, which also keeps a name a single path component
/// under the mount root.
pub fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && name.len() <= 255;
    if ok {
        Ok(())
    } else {
        Err(NodeError::InvalidName {
            name: name.to_string(),
        })
    }
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || std::fs::canonicalize(b).is_ok_and(|c| c == a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["hellopersistence", "a", "db-1.data_x", "9lives"] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "..", "../etc", "a/b", "-x", ".hidden", "sp ace"] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("is not valid"), "{bad}: {e}");
        }
    }
}
