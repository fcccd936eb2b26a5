//! TEARDOWN, and what a framework that left still holds: its reservations stay, its teardown
//! is recorded (store meta `offers.torn_down.<id>`), and once `teardown_grace_secs` have
//! passed an admin may release them; a re-SUBSCRIBE clears the record.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::views::ReleaseReport;
use super::{rfc3339_ms, Endpoint, ReleaseError};
use crate::offers::OfferId;

/// Store meta key prefix of torn-down frameworks that still hold reservations.
const TORN_DOWN_PREFIX: &str = "offers.torn_down.";

/// A framework that sent TEARDOWN while holding reservations (kept in the store's meta).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct TornDown {
    /// Unix seconds.
    pub(super) at: u64,
    pub(super) name: String,
    pub(super) role: String,
    pub(super) principal: Option<String>,
}

impl Endpoint {
    /// TEARDOWN: rescind the framework's offers and end its stream. Its reservations stay;
    /// when it holds any, the teardown is recorded (durably, before the 202) so that they
    /// become releasable by an admin once `teardown_grace_secs` have passed.
    pub(super) fn teardown(&self, fw: &str) -> Result<(), crate::store::Error> {
        let store = self.store();
        let holds = store.reservations()?.iter().any(|r| r.framework_id == fw);
        if holds {
            let st = self.state();
            let f = st.frameworks.get(fw);
            let mark = TornDown {
                at: crate::volumes::now_secs(),
                name: f.map(|f| f.name.clone()).unwrap_or_default(),
                role: f.map(|f| f.role.clone()).unwrap_or_else(|| "*".into()),
                principal: f.and_then(|f| f.principal.clone()),
            };
            drop(st);
            let v = serde_json::to_string(&mark).unwrap_or_default();
            store.apply(&[crate::store::Op::PutMeta(
                format!("{TORN_DOWN_PREFIX}{fw}"),
                v,
            )])?;
        }
        let mut st = self.state();
        let gone: Vec<OfferId> = st
            .outstanding
            .iter()
            .filter(|o| o.framework_id == fw)
            .map(|o| o.id)
            .collect();
        for id in gone {
            st.send(fw, self.rescind_event(id));
        }
        st.outstanding.retain(|o| o.framework_id != fw);
        // Dropping the sender ends the stream; reservations stay (never released implicitly).
        st.frameworks.remove(fw);
        drop(st);
        tracing::info!(
            framework = fw,
            grace_secs = self.config().teardown_grace_secs,
            "framework tore down; its reservations are kept for the grace period"
        );
        self.wake();
        Ok(())
    }

    /// A framework subscribed again after a TEARDOWN: its reservations are its own again,
    /// not releasable.
    pub(super) fn back_from_teardown(&self, id: &str) {
        let mark = format!("{TORN_DOWN_PREFIX}{id}");
        if let Ok(Some(_)) = self.store().meta(&mark) {
            if let Err(e) = self.store().apply(&[crate::store::Op::DeleteMeta(mark)]) {
                tracing::warn!(framework = %id, error = %e, "cannot clear the teardown record");
            }
        }
    }

    /// Torn-down frameworks recorded in the store, by id.
    pub(super) fn torn_down(&self) -> Result<BTreeMap<String, TornDown>, crate::store::Error> {
        let mut out = BTreeMap::new();
        for (k, v) in self.store().meta_prefixed(TORN_DOWN_PREFIX)? {
            match serde_json::from_str::<TornDown>(&v) {
                Ok(t) => {
                    out.insert(k[TORN_DOWN_PREFIX.len()..].to_string(), t);
                }
                Err(e) => tracing::warn!(key = %k, error = %e, "unreadable teardown record"),
            }
        }
        Ok(out)
    }

    /// Unix seconds at which the reservations of a framework torn down at `at` are
    /// releasable.
    pub(super) fn grace_end(&self, at: u64) -> u64 {
        at.saturating_add(self.config().teardown_grace_secs.ceil() as u64)
    }

    /// Release what a framework holds (all of it, or one volume): detach each volume from
    /// every instance (driver detach, each under its own intent), lift the framework's
    /// restriction, then drop the reservation. Volumes are never deleted. Refused while the
    /// framework is subscribed, and, unless `force`, before its teardown grace has passed
    /// (or when it never tore down). The reservation record goes last, so a release cut
    /// short by a crash or an error is finished by running it again.
    pub async fn release(
        &self,
        fw: &str,
        volume: Option<&str>,
        force: bool,
    ) -> Result<ReleaseReport, ReleaseError> {
        let subscribed = self
            .state()
            .frameworks
            .get(fw)
            .is_some_and(|f| f.tx.is_some());
        if subscribed {
            return Err(ReleaseError::Refused(format!(
                "framework {fw} is subscribed; it releases its volumes with UNRESERVE or DESTROY_DISK"
            )));
        }
        let store = self.store().clone();
        let mark = self.torn_down()?.remove(fw);
        let mut held: Vec<crate::store::Reservation> = store
            .reservations()?
            .into_iter()
            .filter(|r| r.framework_id == fw)
            .collect();
        if held.is_empty() && mark.is_none() {
            return Err(ReleaseError::NotFound(format!(
                "framework {fw} holds no reservations"
            )));
        }
        if let Some(v) = volume {
            held.retain(|r| r.volume_id == v);
            if held.is_empty() {
                return Err(ReleaseError::NotFound(format!(
                    "framework {fw} holds no volume {v}"
                )));
            }
        }
        if !force {
            let now = crate::volumes::now_secs();
            match &mark {
                None => {
                    return Err(ReleaseError::Refused(format!(
                        "framework {fw} has not torn down; pass --force to release its reservations anyway"
                    )))
                }
                Some(t) if now < self.grace_end(t.at) => {
                    let ends = self.grace_end(t.at);
                    return Err(ReleaseError::Refused(format!(
                        "framework {fw} tore down at {}; its reservations are kept until {} ({} s from now); pass --force to release them now",
                        rfc3339_ms(t.at.saturating_mul(1000)),
                        rfc3339_ms(ends.saturating_mul(1000)),
                        ends - now
                    )));
                }
                Some(_) => {}
            }
        }
        let m = self.manager();
        let mut released = Vec::new();
        for r in held {
            match m.volume(&r.volume_id) {
                Ok(v) => {
                    for a in &v.attachments {
                        m.detach(&v.id, Some(&a.instance_id)).await?;
                    }
                    if v.restrict_frameworks.contains(fw) {
                        m.unrestrict(
                            &v.id,
                            &crate::volumes::Restriction {
                                frameworks: BTreeSet::from([fw.to_string()]),
                                ..Default::default()
                            },
                        )
                        .await?;
                    }
                }
                // The volume is gone already: only the claim is left to drop.
                Err(crate::volumes::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            let drop_claim = crate::store::Op::DeleteReservation {
                framework_id: fw.to_string(),
                volume_id: r.volume_id.clone(),
            };
            store.commit(vec![drop_claim]).await?;
            tracing::info!(framework = fw, volume = %r.volume_id, "reservation released by an admin");
            released.push(r.volume_id);
        }
        let remaining = store
            .reservations()?
            .iter()
            .filter(|r| r.framework_id == fw)
            .count();
        if remaining == 0 && mark.is_some() {
            store.apply(&[crate::store::Op::DeleteMeta(format!(
                "{TORN_DOWN_PREFIX}{fw}"
            ))])?;
        }
        self.wake();
        Ok(ReleaseReport {
            framework_id: fw.to_string(),
            released,
            remaining,
        })
    }
}
