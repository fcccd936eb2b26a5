//! The pure check of a Marathon definition against a snapshot of Polly (services with
//! capacity, volumes): every volume it references, every problem found, and the actions
//! `provision` would take. No I/O, so every rule is unit-tested with plain values.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{App, Definition, External, Persistent, UpgradeStrategy, VolumeDef};
use super::{CLAIM_LABEL, POOL_OPTION, SERVICE_OPTION};
use crate::admin::VolumeView;
use crate::driver::AccessMode;
use crate::volumes::{valid_name, CreateVolume, ServiceInfo};

/// What Polly looks like right now, as the admin API reports it.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    pub services: Vec<ServiceInfo>,
    pub volumes: Vec<VolumeView>,
}

/// Choices the definition cannot express.
#[derive(Debug, Clone)]
pub struct Options {
    /// Polly service of external volumes without `dvdi/polly.service`.
    pub default_service: String,
    /// `dvdi/driver` values that reach Polly (REX-Ray Docker module names).
    pub drivers: Vec<String>,
    /// Constraint fields holding the agent's zone.
    pub zone_attributes: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            default_service: "vfs".into(),
            drivers: vec!["rexray".into(), "polly".into()],
            zone_attributes: vec!["zone".into(), "@zone".into()],
        }
    }
}

/// Which rule a problem breaks; the JSON name is stable for pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Provider,
    Driver,
    Service,
    Name,
    Mode,
    Size,
    Profile,
    Capacity,
    Zone,
    Constraint,
    Restricted,
    AccessMode,
    SingleInstance,
    UpgradeStrategy,
    UnreachableStrategy,
    Claimed,
}

/// One problem (or warning), tied to an app and, when it has one, a volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub app: String,
    pub volume: Option<String>,
    pub rule: Rule,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeKind {
    External,
    Persistent,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeState {
    /// A Polly volume of that service and name exists.
    Exists,
    /// Missing; `provision` creates it (Marathon/REX-Ray would too, given a size).
    ToCreate,
    /// A local persistent volume Marathon carves from a Polly pool offered to it.
    Offered,
    /// Not served by Polly (host path, agent-local disk without a profile).
    NotPolly,
    /// A problem keeps Polly from saying where it would come from.
    Unresolved,
}

/// One volume the definition references.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeCheck {
    pub app: String,
    pub container_path: String,
    pub kind: VolumeKind,
    pub name: Option<String>,
    pub service: Option<String>,
    pub pool: Option<String>,
    pub zone: Option<String>,
    pub size_bytes: Option<u64>,
    pub access_mode: Option<AccessMode>,
    pub state: VolumeState,
    pub volume_id: Option<String>,
    pub claimed_by: Option<String>,
}

/// What `provision` does to make the definition deployable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create the volume, restricted to its service and labelled with the claim.
    Create { app: String, volume: CreateVolume },
    /// Label an existing, unclaimed volume with the claim.
    Claim {
        app: String,
        volume_id: String,
        service: String,
        name: String,
    },
}

/// The verdict on a definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// No problems: the definition can be deployed (after `provision`, if `actions`).
    pub ok: bool,
    pub apps: Vec<String>,
    pub volumes: Vec<VolumeCheck>,
    pub problems: Vec<Finding>,
    pub warnings: Vec<Finding>,
    pub actions: Vec<Action>,
}

struct Checker<'a> {
    cluster: &'a Cluster,
    opts: &'a Options,
    problems: Vec<Finding>,
    warnings: Vec<Finding>,
    actions: Vec<Action>,
    volumes: Vec<VolumeCheck>,
    /// Bytes this definition would take from each (service, pool, zone) already.
    planned: BTreeMap<(String, String, Option<String>), u64>,
    /// Non-shared external volumes seen so far in this definition: (service, name) → app.
    claims: BTreeMap<(String, String), String>,
}

/// Check every volume of every app in `def` against `cluster`.
pub fn check(def: &Definition, cluster: &Cluster, opts: &Options) -> Report {
    let apps = def.apps();
    let mut c = Checker {
        cluster,
        opts,
        problems: vec![],
        warnings: vec![],
        actions: vec![],
        volumes: vec![],
        planned: BTreeMap::new(),
        claims: BTreeMap::new(),
    };
    for app in &apps {
        c.app(app);
    }
    Report {
        ok: c.problems.is_empty(),
        apps: apps.iter().map(|a| a.id.clone()).collect(),
        volumes: c.volumes,
        problems: c.problems,
        warnings: c.warnings,
        actions: c.actions,
    }
}

/// Which zones an app's constraints allow.
enum ZoneRule {
    Like(regex::Regex),
    Unlike(regex::Regex),
    Is(String),
}

impl<'a> Checker<'a> {
    fn problem(&mut self, app: &App, volume: Option<&str>, rule: Rule, message: String) {
        self.problems.push(Finding {
            app: app.id.clone(),
            volume: volume.map(String::from),
            rule,
            message,
        });
    }

    fn warning(&mut self, app: &App, volume: Option<&str>, rule: Rule, message: String) {
        self.warnings.push(Finding {
            app: app.id.clone(),
            volume: volume.map(String::from),
            rule,
            message,
        });
    }

    fn app(&mut self, app: &App) {
        let zones = self.zone_rules(app);
        let vols = app
            .container
            .as_ref()
            .map(|c| c.volumes.clone())
            .unwrap_or_default();
        let mesos = app
            .container
            .as_ref()
            .and_then(|c| c.kind.as_deref())
            .is_some_and(|k| k.eq_ignore_ascii_case("MESOS"));
        for v in &vols {
            let base = VolumeCheck {
                app: app.id.clone(),
                container_path: v.container_path.clone(),
                kind: VolumeKind::Host,
                name: None,
                service: None,
                pool: None,
                zone: None,
                size_bytes: None,
                access_mode: None,
                state: VolumeState::NotPolly,
                volume_id: None,
                claimed_by: None,
            };
            let vc = if let Some(e) = &v.external {
                self.external(app, v, e, mesos, &zones, base)
            } else if let Some(p) = &v.persistent {
                self.persistent(app, p, &zones, base)
            } else {
                base
            };
            self.volumes.push(vc);
        }
    }

    fn zone_rules(&mut self, app: &App) -> Vec<ZoneRule> {
        let mut out = Vec::new();
        for c in &app.constraints {
            let (Some(field), Some(op)) = (c.first(), c.get(1)) else {
                continue;
            };
            if !self.opts.zone_attributes.iter().any(|z| z == field) {
                continue;
            }
            let value = c.get(2).cloned();
            let anchored = |v: &str| regex::Regex::new(&format!("^(?:{v})$"));
            let rule = match (op.to_ascii_uppercase().as_str(), value) {
                ("LIKE", Some(v)) => anchored(&v).map(ZoneRule::Like),
                ("UNLIKE", Some(v)) => anchored(&v).map(ZoneRule::Unlike),
                ("IS" | "CLUSTER", Some(v)) if !v.is_empty() => Ok(ZoneRule::Is(v)),
                // GROUP_BY, UNIQUE, MAX_PER and a bare CLUSTER spread or pin tasks but allow
                // every zone.
                _ => continue,
            };
            match rule {
                Ok(r) => out.push(r),
                Err(e) => self.problem(
                    app,
                    None,
                    Rule::Constraint,
                    format!("constraint {c:?}: invalid regular expression: {e}"),
                ),
            }
        }
        out
    }

    fn external(
        &mut self,
        app: &App,
        v: &VolumeDef,
        e: &External,
        mesos: bool,
        zones: &[ZoneRule],
        mut vc: VolumeCheck,
    ) -> VolumeCheck {
        let name = e.name.as_str();
        vc.kind = VolumeKind::External;
        vc.name = Some(e.name.clone());
        let provider = e.provider.as_deref().unwrap_or("");
        if provider != "dvdi" {
            self.problem(
                app,
                Some(name),
                Rule::Provider,
                format!(
                    "provider {provider:?}: Polly volumes are external volumes with provider \"dvdi\" and \"dvdi/driver\": \"rexray\""
                ),
            );
            return vc;
        }
        let Some(driver) = e.options.get("dvdi/driver") else {
            self.problem(
                app,
                Some(name),
                Rule::Driver,
                "option \"dvdi/driver\" is missing; set it to \"rexray\" (Marathon requires it)"
                    .into(),
            );
            return vc;
        };
        if !self.opts.drivers.iter().any(|d| d == driver) {
            self.problem(
                app,
                Some(name),
                Rule::Driver,
                format!(
                    "\"dvdi/driver\": {driver:?} does not reach Polly; use {:?} (REX-Ray pointed at Polly's libStorage façade)",
                    self.opts.drivers.join("\", \"")
                ),
            );
            return vc;
        }
        vc.state = VolumeState::Unresolved;
        let service = e
            .options
            .get(SERVICE_OPTION)
            .cloned()
            .unwrap_or_else(|| self.opts.default_service.clone());
        vc.service = Some(service.clone());
        let Some(svc) = self.cluster.services.iter().find(|s| s.name == service) else {
            let known: Vec<&str> = self
                .cluster
                .services
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            self.problem(
                app,
                Some(name),
                Rule::Service,
                format!(
                    "service {service:?} does not exist in this Polly (services: {}); set \"{SERVICE_OPTION}\"",
                    known.join(", ")
                ),
            );
            return vc;
        };
        if !valid_name(name) {
            self.problem(
                app,
                Some(name),
                Rule::Name,
                format!("volume name {name:?} must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit"),
            );
            return vc;
        }
        let mode = v.mode.as_deref().unwrap_or("RW");
        if mesos && !mode.eq_ignore_ascii_case("RW") {
            self.problem(
                app,
                Some(name),
                Rule::Mode,
                format!("mode {mode:?}: Marathon mounts external volumes of MESOS containers read-write only; use \"RW\""),
            );
        }
        let access = if !e.shared {
            AccessMode::SingleWriter
        } else if mode.eq_ignore_ascii_case("RO") {
            AccessMode::MultiReader
        } else {
            AccessMode::MultiWriter
        };
        vc.access_mode = Some(access);
        if !e.shared {
            self.single_writer(app, name);
            let key = (service.clone(), name.to_string());
            if let Some(other) = self.claims.get(&key) {
                let msg = format!(
                    "volume {service}/{name} is single-writer and {other} in this definition uses it too; give each app its own volume or set \"shared\": true"
                );
                self.problem(app, Some(name), Rule::Claimed, msg);
            } else {
                self.claims.insert(key, app.id.clone());
            }
        }
        let existing = self
            .cluster
            .volumes
            .iter()
            .find(|x| x.service == service && x.name == name);
        match existing {
            Some(x) => self.existing(app, e, x, access, zones, vc),
            None => self.missing(app, e, svc, access, zones, vc),
        }
    }

    /// Marathon's rules for a volume only one task may hold.
    fn single_writer(&mut self, app: &App, name: &str) {
        if app.instances > 1 {
            self.problem(
                app,
                Some(name),
                Rule::SingleInstance,
                format!(
                    "\"instances\": {} but volume {name} is single-writer: use \"instances\": 1 (or \"shared\": true for a multi-writer volume)",
                    app.instances
                ),
            );
        }
        let us = app.upgrade_strategy.unwrap_or_default();
        if us.minimum_health_capacity != 0.0 || us.maximum_over_capacity != 0.0 {
            let shown = match app.upgrade_strategy {
                Some(UpgradeStrategy {
                    minimum_health_capacity: m,
                    maximum_over_capacity: o,
                }) => format!("minimumHealthCapacity {m}, maximumOverCapacity {o}"),
                None => "no upgradeStrategy (Marathon's default is 1, 1)".into(),
            };
            self.problem(
                app,
                Some(name),
                Rule::UpgradeStrategy,
                format!(
                    "{shown}: with single-writer volume {name} the old task must stop before the new one starts; set \"upgradeStrategy\": {{\"minimumHealthCapacity\": 0, \"maximumOverCapacity\": 0}}"
                ),
            );
        }
    }

    fn existing(
        &mut self,
        app: &App,
        e: &External,
        x: &VolumeView,
        access: AccessMode,
        zones: &[ZoneRule],
        mut vc: VolumeCheck,
    ) -> VolumeCheck {
        let name = e.name.as_str();
        vc.state = VolumeState::Exists;
        vc.volume_id = Some(x.id.clone());
        vc.pool = x.pool.clone();
        vc.zone = x.zone.clone();
        vc.size_bytes = Some(x.size_bytes);
        vc.access_mode = Some(x.access_mode);
        vc.claimed_by = x.labels.get(CLAIM_LABEL).cloned();
        if !x.restrict_services.is_empty() && !x.restrict_services.contains(&x.service) {
            let to: Vec<&str> = x.restrict_services.iter().map(String::as_str).collect();
            self.problem(
                app,
                Some(name),
                Rule::Restricted,
                format!(
                    "volume {}/{name} ({}) is restricted to service(s) {}, so REX-Ray on service {} cannot see it; `polly volume restrict {} --to-service {}` or pick another volume",
                    x.service, x.id, to.join(", "), x.service, x.id, x.service
                ),
            );
        }
        if let Some(z) = &x.zone {
            if !zone_allowed(zones, z) {
                self.problem(
                    app,
                    Some(name),
                    Rule::Zone,
                    format!(
                        "volume {}/{name} lives in zone {z}, which the app's constraints exclude; its tasks could not attach it",
                        x.service
                    ),
                );
            }
        }
        if access.allows_many() && !x.access_mode.allows_many() {
            self.problem(
                app,
                Some(name),
                Rule::AccessMode,
                format!(
                    "\"shared\": true but volume {}/{name} is single_writer; drop \"shared\" or use a multi-writer volume",
                    x.service
                ),
            );
        }
        if let Some(gib) = e.size {
            if gib.checked_mul(1 << 30) != Some(x.size_bytes) {
                self.warning(
                    app,
                    Some(name),
                    Rule::Size,
                    format!(
                        "\"size\": {gib} is ignored: volume {}/{name} exists with {}",
                        x.service,
                        crate::client::human_size(x.size_bytes)
                    ),
                );
            }
        }
        if !e.shared {
            match x.labels.get(CLAIM_LABEL) {
                Some(owner) if *owner != app.id => self.problem(
                    app,
                    Some(name),
                    Rule::Claimed,
                    format!(
                        "volume {}/{name} is claimed by Marathon app {owner} (label {CLAIM_LABEL}={owner}); two apps must not share a single-writer volume",
                        x.service
                    ),
                ),
                Some(_) => {}
                None => self.actions.push(Action::Claim {
                    app: app.id.clone(),
                    volume_id: x.id.clone(),
                    service: x.service.clone(),
                    name: name.to_string(),
                }),
            }
        }
        vc
    }

    fn missing(
        &mut self,
        app: &App,
        e: &External,
        svc: &ServiceInfo,
        access: AccessMode,
        zones: &[ZoneRule],
        mut vc: VolumeCheck,
    ) -> VolumeCheck {
        let name = e.name.as_str();
        let size = match e.size {
            Some(gib) if gib > 0 => gib.saturating_mul(1 << 30),
            _ => {
                self.problem(
                    app,
                    Some(name),
                    Rule::Size,
                    format!(
                        "volume {}/{name} does not exist and has no \"size\"; add \"size\" (GiB) to the external volume so it can be created",
                        svc.name
                    ),
                );
                return vc;
            }
        };
        vc.size_bytes = Some(size);
        let want_pool = e.options.get(POOL_OPTION).map(String::as_str);
        let Some((pool, zone)) = self.place(app, name, &[svc], want_pool, size, zones) else {
            return vc;
        };
        vc.state = VolumeState::ToCreate;
        vc.pool = Some(pool.clone());
        vc.zone = zone.clone();
        let mut labels = BTreeMap::new();
        if !e.shared {
            labels.insert(CLAIM_LABEL.to_string(), app.id.clone());
            vc.claimed_by = Some(app.id.clone());
        }
        self.actions.push(Action::Create {
            app: app.id.clone(),
            volume: CreateVolume {
                service: svc.name.clone(),
                name: name.to_string(),
                size_bytes: size,
                pool: Some(pool),
                zone,
                access_mode: access,
                labels,
                restrict_services: BTreeSet::from([svc.name.clone()]),
                restrict_frameworks: BTreeSet::new(),
                fields: BTreeMap::new(),
            },
        });
        vc
    }

    fn persistent(
        &mut self,
        app: &App,
        p: &Persistent,
        zones: &[ZoneRule],
        mut vc: VolumeCheck,
    ) -> VolumeCheck {
        vc.kind = VolumeKind::Persistent;
        let Some(profile) = &p.profile_name else {
            // Plain local persistent volumes come from the agent's own disk, not from Polly.
            return vc;
        };
        let label = format!("{}:{profile}", vc.container_path);
        vc.state = VolumeState::Unresolved;
        if !matches!(&app.unreachable_strategy, Some(serde_json::Value::String(s)) if s == "disabled")
        {
            self.problem(
                app,
                Some(&label),
                Rule::UnreachableStrategy,
                "apps with local persistent volumes need \"unreachableStrategy\": \"disabled\" (Marathon refuses them otherwise)".into(),
            );
        }
        if p.size == 0 {
            self.problem(
                app,
                Some(&label),
                Rule::Size,
                "persistent volume has no \"size\" (MiB)".into(),
            );
            return vc;
        }
        let size = p.size.saturating_mul(1 << 20);
        vc.size_bytes = Some(size);
        let services: Vec<&ServiceInfo> = self
            .cluster
            .services
            .iter()
            .filter(|s| s.capacity.iter().any(|c| c.pool == *profile))
            .collect();
        if services.is_empty() {
            self.problem(
                app,
                Some(&label),
                Rule::Profile,
                format!("no Polly service has a pool named {profile:?}, so Polly offers no disk with that profile (`polly service ls` lists the pools)"),
            );
            return vc;
        }
        let Some((pool, zone)) = self.place(app, &label, &services, Some(profile), size, zones)
        else {
            return vc;
        };
        vc.state = VolumeState::Offered;
        vc.pool = Some(pool);
        vc.zone = zone;
        vc.service = services.first().map(|s| s.name.clone());
        vc
    }

    /// The pool (and its zone) with the most free space that fits `size` in an allowed zone,
    /// counting what this definition already placed; records a problem when there is none.
    fn place(
        &mut self,
        app: &App,
        name: &str,
        services: &[&ServiceInfo],
        want_pool: Option<&str>,
        size: u64,
        zones: &[ZoneRule],
    ) -> Option<(String, Option<String>)> {
        let mut candidates = Vec::new();
        let mut excluded_zones = BTreeSet::new();
        let mut unknown = false;
        for s in services {
            if let Some(err) = &s.capacity_error {
                unknown = true;
                self.problem(
                    app,
                    Some(name),
                    Rule::Capacity,
                    format!(
                        "service {} cannot report capacity ({err}); retry when it can",
                        s.name
                    ),
                );
                continue;
            }
            for c in &s.capacity {
                if want_pool.is_some_and(|p| p != c.pool) {
                    continue;
                }
                if let Some(z) = &c.zone {
                    if !zone_allowed(zones, z) {
                        excluded_zones.insert(z.clone());
                        continue;
                    }
                }
                let key = (s.name.clone(), c.pool.clone(), c.zone.clone());
                let free = c
                    .free_bytes
                    .saturating_sub(self.planned.get(&key).copied().unwrap_or(0));
                candidates.push((free, key));
            }
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let human = crate::client::human_size;
        match candidates.first() {
            Some((free, key)) if *free >= size => {
                let key = key.clone();
                *self.planned.entry(key.clone()).or_default() += size;
                Some((key.1, key.2))
            }
            Some((free, (svc, pool, zone))) => {
                let msg = format!(
                    "{} does not fit: the largest pool in an allowed zone ({svc}/{pool}{}) has {} free",
                    human(size),
                    zone.as_deref().map(|z| format!(" in {z}")).unwrap_or_default(),
                    human(*free)
                );
                self.problem(app, Some(name), Rule::Capacity, msg);
                None
            }
            None if !excluded_zones.is_empty() => {
                let z: Vec<&str> = excluded_zones.iter().map(String::as_str).collect();
                let msg = format!(
                    "no pool in a zone the app's constraints allow (pools are in {}); change the zone constraint",
                    z.join(", ")
                );
                self.problem(app, Some(name), Rule::Zone, msg);
                None
            }
            None if unknown => None,
            None => {
                let n: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                let msg = match want_pool {
                    Some(p) => format!("no pool named {p:?} in service(s) {}", n.join(", ")),
                    None => format!("service(s) {} report no pool with capacity", n.join(", ")),
                };
                self.problem(app, Some(name), Rule::Capacity, msg);
                None
            }
        }
    }
}

fn zone_allowed(rules: &[ZoneRule], zone: &str) -> bool {
    rules.iter().all(|r| match r {
        ZoneRule::Like(re) => re.is_match(zone),
        ZoneRule::Unlike(re) => !re.is_match(zone),
        ZoneRule::Is(z) => z == zone,
    })
}
