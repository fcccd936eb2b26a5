//! The storage-offer endpoint: a Mesos v1 scheduler API served as a master serves it
//! (`POST /api/v1/scheduler`, `/master/api/v1/scheduler`, `GET /version`), on its own
//! listener. Frameworks subscribe (JSON or protobuf), receive OFFERS of disk built by the pure
//! offer engine (`crate::offers`) from the capacity poller's readings and the known agents,
//! and ACCEPT them with operations (CREATE_DISK, DESTROY_DISK, RESERVE, UNRESERVE) that the
//! volume manager carries out; each operation with an id gets UPDATE_OPERATION_STATUS events,
//! kept in the store until acknowledged (see `ops/`).
//!
//! Status codes follow the reference (`mesos-v1.md` section 1): 400 for unparsable or
//! incomplete calls and stream-id problems, 403 for a known framework that is not
//! subscribed, 405 for a method other than POST, 406/415 for media types, 501 for `UNKNOWN`,
//! 202 with an empty body for every accepted call.
//!
//! Here: the [`Endpoint`] handle, its parts and how it is served. The rest, one concern a
//! file: `wire` (routes, the call handler, content types, decoding calls and encoding
//! events), `subscribe` (SUBSCRIBE, streams, heartbeats), `filters` (DECLINE, REVIVE,
//! SUPPRESS), `teardown` (TEARDOWN and the admin release), `round` (allocation rounds
//! feeding the offer engine), `ops/` (ACCEPT and its operations), `views` (what the admin
//! API reads), `state` (what the endpoint's one lock guards), `config` (`[offers]`) and
//! `error`.

mod auth;
pub mod config;
mod error;
mod filters;
mod ops;
mod round;
mod state;
mod subscribe;
mod teardown;
mod views;
mod wire;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::mesos::agents::InstanceMap;
use crate::mesos::client;
use crate::mesos::client::MesosConfig;
use crate::offers::OfferId;
use crate::store::{Instance, Store};
use crate::volumes::Manager;
use config::OffersConfig;
use state::{lock, State};

pub use error::{AckError, DecodeError, OpError, ReleaseError};
pub use views::{FrameworkView, OfferView, ReleaseReport};
pub(crate) use wire::{decode_call, Ct};
pub use wire::{MESOS_VERSION, VENDOR};

struct Inner {
    manager: Manager,
    agents: client::Handle,
    cfg: OffersConfig,
    /// Which instance each agent stands for (from `cfg`).
    instance_map: InstanceMap,
    /// The Mesos master config, when one is configured: framework ids are then checked with
    /// its operator API (`GET_FRAMEWORKS`) at SUBSCRIBE.
    mesos: Option<MesosConfig>,
    http: reqwest::Client,
    /// Makes offer ids unique across restarts: an offer of a previous run is unknown.
    run_id: String,
    state: Mutex<State>,
    wake: Notify,
    /// Framework authentication, when on.
    auth: Option<auth::Authenticator>,
}

/// Cheap-to-clone handle on the endpoint; the admin API reads it.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// The pool id the engine and the wire (`provider_id`) use for a service's pool in a zone.
pub fn pool_id(service: &str, pool: &str, zone: Option<&str>) -> String {
    format!("{service}/{pool}/{}", zone.unwrap_or("-"))
}

impl Endpoint {
    pub fn new(manager: Manager, agents: client::Handle, cfg: OffersConfig) -> Endpoint {
        Self::with_master(manager, agents, cfg, None)
    }

    /// Like [`Endpoint::new`]; with `mesos` (a config with masters), a framework that
    /// subscribes with an id is checked against the master's `GET_FRAMEWORKS`.
    pub fn with_master(
        manager: Manager,
        agents: client::Handle,
        cfg: OffersConfig,
        mesos: Option<MesosConfig>,
    ) -> Endpoint {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        // The config was validated (secret files read) before any listener was bound; a
        // secret file gone since fails closed: every call is refused.
        let auth = cfg.authenticator().unwrap_or_else(|e| {
            tracing::error!(error = %e, "framework credentials unreadable: every scheduler call is refused");
            Some(auth::Authenticator::default())
        });
        if auth.is_some() {
            tracing::info!("storage-offer endpoint: framework authentication on");
        }
        Endpoint {
            inner: Arc::new(Inner {
                auth,
                manager,
                agents,
                instance_map: cfg.instance_map(),
                cfg,
                mesos: mesos.filter(|m| m.enabled()),
                http,
                run_id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
                state: Mutex::new(State::new()),
                wake: Notify::new(),
            }),
        }
    }

    /// The volume manager operations act through.
    fn manager(&self) -> &Manager {
        &self.inner.manager
    }

    fn store(&self) -> &Store {
        self.inner.manager.store()
    }

    fn config(&self) -> &OffersConfig {
        &self.inner.cfg
    }

    /// The agents known now, and the hosts REX-Ray reported (`instances`) as agents too.
    fn agents_with_instances(&self, instances: &[Instance]) -> Vec<client::Agent> {
        self.inner.agents.agents_with_instances(instances)
    }

    /// The endpoint's one lock: frameworks, offers and operations in flight. Never held
    /// across an `.await`.
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    fn offer_id_string(&self, id: OfferId) -> String {
        format!("{}-O{id}", self.inner.run_id)
    }

    fn parse_offer_id(&self, s: &str) -> Option<OfferId> {
        s.strip_prefix(&self.inner.run_id)?
            .strip_prefix("-O")?
            .parse()
            .ok()
    }

    /// Run an allocation round soon.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }
}
