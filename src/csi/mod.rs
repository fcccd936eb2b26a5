//! The CSI (Container Storage Interface) surface of central Polly: the Identity and
//! Controller services over gRPC, translated into volume-manager calls like every other
//! surface. A CSI volume id is the Polly volume id, a CSI volume name the Polly name, a CSI
//! node id the instance id (a `polly node` or REX-Ray host), and a CSI snapshot id
//! `<service>:<back-end snapshot id>`. The Node service is `polly node`'s, not served here.
//!
//! Files: `config.rs` (`[csi]`), `error.rs` (the gRPC codes), `serve.rs` (binding the unix
//! or TCP listener, serving, and the client's connector), `identity.rs`, `controller.rs`
//! (the Controller service: each call checks that this instance serves, then runs),
//! `capabilities.rs` (volume capabilities and access modes), `params.rs` (creation
//! parameters, capacity ranges, topology), `volumes.rs` (create, delete, validate, get,
//! expand), `publish.rs`, `list.rs` (paging), `snapshots.rs`, `capacity.rs`.

mod capabilities;
mod capacity;
pub mod config;
mod controller;
pub mod error;
mod identity;
mod list;
mod params;
mod publish;
mod serve;
mod snapshots;
mod volumes;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use config::{CsiConfig, CsiConfigError, CsiEndpoint};
pub use error::{CsiError, Result};
pub use serve::{bind, connect, connect_lazy, serve, serve_router, server, BindError, Listener};

use crate::ha::{Role, RoleState};
use crate::store::Volume;
use crate::volumes::Manager;

/// Generated CSI v1 types, servers and clients (package `csi.v1`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/csi.v1.rs"));
}

/// The plugin name orchestrators register Polly under.
pub const PLUGIN_NAME: &str = "csi.polly.io";

/// The topology key of a zone: volumes and nodes carry `{TOPOLOGY_ZONE_KEY: <zone>}`.
pub const TOPOLOGY_ZONE_KEY: &str = "topology.polly.io/zone";

/// The publish-context key holding where the node finds the data (the JSON of
/// `mount::Source`, as the admin API's source call gives it to `polly node`).
pub const PUBLISH_SOURCE_KEY: &str = "polly.io/source";

/// The largest request message accepted, in bytes; a larger one is refused (tonic answers
/// OUT_OF_RANGE) before it is decoded.
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// The CSI services' shared state: the volume manager, and whether this instance serves.
#[derive(Clone)]
pub struct Csi {
    manager: Manager,
    /// Start-up reconciliation is done (the server's readiness).
    ready: Arc<AtomicBool>,
    /// With `[ha]`: leader or follower.
    role: Option<Role>,
}

impl Csi {
    pub fn new(manager: Manager, ready: Arc<AtomicBool>, role: Option<Role>) -> Csi {
        Csi {
            manager,
            ready,
            role,
        }
    }

    /// Whether this instance serves Controller calls now. A follower never does: it would
    /// answer from, or write to, a store another instance leads (see ARCHITECTURE.md,
    /// "Followers"), so the orchestrator is told to go to the leader.
    fn serving(&self) -> Result<()> {
        match self.role.as_ref().map(Role::get) {
            None | Some(RoleState::Leader) => {}
            Some(RoleState::Follower(Some(l))) => {
                return Err(CsiError::Unavailable(format!(
                    "this polly is a follower; CSI is served by the leader (admin API {})",
                    l.admin
                )))
            }
            Some(_) => {
                return Err(CsiError::Unavailable(
                    "no polly leader is elected yet; retry shortly".into(),
                ))
            }
        }
        if !self.ready.load(Ordering::Acquire) {
            return Err(CsiError::Unavailable(
                "polly is starting (start-up reconciliation); retry shortly".into(),
            ));
        }
        Ok(())
    }
}

/// The topology of one zone.
fn zone_topology(zone: &str) -> v1::Topology {
    v1::Topology {
        segments: HashMap::from([(TOPOLOGY_ZONE_KEY.to_string(), zone.to_string())]),
    }
}

/// A Polly volume as CSI names it. Its context (handed back to the node calls) names the
/// service, the Polly name and the pool.
fn csi_volume(m: &Manager, v: &Volume) -> v1::Volume {
    let mut context = HashMap::from([
        ("service".to_string(), v.service.clone()),
        ("name".to_string(), v.name.clone()),
    ]);
    if let Some(p) = &v.pool {
        context.insert("pool".to_string(), p.clone());
    }
    v1::Volume {
        capacity_bytes: bytes_i64(v.size_bytes),
        volume_id: v.id.clone(),
        volume_context: context,
        content_source: None,
        accessible_topology: m
            .volume_zone(v)
            .map(|z| vec![zone_topology(&z)])
            .unwrap_or_default(),
    }
}

/// Bytes as CSI's int64 (Polly's sizes are at most 1 PiB).
fn bytes_i64(b: u64) -> i64 {
    i64::try_from(b).unwrap_or(i64::MAX)
}

/// The instances that hold a volume: its CSI published node ids.
fn published_nodes(v: &Volume) -> Vec<String> {
    v.attachments
        .iter()
        .map(|a| a.instance_id.clone())
        .collect()
}
