//! One allocation round: rescind what no longer holds, then deal agents and divide each pool's
//! remaining budget between frameworks. Runs in O(agents + frameworks × pools + offers) time,
//! plus a sort of the frameworks; see the module doc for the model.

use std::collections::HashMap;

use super::ledger::Ledger;
use super::waterfill::waterfill;
use super::{reachable, Allocation, DiskOffer, Offer, Rescind, RescindReason, Snapshot};

/// Why an outstanding offer cannot stand, apart from capacity.
fn stale(
    s: &Snapshot,
    l: &Ledger,
    o: &Offer,
    volume_holder: &HashMap<usize, usize>,
) -> Option<RescindReason> {
    if s.now_ms >= o.expires_ms {
        return Some(RescindReason::Expired);
    }
    let (Some(&f), Some(&a)) = (
        l.frameworks.get(o.framework_id.as_str()),
        l.agents.get(o.agent_id.as_str()),
    ) else {
        return Some(RescindReason::Gone);
    };
    let agent_zone = s.agents[a].zone.as_deref();
    for d in &o.disks {
        match d {
            DiskOffer::Raw { pool_id, .. } => match l.pools.get(pool_id.as_str()) {
                Some(&p)
                    if s.pools[p].available
                        && reachable(agent_zone, s.pools[p].zone.as_deref()) => {}
                _ => return Some(RescindReason::PoolUnavailable),
            },
            DiskOffer::Volume { volume_id, mb, .. } => {
                let Some(&v) = l.volumes.get(volume_id.as_str()) else {
                    return Some(RescindReason::VolumeUnavailable);
                };
                let vol = &s.volumes[v];
                // Being grown, or grown since: the offer shows a size that no longer holds.
                if l.growing.contains(volume_id.as_str()) || *mb != vol.mb {
                    return Some(RescindReason::VolumeUnavailable);
                }
                match l.pools.get(vol.pool_id.as_str()) {
                    Some(&p) if s.pools[p].available => {}
                    _ => return Some(RescindReason::PoolUnavailable),
                }
                if !volume_allowed(s, v, f, a) || volume_holder.get(&v).is_some_and(|&h| h != f) {
                    return Some(RescindReason::VolumeUnavailable);
                }
            }
        }
    }
    None
}

/// Whether volume `v` may be offered to framework `f` on agent `a`, ignoring quota and
/// other offers.
fn volume_allowed(s: &Snapshot, v: usize, f: usize, a: usize) -> bool {
    let vol = &s.volumes[v];
    let fw = &s.frameworks[f].id;
    let agent = &s.agents[a];
    let owner_ok = match &vol.reserved_by {
        Some(owner) => owner == fw,
        None => vol.frameworks.is_empty() || vol.frameworks.iter().any(|x| x == fw),
    };
    let place_ok = match &vol.attached_to_agent {
        Some(at) => *at == agent.id,
        None => reachable(agent.zone.as_deref(), vol.zone.as_deref()),
    };
    owner_ok && place_ok
}

/// Active DECLINE filters of one framework, by agent.
struct Filters<'a> {
    by_agent: HashMap<&'a str, Vec<(Option<&'a str>, u64)>>,
}

impl<'a> Filters<'a> {
    fn new(s: &'a Snapshot, f: usize) -> Option<Self> {
        let fw = &s.frameworks[f];
        let mut by_agent: HashMap<&str, Vec<(Option<&str>, u64)>> = HashMap::new();
        for flt in fw.filters.iter().filter(|x| x.until_ms > s.now_ms) {
            by_agent
                .entry(flt.agent_id.as_str())
                .or_default()
                .push((flt.pool_id.as_deref(), flt.until_ms));
        }
        (!by_agent.is_empty()).then_some(Filters { by_agent })
    }

    /// Whether `pool` (every pool when `None`) is filtered on `agent`.
    fn blocks(&self, agent: &str, pool: Option<&str>) -> bool {
        self.by_agent.get(agent).is_some_and(|fs| {
            fs.iter()
                .any(|(fp, _)| fp.is_none() || (pool.is_some() && *fp == pool))
        })
    }
}

fn blocked(filters: &[Option<Filters>], f: usize, agent: &str, pool: Option<&str>) -> bool {
    filters[f].as_ref().is_some_and(|x| x.blocks(agent, pool))
}

/// One allocation round. See the module doc for the rules and invariants.
pub fn allocate(s: &Snapshot) -> Allocation {
    let l = Ledger::new(s);
    let n_fw = s.frameworks.len();
    let n_pools = s.pools.len();
    let min_mb = s.config.min_offer_mb.max(1);

    // 1. Outstanding offers that no longer stand, oldest first so the older of two offers of
    //    one volume to different frameworks is kept.
    let mut order: Vec<usize> = (0..s.outstanding.len()).collect();
    order.sort_unstable_by_key(|&i| s.outstanding[i].id);
    let mut rescinded: Vec<Option<RescindReason>> = vec![None; s.outstanding.len()];
    let mut volume_holder: HashMap<usize, usize> = HashMap::new();
    for &i in &order {
        let o = &s.outstanding[i];
        rescinded[i] = stale(s, &l, o, &volume_holder);
        if rescinded[i].is_none() {
            let f = l.frameworks[o.framework_id.as_str()];
            for d in &o.disks {
                if let DiskOffer::Volume { volume_id, .. } = d {
                    volume_holder.insert(l.volumes[volume_id.as_str()], f);
                }
            }
        }
    }

    // 2. Capacity: a pool's shares (one per framework: the largest of its offers) must fit
    //    its budget; rescind newest offers first until they do.
    let mut raw_by_pool: Vec<Vec<(usize, usize, u64)>> = vec![Vec::new(); n_pools];
    for &i in &order {
        if rescinded[i].is_some() {
            continue;
        }
        let o = &s.outstanding[i];
        let f = l.frameworks[o.framework_id.as_str()];
        for d in &o.disks {
            if let DiskOffer::Raw { pool_id, mb, .. } = d {
                raw_by_pool[l.pools[pool_id.as_str()]].push((i, f, *mb));
            }
        }
    }
    let budget: Vec<u64> = (0..n_pools).map(|p| l.budget(s, p)).collect();
    for (p, entries) in raw_by_pool.iter().enumerate() {
        // Each framework's offers of this pool (in id order) and its share: the largest.
        let mut per_fw: HashMap<usize, (Vec<(usize, u64)>, u64)> = HashMap::new();
        for &(i, f, mb) in entries.iter().filter(|e| rescinded[e.0].is_none()) {
            let e = per_fw.entry(f).or_default();
            e.0.push((i, mb));
            e.1 = e.1.max(mb);
        }
        let mut total = per_fw.values().fold(0u64, |a, e| a.saturating_add(e.1));
        // `entries` is in id order: walk it backwards.
        for &(i, f, _) in entries.iter().rev() {
            if total <= budget[p] {
                break;
            }
            if rescinded[i].is_some() {
                continue;
            }
            rescinded[i] = Some(RescindReason::CapacityLoss);
            if let Some(e) = per_fw.get_mut(&f) {
                e.0.retain(|&(j, _)| j != i);
                let new_share = e.0.iter().map(|&(_, mb)| mb).max().unwrap_or(0);
                total = total.saturating_sub(e.1).saturating_add(new_share);
                e.1 = new_share;
            }
        }
    }

    // 3. What stands: shares, usage and volume slots per framework.
    let mut share: HashMap<(usize, usize), u64> = HashMap::new();
    let mut offered = vec![0u64; n_pools];
    let mut volume_taken = vec![false; s.volumes.len()];
    let mut fw_volumes: HashMap<(usize, usize), ()> = HashMap::new();
    for &i in &order {
        if rescinded[i].is_some() {
            continue;
        }
        let o = &s.outstanding[i];
        let f = l.frameworks[o.framework_id.as_str()];
        for d in &o.disks {
            match d {
                DiskOffer::Raw { pool_id, mb, .. } => {
                    let e = share.entry((f, l.pools[pool_id.as_str()])).or_default();
                    *e = (*e).max(*mb);
                }
                DiskOffer::Volume { volume_id, .. } => {
                    let v = l.volumes[volume_id.as_str()];
                    volume_taken[v] = true;
                    fw_volumes.insert((f, v), ());
                }
            }
        }
    }
    let mut used: Vec<u64> = l.held_mb.clone();
    let mut slots: Vec<u64> = l.held_volumes.clone();
    for (&(f, p), &mb) in &share {
        offered[p] = offered[p].saturating_add(mb);
        used[f] = used[f].saturating_add(mb);
        slots[f] += 1;
    }
    for &(f, v) in fw_volumes.keys() {
        if s.volumes[v].reserved_by.is_none() {
            used[f] = used[f].saturating_add(s.volumes[v].mb);
            slots[f] += 1;
        }
    }
    let mut mb_room: Vec<u64> = (0..n_fw)
        .map(|f| {
            s.frameworks[f]
                .quota
                .max_mb
                .map_or(u64::MAX, |m| m.saturating_sub(used[f]))
        })
        .collect();
    let mut slot_room: Vec<u64> = (0..n_fw)
        .map(|f| {
            s.frameworks[f]
                .quota
                .max_volumes
                .map_or(u64::MAX, |m| u64::from(m).saturating_sub(slots[f]))
        })
        .collect();

    // Roles and the DRF order.
    let mut role_ix: HashMap<&str, usize> = HashMap::new();
    let mut role_of = Vec::with_capacity(n_fw);
    for fw in &s.frameworks {
        let next = role_ix.len();
        role_of.push(*role_ix.entry(fw.role.as_str()).or_insert(next));
    }
    let mut role_weight = vec![1.0f64; role_ix.len()];
    for (r, &i) in &role_ix {
        if let Some(&w) = s.role_weights.get(*r) {
            role_weight[i] = w;
        }
    }
    let mut role_used = vec![0f64; role_ix.len()];
    for f in 0..n_fw {
        role_used[role_of[f]] += used[f] as f64;
    }
    // Role quotas: the room each role has left, over all its frameworks.
    let mut role_mb_room = vec![u64::MAX; role_ix.len()];
    let mut role_slot_room = vec![u64::MAX; role_ix.len()];
    for (r, &i) in &role_ix {
        let Some(q) = s.role_quotas.get(*r) else {
            continue;
        };
        let members = (0..n_fw).filter(|&f| role_of[f] == i);
        let (mb, count) = members.fold((0u64, 0u64), |(mb, n), f| {
            (mb.saturating_add(used[f]), n.saturating_add(slots[f]))
        });
        if let Some(m) = q.max_mb {
            role_mb_room[i] = m.saturating_sub(mb);
        }
        if let Some(m) = q.max_volumes {
            role_slot_room[i] = u64::from(m).saturating_sub(count);
        }
    }
    // What framework `f` may still take: its own room and its role's, whichever is smaller.
    let room_mb =
        |f: usize, mb_room: &[u64], role_mb_room: &[u64]| mb_room[f].min(role_mb_room[role_of[f]]);
    let room_slots = |f: usize, slot_room: &[u64], role_slot_room: &[u64]| {
        slot_room[f].min(role_slot_room[role_of[f]])
    };
    let good = |w: f64| w.is_finite() && w > 0.0;
    let mut drf: Vec<usize> = (0..n_fw)
        .filter(|&f| {
            let fw = &s.frameworks[f];
            !fw.suppressed && good(fw.weight) && good(role_weight[role_of[f]])
        })
        .collect();
    let key = |f: usize| {
        let r = role_of[f];
        (
            role_used[r] / role_weight[r],
            used[f] as f64 / s.frameworks[f].weight,
        )
    };
    drf.sort_by(|&a, &b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.total_cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then_with(|| s.frameworks[a].id.cmp(&s.frameworks[b].id))
    });
    let filters: Vec<Option<Filters>> = (0..n_fw).map(|f| Filters::new(s, f)).collect();

    // 4. Zones: agents grouped by zone, with the open pools and offerable volumes they reach.
    let mut group_ix: HashMap<Option<&str>, usize> = HashMap::new();
    let mut group_agents: Vec<Vec<usize>> = Vec::new();
    for (a, agent) in s.agents.iter().enumerate() {
        let next = group_ix.len();
        let g = *group_ix.entry(agent.zone.as_deref()).or_insert(next);
        if g == group_agents.len() {
            group_agents.push(Vec::new());
        }
        group_agents[g].push(a);
    }
    let n_groups = group_agents.len();
    // Groups that reach storage in `zone`.
    let groups_reaching = |zone: Option<&str>| -> Vec<usize> {
        match zone {
            None => (0..n_groups).collect(),
            Some(z) => group_ix.get(&Some(z)).copied().into_iter().collect(),
        }
    };
    let open: Vec<bool> = (0..n_pools)
        .map(|p| budget[p].saturating_sub(offered[p]) >= min_mb)
        .collect();
    let mut group_pools: Vec<Vec<usize>> = vec![Vec::new(); n_groups];
    for p in (0..n_pools).filter(|&p| open[p]) {
        for g in groups_reaching(s.pools[p].zone.as_deref()) {
            group_pools[g].push(p);
        }
    }
    let mut shared_open: HashMap<(usize, usize), usize> = HashMap::new();
    for &(f, p) in share.keys() {
        if open[p] {
            for g in groups_reaching(s.pools[p].zone.as_deref()) {
                *shared_open.entry((f, g)).or_default() += 1;
            }
        }
    }
    let mut group_volumes: Vec<Vec<usize>> = vec![Vec::new(); n_groups];
    for (v, vol) in s.volumes.iter().enumerate() {
        let pool_ok = l
            .pools
            .get(vol.pool_id.as_str())
            .is_some_and(|&p| s.pools[p].available);
        if volume_taken[v] || !pool_ok || l.growing.contains(vol.volume_id.as_str()) {
            continue;
        }
        let groups = match &vol.attached_to_agent {
            Some(at) => match l.agents.get(at.as_str()) {
                Some(&a) => vec![group_ix[&s.agents[a].zone.as_deref()]],
                None => continue,
            },
            None => groups_reaching(vol.zone.as_deref()),
        };
        for g in groups {
            group_volumes[g].push(v);
        }
    }

    // 5. Deal each zone's agents round-robin to the frameworks that could get something there,
    //    lowest dominant share first: one new offer per agent at most.
    let can_raw = |f: usize, mb_room: &[u64], slot_room: &[u64], rmb: &[u64], rslots: &[u64]| {
        room_mb(f, mb_room, rmb) >= min_mb && room_slots(f, slot_room, rslots) >= 1
    };
    struct Deal {
        g: usize,
        a: usize,
        f: usize,
        volumes: Vec<usize>,
    }
    let mut deals: Vec<Deal> = Vec::new();
    let mut deals_of: Vec<Vec<usize>> = vec![Vec::new(); n_fw];
    let mut group_fws: Vec<Vec<usize>> = vec![Vec::new(); n_groups];
    let mut dealt_fws: Vec<usize> = Vec::new();
    let mut rank = vec![usize::MAX; n_fw];
    for (i, &f) in drf.iter().enumerate() {
        rank[f] = i;
    }
    for g in 0..n_groups {
        let mut open_volume_min: Option<u64> = None;
        let mut named: HashMap<usize, ()> = HashMap::new();
        for &v in &group_volumes[g] {
            let vol = &s.volumes[v];
            if let Some(owner) = &vol.reserved_by {
                if let Some(&f) = l.frameworks.get(owner.as_str()) {
                    named.insert(f, ());
                }
            } else if vol.frameworks.is_empty() {
                open_volume_min = Some(open_volume_min.map_or(vol.mb, |m| m.min(vol.mb)));
            } else {
                for id in &vol.frameworks {
                    if let Some(&f) = l.frameworks.get(id.as_str()) {
                        named.insert(f, ());
                    }
                }
            }
        }
        let n_open = group_pools[g].len();
        let hungry: Vec<usize> = drf
            .iter()
            .copied()
            .filter(|&f| {
                let raw = can_raw(f, &mb_room, &slot_room, &role_mb_room, &role_slot_room)
                    && shared_open.get(&(f, g)).copied().unwrap_or(0) < n_open;
                let vols = named.contains_key(&f)
                    || open_volume_min.is_some_and(|m| {
                        m <= room_mb(f, &mb_room, &role_mb_room)
                            && room_slots(f, &slot_room, &role_slot_room) >= 1
                    });
                raw || vols
            })
            .collect();
        if hungry.is_empty() {
            continue;
        }
        let mut cursor = 0usize;
        for &a in &group_agents[g] {
            let agent = s.agents[a].id.as_str();
            for _ in 0..hungry.len() {
                let f = hungry[cursor % hungry.len()];
                cursor += 1;
                if !blocked(&filters, f, agent, None) {
                    if deals_of[f].is_empty() {
                        dealt_fws.push(f);
                    }
                    if deals_of[f].last().is_none_or(|&d| deals[d].g != g) {
                        group_fws[g].push(f);
                    }
                    deals_of[f].push(deals.len());
                    deals.push(Deal {
                        g,
                        a,
                        f,
                        volumes: Vec::new(),
                    });
                    break;
                }
            }
        }
    }
    dealt_fws.sort_unstable_by_key(|&f| rank[f]);

    // 6. Divide each open pool's remaining budget between the frameworks dealt an agent that
    //    reaches it (and not filtered there): between roles by role weight, then between the
    //    frameworks of each role by framework weight.
    let mut new_share: HashMap<(usize, usize), u64> = HashMap::new();
    for p in (0..n_pools).filter(|&p| open[p]) {
        let pool = &s.pools[p];
        let zone = pool.zone.as_deref();
        let (candidates, group): (&[usize], Option<usize>) = match zone {
            None => (&dealt_fws, None),
            Some(z) => match group_ix.get(&Some(z)) {
                Some(&g) => (&group_fws[g], Some(g)),
                None => continue,
            },
        };
        let mut remaining = budget[p] - offered[p];
        let max_takers = usize::try_from(remaining / min_mb).unwrap_or(usize::MAX);
        let takers: Vec<usize> = candidates
            .iter()
            .copied()
            .filter(|&f| {
                can_raw(f, &mb_room, &slot_room, &role_mb_room, &role_slot_room)
                    && !share.contains_key(&(f, p))
                    && (filters[f].is_none()
                        || deals_of[f].iter().any(|&d| {
                            group.is_none_or(|g| deals[d].g == g)
                                && !blocked(&filters, f, &s.agents[deals[d].a].id, Some(&pool.id))
                        }))
            })
            .take(max_takers)
            .collect();
        if takers.is_empty() {
            continue;
        }
        // Roles among the takers, in order of first appearance (the DRF order); a role takes
        // no more frameworks than it has volume slots left (each share takes one).
        let mut roles: Vec<(usize, Vec<usize>)> = Vec::new();
        for &f in &takers {
            let r = role_of[f];
            match roles.iter_mut().find(|(x, _)| *x == r) {
                Some((_, members)) => {
                    if (members.len() as u64) < role_slot_room[r] {
                        members.push(f);
                    }
                }
                None => roles.push((r, vec![f])),
            }
        }
        let role_items: Vec<(f64, f64, u64)> = roles
            .iter()
            .map(|(r, members)| {
                let cap = members
                    .iter()
                    .fold(0u64, |a, &f| a.saturating_add(mb_room[f]))
                    .min(role_mb_room[*r]);
                (role_used[*r], role_weight[*r], cap)
            })
            .collect();
        let role_grants = waterfill(remaining, &role_items);
        for ((r, members), grant) in roles.iter().zip(role_grants) {
            let items: Vec<(f64, f64, u64)> = members
                .iter()
                .map(|&f| {
                    let cap = room_mb(f, &mb_room, &role_mb_room);
                    (used[f] as f64, s.frameworks[f].weight, cap)
                })
                .collect();
            for (&f, mb) in members.iter().zip(waterfill(grant, &items)) {
                if mb < min_mb
                    || mb > remaining
                    || mb > role_mb_room[*r]
                    || room_slots(f, &slot_room, &role_slot_room) == 0
                {
                    continue;
                }
                remaining -= mb;
                new_share.insert((f, p), mb);
                used[f] += mb;
                role_used[*r] += mb as f64;
                mb_room[f] -= mb;
                slot_room[f] -= 1;
                role_mb_room[*r] = role_mb_room[*r].saturating_sub(mb);
                role_slot_room[*r] = role_slot_room[*r].saturating_sub(1);
            }
        }
    }

    // 7. Existing volumes, each to one framework: the first dealt an agent where it may go.
    //    Each deal looks only at the volumes that could pass `volume_allowed` for it (indexed
    //    once per round, by framework and by agent), in their order in the zone, instead of
    //    every volume of its zone: a round stays linear in agents.
    let mut volume_owner: Vec<Option<usize>> = vec![None; s.volumes.len()];
    let mut fw_by_id: HashMap<&str, Vec<usize>> = HashMap::new();
    for (f, fw) in s.frameworks.iter().enumerate() {
        fw_by_id.entry(fw.id.as_str()).or_default().push(f);
    }
    let fws_named = |ids: &mut dyn Iterator<Item = &String>| -> Vec<usize> {
        let mut out: Vec<usize> = ids
            .filter_map(|id| fw_by_id.get(id.as_str()))
            .flatten()
            .copied()
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    };
    for (g, vols) in group_volumes.iter().enumerate() {
        // Candidates by position in `vols`: volumes any framework may take (and not attached),
        // still unowned; those restricted to a framework (reserved or named), and not
        // attached; those attached to an agent; and open volumes a framework took this round.
        let mut anyone: Vec<usize> = Vec::new();
        let mut named: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut attached: HashMap<usize, Vec<usize>> = HashMap::new();
        let mut taken: HashMap<usize, Vec<usize>> = HashMap::new();
        for (i, &v) in vols.iter().enumerate() {
            let vol = &s.volumes[v];
            if let Some(at) = &vol.attached_to_agent {
                // In this group only when its agent is known (step 4).
                if let Some(&a) = l.agents.get(at.as_str()) {
                    attached.entry(a).or_default().push(i);
                }
                continue;
            }
            let fws = match &vol.reserved_by {
                Some(owner) => fws_named(&mut std::iter::once(owner)),
                None if vol.frameworks.is_empty() => {
                    // A volume without a zone is in every group: one taken in an earlier
                    // group stays its taker's.
                    match volume_owner[v] {
                        None => anyone.push(i),
                        Some(o) => taken.entry(o).or_default().push(i),
                    }
                    continue;
                }
                None => fws_named(&mut vol.frameworks.iter()),
            };
            for f in fws {
                named.entry(f).or_default().push(i);
            }
        }
        let mut candidates: Vec<usize> = Vec::new();
        for deal in deals.iter_mut().filter(|d| d.g == g) {
            let (f, a) = (deal.f, deal.a);
            candidates.clear();
            candidates.extend_from_slice(&anyone);
            for list in [named.get(&f), attached.get(&a), taken.get(&f)]
                .into_iter()
                .flatten()
            {
                candidates.extend_from_slice(list);
            }
            candidates.sort_unstable();
            candidates.dedup();
            let mut took_open = false;
            for &i in &candidates {
                let v = vols[i];
                if volume_owner[v].is_some_and(|o| o != f)
                    || !volume_allowed(s, v, f, a)
                    || blocked(&filters, f, &s.agents[a].id, Some(&s.volumes[v].pool_id))
                {
                    continue;
                }
                let vol = &s.volumes[v];
                if volume_owner[v].is_none() && vol.reserved_by.is_none() {
                    if room_mb(f, &mb_room, &role_mb_room) < vol.mb
                        || room_slots(f, &slot_room, &role_slot_room) == 0
                    {
                        continue;
                    }
                    mb_room[f] -= vol.mb;
                    slot_room[f] -= 1;
                    let r = role_of[f];
                    role_mb_room[r] = role_mb_room[r].saturating_sub(vol.mb);
                    role_slot_room[r] = role_slot_room[r].saturating_sub(1);
                    if vol.attached_to_agent.is_none() && vol.frameworks.is_empty() {
                        taken.entry(f).or_default().push(i);
                        took_open = true;
                    }
                }
                volume_owner[v] = Some(f);
                deal.volumes.push(v);
            }
            if took_open {
                anyone.retain(|&i| volume_owner[vols[i]].is_none());
            }
        }
    }

    // 8. Offers.
    let mut next = s.next_offer_id;
    let mut new_offers = Vec::new();
    let expires_ms = s.now_ms.saturating_add(s.config.offer_timeout_ms);
    for deal in &deals {
        let agent = &s.agents[deal.a];
        let mut disks = Vec::new();
        for &p in &group_pools[deal.g] {
            let pool = &s.pools[p];
            if let Some(&mb) = new_share.get(&(deal.f, p)) {
                if !blocked(&filters, deal.f, &agent.id, Some(&pool.id)) {
                    disks.push(DiskOffer::Raw {
                        pool_id: pool.id.clone(),
                        profile: pool.profile.clone(),
                        mb,
                    });
                }
            }
        }
        for &v in &deal.volumes {
            let vol = &s.volumes[v];
            disks.push(DiskOffer::Volume {
                volume_id: vol.volume_id.clone(),
                pool_id: vol.pool_id.clone(),
                kind: vol.kind,
                mb: vol.mb,
            });
        }
        if disks.is_empty() {
            continue;
        }
        new_offers.push(Offer {
            id: next,
            framework_id: s.frameworks[deal.f].id.clone(),
            agent_id: agent.id.clone(),
            hostname: agent.hostname.clone(),
            expires_ms,
            disks,
        });
        next += 1;
    }

    let mut rescinds: Vec<Rescind> = order
        .iter()
        .filter_map(|&i| {
            rescinded[i].map(|reason| Rescind {
                offer_id: s.outstanding[i].id,
                reason,
            })
        })
        .collect();
    rescinds.sort_unstable_by_key(|r| r.offer_id);
    Allocation {
        new_offers,
        rescinds,
        next_offer_id: next,
    }
}
