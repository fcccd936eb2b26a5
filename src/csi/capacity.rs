//! GetCapacity from the capacity poller's readings (never a live back-end call): the free
//! bytes of the service's pools that match the parameters' pool and the topology's zone.

use super::capabilities;
use super::error::{CsiError, Result};
use super::params;
use super::v1;
use super::{bytes_i64, Csi};

impl Csi {
    pub(super) fn get_capacity(
        &self,
        req: v1::GetCapacityRequest,
    ) -> Result<v1::GetCapacityResponse> {
        let none = || v1::GetCapacityResponse {
            available_capacity: 0,
            maximum_volume_size: Some(0),
            minimum_volume_size: None,
        };
        let p = params::parse(&self.manager, &req.parameters)?;
        let kind = self.kind(&p.service);
        // Capabilities no Polly volume serves (raw block, MULTI_NODE_SINGLE_WRITER, a file
        // system the service cannot give) have no capacity.
        let mut wanted = Vec::new();
        for (i, c) in req.volume_capabilities.iter().enumerate() {
            match capabilities::check(c, &format!("volume_capabilities[{i}]")) {
                Ok(w) => wanted.push(w),
                Err(CsiError::Invalid(_)) => return Ok(none()),
                Err(e) => return Err(e),
            }
        }
        if !wanted.is_empty() && capabilities::access_mode_for(&wanted).is_err() {
            return Ok(none());
        }
        if wanted
            .iter()
            .map(|w| w.fs_type.as_str())
            .chain([p.fs_type.as_str()])
            .any(|fs| capabilities::filesystem_field(&kind, &p.service, fs).is_err())
        {
            return Ok(none());
        }
        let zone = match &req.accessible_topology {
            Some(t) => params::topology_zone(t)?,
            None => None,
        };
        let readings = self.manager.capacity_readings();
        let Some(r) = readings.get(&p.service).filter(|r| r.available) else {
            // Not read yet, or the back-end failed its last poll: nothing can be promised.
            return Ok(none());
        };
        let free: Vec<u64> = r
            .pools
            .iter()
            .filter(|pool| p.pool.as_ref().is_none_or(|x| &pool.pool == x))
            // A pool without a zone is reachable from every zone.
            .filter(|pool| zone.is_none() || pool.zone.is_none() || pool.zone == zone)
            .map(|pool| pool.free_bytes)
            .collect();
        Ok(v1::GetCapacityResponse {
            available_capacity: bytes_i64(free.iter().sum()),
            // A volume lives in one pool.
            maximum_volume_size: Some(bytes_i64(free.iter().copied().max().unwrap_or(0))),
            minimum_volume_size: None,
        })
    }
}
