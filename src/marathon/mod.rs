//! Marathon app and group definitions that reference Polly volumes: the parts of the
//! Marathon JSON format Polly reads (`parse`), the pure check of a definition against a
//! snapshot of Polly (`check`), and the admin-API glue of `polly marathon check|provision`
//! (`apply`, the only part that does I/O).
//!
//! How an app names Polly: an external volume with `provider: "dvdi"` and `dvdi/driver`
//! `rexray` is a Polly volume of the service in option `dvdi/polly.service` (default: the
//! `--service` flag, `vfs`); `dvdi/polly.pool` optionally picks the pool it is created in.
//! A local persistent volume with `persistent.profileName` is carved by Marathon from a Polly
//! pool of that name (Polly offers each pool as a RAW disk with the pool as its profile).
//! Claims are the volume label [`CLAIM_LABEL`] (`marathon.app=/db`), set by `provision`.

mod apply;
mod check;
mod command;
mod render;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use apply::{provision, snapshot, ProvisionOutcome};
pub use check::{
    check, Action, Cluster, Finding, Options, Report, Rule, VolumeCheck, VolumeKind, VolumeState,
};
pub use command::{run, CheckArgs, Command, CommandError};

/// Volume label recording which Marathon app claims a volume.
pub const CLAIM_LABEL: &str = "marathon.app";
/// `dvdi/*` option naming the Polly service of an external volume.
pub const SERVICE_OPTION: &str = "dvdi/polly.service";
/// `dvdi/*` option naming the Polly pool an external volume is created in.
pub const POOL_OPTION: &str = "dvdi/polly.pool";

/// Why a definition could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not valid JSON: {0}")]
    Json(#[source] serde_json::Error),
    #[error("expected a Marathon app (an object with \"id\") or group (with \"apps\" or \"groups\"), found {0}")]
    NotObject(&'static str),
    #[error("not a Marathon {what}: {source}")]
    Shape {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// A Marathon app definition: only the fields Polly checks; every other field is ignored.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub id: String,
    /// Marathon's default is 1.
    #[serde(default = "one")]
    pub instances: u32,
    #[serde(default)]
    pub upgrade_strategy: Option<UpgradeStrategy>,
    /// `[field, operator, value?]`, e.g. `["zone", "LIKE", "us-east-1[ab]"]`.
    #[serde(default)]
    pub constraints: Vec<Vec<String>>,
    #[serde(default)]
    pub container: Option<Container>,
    /// `"disabled"`, or an object with timeouts.
    #[serde(default)]
    pub unreachable_strategy: Option<serde_json::Value>,
}

fn one() -> u32 {
    1
}

/// Marathon's defaults are 1.0 and 1.0: a new task starts before the old one stops.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeStrategy {
    #[serde(default = "one_f")]
    pub minimum_health_capacity: f64,
    #[serde(default = "one_f")]
    pub maximum_over_capacity: f64,
}

fn one_f() -> f64 {
    1.0
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: 1.0,
            maximum_over_capacity: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Container {
    /// `MESOS` or `DOCKER`.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub volumes: Vec<VolumeDef>,
}

/// One `container.volumes[]` entry: external, local persistent, or a host path.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDef {
    pub container_path: String,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub external: Option<External>,
    #[serde(default)]
    pub persistent: Option<Persistent>,
    #[serde(default)]
    pub host_path: Option<String>,
}

/// `external`: a volume that lives outside the agent (here: in Polly, reached via REX-Ray).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct External {
    pub name: String,
    #[serde(default)]
    pub provider: Option<String>,
    /// GiB; needed only when the volume must be created.
    #[serde(default)]
    pub size: Option<u64>,
    /// Several tasks may use it at once (not single-writer).
    #[serde(default)]
    pub shared: bool,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `persistent`: a local persistent volume Marathon reserves and creates from offers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Persistent {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// MiB.
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub profile_name: Option<String>,
}

/// A Marathon group: apps and nested groups.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct Group {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub apps: Vec<App>,
    #[serde(default)]
    pub groups: Vec<Group>,
}

/// What a definition file holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Definition {
    App(App),
    Group(Group),
}

/// Parse a Marathon app or group definition (JSON). Unknown fields are ignored.
pub fn parse(text: &str) -> Result<Definition, ParseError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(ParseError::Json)?;
    let obj = match &v {
        serde_json::Value::Object(o) => o,
        serde_json::Value::Array(_) => return Err(ParseError::NotObject("an array")),
        _ => return Err(ParseError::NotObject("a scalar")),
    };
    if obj.contains_key("apps") || obj.contains_key("groups") {
        serde_json::from_value(v)
            .map(Definition::Group)
            .map_err(|source| ParseError::Shape {
                what: "group",
                source,
            })
    } else {
        serde_json::from_value(v)
            .map(Definition::App)
            .map_err(|source| ParseError::Shape {
                what: "app",
                source,
            })
    }
}

impl Definition {
    /// Every app, with its id made absolute against the enclosing groups (Marathon resolves
    /// `web` inside group `/shop` to `/shop/web`).
    pub fn apps(&self) -> Vec<App> {
        let mut out = Vec::new();
        match self {
            Definition::App(a) => {
                let mut a = a.clone();
                a.id = resolve("/", &a.id);
                out.push(a);
            }
            Definition::Group(g) => collect(g, "/", &mut out),
        }
        out
    }
}

fn collect(g: &Group, parent: &str, out: &mut Vec<App>) {
    let base =
        g.id.as_deref()
            .map(|id| resolve(parent, id))
            .unwrap_or_else(|| parent.to_string());
    for a in &g.apps {
        let mut a = a.clone();
        a.id = resolve(&base, &a.id);
        out.push(a);
    }
    for sub in &g.groups {
        collect(sub, &base, out);
    }
}

/// `resolve("/shop", "web")` = `/shop/web`; absolute ids stay; `.` and `..` are applied.
fn resolve(base: &str, id: &str) -> String {
    let joined = if id.starts_with('/') {
        id.to_string()
    } else {
        format!("{base}/{id}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

#[cfg(test)]
mod tests;
