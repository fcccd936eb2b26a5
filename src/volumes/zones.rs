//! Zones: which zones a service serves, the zone of a volume and of an instance, and the
//! checks that keep creates and attaches within them.

use std::sync::Arc;

use super::{Error, Manager, Result};
use crate::store::Volume;

/// Looks up the zone of an instance id from outside the store (e.g. Mesos agents' domains).
pub type InstanceZones = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

impl Manager {
    /// Refuses, before any driver call, a create in a zone the service does not serve.
    pub(super) fn check_zone(&self, service: &str, zone: Option<&str>) -> Result<()> {
        let (Some(want), Some(served)) = (zone, self.inner.zones.get(service)) else {
            return Ok(());
        };
        match served.as_slice() {
            s if s.iter().any(|z| z == want) => Ok(()),
            [] => Err(Error::InvalidArgument(format!(
                "zone {want:?} is not served by service {service:?}, which has no zone configured"
            ))),
            [one] => Err(Error::InvalidArgument(format!(
                "zone {want:?} is not served by service {service:?}, which serves zone {one:?}"
            ))),
            many => Err(Error::InvalidArgument(format!(
                "zone {want:?} is not served by service {service:?}, which serves zones {many:?}"
            ))),
        }
    }

    /// The zones a configured service serves (empty: none, or a service built without a
    /// config), for a surface that places volumes by zone (CSI topology).
    pub fn service_zones(&self, service: &str) -> Vec<String> {
        self.inner.zones.get(service).cloned().unwrap_or_default()
    }

    /// Install the outside source of instance zones (once; later calls are ignored).
    pub fn set_instance_zones(&self, f: InstanceZones) {
        let _ = self.inner.instance_zones.set(f);
    }

    /// The zone a volume lives in: its own, else its service's when the service serves one.
    pub fn volume_zone(&self, v: &Volume) -> Option<String> {
        v.zone
            .clone()
            .or_else(|| match self.inner.zones.get(&v.service) {
                Some(served) if served.len() == 1 => Some(served[0].clone()),
                _ => None,
            })
    }

    /// The zone an instance is in: from its REX-Ray reports (`zone`/`availabilityZone`),
    /// else from the outside source (the Mesos agent standing for it).
    ///
    /// Instance records are keyed by (driver, instance id), so this is one point read per
    /// driver kind the configured services use, not a scan of every instance: with 1,000
    /// REX-Ray agents a scan decoded 1,000 records on every attach.
    pub fn instance_zone(&self, instance_id: &str) -> Result<Option<String>> {
        let mut kinds: Vec<&str> = self
            .inner
            .services
            .values()
            .map(|s| s.driver.kind())
            .collect();
        kinds.sort_unstable();
        kinds.dedup();
        for kind in kinds {
            if let Some(i) = self.inner.store.instance(kind, instance_id)? {
                if let Some(z) = i
                    .fields
                    .get("zone")
                    .or_else(|| i.fields.get("availabilityZone"))
                    .filter(|z| !z.is_empty())
                {
                    return Ok(Some(z.clone()));
                }
            }
        }
        Ok(self.inner.instance_zones.get().and_then(|f| f(instance_id)))
    }

    /// Refuses, before any intent or driver call, an attach across zones (the message names
    /// both). Callers that act before attaching (the façade's pre-empt) check it first too.
    pub fn check_attach_zone(&self, v: &Volume, instance_id: &str) -> Result<()> {
        // A volume without a zone attaches anywhere: the instance's zone is not even read.
        let Some(vz) = self.volume_zone(v) else {
            return Ok(());
        };
        let Some(iz) = self.instance_zone(instance_id)? else {
            return Ok(());
        };
        if vz == iz {
            return Ok(());
        }
        Err(Error::InvalidArgument(format!(
            "volume {} ({}) is in zone {vz:?} but instance {instance_id:?} is in zone {iz:?}; a volume attaches only to instances in its own zone",
            v.id, v.name
        )))
    }
}
