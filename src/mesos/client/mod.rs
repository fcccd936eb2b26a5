//! The Mesos v1 scheduler client: subscribes Polly to a master as a framework, learns the
//! agents from offers (and optionally the operator API), declines and suppresses offers,
//! and keeps the subscription alive across leader changes, 503s, dropped streams and
//! silent masters. The framework id is persisted under [`FRAMEWORK_ID_KEY`]. `scheduler` is
//! the same protocol for any framework that consumes offers (one subscription, no policy).
//!
//! Here: the client and what its parts share. The subscription loop is in `subscribe`, the
//! event stream in `events`, HTTP with a master's scheduler endpoint in `transport`, the
//! encodings in `encoding`, the operator API in `operator`, and the agents and status the
//! client keeps in `state`.

pub mod config;
mod encoding;
mod events;
mod operator;
pub mod scheduler;
mod state;
mod subscribe;
mod transport;

use std::time::Duration;

pub use config::{MesosConfig, MesosConfigError, MesosContentType, StaticAgent};
pub use encoding::{decode_event, encode_call};
pub use events::framework_removed;
pub use operator::{framework_status, operator_agents, operator_framework_status, FrameworkStatus};
pub use scheduler::{Caller, SubscribeOptions, Subscription};
pub use state::{Agent, AgentSource, ConnState, Handle, MesosStatus};
pub use subscribe::Backoff;
pub use transport::{location_master, Credentials};
pub(crate) use transport::{open_subscription, post_call, Opened};

use super::Error;
use crate::store::Store;

/// Store meta key of the framework id.
pub const FRAMEWORK_ID_KEY: &str = "mesos.framework_id";
/// The scheduler endpoint on a master.
pub const SCHEDULER_PATH: &str = "/api/v1/scheduler";
/// The operator endpoint on a master.
pub const OPERATOR_PATH: &str = "/api/v1";
pub const STREAM_ID_HEADER: &str = "Mesos-Stream-Id";
/// How much of an error response body is read (the rest is dropped unread).
const ERROR_BODY_LIMIT: usize = 4096;
/// Consecutive redirects followed before backing off (guards against redirect loops).
const MAX_REDIRECTS: u32 = 4;

/// The exact `Content-Type` string for an encoding.
pub fn content_type(ct: MesosContentType) -> &'static str {
    match ct {
        MesosContentType::Json => "application/json",
        MesosContentType::Protobuf => "application/x-protobuf",
    }
}

/// The client task. Runs until `token` is cancelled.
pub struct Client {
    cfg: MesosConfig,
    store: Store,
    handle: Handle,
    /// Used only for the SUBSCRIBE stream (its own connection pool).
    stream_http: reqwest::Client,
    /// Every other call, on other connections.
    call_http: reqwest::Client,
}

impl Client {
    pub fn new(cfg: MesosConfig, store: Store, handle: Handle) -> Result<Client, Error> {
        let build = |idle: usize| {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .connect_timeout(Duration::from_secs_f64(cfg.request_timeout_secs.min(10.0)))
                .pool_max_idle_per_host(idle)
                .build()
                .map_err(|e| Error::Http {
                    master: "-".into(),
                    detail: format!("cannot build HTTP client: {e}"),
                })
        };
        Ok(Client {
            stream_http: build(0)?,
            call_http: build(8)?,
            cfg,
            store,
            handle,
        })
    }

    fn credentials(&self) -> Option<Credentials<'_>> {
        self.cfg.principal.as_deref().map(|principal| Credentials {
            principal,
            secret: self.cfg.secret.as_deref(),
        })
    }

    fn stored_framework_id(&self) -> Result<Option<String>, Error> {
        Ok(self.store.meta(FRAMEWORK_ID_KEY)?.filter(|s| !s.is_empty()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Agents learned from several tasks at once (offers and the operator API's poll): the
    /// `mesos_agents` gauge and the status end at the number of agents known, never at a
    /// count one of the learns took before another's.
    #[test]
    fn concurrently_learned_agents_are_all_counted() {
        let metrics = crate::metrics::MesosMetrics::default();
        let h = Handle::new(&MesosConfig::default(), metrics.clone());
        std::thread::scope(|s| {
            for t in 0..4 {
                let h = &h;
                s.spawn(move || {
                    for i in 0..2_500 {
                        h.learn(Agent {
                            id: format!("agent-{t}-{i}"),
                            hostname: format!("node-{t}-{i}"),
                            region: None,
                            zone: None,
                            attributes: std::collections::BTreeMap::new(),
                            source: state::AgentSource::Offer,
                            lost: false,
                            lost_at: None,
                            last_seen: state::now_rfc3339(),
                            fence: None,
                        });
                    }
                });
            }
        });
        assert_eq!(h.agents().len(), 10_000);
        assert_eq!(metrics.agents.get(), 10_000);
        assert_eq!(h.status().agents_known, 10_000);
    }
}
