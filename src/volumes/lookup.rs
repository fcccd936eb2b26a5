//! Finding volumes: by Polly id, by name within a service or across services, and all.

use super::{Error, Manager, Result};
use crate::store::Volume;

impl Manager {
    pub fn volume(&self, id: &str) -> Result<Volume> {
        self.inner.store.volume(id)?.ok_or_else(|| Error::NotFound {
            kind: "volume",
            id: id.to_string(),
        })
    }

    /// Look a volume up by Polly id, or by name: within `service` when given, else in
    /// whichever service has a volume of that name (ambiguous names are a conflict).
    pub fn find(&self, service: Option<&str>, id_or_name: &str) -> Result<Volume> {
        if let Some(v) = self.inner.store.volume(id_or_name)? {
            return Ok(v);
        }
        let not_found = || Error::NotFound {
            kind: "volume",
            id: id_or_name.to_string(),
        };
        if let Some(s) = service {
            return self
                .inner
                .store
                .volume_by_name(s, id_or_name)?
                .ok_or_else(not_found);
        }
        let mut hits = Vec::new();
        for s in self.inner.services.keys() {
            if let Some(v) = self.inner.store.volume_by_name(s, id_or_name)? {
                hits.push(v);
            }
        }
        match hits.len() {
            0 => Err(not_found()),
            1 => Ok(hits.remove(0)),
            _ => Err(Error::Conflict(format!(
                "volume name {id_or_name:?} exists in several services; name the service"
            ))),
        }
    }

    pub fn volumes(&self) -> Result<Vec<Volume>> {
        Ok(self.inner.store.volumes()?)
    }
}
