//! What the admin API reads of the endpoint: the frameworks (subscribed, away, torn down),
//! the outstanding offers, and the report of an admin release.

use serde::{Deserialize, Serialize};

use super::{rfc3339_ms, Endpoint};
use crate::offers::DiskOffer;

/// `GET /admin/frameworks`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkView {
    pub id: String,
    pub name: String,
    pub role: String,
    pub principal: Option<String>,
    pub connected: bool,
    pub suppressed: bool,
    pub offers: usize,
    pub filters: usize,
    pub subscribed_at: String,
    /// Volumes the framework holds.
    #[serde(default)]
    pub reservations: usize,
    /// When it sent TEARDOWN (RFC 3339), while it still holds reservations.
    #[serde(default)]
    pub torn_down_at: Option<String>,
    /// When its reservations become releasable (`torn_down_at` + `teardown_grace_secs`).
    #[serde(default)]
    pub grace_ends: Option<String>,
    /// The grace has passed: an admin may release its reservations.
    #[serde(default)]
    pub releasable: bool,
}
/// `POST /admin/frameworks/{id}/release`: what was released.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReleaseReport {
    pub framework_id: String,
    /// Volumes no longer reserved (each detached, and still existing).
    pub released: Vec<String>,
    /// Reservations the framework still holds.
    pub remaining: usize,
}

/// `GET /admin/offers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OfferView {
    pub id: String,
    pub framework_id: String,
    pub agent_id: String,
    pub hostname: String,
    /// RFC 3339.
    pub expires: String,
    pub disks: Vec<DiskOffer>,
}

impl Endpoint {
    /// Subscribed and disconnected frameworks, then torn-down ones that still hold
    /// reservations (with when their grace ends).
    pub fn frameworks(&self) -> Result<Vec<FrameworkView>, crate::store::Error> {
        let store = self.store();
        let held = store.reservations()?;
        let torn = self.torn_down()?;
        let count = |id: &str| held.iter().filter(|r| r.framework_id == id).count();
        let now = crate::volumes::now_secs();
        let st = self.state();
        let mut out: Vec<FrameworkView> = st
            .frameworks
            .iter()
            .map(|(id, f)| FrameworkView {
                id: id.clone(),
                name: f.name.clone(),
                role: f.role.clone(),
                principal: f.principal.clone(),
                connected: f.tx.is_some(),
                suppressed: f.suppressed,
                offers: st
                    .outstanding
                    .iter()
                    .filter(|o| &o.framework_id == id)
                    .count(),
                filters: f.filters.len(),
                subscribed_at: f.subscribed_at.clone(),
                reservations: count(id),
                torn_down_at: None,
                grace_ends: None,
                releasable: false,
            })
            .collect();
        for (id, t) in torn {
            if st.frameworks.contains_key(&id) {
                continue;
            }
            let ends = self.grace_end(t.at);
            out.push(FrameworkView {
                reservations: count(&id),
                id,
                name: t.name,
                role: t.role,
                principal: t.principal,
                connected: false,
                suppressed: false,
                offers: 0,
                filters: 0,
                subscribed_at: String::new(),
                torn_down_at: Some(rfc3339_ms(t.at.saturating_mul(1000))),
                grace_ends: Some(rfc3339_ms(ends.saturating_mul(1000))),
                releasable: now >= ends,
            });
        }
        Ok(out)
    }

    /// The outstanding offers.
    pub fn offers(&self) -> Vec<OfferView> {
        let st = self.state();
        st.outstanding
            .iter()
            .map(|o| OfferView {
                id: self.offer_id_string(o.id),
                framework_id: o.framework_id.clone(),
                agent_id: o.agent_id.clone(),
                hostname: o.hostname.clone(),
                expires: rfc3339_ms(o.expires_ms),
                disks: o.disks.clone(),
            })
            .collect()
    }
}
