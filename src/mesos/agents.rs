//! Which instance a Mesos agent stands for: the instance id volumes are attached to for an
//! agent (an operation on its offer maps a volume there) and the one fencing releases.

use std::collections::BTreeMap;

use crate::mesos::client::{Agent, AgentSource};
use crate::store::Instance;

/// How agents map to instances besides REX-Ray's reports (set by `[offers]`'s
/// `instance_attribute` and `instances`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceMap {
    /// Agent attribute naming the instance id volumes are attached to.
    pub attribute: String,
    /// Static agent id (or hostname) to instance id map.
    pub instances: BTreeMap<String, String>,
}

/// The instance id volumes are attached to for an agent: an instance REX-Ray reported
/// for the agent's hostname, else the agent's instance attribute, else static config.
pub fn agent_instance(a: &Agent, instances: &[Instance], map: &InstanceMap) -> Option<String> {
    if a.source == AgentSource::Instance {
        return Some(a.id.clone());
    }
    if !a.hostname.is_empty() {
        if let Some(i) = instances
            .iter()
            .filter(|i| i.hostname.as_deref() == Some(a.hostname.as_str()))
            .max_by_key(|i| i.last_seen)
        {
            return Some(i.instance_id.clone());
        }
    }
    if let Some(v) = a.attributes.get(&map.attribute) {
        return Some(v.clone());
    }
    let c = &map.instances;
    c.get(&a.id).or_else(|| c.get(&a.hostname)).cloned()
}
