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

/// The list cache keeps the bodies of one version of the store's volumes only (a newer one
/// drops the rest: with many agents listing while the store changes, stale bodies would pile
/// up to one per agent), ignores bodies rendered at an older version, and stays within its
/// byte budget.
#[test]
fn list_cache_keeps_only_the_current_generation_within_its_budget() {
    let mut c = ListCache::default();
    let body = |n: usize| Bytes::from(vec![b'x'; n]);
    for agent in 0..100 {
        c.put(format!("vfs:1:agent-{agent}"), 1, body(1000));
    }
    assert_eq!((c.len(), c.bytes()), (100, 100_000));
    assert_eq!(c.get("vfs:1:agent-7", 1).map(|b| b.len()), Some(1000));
    assert!(
        c.get("vfs:1:agent-7", 2).is_none(),
        "a body of generation 1 served at 2"
    );

    c.put("vfs:1:agent-7".into(), 2, body(500));
    assert_eq!(
        (c.len(), c.bytes()),
        (1, 500),
        "generation 1 bodies kept after 2 came"
    );
    assert!(c.get("vfs:1:agent-8", 2).is_none());
    // A request that read the store before the last write does not bring stale bodies back.
    c.put("vfs:1:agent-8".into(), 1, body(500));
    assert_eq!(c.len(), 1);
    // Replacing a body counts its bytes once.
    c.put("vfs:1:agent-7".into(), 2, body(700));
    assert_eq!((c.len(), c.bytes()), (1, 700));

    // Never more than the budget, however many agents list.
    let big = LIST_CACHE_BYTES / 10 + 1;
    for agent in 0..50 {
        c.put(format!("vfs:1:agent-{agent}"), 3, body(big));
        assert!(c.bytes() <= LIST_CACHE_BYTES, "{} bytes kept", c.bytes());
    }
    assert_eq!(c.len(), 9);
}
