//! The broker's catalog: one service offering per offered Polly service, its plans from
//! `[[broker.plans]]`, and ids derived from names (UUID v5 in Polly's own namespace), so they
//! are the same after a restart and on every instance of an HA group.

use serde_json::{json, Value};
use uuid::Uuid;

use super::config::BrokerConfig;
use crate::driver::AccessMode;
use crate::volumes::parse_docker_size;

/// The namespace of every catalog id Polly derives (a fixed random UUID).
const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a4e_93d7_4b0a_8e55_c0a1_7d3b_9f42);

/// A plan: a size class with an access mode and a pool.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub id: String,
    pub name: String,
    pub description: String,
    pub size_bytes: u64,
    pub access: AccessMode,
    pub pool: Option<String>,
}

/// A service offering: one Polly service.
#[derive(Debug, Clone, PartialEq)]
pub struct Offering {
    pub id: String,
    /// `polly-<service>`.
    pub name: String,
    /// The Polly service its volumes live in, and that service's driver kind.
    pub service: String,
    pub driver: String,
    pub plans: Vec<Plan>,
}

/// Every offering.
#[derive(Debug, Clone, PartialEq)]
pub struct Catalog {
    pub offerings: Vec<Offering>,
}

/// A stable id for `what` (e.g. `service/vfs`).
fn derived_id(what: &str) -> String {
    Uuid::new_v5(&NAMESPACE, what.as_bytes()).to_string()
}

fn access_name(a: AccessMode) -> &'static str {
    match a {
        AccessMode::SingleWriter => "single_writer",
        AccessMode::MultiReader => "multi_reader",
        AccessMode::MultiWriter => "multi_writer",
    }
}

impl Catalog {
    /// The catalog for `services` (name, driver kind), in configuration order. The config
    /// was validated: plan sizes parse and every named service exists.
    pub fn build(cfg: &BrokerConfig, services: &[(String, String)]) -> Catalog {
        let default_plan = super::config::PlanConfig {
            name: "standard".into(),
            description: None,
            size: "1GiB".into(),
            access: AccessMode::MultiWriter,
            pool: None,
            services: None,
        };
        let plans = if cfg.plans.is_empty() {
            std::slice::from_ref(&default_plan)
        } else {
            cfg.plans.as_slice()
        };
        let offered = |name: &str| {
            cfg.services
                .as_ref()
                .is_none_or(|s| s.iter().any(|x| x == name))
        };
        let offerings = services
            .iter()
            .filter(|(name, _)| offered(name))
            .map(|(service, driver)| Offering {
                id: derived_id(&format!("service/{service}")),
                name: format!("polly-{service}"),
                service: service.clone(),
                driver: driver.clone(),
                plans: plans
                    .iter()
                    .filter(|p| p.services.as_ref().is_none_or(|s| s.contains(service)))
                    .map(|p| {
                        let size_bytes = parse_docker_size(&p.size).unwrap_or(1 << 30);
                        Plan {
                            id: derived_id(&format!("plan/{service}/{}", p.name)),
                            name: p.name.clone(),
                            description: p.description.clone().unwrap_or_else(|| {
                                format!(
                                    "{} {} volume",
                                    crate::volumes::human_size(size_bytes),
                                    access_name(p.access).replace('_', "-")
                                )
                            }),
                            size_bytes,
                            access: p.access,
                            pool: p.pool.clone(),
                        }
                    })
                    .collect(),
            })
            // An offering must have a plan; one whose plans all name other services is left out.
            .filter(|o| !o.plans.is_empty())
            .collect();
        Catalog { offerings }
    }

    pub fn offering(&self, id: &str) -> Option<&Offering> {
        self.offerings.iter().find(|o| o.id == id)
    }

    /// `GET /v2/catalog`'s body.
    pub fn to_json(&self) -> Value {
        let services: Vec<Value> = self
            .offerings
            .iter()
            .map(|o| {
                let plans: Vec<Value> = o
                    .plans
                    .iter()
                    .map(|p| {
                        let mut meta = json!({
                            "size_bytes": p.size_bytes,
                            "access": access_name(p.access),
                            "bullets": [
                                format!("{} per instance", crate::volumes::human_size(p.size_bytes)),
                                format!("access: {}", access_name(p.access)),
                            ],
                        });
                        if let Some(pool) = &p.pool {
                            meta["pool"] = json!(pool);
                        }
                        json!({
                            "id": p.id,
                            "name": p.name,
                            "description": p.description,
                            "free": true,
                            "bindable": true,
                            "plan_updateable": true,
                            "metadata": meta,
                        })
                    })
                    .collect();
                json!({
                    "id": o.id,
                    "name": o.name,
                    "description": format!(
                        "Polly volumes of service {} ({} driver), mounted into app containers by polly node",
                        o.service, o.driver
                    ),
                    "bindable": true,
                    "requires": ["volume_mount"],
                    "plan_updateable": true,
                    "instances_retrievable": true,
                    "bindings_retrievable": true,
                    "tags": ["polly", "volume", o.driver],
                    "metadata": {"displayName": format!("Polly {}", o.service)},
                    "plans": plans,
                })
            })
            .collect();
        json!({ "services": services })
    }
}

impl Offering {
    pub fn plan(&self, id: &str) -> Option<&Plan> {
        self.plans.iter().find(|p| p.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::config::PlanConfig;

    fn services() -> Vec<(String, String)> {
        vec![
            ("vfs".into(), "vfs".into()),
            ("block".into(), "loop".into()),
        ]
    }

    #[test]
    fn ids_are_stable_and_unique() {
        let cfg = BrokerConfig::default();
        let a = Catalog::build(&cfg, &services());
        let b = Catalog::build(&cfg, &services());
        assert_eq!(a, b);
        assert_eq!(a.offerings.len(), 2);
        let mut ids: Vec<&str> = a.offerings.iter().map(|o| o.id.as_str()).collect();
        ids.extend(
            a.offerings
                .iter()
                .flat_map(|o| o.plans.iter().map(|p| p.id.as_str())),
        );
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "ids collide");
        let vfs = &a.offerings[0];
        assert_eq!(vfs.name, "polly-vfs");
        assert_eq!(vfs.plans[0].name, "standard");
        assert_eq!(vfs.plans[0].size_bytes, 1 << 30);
        assert_eq!(vfs.plans[0].access, AccessMode::MultiWriter);
        assert!(Uuid::parse_str(&vfs.id).is_ok());
        let j = a.to_json();
        assert_eq!(j["services"][0]["requires"], json!(["volume_mount"]));
        assert_eq!(j["services"][1]["tags"][2], "loop");
    }

    #[test]
    fn plans_and_services_follow_the_config() {
        let cfg = BrokerConfig {
            services: Some(vec!["block".into()]),
            plans: vec![
                PlanConfig {
                    name: "small".into(),
                    description: Some("small one".into()),
                    size: "512m".into(),
                    access: AccessMode::SingleWriter,
                    pool: Some("p1".into()),
                    services: None,
                },
                PlanConfig {
                    name: "vfs-only".into(),
                    description: None,
                    size: "2".into(),
                    access: AccessMode::MultiWriter,
                    pool: None,
                    services: Some(vec!["vfs".into()]),
                },
            ],
            ..BrokerConfig::default()
        };
        let c = Catalog::build(&cfg, &services());
        assert_eq!(c.offerings.len(), 1);
        let o = &c.offerings[0];
        assert_eq!(o.service, "block");
        assert_eq!(o.plans.len(), 1);
        assert_eq!(o.plans[0].size_bytes, 512 << 20);
        assert_eq!(o.plans[0].pool.as_deref(), Some("p1"));
        assert_eq!(
            c.offering(&o.id)
                .unwrap()
                .plan(&o.plans[0].id)
                .unwrap()
                .name,
            "small"
        );
        assert!(c.offering("nope").is_none());
    }
}
