//! The attachments mask against the reference's rules, one case per line.

use super::types::{WireAttachment, WireInstanceId, WireVolume};
use super::*;

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
    let got =
        apply_mask(vol(holders), m, Some("me")).map(|w| (w.attachment_state, w.attachments.len()));
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
