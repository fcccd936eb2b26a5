//! What the endpoint's one lock guards: the frameworks it knows (stream, filters, the
//! statuses in flight on the stream), the outstanding offers, the next offer id and the
//! operations in flight; with the few ways the rest of the endpoint changes them.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::ops::InFlight;
use crate::mesos::v1::resource::AllocationInfo;
use crate::mesos::v1::scheduler::Event;
use crate::offers::{self, OfferId};

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data: a panic while holding the lock cannot leave it half updated in a way that
    // matters more than stopping the endpoint would.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One framework known to the endpoint.
pub(super) struct Framework {
    pub(super) name: String,
    pub(super) role: String,
    pub(super) principal: Option<String>,
    pub(super) multi_role: bool,
    pub(super) stream_id: Option<String>,
    pub(super) tx: Option<mpsc::UnboundedSender<Event>>,
    pub(super) suppressed: bool,
    pub(super) filters: Vec<offers::Filter>,
    pub(super) subscribed_at: String,
    /// Uuids of the operation statuses sent on the current stream and not yet acknowledged
    /// (`State::send_status`, `State::forget_status`).
    pub(super) statuses_sent: HashSet<Vec<u8>>,
    /// When its stream ended (milliseconds), while it is disconnected.
    pub(super) disconnected_at_ms: Option<u64>,
    /// Its `FrameworkInfo.failover_timeout`, in milliseconds.
    pub(super) failover_timeout_ms: u64,
}

impl Framework {
    /// What the framework's resources carry: its role, when it is MULTI_ROLE.
    pub(super) fn allocation_info(&self) -> Option<AllocationInfo> {
        self.multi_role.then(|| AllocationInfo {
            role: Some(self.role.clone()),
        })
    }

    /// Keep `agent_id` out of this framework's offers until `until_ms`.
    pub(super) fn refuse(&mut self, agent_id: String, until_ms: u64) {
        self.filters.push(offers::Filter {
            agent_id,
            pool_id: None,
            until_ms,
        });
    }
}

pub(super) struct State {
    pub(super) frameworks: BTreeMap<String, Framework>,
    pub(super) outstanding: Vec<offers::Offer>,
    pub(super) next_offer_id: OfferId,
    /// The operations in flight: the capacity and volumes they hold, and how many ended.
    pub(super) in_flight: InFlight,
}

impl State {
    pub(super) fn new() -> State {
        State {
            frameworks: BTreeMap::new(),
            outstanding: Vec::new(),
            next_offer_id: 1,
            in_flight: InFlight::default(),
        }
    }

    /// Send an event on the framework's stream, when it has one.
    pub(super) fn send(&self, fw: &str, ev: Event) {
        if let Some(tx) = self.frameworks.get(fw).and_then(|f| f.tx.as_ref()) {
            let _ = tx.send(ev);
        }
    }

    /// Send an operation status on the framework's current stream, unless that stream had
    /// it already (by its uuid; see `Endpoint::send_status`).
    pub(super) fn send_status(&mut self, fw: &str, ev: Event) {
        let Some(f) = self.frameworks.get_mut(fw) else {
            return;
        };
        if f.tx.is_none() {
            return;
        }
        let uuid = ev
            .update_operation_status
            .as_ref()
            .and_then(|u| u.status.uuid.as_ref())
            .map(|u| u.value.clone());
        if let Some(u) = uuid {
            if !f.statuses_sent.insert(u) {
                return;
            }
        }
        if let Some(tx) = &f.tx {
            let _ = tx.send(ev);
        }
    }

    /// The framework has the status with `uuid`: its stream need not remember sending it
    /// (the set stays as small as the statuses in flight, not as large as the stream is old).
    pub(super) fn forget_status(&mut self, fw: &str, uuid: &[u8]) {
        if let Some(f) = self.frameworks.get_mut(fw) {
            f.statuses_sent.remove(uuid);
        }
    }

    /// What the framework's resources carry ([`Framework::allocation_info`]).
    pub(super) fn allocation_info(&self, fw: &str) -> Option<AllocationInfo> {
        self.frameworks.get(fw).and_then(Framework::allocation_info)
    }

    /// The framework's role and principal.
    pub(super) fn role_and_principal(&self, fw: &str) -> Option<(String, Option<String>)> {
        self.frameworks
            .get(fw)
            .map(|f| (f.role.clone(), f.principal.clone()))
    }

    /// Keep `agent_id` out of the framework's offers until `until_ms`.
    pub(super) fn refuse(&mut self, fw: &str, agent_id: String, until_ms: u64) {
        if let Some(f) = self.frameworks.get_mut(fw) {
            f.refuse(agent_id, until_ms);
        }
    }

    /// The framework's outstanding offers with these ids (an id not parsed is `None`), in
    /// the order asked; an id that is not such an offer is left out.
    pub(super) fn offers_of(&self, fw: &str, ids: &[Option<OfferId>]) -> Vec<offers::Offer> {
        ids.iter()
            .filter_map(|id| {
                self.outstanding
                    .iter()
                    .find(|o| Some(o.id) == *id && o.framework_id == fw)
                    .cloned()
            })
            .collect()
    }

    /// Withdraw the outstanding offers with these ids.
    pub(super) fn remove_offers(&mut self, ids: &BTreeSet<OfferId>) {
        self.outstanding.retain(|o| !ids.contains(&o.id));
    }
}
