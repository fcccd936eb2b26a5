//! Where an operation lands: the instance an agent stands for (volumes are attached to it),
//! the service, pool and zone of a pool id, the back-end an operation works on and whether
//! the last capacity poll found it up, and whether the framework holds a volume.

use super::plan::Plan;
use super::volume_pool;
use crate::offer_endpoint::{pool_id, Endpoint, OpError};

/// The back-end an operation works on: the service and pool, and the existing volume it acts
/// on (none for a CREATE_DISK).
#[derive(Debug)]
pub(super) struct Target {
    service: String,
    pool_id: String,
    volume_id: Option<String>,
}

/// A pool as the volume manager names it.
pub(super) struct PoolParts {
    pub(super) service: String,
    pub(super) pool: String,
    pub(super) zone: Option<String>,
}

impl Endpoint {
    /// The instance id volumes are attached to for an agent
    /// ([`crate::mesos::agents::agent_instance`]), or why none is known.
    fn instance_of_agent(&self, agent_id: &str) -> Result<String, OpError> {
        let instances = self.store().instances()?;
        let agents = self.agents_with_instances(&instances);
        let Some(a) = agents.iter().find(|a| a.id == agent_id) else {
            return self
                .config()
                .instances
                .get(agent_id)
                .cloned()
                .ok_or_else(|| OpError::UnknownAgent(agent_id.to_string()));
        };
        self.instance_for(a, &instances)
            .ok_or_else(|| OpError::NoInstance {
                agent: agent_id.to_string(),
                hostname: a.hostname.clone(),
                attribute: self.config().instance_attribute.clone(),
            })
    }

    /// [`Endpoint::instance_of_agent`], else the volume service's back-end asked by the
    /// agent's hostname (the `ebs` driver looks it up with DescribeInstances).
    pub(super) async fn agent_instance_for(
        &self,
        agent_id: &str,
        service: &str,
    ) -> Result<String, OpError> {
        let unknown = match self.instance_of_agent(agent_id) {
            Ok(i) => return Ok(i),
            Err(e) => e,
        };
        let instances = self.store().instances()?;
        let hostname = self
            .agents_with_instances(&instances)
            .into_iter()
            .find(|a| a.id == agent_id)
            .map(|a| a.hostname)
            .filter(|h| !h.is_empty());
        let Some(hostname) = hostname else {
            return Err(unknown);
        };
        let driver = self.manager().service(service)?.driver.clone();
        let asked = tokio::time::timeout(
            std::time::Duration::from_secs(30),
            driver.resolve_instance(&hostname),
        )
        .await;
        match asked {
            Ok(Ok(Some(i))) => Ok(i),
            Ok(Ok(None)) => Err(unknown),
            Ok(Err(error)) => Err(OpError::Lookup {
                unknown: Box::new(unknown),
                service: service.to_string(),
                hostname,
                error,
            }),
            Err(_) => Err(OpError::LookupTimeout {
                unknown: Box::new(unknown),
                service: service.to_string(),
                hostname,
            }),
        }
    }

    /// A pool's service, pool name and zone; reads the service's capacity first when the
    /// poller has not yet (an operation resumed at start-up).
    pub(super) async fn pool_parts(&self, pool_id: &str) -> Result<PoolParts, OpError> {
        if let Ok(p) = self.known_pool(pool_id) {
            return Ok(p);
        }
        if let Some(service) = pool_id.split('/').next() {
            let interval = self.config().poll_interval();
            self.manager().poll_capacity(service, interval).await;
        }
        self.known_pool(pool_id)
    }

    fn known_pool(&self, id: &str) -> Result<PoolParts, OpError> {
        let readings = self.manager().capacity_readings();
        for (service, r) in &readings {
            for pc in &r.pools {
                if id == pool_id(service, &pc.pool, pc.zone.as_deref()) {
                    return Ok(PoolParts {
                        service: service.clone(),
                        pool: pc.pool.clone(),
                        zone: pc.zone.clone(),
                    });
                }
            }
        }
        Err(OpError::UnknownPool(id.to_string()))
    }

    /// The volume must be reserved by this framework.
    pub(super) fn held(&self, fw: &str, volume_id: &str) -> Result<(), OpError> {
        let held = self
            .store()
            .reservations()?
            .iter()
            .any(|r| r.framework_id == fw && r.volume_id == volume_id);
        if held {
            Ok(())
        } else {
            Err(OpError::NotHeld {
                framework: fw.to_string(),
                volume: volume_id.to_string(),
            })
        }
    }

    /// The back-end `p` works on: the pool a CREATE_DISK or GROW_VOLUME takes from, the pool
    /// of the volume a RESERVE, UNRESERVE or DESTROY_DISK acts on. `None` when that is not
    /// known (a pool no reading lists, a volume with no record): the operation then fails,
    /// or only releases a volume that is gone, as it would anyway. Reads the store, so it is
    /// called before the state lock is taken.
    pub(super) fn target(&self, p: &Plan) -> Option<Target> {
        match p {
            Plan::CreateDisk { pool_id, .. } => Some(Target {
                service: self.known_pool(pool_id).ok()?.service,
                pool_id: pool_id.clone(),
                volume_id: None,
            }),
            Plan::GrowVolume {
                volume_id, pool_id, ..
            } => Some(Target {
                service: self.known_pool(pool_id).ok()?.service,
                pool_id: pool_id.clone(),
                volume_id: Some(volume_id.clone()),
            }),
            Plan::Reserve { volume_id }
            | Plan::Unreserve { volume_id }
            | Plan::DestroyDisk { volume_id, .. } => {
                let v = self.manager().volume(volume_id).ok()?;
                Some(Target {
                    pool_id: volume_pool(&v).0,
                    service: v.service,
                    volume_id: Some(volume_id.clone()),
                })
            }
        }
    }

    /// Refuse an ACCEPT that works on a back-end the last capacity poll found down (its
    /// offers are rescinded, its volumes not offered): every driver call would fail, so
    /// nothing is attempted and the operations are DROPPED, not FAILED half way; the
    /// framework retries once Polly offers the pool or volume again. A back-end that goes
    /// down after that poll can still fail an operation while it runs (OPERATION_FAILED).
    pub(super) fn check_available<'a>(
        &self,
        targets: impl IntoIterator<Item = &'a Target>,
    ) -> Result<(), OpError> {
        let mut targets = targets.into_iter().peekable();
        if targets.peek().is_none() {
            return Ok(());
        }
        let readings = self.manager().capacity_readings();
        for t in targets {
            if let Some(r) = readings.get(&t.service).filter(|r| !r.available) {
                return Err(OpError::PoolUnavailable {
                    pool: t.pool_id.clone(),
                    volume: t.volume_id.clone(),
                    error: r.last_error.clone(),
                });
            }
        }
        Ok(())
    }
}
