//! The ledger of a snapshot: its ids resolved to indexes, the capacity each framework already
//! holds and each pool has reserved, and a pool's budget. Built by a round and by an accept.

use std::collections::HashMap;

use super::Snapshot;

/// What a snapshot's ids resolve to, plus the held capacity derived from it. Shared with
/// `apply_accept` so both count holdings the same way.
pub(super) struct Ledger<'a> {
    pub pools: HashMap<&'a str, usize>,
    pub frameworks: HashMap<&'a str, usize>,
    pub agents: HashMap<&'a str, usize>,
    pub volumes: HashMap<&'a str, usize>,
    /// Reservations per pool not yet provisioned (known framework or not).
    pub reserved_mb: Vec<u64>,
    pub held_mb: Vec<u64>,
    pub held_volumes: Vec<u64>,
    /// Volumes with a growth in flight (a reservation naming them): not offered meanwhile.
    pub growing: std::collections::HashSet<&'a str>,
}

impl<'a> Ledger<'a> {
    pub fn new(s: &'a Snapshot) -> Self {
        let pools: HashMap<&str, usize> = s
            .pools
            .iter()
            .enumerate()
            .map(|(i, p)| (p.id.as_str(), i))
            .collect();
        let frameworks: HashMap<&str, usize> = s
            .frameworks
            .iter()
            .enumerate()
            .map(|(i, f)| (f.id.as_str(), i))
            .collect();
        let agents = s
            .agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.as_str(), i))
            .collect();
        let volumes = s
            .volumes
            .iter()
            .enumerate()
            .map(|(i, v)| (v.volume_id.as_str(), i))
            .collect();
        let mut reserved_mb = vec![0u64; s.pools.len()];
        let mut held_mb = vec![0u64; s.frameworks.len()];
        let mut held_volumes = vec![0u64; s.frameworks.len()];
        let mut growing = std::collections::HashSet::new();
        for r in &s.reservations {
            if let Some(v) = &r.volume_id {
                growing.insert(v.as_str());
            }
            // Once provisioned, the pool's `free_mb` counts these MB: not twice.
            if let (false, Some(&p)) = (r.provisioned, pools.get(r.pool_id.as_str())) {
                reserved_mb[p] = reserved_mb[p].saturating_add(r.mb);
            }
            if let Some(&f) = frameworks.get(r.framework_id.as_str()) {
                held_mb[f] = held_mb[f].saturating_add(r.mb);
                // Growing a volume adds MB to one already counted.
                if r.volume_id.is_none() {
                    held_volumes[f] += 1;
                }
            }
        }
        for v in &s.volumes {
            if let Some(&f) = v.reserved_by.as_deref().and_then(|id| frameworks.get(id)) {
                held_mb[f] = held_mb[f].saturating_add(v.mb);
                held_volumes[f] += 1;
            }
        }
        Ledger {
            pools,
            frameworks,
            agents,
            volumes,
            reserved_mb,
            held_mb,
            held_volumes,
            growing,
        }
    }

    /// What pool `p` may have in shares: `free - headroom - reservations`, 0 if unavailable.
    pub fn budget(&self, s: &Snapshot, p: usize) -> u64 {
        let pool = &s.pools[p];
        if !pool.available {
            return 0;
        }
        pool.free_mb
            .saturating_sub(s.config.headroom_mb)
            .saturating_sub(self.reserved_mb[p])
    }
}
