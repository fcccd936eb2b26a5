//! ACCEPT: check what a framework used against the offer, and name the framework's other
//! offers that showed the same share or volume, so the share is never spent twice.

use std::collections::{BTreeSet, HashMap};

use super::ledger::Ledger;
use super::{
    AcceptError, Accepted, DiskOffer, Offer, OfferId, Rescind, RescindReason, Reservation,
    Snapshot, Use,
};

/// Apply an ACCEPT of offer `offer_id` by `framework_id` that used `uses` (the rest of the
/// offer is declined, as in Mesos). `s` is the current snapshot, whose `outstanding` must
/// still hold the offer. Returns what to record and which other offers to rescind: every
/// other offer of the framework that carries a pool it created a volume from (or grew a
/// volume from), or a volume it took or grew. Pure: the caller applies the result (removes
/// the accepted and rescinded offers from its outstanding list, stores the reservations,
/// marks the volumes reserved).
pub fn apply_accept(
    s: &Snapshot,
    framework_id: &str,
    offer_id: OfferId,
    uses: &[Use],
) -> Result<Accepted, AcceptError> {
    apply_accept_offers(s, framework_id, &[offer_id], uses)
}

/// [`apply_accept`] of several offers at once (one ACCEPT naming several offers of one
/// agent, as Mesos allows): what they show is pooled. A pool's share appears once however
/// many of the offers show it (it is one share), so a use may take up to that share.
pub fn apply_accept_offers(
    s: &Snapshot,
    framework_id: &str,
    offer_ids: &[OfferId],
    uses: &[Use],
) -> Result<Accepted, AcceptError> {
    let Some(&offer_id) = offer_ids.first() else {
        return Ok(Accepted::default());
    };
    let mut accepted: Vec<&Offer> = Vec::with_capacity(offer_ids.len());
    for &id in offer_ids {
        let offer = s
            .outstanding
            .iter()
            .find(|o| o.id == id)
            .ok_or(AcceptError::UnknownOffer(id))?;
        if offer.framework_id != framework_id {
            return Err(AcceptError::WrongFramework {
                offer_id: id,
                framework_id: framework_id.to_string(),
            });
        }
        accepted.push(offer);
    }
    let disks = || accepted.iter().flat_map(|o| o.disks.iter());
    let mut raw_used: HashMap<&str, u64> = HashMap::new();
    let mut volumes_taken: BTreeSet<&str> = BTreeSet::new();
    // Volumes whose size changes: other offers showing them are stale.
    let mut volumes_grown: BTreeSet<&str> = BTreeSet::new();
    let mut out = Accepted::default();
    let l = Ledger::new(s);
    for u in uses {
        match u {
            Use::Raw { pool_id, mb } | Use::Grow { pool_id, mb, .. } => {
                let offered_mb = disks()
                    .filter_map(|d| match d {
                        DiskOffer::Raw { pool_id: p, mb, .. } if p == pool_id => Some(*mb),
                        _ => None,
                    })
                    .max()
                    .ok_or_else(|| AcceptError::PoolNotOffered {
                        offer_id,
                        pool_id: pool_id.clone(),
                    })?;
                let total = raw_used.entry(pool_id.as_str()).or_default();
                *total = total.saturating_add(*mb);
                if *total > offered_mb {
                    return Err(AcceptError::MoreThanOffered {
                        pool_id: pool_id.clone(),
                        offered_mb,
                        used_mb: *total,
                    });
                }
                let volume_id = match u {
                    Use::Grow { volume_id, .. } => {
                        // The addition must come from the pool the volume lives in.
                        if let Some(&v) = l.volumes.get(volume_id.as_str()) {
                            if s.volumes[v].pool_id != *pool_id {
                                return Err(AcceptError::GrowFromOtherPool {
                                    volume_id: volume_id.clone(),
                                    volume_pool: s.volumes[v].pool_id.clone(),
                                    pool_id: pool_id.clone(),
                                });
                            }
                        }
                        volumes_grown.insert(volume_id.as_str());
                        Some(volume_id.clone())
                    }
                    _ => None,
                };
                out.reservations.push(Reservation {
                    framework_id: framework_id.to_string(),
                    pool_id: pool_id.clone(),
                    volume_id,
                    mb: *mb,
                    provisioned: false,
                });
            }
            Use::Volume { volume_id } => {
                let offered = disks()
                    .any(|d| matches!(d, DiskOffer::Volume { volume_id: v, .. } if v == volume_id));
                if !offered {
                    return Err(AcceptError::VolumeNotOffered {
                        offer_id,
                        volume_id: volume_id.clone(),
                    });
                }
                if volumes_taken.insert(volume_id.as_str()) {
                    out.reserved_volumes.push(volume_id.clone());
                }
            }
        }
    }

    let mut others = s
        .outstanding
        .iter()
        .filter(|o| !offer_ids.contains(&o.id) && o.framework_id == framework_id)
        .collect::<Vec<_>>();
    others.sort_unstable_by_key(|o| o.id);
    let mut kept = Vec::new();
    for o in others {
        let clash = o.disks.iter().any(|d| match d {
            DiskOffer::Raw { pool_id, .. } => raw_used.contains_key(pool_id.as_str()),
            DiskOffer::Volume { volume_id, .. } => {
                volumes_taken.contains(volume_id.as_str())
                    || volumes_grown.contains(volume_id.as_str())
            }
        });
        if clash {
            out.rescinds.push(Rescind {
                offer_id: o.id,
                reason: RescindReason::Accepted,
            });
        } else {
            kept.push(o);
        }
    }

    // Volume quota: each RAW use creates a volume. Count what the framework would hold plus
    // the slots its remaining offers keep (one per pool shared, one per unowned volume); for
    // a role quota, the same over every framework of the role.
    if let Some(&f) = l.frameworks.get(framework_id) {
        let newly_owned = volumes_taken
            .iter()
            .filter(|v| {
                l.volumes
                    .get(**v)
                    .is_none_or(|&i| s.volumes[i].reserved_by.is_none())
            })
            .count() as u64;
        let created = out
            .reservations
            .iter()
            .filter(|r| r.volume_id.is_none())
            .count() as u64;
        // Taking a volume one already owns adds nothing, even over a lowered quota.
        let adds = created + newly_owned;
        let mine = l.held_volumes[f] + adds + slots_kept(s, &l, kept.iter().copied());
        if let Some(max) = s.frameworks[f].quota.max_volumes {
            if adds > 0 && mine > u64::from(max) {
                return Err(AcceptError::VolumeQuota {
                    framework_id: framework_id.to_string(),
                    max_volumes: max,
                });
            }
        }
        let role = &s.frameworks[f].role;
        if let Some(max) = s.role_quotas.get(role).and_then(|q| q.max_volumes) {
            let mut total = mine;
            for (g, other) in s.frameworks.iter().enumerate() {
                if g == f || other.role != *role {
                    continue;
                }
                let theirs = s.outstanding.iter().filter(|o| o.framework_id == other.id);
                total += l.held_volumes[g] + slots_kept(s, &l, theirs);
            }
            if adds > 0 && total > u64::from(max) {
                return Err(AcceptError::RoleVolumeQuota {
                    role: role.clone(),
                    max_volumes: max,
                });
            }
        }
    }
    Ok(out)
}

/// Volume slots that outstanding offers keep: one per pool shared, one per unowned volume.
fn slots_kept<'a>(s: &Snapshot, l: &Ledger, offers: impl Iterator<Item = &'a Offer>) -> u64 {
    let mut pools = BTreeSet::new();
    let mut unowned = BTreeSet::new();
    for o in offers {
        for d in &o.disks {
            match d {
                DiskOffer::Raw { pool_id, .. } => {
                    pools.insert(pool_id.as_str());
                }
                DiskOffer::Volume { volume_id, .. } => {
                    let owned = l
                        .volumes
                        .get(volume_id.as_str())
                        .is_some_and(|&i| s.volumes[i].reserved_by.is_some());
                    if !owned {
                        unowned.insert(volume_id.as_str());
                    }
                }
            }
        }
    }
    (pools.len() + unowned.len()) as u64
}
