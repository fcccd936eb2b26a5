//! Where an operation lands: the instance an agent stands for (volumes are attached to it),
//! the service, pool and zone of a pool id, and whether the framework holds a volume.

use crate::offer_endpoint::{pool_id, Endpoint, OpError};

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
}
