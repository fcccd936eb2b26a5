//! What a CSI request asks for, in Polly's terms: the creation parameters (`service`, `pool`,
//! `labels.*`/`label.*`, `fsType`), a capacity range as one size, and accessibility
//! requirements as one zone.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::error::{CsiError, Result};
use super::v1::{CapacityRange, Topology, TopologyRequirement};
use super::TOPOLOGY_ZONE_KEY;
use crate::volumes::{Manager, MAX_SIZE_BYTES};

/// The size of a volume created with no capacity range: 1 GiB.
pub const DEFAULT_SIZE_BYTES: u64 = 1 << 30;

/// Parameters the Kubernetes sidecars add for themselves; Polly leaves them alone.
const KUBERNETES_PREFIX: &str = "csi.storage.k8s.io/";

/// The creation parameters, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params {
    pub service: String,
    pub pool: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `fsType` ("" when not given).
    pub fs_type: String,
}

/// Reads the parameters: `service` (required when Polly has several services), `pool`,
/// `labels.<key>` or `label.<key>` (one label each), `fsType`. Any other key is refused, so
/// a misspelt parameter is not silently ignored.
pub fn parse(m: &Manager, params: &HashMap<String, String>) -> Result<Params> {
    let mut out = Params::default();
    let mut service = None;
    for (k, v) in params {
        match k.as_str() {
            "service" => service = Some(v.clone()),
            "pool" if !v.is_empty() => out.pool = Some(v.clone()),
            "pool" => {}
            "fsType" => out.fs_type = v.clone(),
            _ if k.starts_with(KUBERNETES_PREFIX) => {}
            _ => match k
                .strip_prefix("labels.")
                .or_else(|| k.strip_prefix("label."))
            {
                Some(key) if !key.is_empty() => {
                    out.labels.insert(key.to_string(), v.clone());
                }
                _ => {
                    return Err(CsiError::Invalid(format!(
                    "unknown parameter {k:?}: Polly takes service, pool, fsType and labels.<key>"
                )))
                }
            },
        }
    }
    out.service = pick_service(m, service.as_deref())?;
    Ok(out)
}

/// The service a request names, or the only one Polly has.
pub fn pick_service(m: &Manager, named: Option<&str>) -> Result<String> {
    let names: Vec<&str> = m.services().map(|s| s.name.as_str()).collect();
    match named.filter(|s| !s.is_empty()) {
        Some(s) if names.contains(&s) => Ok(s.to_string()),
        Some(s) => Err(CsiError::Invalid(format!(
            "parameter service {s:?} names no configured service; Polly has {names:?}"
        ))),
        None => match names.as_slice() {
            [one] => Ok(one.to_string()),
            _ => Err(CsiError::Invalid(format!(
                "parameter service is required: Polly has several services ({names:?})"
            ))),
        },
    }
}

/// How coarse a service's sizes are: EBS sizes volumes in whole GiB, the others in bytes.
pub fn granularity(kind: &str) -> u64 {
    match kind {
        "ebs" => 1 << 30,
        _ => 1,
    }
}

/// The bounds of a capacity range (0: none), checked.
pub fn bounds(range: Option<&CapacityRange>) -> Result<(u64, u64)> {
    let Some(r) = range else {
        return Ok((0, 0));
    };
    let (Ok(required), Ok(limit)) = (
        u64::try_from(r.required_bytes),
        u64::try_from(r.limit_bytes),
    ) else {
        return Err(CsiError::Invalid(
            "capacity_range: required_bytes and limit_bytes must not be negative".into(),
        ));
    };
    if limit > 0 && required > limit {
        return Err(CsiError::Invalid(format!(
            "capacity_range: required_bytes {required} is more than limit_bytes {limit}"
        )));
    }
    Ok((required, limit))
}

/// The size to create: at least `required` (else `default`, capped by the limit), rounded up
/// to what the back-end gives; OUT_OF_RANGE when that passes the limit or Polly's largest.
pub fn size_for(required: u64, limit: u64, default: u64, granularity: u64) -> Result<u64> {
    let base = match (required, limit) {
        (0, 0) => default,
        (0, l) => default.min(l),
        (r, _) => r,
    };
    let size = base.div_ceil(granularity).saturating_mul(granularity);
    if limit > 0 && size > limit {
        return Err(CsiError::OutOfRange(format!(
            "this service gives sizes in multiples of {granularity} bytes: {size} bytes would pass limit_bytes {limit}"
        )));
    }
    if size > MAX_SIZE_BYTES {
        return Err(CsiError::OutOfRange(format!(
            "{size} bytes is more than Polly's largest volume ({MAX_SIZE_BYTES} bytes)"
        )));
    }
    Ok(size)
}

/// Whether a size lies in a capacity range (bounds of 0: none).
pub fn in_range(size: u64, required: u64, limit: u64) -> bool {
    size >= required && (limit == 0 || size <= limit)
}

/// The zone a topology names: `None` = no zone (anywhere). A key other than Polly's is
/// refused: Polly's nodes report only that one.
pub fn topology_zone(t: &Topology) -> Result<Option<String>> {
    let mut zone = None;
    for (k, v) in &t.segments {
        if k != TOPOLOGY_ZONE_KEY {
            return Err(CsiError::Invalid(format!(
                "topology key {k:?} is not one Polly knows; it places volumes by {TOPOLOGY_ZONE_KEY:?}"
            )));
        }
        zone = Some(v.clone());
    }
    Ok(zone)
}

/// The zones a requirement's requisite list allows (`None`: any zone).
pub fn requisite_zones(req: Option<&TopologyRequirement>) -> Result<Option<BTreeSet<String>>> {
    let Some(req) = req.filter(|r| !r.requisite.is_empty()) else {
        return Ok(None);
    };
    let mut zones = BTreeSet::new();
    for t in &req.requisite {
        match topology_zone(t)? {
            Some(z) => {
                zones.insert(z);
            }
            None => return Ok(None),
        }
    }
    Ok(Some(zones))
}

/// The zone to create in for `req`, among the zones `served` (empty: the service has no zone,
/// so its volumes are reachable from everywhere and no zone is asked for). Preferred zones
/// first, in order, then requisite ones; with no requirement, the service's default.
/// RESOURCE_EXHAUSTED when the service serves none of the zones required.
pub fn pick_zone(
    req: Option<&TopologyRequirement>,
    served: &[String],
    service: &str,
) -> Result<Option<String>> {
    let Some(req) = req else {
        return Ok(None);
    };
    let allowed = requisite_zones(Some(req))?;
    for t in req.preferred.iter().chain(&req.requisite) {
        topology_zone(t)?;
    }
    if served.is_empty() {
        return Ok(None);
    }
    let ok = |z: &String| served.contains(z) && allowed.as_ref().is_none_or(|a| a.contains(z));
    for t in req.preferred.iter().chain(&req.requisite) {
        if let Some(z) = topology_zone(t)?.filter(ok) {
            return Ok(Some(z));
        }
    }
    match allowed {
        None => Ok(None),
        Some(zones) => Err(CsiError::Exhausted(format!(
            "service {service:?} serves zones {served:?}, none of the zones required ({zones:?})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(zone: &str) -> Topology {
        super::super::zone_topology(zone)
    }

    #[test]
    fn sizes_from_ranges() {
        let gib = 1 << 30;
        assert_eq!(size_for(0, 0, gib, 1).unwrap(), gib);
        assert_eq!(size_for(0, 100, gib, 1).unwrap(), 100);
        assert_eq!(size_for(5, 0, gib, 1).unwrap(), 5);
        assert_eq!(size_for(5, 0, gib, gib).unwrap(), gib);
        let e = size_for(5, 100, gib, gib).unwrap_err();
        assert!(matches!(e, CsiError::OutOfRange(_)), "{e}");
        assert!(matches!(
            size_for(MAX_SIZE_BYTES + 1, 0, gib, 1),
            Err(CsiError::OutOfRange(_))
        ));
        assert!(bounds(Some(&CapacityRange {
            required_bytes: 10,
            limit_bytes: 5
        }))
        .is_err());
        assert!(bounds(Some(&CapacityRange {
            required_bytes: -1,
            limit_bytes: 0
        }))
        .is_err());
        assert!(in_range(10, 10, 0) && in_range(10, 0, 10) && !in_range(11, 0, 10));
    }

    #[test]
    fn zones_from_requirements() {
        let served = vec!["a".to_string(), "b".to_string()];
        let req = |requisite: Vec<Topology>, preferred: Vec<Topology>| TopologyRequirement {
            requisite,
            preferred,
        };
        assert_eq!(pick_zone(None, &served, "s").unwrap(), None);
        assert_eq!(
            pick_zone(Some(&req(vec![topo("b")], vec![])), &served, "s").unwrap(),
            Some("b".into())
        );
        assert_eq!(
            pick_zone(
                Some(&req(vec![topo("a"), topo("b")], vec![topo("b")])),
                &served,
                "s"
            )
            .unwrap(),
            Some("b".into())
        );
        // A preferred zone outside the requisite ones is passed over.
        assert_eq!(
            pick_zone(Some(&req(vec![topo("a")], vec![topo("b")])), &served, "s").unwrap(),
            Some("a".into())
        );
        let e = pick_zone(Some(&req(vec![topo("c")], vec![])), &served, "s").unwrap_err();
        assert!(matches!(e, CsiError::Exhausted(_)), "{e}");
        // A zoneless service is reachable from every zone.
        assert_eq!(
            pick_zone(Some(&req(vec![topo("c")], vec![])), &[], "s").unwrap(),
            None
        );
        let other = Topology {
            segments: HashMap::from([("kubernetes.io/hostname".into(), "h".into())]),
        };
        assert!(matches!(
            pick_zone(Some(&req(vec![other], vec![])), &served, "s"),
            Err(CsiError::Invalid(_))
        ));
    }
}
