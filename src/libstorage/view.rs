//! What a volume looks like through a service: whether the service (and the caller) sees it
//! at all, its wire form, and the attachments mask (reference §4.4).

use super::auth::Caller;
use super::services::Svc;
use super::types::{state, VolumeView, WireVolume};
use super::{mask, LsError, LsState};
use crate::store::{Volume, VolumeStatus};

impl LsState {
    /// Volumes `caller` reaches through `svc`, sorted by id.
    pub(super) fn visible_volumes(
        &self,
        svc: &str,
        caller: &Caller,
    ) -> Result<Vec<Volume>, LsError> {
        let mut v: Vec<Volume> = self
            .manager
            .volumes()?
            .into_iter()
            .filter(|v| reachable(v, svc, caller))
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(v)
    }

    /// One volume `caller` reaches through `svc`, by Polly id; out of reach is not found.
    pub(super) fn visible_volume(
        &self,
        svc: &str,
        id: &str,
        caller: &Caller,
    ) -> Result<Volume, LsError> {
        match self.manager.store().volume(id)? {
            Some(v) if reachable(&v, svc, caller) => Ok(v),
            _ => Err(LsError::not_found(id)),
        }
    }

    /// One volume `caller` reaches through `svc`, by name (case-insensitive; the service's
    /// own volume first when several services hold that name).
    pub(super) fn visible_by_name(
        &self,
        svc: &str,
        name: &str,
        caller: &Caller,
    ) -> Result<Volume, LsError> {
        let mut hits: Vec<Volume> = self
            .visible_volumes(svc, caller)?
            .into_iter()
            .filter(|v| v.name.eq_ignore_ascii_case(name))
            .collect();
        hits.sort_by_key(|v| (v.service != svc, v.name != name));
        hits.into_iter()
            .next()
            .ok_or_else(|| LsError::not_found(name))
    }
}

/// Whether a volume can be seen and used through libStorage service `svc`.
pub fn visible(v: &Volume, svc: &str) -> bool {
    v.status == VolumeStatus::Available
        && (v.restrict_services.is_empty() || v.restrict_services.contains(svc))
}

/// Whether `caller` may see and use a volume through service `svc`: the volume is visible
/// there, and the policy of the volume's own service (if it has one) admits the caller. The
/// second half makes a service with its own auth a tenant: its volumes are not reachable
/// through another service's routes, unrestricted ones included.
pub fn reachable(v: &Volume, svc: &str, caller: &Caller) -> bool {
    visible(v, svc) && caller.may_use(&v.service)
}

/// Convert a volume for service `svc` and apply the attachments mask; `None` when the
/// mask filters the volume out. `me` is the requesting instance's resolved id.
pub(super) fn masked(v: &Volume, svc: &Svc, mask: u32, me: Option<&str>) -> Option<WireVolume> {
    let w = WireVolume::from(VolumeView {
        volume: v,
        service: &svc.name,
        driver: &svc.driver,
    });
    apply_mask(w, mask, me)
}

/// The server's attachment algorithm (reference §4.4). Polly acts as a driver that sets
/// `attachmentState` from every attachment it knows, then filters.
pub fn apply_mask(mut w: WireVolume, m: u32, me: Option<&str>) -> Option<WireVolume> {
    if m == 0 {
        w.attachments.clear();
        w.attachment_state = 0;
        return Some(w);
    }
    let is_me = |id: &str| me.is_some_and(|me| me.eq_ignore_ascii_case(id));
    let st = if w.attachments.is_empty() {
        state::AVAILABLE
    } else if w.attachments.iter().any(|a| is_me(&a.instance_id.id)) {
        state::ATTACHED
    } else {
        state::UNAVAILABLE
    };
    w.attachment_state = st;
    let attached = m & mask::ATTACHED != 0;
    let unattached = m & mask::UNATTACHED != 0;
    let mine = m & mask::MINE != 0;
    let drop = (st == state::AVAILABLE && attached && !unattached)
        || ((st == state::ATTACHED || st == state::UNAVAILABLE) && !attached && unattached)
        || (mine
            && attached
            && (st == state::UNAVAILABLE || (st == state::AVAILABLE && !unattached)));
    if drop {
        return None;
    }
    if mine {
        w.attachments.retain(|a| is_me(&a.instance_id.id));
    }
    Some(w)
}

pub(super) fn requires_instance(m: u32) -> bool {
    m & (mask::MINE | mask::DEVICES) != 0
}

#[cfg(test)]
mod tests {
    //! The attachments mask against the reference's rules, one case per line.

    use std::collections::BTreeMap;

    use super::*;
    use crate::libstorage::types::{WireAttachment, WireInstanceId};

    fn vol(holders: &[&str]) -> WireVolume {
        WireVolume {
            attachments: holders
                .iter()
                .map(|h| WireAttachment {
                    device_name: "/dev/xvda".into(),
                    instance_id: WireInstanceId {
                        id: h.to_string(),
                        driver: "vfs".into(),
                        service: "vfs".into(),
                        fields: BTreeMap::new(),
                        metadata: None,
                    },
                    status: "attached".into(),
                    volume_id: "pv-1".into(),
                })
                .collect(),
            attachment_state: 0,
            name: "v".into(),
            size: 1,
            id: "pv-1".into(),
            kind: String::new(),
            availability_zone: String::new(),
            fields: BTreeMap::new(),
        }
    }

    /// (mask, holders, expected: None = dropped, Some((state, attachments shown))).
    fn check(m: u32, holders: &[&str], expected: Option<(u8, usize)>) {
        let got = apply_mask(vol(holders), m, Some("me"))
            .map(|w| (w.attachment_state, w.attachments.len()));
        assert_eq!(got, expected, "mask {m} holders {holders:?}");
    }

    #[test]
    fn mask_rules() {
        // mask 0: keep, strip attachments and state.
        check(0, &["me"], Some((0, 0)));
        check(0, &[], Some((0, 0)));
        // 1: everything, states computed.
        check(1, &[], Some((3, 0)));
        check(1, &["me"], Some((2, 1)));
        check(1, &["other"], Some((4, 1)));
        check(1, &["other", "me"], Some((2, 2)));
        // 9 (attached only): available volumes dropped.
        check(9, &[], None);
        check(9, &["me"], Some((2, 1)));
        check(9, &["other"], Some((4, 1)));
        // 17 (unattached only): attached volumes dropped.
        check(17, &[], Some((3, 0)));
        check(17, &["me"], None);
        check(17, &["other"], None);
        // 11 (mine + attached): only volumes attached to me.
        check(11, &[], None);
        check(11, &["me"], Some((2, 1)));
        check(11, &["other"], None);
        check(11, &["other", "me"], Some((2, 1)));
        // 3 (mine): nothing dropped, only my attachments shown.
        check(3, &["other"], Some((4, 0)));
        check(3, &["other", "me"], Some((2, 1)));
        // 27 (mine + attached + unattached): others' volumes dropped.
        check(27, &[], Some((3, 0)));
        check(27, &["me"], Some((2, 1)));
        check(27, &["other"], None);
        // 25 (attached + unattached): everything.
        check(25, &["other"], Some((4, 1)));
        check(25, &[], Some((3, 0)));
        // 15 and 31 as the mount flow sends them.
        check(15, &["me"], Some((2, 1)));
        check(31, &["other"], None);
    }

    #[test]
    fn mine_without_an_instance_sees_no_attachment_as_its_own() {
        let w = apply_mask(vol(&["x"]), 1, None).unwrap();
        assert_eq!(w.attachment_state, 4);
    }
}
