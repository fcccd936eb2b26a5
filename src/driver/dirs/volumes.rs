//! Volumes under a root: reading and writing `volume.json`, listing, and the create (checked,
//! staged under `tmp/`, published by one rename) and remove (taken out by one rename) steps
//! the drivers build on.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::durable::{create_dir, fsync_dir, parse_json, read_dir, rename, write_json_atomic};
use super::{
    holders, id_order, CreateRequest, Dirs, DriverVolume, Error, Listed, Result, VOLUME_META,
};

impl Dirs {
    /// The volume with this id, or `None` if there is none.
    pub fn load_volume(&self, id: &str) -> Result<Option<DriverVolume>> {
        let dir = match self.volume_dir(id) {
            Ok(dir) => dir,
            // An id this driver could never have made names no volume.
            Err(_) => return Ok(None),
        };
        let path = dir.join(VOLUME_META);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let mut vol: DriverVolume = parse_json(&path, &bytes)?;
        // The path is derived, not trusted from disk, so a moved root still reports the truth.
        vol.path = Some(dir.join(self.cfg.payload).to_string_lossy().into_owned());
        Ok(Some(vol))
    }

    pub fn get_volume(&self, id: &str) -> Result<DriverVolume> {
        self.load_volume(id)?.ok_or_else(|| Error::NotFound {
            kind: "volume",
            id: id.to_string(),
        })
    }

    pub fn store_volume(&self, vol: &DriverVolume) -> Result<()> {
        let dir = self.volume_dir(&vol.id)?;
        let mut on_disk = vol.clone();
        on_disk.path = None;
        // An index that cannot be kept up to date refuses the write, before it happens.
        drop(self.index()?);
        if let Err(e) = write_json_atomic(&dir.join(VOLUME_META), &on_disk) {
            // The new metadata may be in place even so (a failed fsync after the rename):
            // the index follows whatever the disk holds now.
            if let Ok(Some(now)) = self.load_volume(&vol.id) {
                if let Ok(mut index) = self.index() {
                    index.put(&now.id, &now.name, now.size_bytes);
                }
            }
            return Err(e);
        }
        self.index()?.put(&vol.id, &vol.name, vol.size_bytes);
        Ok(())
    }

    /// The id, name and size of every volume in `volumes/`, sorted by id, from the index: one
    /// directory listing, no metadata read (a volume the index does not know, which only a
    /// writer outside this driver could make, is read from disk).
    pub fn inventory(&self) -> Result<Vec<Listed>> {
        let mut ids = Vec::new();
        for entry in read_dir(&self.volumes_dir())? {
            if let Ok(id) = entry.file_name().into_string() {
                ids.push(id);
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        let mut unknown = Vec::new();
        {
            let index = self.index()?;
            for id in ids {
                match index.by_id.get(id.as_str()) {
                    Some(e) => out.push(Listed {
                        name: e.name.to_string(),
                        size_bytes: e.size_bytes,
                        id,
                    }),
                    None => unknown.push(id),
                }
            }
        }
        for id in unknown {
            // Gone since the listing (a remove), or not a volume directory: not listed.
            if let Some(vol) = self.load_volume(&id)? {
                out.push(vol.into());
            }
        }
        out.sort_by(|a, b| id_order(&a.id).cmp(&id_order(&b.id)));
        Ok(out)
    }

    pub fn list_volumes(&self) -> Result<Vec<DriverVolume>> {
        let mut out = Vec::new();
        for entry in read_dir(&self.volumes_dir())? {
            let name = entry.file_name();
            let Some(id) = name.to_str() else { continue };
            // A volume removed between read_dir and the read is simply gone.
            if let Some(vol) = self.load_volume(id)? {
                out.push(vol);
            }
        }
        out.sort_by(|a, b| id_order(&a.id).cmp(&id_order(&b.id)));
        Ok(out)
    }

    fn check_request(&self, req: &CreateRequest) -> Result<()> {
        if req.size_bytes == 0 {
            return Err(Error::InvalidArgument(format!(
                "volume {:?}: size_bytes must be greater than 0",
                req.name
            )));
        }
        if let Some(pool) = &req.pool {
            if *pool != self.cfg.pool {
                return Err(Error::NotFound {
                    kind: "pool",
                    id: pool.clone(),
                });
            }
        }
        if let Some(zone) = &req.zone {
            if self.cfg.zone.as_deref() != Some(zone.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "volume {:?}: zone {zone:?} is not served by this back-end (it serves {:?})",
                    req.name, self.cfg.zone
                )));
            }
        }
        Ok(())
    }

    /// The volume already created under `req.name`, if its size matches; `AlreadyExists` if it
    /// does not.
    fn existing_by_name(&self, req: &CreateRequest) -> Result<Option<DriverVolume>> {
        let id = self.index()?.by_name.get(req.name.as_str()).cloned();
        let Some(vol) = id
            .map(|id| self.load_volume(&id))
            .transpose()?
            .flatten()
            .filter(|v| v.name == req.name)
        else {
            return Ok(None);
        };
        if vol.size_bytes != req.size_bytes {
            return Err(Error::AlreadyExists {
                name: req.name.clone(),
                detail: format!(
                    "existing volume {} has {} bytes, {} requested",
                    vol.id, vol.size_bytes, req.size_bytes
                ),
            });
        }
        Ok(Some(vol))
    }

    /// The first half of a create: checks the request against the back-end and a source of
    /// `source_size` bytes. `Ok(Some(_))` is the volume an earlier create of this name made
    /// (creates are idempotent by name); `Ok(None)`: go on with [`Dirs::stage_volume`].
    pub fn check_create(
        &self,
        req: &CreateRequest,
        source_size: Option<u64>,
    ) -> Result<Option<DriverVolume>> {
        self.check_request(req)?;
        if let Some(vol) = self.existing_by_name(req)? {
            return Ok(Some(vol));
        }
        if let Some(source_size) = source_size {
            if req.size_bytes < source_size {
                return Err(Error::InvalidArgument(format!(
                    "volume {:?}: size_bytes {} is smaller than its source ({source_size} bytes)",
                    req.name, req.size_bytes
                )));
            }
        }
        self.check_volume_size(req.size_bytes)?;
        self.check_quota(req.size_bytes)?;
        Ok(None)
    }

    /// A new volume id and its empty staging directory under `tmp/`, where the driver builds
    /// the payload (at `staging.join(payload)`) before [`Dirs::publish_volume`].
    pub fn stage_volume(&self) -> Result<(String, PathBuf)> {
        let id = self.next_volume_id()?;
        let staging = self.tmp_dir().join(&id);
        create_dir(&staging)?;
        Ok((id, staging))
    }

    /// The last step of a create: writes the metadata into `staging` (which also makes the
    /// payload's directory entry durable) and renames it into `volumes/` in one step.
    pub fn publish_volume(
        &self,
        staging: &Path,
        id: &str,
        req: &CreateRequest,
    ) -> Result<DriverVolume> {
        let mut vol = DriverVolume {
            id: id.to_string(),
            name: req.name.clone(),
            size_bytes: req.size_bytes,
            pool: self.cfg.pool.clone(),
            zone: self.cfg.zone.clone(),
            access_mode: req.access_mode,
            attachments: Vec::new(),
            fields: req.fields.clone(),
            path: None,
        };
        write_json_atomic(&staging.join(VOLUME_META), &vol)?;
        let dest = self.volume_dir(id)?;
        rename(staging, &dest)?;
        fsync_dir(&self.volumes_dir())?;
        fsync_dir(&self.tmp_dir())?;
        self.index()?.put(id, &vol.name, vol.size_bytes);
        vol.path = Some(dest.join(self.cfg.payload).to_string_lossy().into_owned());
        Ok(vol)
    }

    /// Removes an unattached volume; an unknown id is already removed.
    pub fn remove(&self, id: &str) -> Result<()> {
        let Some(vol) = self.load_volume(id)? else {
            return Ok(());
        };
        if !vol.attachments.is_empty() {
            return Err(Error::InUse {
                volume: id.to_string(),
                holders: holders(&vol),
            });
        }
        drop(self.index()?);
        self.discard(&self.volume_dir(id)?, &self.volumes_dir(), id)?;
        self.index()?.remove(id);
        Ok(())
    }

    /// Takes `dir` out of `parent`'s listing with one rename, then deletes it.
    pub(super) fn discard(&self, dir: &Path, parent: &Path, id: &str) -> Result<()> {
        let doomed = self.tmp_dir().join(format!("rm-{id}"));
        rename(dir, &doomed)?;
        fsync_dir(parent)?;
        fs::remove_dir_all(&doomed)
            .map_err(|e| Error::io(format!("delete {}", doomed.display()), e))?;
        fsync_dir(&self.tmp_dir())
    }
}
