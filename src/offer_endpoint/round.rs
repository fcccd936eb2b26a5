//! Allocation rounds: the loop that runs them, the snapshot of capacity, agents, frameworks
//! and reservations fed to the pure offer engine (`crate::offers`), and the OFFERS and
//! RESCINDs that come out of it, as the wire carries them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::MutexGuard;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::state::{Framework, State};
use super::wire::{disk_resource, event_type, reserved_to};
use super::{pool_id, Endpoint};
use crate::mesos::agents::agent_instance;
use crate::mesos::client;
use crate::mesos::v1;
use crate::mesos::v1::scheduler::{event, Event};
use crate::offers::{self, DiskOffer, OfferId, Snapshot};

/// What a snapshot reads from the store and the agent list. Decoding every volume and
/// reservation is the bulk of a snapshot's work, so it is read without the endpoint's state
/// lock ([`Endpoint::store_view`]); only the cheap part that depends on the state is built
/// under it.
pub(super) struct StoreView {
    agents: Vec<offers::Agent>,
    reservations: Vec<crate::store::Reservation>,
    /// Each volume that may be offered, with its (service, name): skipped while an operation
    /// in flight is creating it.
    volumes: Vec<(offers::ExistingVolume, String, String)>,
}

impl Endpoint {
    /// Allocation rounds until `token` is cancelled: every `allocation_interval_ms` and after
    /// every call that may change the outcome. Resumes operations a previous run left pending.
    pub async fn run(self, token: CancellationToken) {
        self.resume_operations();
        let every = Duration::from_millis(self.config().allocation_interval_ms);
        // Acknowledged operation records past their retention are removed a quarter of the
        // retention after they expire at most (and at least once a minute), off this loop.
        let prune_every =
            Duration::from_secs_f64((self.config().operation_retention_secs / 4.0).min(60.0));
        let mut pruned_at: Option<tokio::time::Instant> = None;
        let mut pruning: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            if let Err(e) = self.round() {
                tracing::warn!(error = %e, "offer round failed");
            }
            let due = pruned_at.is_none_or(|t| t.elapsed() >= prune_every);
            if due && pruning.as_ref().is_none_or(|p| p.is_finished()) {
                pruned_at = Some(tokio::time::Instant::now());
                let ep = self.clone();
                pruning = Some(tokio::spawn(async move {
                    match ep.prune_operations().await {
                        Ok(0) => {}
                        Ok(n) => tracing::debug!(
                            records = n,
                            "acknowledged operation records past their retention removed"
                        ),
                        Err(e) => tracing::warn!(error = %e, "cannot remove old operation records"),
                    }
                    if let Err(e) = ep.forget_gone_frameworks().await {
                        tracing::warn!(error = %e, "cannot forget frameworks that went away");
                    }
                }));
            }
            tokio::select! {
                _ = token.cancelled() => break,
                _ = tokio::time::sleep(every) => {}
                _ = self.inner.wake.notified() => {}
            }
        }
        // Close every subscription stream.
        let mut st = self.state();
        for f in st.frameworks.values_mut() {
            f.tx = None;
        }
    }

    /// The store's part of a snapshot, read without the state lock (see
    /// [`Endpoint::locked_view`]).
    fn store_view(&self) -> Result<StoreView, crate::store::Error> {
        let store = self.store();
        let instances = store.instances()?;
        let known = self.agents_with_instances(&instances);
        // Lost and fenced nodes get no offers, and what a lost node holds is not offered
        // until it is fenced (`crate::fencing`).
        let held = crate::fencing::Held::read(store)?;
        let agents: Vec<offers::Agent> = known
            .iter()
            .filter(|a| !a.lost && !held.blocks_agent(&a.id))
            .map(|a| offers::Agent {
                id: a.id.clone(),
                hostname: a.hostname.clone(),
                zone: a.zone.clone(),
            })
            .collect();
        let reservations = store.reservations()?;
        let reserved: HashMap<&str, &str> = reservations
            .iter()
            .map(|r| (r.volume_id.as_str(), r.framework_id.as_str()))
            .collect();
        // Which agent stands for each instance: once per snapshot, not once per volume (an
        // accept builds a snapshot, so this is on every ACCEPT's path).
        let agent_of_instance: BTreeMap<String, &str> = known
            .iter()
            .rev() // the first agent wins, as a search in order would find it
            .filter_map(|k| Some((self.instance_for(k, &instances)?, k.id.as_str())))
            .collect();
        let mut volumes = Vec::new();
        for v in store.volumes_shared()?.iter() {
            let reserved_by = reserved.get(v.id.as_str()).map(|f| f.to_string());
            if v.status != crate::store::VolumeStatus::Available
                || (v.restrict_frameworks.is_empty() && reserved_by.is_none())
                || held.holds(v)
            {
                continue;
            }
            let attached_to_agent = v
                .attachments
                .first()
                .and_then(|a| agent_of_instance.get(&a.instance_id))
                .map(|id| id.to_string());
            if !v.attachments.is_empty() && attached_to_agent.is_none() {
                continue; // attached somewhere no agent stands for
            }
            let ev = offers::ExistingVolume {
                volume_id: v.id.clone(),
                pool_id: pool_id(
                    &v.service,
                    v.pool.as_deref().unwrap_or("default"),
                    v.zone.as_deref(),
                ),
                zone: v.zone.clone(),
                mb: (v.size_bytes >> 20).max(1),
                frameworks: v.restrict_frameworks.iter().cloned().collect(),
                reserved_by,
                attached_to_agent,
                kind: offers::VolumeKind::Mount,
            };
            volumes.push((ev, v.service.clone(), v.name.clone()));
        }
        Ok(StoreView {
            agents,
            reservations,
            volumes,
        })
    }

    /// The state lock, with a [`StoreView`] read before it was taken and still valid under
    /// it. The view is read without the lock, so many ACCEPTs and the allocation round do
    /// not queue behind one another's store reads; it is valid when no operation ended while
    /// it was read (an operation in flight is covered by `pending`: its capacity through its
    /// claim, the volume it creates by name). A few tries, then the view is read under the
    /// lock, as the other writers of the store (admin API, reconciler) never take this lock.
    pub(super) fn locked_view(
        &self,
    ) -> Result<(MutexGuard<'_, State>, StoreView), crate::store::Error> {
        for _ in 0..3 {
            let ended = self.state().in_flight.ended();
            let view = self.store_view()?;
            let st = self.state();
            if st.in_flight.ended() == ended {
                return Ok((st, view));
            }
        }
        let st = self.state();
        let view = self.store_view()?;
        Ok((st, view))
    }

    /// The engine's view of the world now: frameworks and offers from `st`, the rest from
    /// `view` (read as [`Endpoint::locked_view`] does).
    pub(super) fn snapshot(
        &self,
        st: &State,
        view: StoreView,
        now_ms: u64,
    ) -> Result<Snapshot, crate::store::Error> {
        // Readings and the claims not yet accounted in them, read together: a pending
        // operation counts against its pool until the manager has counted its bytes. Read
        // under the state lock, with `pending`.
        let (readings, claims) = self.manager().capacity_view();
        let mut pools = Vec::new();
        let mut profiles = BTreeMap::new();
        for (service, r) in &readings {
            for p in &r.pools {
                let id = pool_id(service, &p.pool, p.zone.as_deref());
                profiles.insert(id.clone(), p.pool.clone());
                pools.push(offers::Pool {
                    id,
                    service: service.clone(),
                    pool: p.pool.clone(),
                    profile: p.pool.clone(),
                    zone: p.zone.clone(),
                    total_mb: p.total_bytes >> 20,
                    free_mb: p.free_bytes >> 20,
                    available: r.available,
                });
            }
        }
        let StoreView {
            agents,
            reservations,
            volumes,
        } = view;
        // Being created: held through its reservation, offered only after its operation's
        // terminal status has been sent.
        // Acted on by an operation in flight: consumed by its ACCEPT until it has ended.
        let creating = st.in_flight.creating();
        let volumes: Vec<offers::ExistingVolume> = volumes
            .into_iter()
            .filter(|(_, service, name)| !creating.contains(&(service.as_str(), name.as_str())))
            .filter(|(v, _, _)| !st.in_flight.acts_on(&v.volume_id))
            .map(|(v, _, _)| v)
            .collect();
        let cfg = self.config();
        let share = |id: &str| cfg.frameworks.get(id).cloned().unwrap_or_default();
        let mut frameworks: Vec<offers::Framework> = st
            .frameworks
            .iter()
            .filter(|(_, f)| f.tx.is_some())
            .map(|(id, f)| offers::Framework {
                id: id.clone(),
                role: f.role.clone(),
                weight: share(id).weight,
                quota: share(id).quota(),
                suppressed: f.suppressed,
                filters: f.filters.clone(),
            })
            .collect();
        // Frameworks that are away (disconnected, torn down) but still hold volumes: offered
        // nothing, but what they hold counts towards their role's share and quota.
        // (A set, not a search of the list per reservation: with thousands of volumes held
        // and hundreds of frameworks that search was a good part of every snapshot.)
        let mut listed: HashSet<String> = frameworks.iter().map(|f| f.id.clone()).collect();
        for r in &reservations {
            if listed.insert(r.framework_id.clone()) {
                frameworks.push(offers::Framework {
                    id: r.framework_id.clone(),
                    role: r.role.clone(),
                    weight: share(&r.framework_id).weight,
                    quota: share(&r.framework_id).quota(),
                    suppressed: true,
                    filters: Vec::new(),
                });
            }
        }
        let role_weights = cfg
            .roles
            .iter()
            .map(|(r, c)| (r.clone(), c.weight))
            .collect();
        let role_quotas = cfg
            .roles
            .iter()
            .map(|(r, c)| (r.clone(), c.quota()))
            .collect();
        Ok(Snapshot {
            now_ms,
            next_offer_id: st.next_offer_id,
            config: offers::Config {
                headroom_mb: self.config().headroom_bytes >> 20,
                offer_timeout_ms: (self.config().offer_timeout_secs * 1000.0) as u64,
                min_offer_mb: 1,
            },
            pools,
            agents,
            frameworks,
            role_weights,
            role_quotas,
            reservations: st.in_flight.reservations(&claims),
            volumes,
            outstanding: st.outstanding.clone(),
        })
    }

    /// One allocation round: send new offers, rescind what the engine withdraws.
    fn round(&self) -> Result<(), crate::store::Error> {
        let (mut st, view) = self.locked_view()?;
        let now = crate::volumes::now_ms();
        for f in st.frameworks.values_mut() {
            f.filters.retain(|x| x.until_ms > now);
        }
        let snap = self.snapshot(&st, view, now)?;
        let alloc = offers::allocate(&snap);
        st.next_offer_id = alloc.next_offer_id;
        let gone: BTreeSet<OfferId> = alloc.rescinds.iter().map(|r| r.offer_id).collect();
        let mut rescinded = Vec::new();
        st.outstanding.retain(|o| {
            if gone.contains(&o.id) {
                rescinded.push((o.framework_id.clone(), o.id));
                false
            } else {
                true
            }
        });
        for (fw, id) in rescinded {
            st.send(&fw, self.rescind_event(id));
        }
        let agents = self.inner.agents.agents();
        // Looked up once per round, not once per offer (a round can offer every agent).
        let agents_by_id: HashMap<&str, &crate::mesos::client::Agent> =
            agents.iter().map(|a| (a.id.as_str(), a)).collect();
        let profiles: BTreeMap<&str, &str> = snap
            .pools
            .iter()
            .map(|p| (p.id.as_str(), p.profile.as_str()))
            .collect();
        // Volumes a framework holds are offered to it with their reservation.
        let held_by: HashMap<&str, &str> = snap
            .volumes
            .iter()
            .filter_map(|v| Some((v.volume_id.as_str(), v.reserved_by.as_deref()?)))
            .collect();
        let mut by_fw: BTreeMap<String, Vec<v1::Offer>> = BTreeMap::new();
        for o in &alloc.new_offers {
            if let Some(f) = st.frameworks.get(&o.framework_id) {
                let agent = agents_by_id.get(o.agent_id.as_str()).copied();
                by_fw
                    .entry(o.framework_id.clone())
                    .or_default()
                    .push(self.offer_to_v1(o, f, agent, &profiles, &held_by));
            }
        }
        st.outstanding.extend(alloc.new_offers);
        for (fw, offers) in by_fw {
            let ev = Event {
                r#type: event_type(event::Type::Offers),
                offers: Some(event::Offers { offers }),
                ..Default::default()
            };
            st.send(&fw, ev);
        }
        Ok(())
    }

    pub(super) fn rescind_event(&self, id: OfferId) -> Event {
        Event {
            r#type: event_type(event::Type::Rescind),
            rescind: Some(event::Rescind {
                offer_id: v1::OfferId {
                    value: self.offer_id_string(id),
                },
            }),
            ..Default::default()
        }
    }

    fn offer_to_v1(
        &self,
        o: &offers::Offer,
        f: &Framework,
        agent: Option<&client::Agent>,
        profiles: &BTreeMap<&str, &str>,
        held_by: &HashMap<&str, &str>,
    ) -> v1::Offer {
        let alloc = f.allocation_info();
        let resources = o
            .disks
            .iter()
            .map(|d| match d {
                DiskOffer::Raw {
                    pool_id,
                    profile,
                    mb,
                } => disk_resource(pool_id, profile, None, *mb, alloc.clone(), vec![]),
                DiskOffer::Volume {
                    volume_id,
                    pool_id,
                    mb,
                    ..
                } => disk_resource(
                    pool_id,
                    profiles.get(pool_id.as_str()).copied().unwrap_or("default"),
                    Some(volume_id),
                    *mb,
                    alloc.clone(),
                    if held_by.get(volume_id.as_str()) == Some(&o.framework_id.as_str()) {
                        reserved_to(&f.role, f.principal.as_deref())
                    } else {
                        vec![]
                    },
                ),
            })
            .collect();
        let domain = agent.and_then(|a| {
            let zone = a.zone.clone()?;
            Some(v1::DomainInfo {
                fault_domain: Some(v1::domain_info::FaultDomain {
                    region: v1::domain_info::fault_domain::RegionInfo {
                        name: a.region.clone().unwrap_or_else(|| "default".into()),
                    },
                    zone: v1::domain_info::fault_domain::ZoneInfo { name: zone },
                }),
            })
        });
        v1::Offer {
            id: v1::OfferId {
                value: self.offer_id_string(o.id),
            },
            framework_id: v1::FrameworkId {
                value: o.framework_id.clone(),
            },
            agent_id: v1::AgentId {
                value: o.agent_id.clone(),
            },
            hostname: o.hostname.clone(),
            domain,
            resources,
            allocation_info: alloc,
            ..Default::default()
        }
    }

    /// The instance id volumes are attached to for an agent ([`agent_instance`]).
    pub(super) fn instance_for(
        &self,
        a: &client::Agent,
        instances: &[crate::store::Instance],
    ) -> Option<String> {
        agent_instance(a, instances, &self.inner.instance_map)
    }
}
