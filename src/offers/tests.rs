//! Data-driven tests of the offer core: table cases through one `check(input, expected)`
//! helper, and a property test that runs random rounds of accepts, declines, timeouts and
//! capacity changes and checks the invariants listed in the module doc after every round.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use proptest::prelude::*;

use super::*;

// ---------------------------------------------------------------------------------------
// Builders: short names so that each case reads as a table.

fn pool(id: &str, zone: Option<&str>, free_mb: u64) -> Pool {
    Pool {
        id: id.to_string(),
        service: "svc".to_string(),
        pool: id.to_string(),
        profile: format!("{id}-profile"),
        zone: zone.map(str::to_string),
        total_mb: free_mb.max(10_000),
        free_mb,
        available: true,
    }
}

fn agent(id: &str, zone: Option<&str>) -> Agent {
    Agent {
        id: id.to_string(),
        hostname: format!("{id}.example"),
        zone: zone.map(str::to_string),
    }
}

fn fw(id: &str) -> Framework {
    Framework {
        id: id.to_string(),
        role: "storage".to_string(),
        weight: 1.0,
        quota: Quota::default(),
        suppressed: false,
        filters: Vec::new(),
    }
}

fn volume(id: &str, pool_id: &str, zone: Option<&str>, mb: u64) -> ExistingVolume {
    ExistingVolume {
        volume_id: id.to_string(),
        pool_id: pool_id.to_string(),
        zone: zone.map(str::to_string),
        mb,
        frameworks: Vec::new(),
        reserved_by: None,
        attached_to_agent: None,
        kind: VolumeKind::Mount,
    }
}

fn raw(pool_id: &str, mb: u64) -> DiskOffer {
    DiskOffer::Raw {
        pool_id: pool_id.to_string(),
        profile: format!("{pool_id}-profile"),
        mb,
    }
}

fn offer(
    id: OfferId,
    framework: &str,
    agent: &str,
    expires_ms: u64,
    disks: Vec<DiskOffer>,
) -> Offer {
    Offer {
        id,
        framework_id: framework.to_string(),
        agent_id: agent.to_string(),
        hostname: format!("{agent}.example"),
        expires_ms,
        disks,
    }
}

/// A snapshot at t = 1000 ms, new offers numbered from 10, lasting 5 s.
fn snap(pools: Vec<Pool>, agents: Vec<Agent>, frameworks: Vec<Framework>) -> Snapshot {
    Snapshot {
        now_ms: 1_000,
        next_offer_id: 10,
        config: Config {
            headroom_mb: 0,
            offer_timeout_ms: 5_000,
            min_offer_mb: 1,
        },
        pools,
        agents,
        frameworks,
        ..Snapshot::default()
    }
}

/// One line per rescind, then one per new offer: `rescind 3 expired`,
/// `10 f1@a1: raw p1 500, volume v1 20`.
fn render(a: &Allocation) -> Vec<String> {
    let mut out: Vec<String> = a
        .rescinds
        .iter()
        .map(|r| format!("rescind {} {:?}", r.offer_id, r.reason).to_lowercase())
        .collect();
    for o in &a.new_offers {
        let disks: Vec<String> = o
            .disks
            .iter()
            .map(|d| match d {
                DiskOffer::Raw { pool_id, mb, .. } => format!("raw {pool_id} {mb}"),
                DiskOffer::Volume { volume_id, mb, .. } => format!("volume {volume_id} {mb}"),
            })
            .collect();
        out.push(format!(
            "{} {}@{}: {}",
            o.id,
            o.framework_id,
            o.agent_id,
            disks.join(", ")
        ));
    }
    out
}

fn check(input: &Snapshot, expected: &[&str]) {
    let got = allocate(input);
    assert_eq!(render(&got), expected, "allocation was {got:#?}");
    assert_eq!(
        got.next_offer_id,
        input.next_offer_id + got.new_offers.len() as u64
    );
    for o in &got.new_offers {
        assert_eq!(o.expires_ms, input.now_ms + input.config.offer_timeout_ms);
    }
}

// ---------------------------------------------------------------------------------------
// Table cases, one rule each.

#[test]
fn nothing_to_offer_is_an_empty_allocation() {
    check(&Snapshot::default(), &[]);
    check(
        &snap(vec![pool("p1", None, 1000)], vec![], vec![fw("f1")]),
        &[],
    );
    check(
        &snap(
            vec![pool("p1", None, 1000)],
            vec![agent("a1", None)],
            vec![],
        ),
        &[],
    );
    check(
        &snap(
            vec![pool("p1", None, 0)],
            vec![agent("a1", None)],
            vec![fw("f1")],
        ),
        &[],
    );
}

#[test]
fn offers_a_pool_minus_headroom() {
    let mut s = snap(
        vec![pool("p1", None, 1000)],
        vec![agent("a1", None)],
        vec![fw("f1")],
    );
    s.config.headroom_mb = 100;
    check(&s, &["10 f1@a1: raw p1 900"]);
    s.config.headroom_mb = 1000;
    check(&s, &[]);
}

#[test]
fn zones_decide_which_pools_an_agent_reaches() {
    // Zonal pools reach agents of their zone; zone-less pools reach every agent; an agent
    // without a zone reaches only zone-less pools.
    let s = snap(
        vec![
            pool("pa", Some("a"), 100),
            pool("pb", Some("b"), 200),
            pool("pz", None, 300),
            pool("pc", Some("c"), 400),
        ],
        vec![
            agent("a1", Some("a")),
            agent("b1", Some("b")),
            agent("n1", None),
        ],
        vec![fw("f1")],
    );
    check(
        &s,
        &[
            "10 f1@a1: raw pa 100, raw pz 300",
            "11 f1@b1: raw pb 200, raw pz 300",
            "12 f1@n1: raw pz 300",
        ],
    );
}

#[test]
fn a_share_is_shown_on_every_agent_but_counted_once() {
    let s = snap(
        vec![pool("p1", Some("a"), 900)],
        vec![
            agent("a1", Some("a")),
            agent("a2", Some("a")),
            agent("a3", Some("a")),
        ],
        vec![fw("f1")],
    );
    check(
        &s,
        &[
            "10 f1@a1: raw p1 900",
            "11 f1@a2: raw p1 900",
            "12 f1@a3: raw p1 900",
        ],
    );
    // With those offers outstanding, the pool is fully offered: nothing more to do.
    let mut next = s.clone();
    next.outstanding = allocate(&s).new_offers;
    check(&next, &[]);
}

#[test]
fn weighted_fair_sharing_between_frameworks() {
    let mut heavy = fw("f2");
    heavy.weight = 3.0;
    let s = snap(
        vec![pool("p1", None, 1000)],
        vec![agent("a1", None), agent("a2", None)],
        vec![fw("f1"), heavy],
    );
    check(&s, &["10 f1@a1: raw p1 250", "11 f2@a2: raw p1 750"]);
}

#[test]
fn what_a_framework_holds_counts_towards_its_share() {
    // f1 already holds 400 MB: the 600 left are split so both end at 500.
    let mut s = snap(
        vec![pool("p1", None, 1000)],
        vec![agent("a1", None), agent("a2", None)],
        vec![fw("f1"), fw("f2")],
    );
    s.reservations.push(Reservation {
        framework_id: "f1".into(),
        pool_id: "p1".into(),
        volume_id: None,
        mb: 400,
        provisioned: false,
    });
    // f2 has the lower dominant share, so it is dealt the first agent.
    check(&s, &["10 f2@a1: raw p1 500", "11 f1@a2: raw p1 100"]);
}

#[test]
fn a_provisioned_reservation_counts_once_against_the_pool_and_still_for_its_framework() {
    // f1 creates a 400 MB volume from a 1000 MB pool. While the back-end has not provisioned
    // it, the reservation comes off the pool: 600 MB are left to share.
    let mut s = snap(
        vec![pool("p1", None, 1000)],
        vec![agent("a1", None), agent("a2", None)],
        vec![fw("f1"), fw("f2")],
    );
    s.reservations.push(Reservation {
        framework_id: "f1".into(),
        pool_id: "p1".into(),
        volume_id: None,
        mb: 400,
        provisioned: false,
    });
    check(&s, &["10 f2@a1: raw p1 500", "11 f1@a2: raw p1 100"]);
    // Provisioned: the pool's free space reflects the 400 MB, the reservation no longer comes
    // off it (the same 600 MB are shared, not 200), and f1 still holds the 400 MB.
    s.pools[0].free_mb = 600;
    s.reservations[0].provisioned = true;
    check(&s, &["10 f2@a1: raw p1 500", "11 f1@a2: raw p1 100"]);
    // Counted twice, the same round would offer only 200 MB.
    s.reservations[0].provisioned = false;
    check(&s, &["10 f2@a1: raw p1 200"]);
}

#[test]
fn roles_share_first_then_frameworks_within_a_role() {
    let mut f3 = fw("f3");
    f3.role = "other".into();
    let s = snap(
        vec![pool("p1", None, 1200)],
        vec![agent("a1", None), agent("a2", None), agent("a3", None)],
        vec![fw("f1"), fw("f2"), f3.clone()],
    );
    check(
        &s,
        &[
            "10 f1@a1: raw p1 300",
            "11 f2@a2: raw p1 300",
            "12 f3@a3: raw p1 600",
        ],
    );
    let mut weighted = s.clone();
    weighted.role_weights.insert("other".into(), 2.0);
    check(
        &weighted,
        &[
            "10 f1@a1: raw p1 200",
            "11 f2@a2: raw p1 200",
            "12 f3@a3: raw p1 800",
        ],
    );
}

#[test]
fn quotas_cap_bytes_and_volumes() {
    let mut small = fw("f1");
    small.quota.max_mb = Some(100);
    let mut no_volumes = fw("f3");
    no_volumes.quota.max_volumes = Some(0);
    let s = snap(
        vec![pool("p1", None, 1000)],
        vec![agent("a1", None), agent("a2", None), agent("a3", None)],
        vec![small, fw("f2"), no_volumes],
    );
    // f3 may create no volume, so it is not dealt an agent: a3 goes round to f1.
    check(
        &s,
        &[
            "10 f1@a1: raw p1 100",
            "11 f2@a2: raw p1 900",
            "12 f1@a3: raw p1 100",
        ],
    );

    // One volume slot: a share of one pool only.
    let mut one = fw("f1");
    one.quota.max_volumes = Some(1);
    let s = snap(
        vec![pool("p1", None, 1000), pool("p2", None, 1000)],
        vec![agent("a1", None)],
        vec![one],
    );
    check(&s, &["10 f1@a1: raw p1 1000"]);
}

#[test]
fn role_quotas_cap_the_frameworks_of_a_role_together() {
    let s = snap(
        vec![pool("p1", None, 1000)],
        vec![agent("a1", None), agent("a2", None)],
        vec![fw("f1"), fw("f2")],
    );
    check(&s, &["10 f1@a1: raw p1 500", "11 f2@a2: raw p1 500"]);
    // 300 MB for the role: split between its two frameworks.
    let mut mb = s.clone();
    mb.role_quotas.insert(
        "storage".into(),
        Quota {
            max_mb: Some(300),
            max_volumes: None,
        },
    );
    check(&mb, &["10 f1@a1: raw p1 150", "11 f2@a2: raw p1 150"]);
    // One volume for the role: one share, to one framework.
    let mut one = s.clone();
    one.role_quotas.insert(
        "storage".into(),
        Quota {
            max_mb: None,
            max_volumes: Some(1),
        },
    );
    check(&one, &["10 f1@a1: raw p1 1000"]);
    // What one framework of the role holds uses the role's quota up: nothing more.
    let mut full = one.clone();
    let mut held = volume("v1", "p1", None, 10);
    held.reserved_by = Some("f2".into());
    full.volumes.push(held);
    check(&full, &["10 f2@a1: volume v1 10", "11 f2@a2: volume v1 10"]);
    // Another role is not affected.
    let mut other = full.clone();
    other.frameworks[0].role = "other".into();
    check(&other, &["10 f1@a1: raw p1 1000", "11 f2@a2: volume v1 10"]);
}

#[test]
fn accept_refuses_a_second_volume_over_a_role_quota() {
    let mut s = accepted_setup();
    s.role_quotas.insert(
        "storage".into(),
        Quota {
            max_mb: None,
            max_volumes: Some(2),
        },
    );
    let raw_use = |pool: &str, mb| Use::Raw {
        pool_id: pool.into(),
        mb,
    };
    // Offer 10 shows p1 and p2: two slots, within the quota of 2.
    assert!(apply_accept(&s, "f1", 10, &[raw_use("p1", 10), raw_use("p2", 10)]).is_ok());
    // Three volumes from two shares: over the role's quota.
    assert_eq!(
        apply_accept(
            &s,
            "f1",
            10,
            &[raw_use("p1", 10), raw_use("p1", 10), raw_use("p2", 10)]
        ),
        Err(AcceptError::RoleVolumeQuota {
            role: "storage".into(),
            max_volumes: 2
        })
    );
}

#[test]
fn accept_grows_a_volume_from_its_pool_share_only() {
    let mut s = snap(
        vec![pool("p1", None, 1000), pool("p2", None, 500)],
        vec![agent("a1", None), agent("a2", None)],
        vec![fw("f1")],
    );
    let mut v = volume("v1", "p1", None, 100);
    v.reserved_by = Some("f1".into());
    v.attached_to_agent = Some("a1".into());
    s.volumes.push(v);
    s.frameworks[0].quota.max_volumes = Some(1);
    // The volume counts as the one volume f1 may hold, so no RAW share is offered at all
    // under max_volumes = 1; a higher quota shows the shares.
    check(&s, &["10 f1@a1: volume v1 100"]);
    s.frameworks[0].quota.max_volumes = Some(3);
    s.outstanding = allocate(&s).new_offers;
    assert_eq!(
        render(&Allocation {
            new_offers: s.outstanding.clone(),
            ..Allocation::default()
        }),
        [
            "10 f1@a1: raw p1 1000, raw p2 500, volume v1 100",
            "11 f1@a2: raw p1 1000, raw p2 500"
        ]
    );
    let grow = |pool: &str, mb| Use::Grow {
        pool_id: pool.into(),
        volume_id: "v1".into(),
        mb,
    };
    let got = apply_accept(&s, "f1", 10, &[grow("p1", 200)]).unwrap();
    assert_eq!(
        got.reservations,
        [Reservation {
            framework_id: "f1".into(),
            pool_id: "p1".into(),
            volume_id: Some("v1".into()),
            mb: 200,
            provisioned: false
        }]
    );
    assert_eq!(got.rescinds.len(), 1, "offer 11 shows the share of p1");
    // Growing adds no volume: fine even with the volume quota used up.
    let mut full = s.clone();
    full.frameworks[0].quota.max_volumes = Some(1);
    assert!(apply_accept(&full, "f1", 10, &[grow("p1", 200)]).is_ok());
    // More than the share, or from another pool's share: refused.
    assert!(matches!(
        apply_accept(&s, "f1", 10, &[grow("p1", 1001)]),
        Err(AcceptError::MoreThanOffered { used_mb: 1001, .. })
    ));
    assert_eq!(
        apply_accept(&s, "f1", 10, &[grow("p2", 10)]),
        Err(AcceptError::GrowFromOtherPool {
            volume_id: "v1".into(),
            volume_pool: "p1".into(),
            pool_id: "p2".into()
        })
    );
    // While the growth is pending it holds MB of the pool and of f1, but no volume slot, and
    // the volume is not offered (its size is about to change).
    let mut next = s.clone();
    next.outstanding.clear();
    next.reservations = got.reservations.clone();
    next.next_offer_id = 12;
    next.frameworks[0].quota.max_volumes = Some(2);
    next.frameworks[0].quota.max_mb = Some(1000);
    check(&next, &["12 f1@a1: raw p1 700", "13 f1@a2: raw p1 700"]);
    // An offer still showing the volume is rescinded meanwhile, and so is one showing the
    // old size once the growth is done.
    let mut during = next.clone();
    during.outstanding = vec![offer(
        5,
        "f1",
        "a1",
        9_000,
        vec![DiskOffer::Volume {
            volume_id: "v1".into(),
            pool_id: "p1".into(),
            kind: VolumeKind::Mount,
            mb: 100,
        }],
    )];
    assert_eq!(
        allocate(&during).rescinds,
        [Rescind {
            offer_id: 5,
            reason: RescindReason::VolumeUnavailable
        }]
    );
    let mut after = during.clone();
    after.reservations.clear();
    after.volumes[0].mb = 300;
    assert_eq!(allocate(&after).rescinds.len(), 1);
    after.volumes[0].mb = 100;
    assert!(allocate(&after).rescinds.is_empty());
}

#[test]
fn decline_filters_keep_a_pool_off_an_agent_until_they_expire() {
    let mut f1 = fw("f1");
    f1.filters.push(Filter {
        agent_id: "a1".into(),
        pool_id: Some("p1".into()),
        until_ms: 5_000,
    });
    let s = snap(
        vec![pool("p1", None, 1000), pool("p2", None, 500)],
        vec![agent("a1", None), agent("a2", None)],
        vec![f1, fw("f2")],
    );
    // f1 is dealt a1 but may not see p1 there, so f2 (on a2) gets all of p1; then f2's
    // dominant share is higher, so f1 gets all of p2.
    check(&s, &["10 f1@a1: raw p2 500", "11 f2@a2: raw p1 1000"]);
    let mut later = s.clone();
    later.now_ms = 5_000;
    check(
        &later,
        &[
            "10 f1@a1: raw p1 500, raw p2 250",
            "11 f2@a2: raw p1 500, raw p2 250",
        ],
    );
    // A filter on the whole agent: a1 goes to the next framework.
    let mut whole = s.clone();
    whole.frameworks[0].filters[0].pool_id = None;
    check(
        &whole,
        &[
            "10 f2@a1: raw p1 500, raw p2 250",
            "11 f1@a2: raw p1 500, raw p2 250",
        ],
    );
}

#[test]
fn suppressed_frameworks_get_nothing() {
    let mut f1 = fw("f1");
    f1.suppressed = true;
    let s = snap(
        vec![pool("p1", None, 1000)],
        vec![agent("a1", None), agent("a2", None)],
        vec![f1, fw("f2")],
    );
    check(&s, &["10 f2@a1: raw p1 1000", "11 f2@a2: raw p1 1000"]);
}

#[test]
fn frameworks_with_bad_weights_get_nothing() {
    let mut f1 = fw("f1");
    f1.weight = 0.0;
    let mut f2 = fw("f2");
    f2.weight = f64::NAN;
    let s = snap(
        vec![pool("p1", None, 1000)],
        vec![agent("a1", None)],
        vec![f1, f2],
    );
    check(&s, &[]);
}

#[test]
fn expired_offers_are_rescinded_and_offered_again() {
    let mut s = snap(
        vec![pool("p1", None, 1000)],
        vec![agent("a1", None)],
        vec![fw("f1")],
    );
    s.outstanding = vec![
        offer(3, "f1", "a1", 1_000, vec![raw("p1", 600)]),
        offer(4, "f1", "a1", 1_001, vec![raw("p1", 400)]),
    ];
    // Offer 4 still stands with a 400 MB share of p1, so f1 gets nothing more of p1.
    check(&s, &["rescind 3 expired"]);
}

#[test]
fn offers_of_gone_frameworks_and_agents_are_rescinded() {
    let mut s = snap(
        vec![pool("p1", None, 1000)],
        vec![agent("a1", None)],
        vec![fw("f1")],
    );
    s.outstanding = vec![
        offer(1, "f9", "a1", 9_000, vec![raw("p1", 100)]),
        offer(2, "f1", "a9", 9_000, vec![raw("p1", 100)]),
    ];
    check(
        &s,
        &["rescind 1 gone", "rescind 2 gone", "10 f1@a1: raw p1 1000"],
    );
}

#[test]
fn capacity_loss_rescinds_newest_offers_first() {
    let mut s = snap(
        vec![pool("p1", None, 700)],
        vec![agent("a1", None)],
        vec![fw("f1"), fw("f2")],
    );
    s.outstanding = vec![
        offer(1, "f1", "a1", 9_000, vec![raw("p1", 500)]),
        offer(2, "f2", "a1", 9_000, vec![raw("p1", 500)]),
    ];
    // 1000 MB were offered, 700 are free: rescinding offer 2 is enough, and the 200 MB
    // that are left go back to f2.
    check(&s, &["rescind 2 capacityloss", "10 f2@a1: raw p1 200"]);

    // Reservations count too: with 600 reserved, only 100 may be in offers.
    let mut reserved = s.clone();
    reserved.reservations.push(Reservation {
        framework_id: "f2".into(),
        pool_id: "p1".into(),
        volume_id: None,
        mb: 600,
        provisioned: false,
    });
    check(
        &reserved,
        &[
            "rescind 1 capacityloss",
            "rescind 2 capacityloss",
            "10 f1@a1: raw p1 100",
        ],
    );
}

#[test]
fn a_framework_share_shrinks_only_when_all_its_offers_go() {
    // f1's share of p1 is on two agents; rescinding the newer alone would not free anything.
    let mut s = snap(
        vec![pool("p1", None, 400)],
        vec![agent("a1", None), agent("a2", None)],
        vec![fw("f1"), fw("f2")],
    );
    s.outstanding = vec![
        offer(1, "f2", "a1", 9_000, vec![raw("p1", 200)]),
        offer(2, "f1", "a1", 9_000, vec![raw("p1", 300)]),
        offer(3, "f1", "a2", 9_000, vec![raw("p1", 300)]),
    ];
    // 500 MB offered, 400 free: offer 3 goes first, but f1 still shows its 300 MB in offer 2,
    // so offer 2 goes too. The 200 MB freed are offered to f1 again, on both agents.
    check(
        &s,
        &[
            "rescind 2 capacityloss",
            "rescind 3 capacityloss",
            "10 f1@a1: raw p1 200",
            "11 f1@a2: raw p1 200",
        ],
    );
}

#[test]
fn unavailable_pools_are_rescinded_and_not_offered() {
    let mut s = snap(
        vec![pool("p1", None, 1000), pool("p2", None, 500)],
        vec![agent("a1", None)],
        vec![fw("f1")],
    );
    s.pools[0].available = false;
    s.outstanding = vec![offer(
        1,
        "f1",
        "a1",
        9_000,
        vec![raw("p1", 100), raw("p2", 500)],
    )];
    // Offer 1 goes; p2 is offered again in a fresh offer.
    check(&s, &["rescind 1 poolunavailable", "10 f1@a1: raw p2 500"]);
}

#[test]
fn existing_volumes_go_to_their_framework_where_they_can_attach() {
    let mut for_f2 = volume("v1", "p1", Some("a"), 10);
    for_f2.frameworks = vec!["f2".into()];
    let mut owned = volume("v2", "p1", Some("a"), 20);
    owned.reserved_by = Some("f1".into());
    let mut attached = volume("v3", "p1", Some("a"), 30);
    attached.attached_to_agent = Some("a2".into());
    attached.kind = VolumeKind::Block;
    let elsewhere = volume("v4", "p1", Some("b"), 40);
    let mut s = snap(
        vec![pool("p1", Some("a"), 0)],
        vec![agent("a1", Some("a")), agent("a2", Some("a"))],
        vec![fw("f1"), fw("f2")],
    );
    s.volumes = vec![for_f2, owned, attached, elsewhere];
    // f2 has the lower dominant share (f1 owns v2), so it is dealt a1.
    check(
        &s,
        &[
            "10 f2@a1: volume v1 10",
            "11 f1@a2: volume v2 20, volume v3 30",
        ],
    );
    let got = allocate(&s);
    assert_eq!(
        got.new_offers[1].disks[1],
        DiskOffer::Volume {
            volume_id: "v3".into(),
            pool_id: "p1".into(),
            kind: VolumeKind::Block,
            mb: 30
        }
    );
}

#[test]
fn a_volume_offered_to_one_framework_is_not_offered_to_another() {
    let mut s = snap(
        vec![pool("p1", None, 0)],
        vec![agent("a1", None)],
        vec![fw("f1"), fw("f2")],
    );
    s.volumes = vec![volume("v1", "p1", None, 10)];
    let v1 = DiskOffer::Volume {
        volume_id: "v1".into(),
        pool_id: "p1".into(),
        kind: VolumeKind::Mount,
        mb: 10,
    };
    s.outstanding = vec![offer(1, "f1", "a1", 9_000, vec![v1.clone()])];
    check(&s, &[]);
    // Two frameworks holding one volume (a caller bug): the newer offer goes.
    s.outstanding
        .push(offer(2, "f2", "a1", 9_000, vec![v1.clone()]));
    check(&s, &["rescind 2 volumeunavailable"]);
    // Attached elsewhere since the offer was made: offered again where it is attached, to
    // whoever is dealt that agent (a1 goes to f1, a2 to f2).
    s.outstanding.pop();
    s.agents.push(agent("a2", None));
    s.volumes[0].attached_to_agent = Some("a2".into());
    check(
        &s,
        &["rescind 1 volumeunavailable", "10 f2@a2: volume v1 10"],
    );
}

#[test]
fn small_shares_are_not_offered() {
    let mut s = snap(
        vec![pool("p1", None, 250)],
        vec![agent("a1", None), agent("a2", None), agent("a3", None)],
        vec![fw("f1"), fw("f2"), fw("f3")],
    );
    s.config.min_offer_mb = 100;
    // 250 MB for three frameworks would be 83 each: only the first two in DRF order share.
    check(&s, &["10 f1@a1: raw p1 125", "11 f2@a2: raw p1 125"]);
}

// ---------------------------------------------------------------------------------------
// apply_accept

fn accepted_setup() -> Snapshot {
    let s = snap(
        vec![pool("p1", None, 1000), pool("p2", None, 500)],
        vec![agent("a1", None), agent("a2", None)],
        vec![fw("f1")],
    );
    let mut s2 = s.clone();
    s2.outstanding = allocate(&s).new_offers;
    s2
}

#[test]
fn accept_reserves_what_was_used_and_rescinds_the_same_share_elsewhere() {
    let s = accepted_setup();
    assert_eq!(
        render(&Allocation {
            new_offers: s.outstanding.clone(),
            ..Allocation::default()
        }),
        [
            "10 f1@a1: raw p1 1000, raw p2 500",
            "11 f1@a2: raw p1 1000, raw p2 500"
        ]
    );
    let got = apply_accept(
        &s,
        "f1",
        10,
        &[Use::Raw {
            pool_id: "p1".into(),
            mb: 300,
        }],
    )
    .unwrap();
    assert_eq!(
        got,
        Accepted {
            reservations: vec![Reservation {
                framework_id: "f1".into(),
                pool_id: "p1".into(),
                volume_id: None,
                mb: 300,
                provisioned: false
            }],
            reserved_volumes: vec![],
            rescinds: vec![Rescind {
                offer_id: 11,
                reason: RescindReason::Accepted
            }],
        }
    );
    // Next round: 700 MB of p1 and all of p2 are offered again.
    let mut next = s.clone();
    next.outstanding.clear();
    next.reservations = got.reservations;
    next.next_offer_id = 12;
    check(
        &next,
        &[
            "12 f1@a1: raw p1 700, raw p2 500",
            "13 f1@a2: raw p1 700, raw p2 500",
        ],
    );
}

#[test]
fn accept_of_several_offers_of_one_agent_pools_what_they_show() {
    // f1 holds v1 (attached on a1); it is shown on a1 in one offer and the pool's share in
    // another: one ACCEPT of both may grow v1 from the share.
    let mut s = snap(
        vec![pool("p1", None, 1000)],
        vec![agent("a1", None), agent("a2", None)],
        vec![fw("f1")],
    );
    let mut v = volume("v1", "p1", None, 100);
    v.reserved_by = Some("f1".into());
    v.attached_to_agent = Some("a1".into());
    s.volumes.push(v);
    s.outstanding = vec![
        offer(5, "f1", "a1", 9_000, vec![raw("p1", 1000)]),
        offer(
            6,
            "f1",
            "a1",
            9_000,
            vec![DiskOffer::Volume {
                volume_id: "v1".into(),
                pool_id: "p1".into(),
                kind: VolumeKind::Mount,
                mb: 100,
            }],
        ),
        offer(7, "f1", "a2", 9_000, vec![raw("p1", 1000)]),
    ];
    let grow = Use::Grow {
        pool_id: "p1".into(),
        volume_id: "v1".into(),
        mb: 300,
    };
    // Offer 6 alone has no share of p1.
    assert!(matches!(
        apply_accept(&s, "f1", 6, std::slice::from_ref(&grow)),
        Err(AcceptError::PoolNotOffered { .. })
    ));
    let got = apply_accept_offers(&s, "f1", &[6, 5], std::slice::from_ref(&grow)).unwrap();
    assert_eq!(got.reservations.len(), 1);
    // Offer 7 shows the same share: rescinded; 5 and 6 were accepted.
    assert_eq!(
        got.rescinds,
        [Rescind {
            offer_id: 7,
            reason: RescindReason::Accepted
        }]
    );
    // The share counts once, however many accepted offers show it.
    assert!(matches!(
        apply_accept_offers(
            &s,
            "f1",
            &[5, 6],
            &[Use::Raw {
                pool_id: "p1".into(),
                mb: 1001
            }]
        ),
        Err(AcceptError::MoreThanOffered {
            offered_mb: 1000,
            ..
        })
    ));
    assert_eq!(
        apply_accept_offers(&s, "f1", &[5, 99], &[]),
        Err(AcceptError::UnknownOffer(99))
    );
}

#[test]
fn accept_refuses_what_was_not_offered() {
    let s = accepted_setup();
    let raw_use = |pool: &str, mb| Use::Raw {
        pool_id: pool.into(),
        mb,
    };
    assert_eq!(
        apply_accept(&s, "f1", 99, &[]),
        Err(AcceptError::UnknownOffer(99))
    );
    assert!(matches!(
        apply_accept(&s, "f2", 10, &[]),
        Err(AcceptError::WrongFramework { .. })
    ));
    assert!(matches!(
        apply_accept(&s, "f1", 10, &[raw_use("p1", 600), raw_use("p1", 600)]),
        Err(AcceptError::MoreThanOffered { used_mb: 1200, .. })
    ));
    assert!(matches!(
        apply_accept(&s, "f1", 10, &[raw_use("p3", 1)]),
        Err(AcceptError::PoolNotOffered { .. })
    ));
    assert!(matches!(
        apply_accept(
            &s,
            "f1",
            10,
            &[Use::Volume {
                volume_id: "v1".into()
            }]
        ),
        Err(AcceptError::VolumeNotOffered { .. })
    ));
    // Each RAW use creates a volume: two of them break a one-volume quota.
    let mut limited = s.clone();
    limited.frameworks[0].quota.max_volumes = Some(1);
    assert!(matches!(
        apply_accept(
            &limited,
            "f1",
            10,
            &[raw_use("p1", 100), raw_use("p1", 100)]
        ),
        Err(AcceptError::VolumeQuota { max_volumes: 1, .. })
    ));
    assert!(apply_accept(&limited, "f1", 10, &[raw_use("p1", 100)]).is_ok());
    // An accept that uses nothing declines the offer and rescinds nothing.
    assert_eq!(apply_accept(&s, "f1", 10, &[]), Ok(Accepted::default()));
}

// ---------------------------------------------------------------------------------------
// Property test: random rounds, invariants after each.

const ZONES: [Option<&str>; 3] = [None, Some("a"), Some("b")];

#[derive(Debug, Clone)]
enum Event {
    Accept {
        offer: usize,
        percent: u64,
        take_volumes: bool,
    },
    Decline {
        offer: usize,
        whole_agent: bool,
        seconds: u64,
    },
    SetFree {
        pool: usize,
        free_mb: u64,
    },
    ToggleAvailable {
        pool: usize,
    },
    /// A reservation's volume now exists and its operation has ended: the reservation becomes
    /// the volume (the pool's free space drops by its size unless it was provisioned already).
    Materialize {
        reservation: usize,
    },
    /// The back-end has provisioned a reservation's MB while its operation still runs: the
    /// pool's free space drops by its size and the reservation is marked provisioned.
    Provision {
        reservation: usize,
    },
    ToggleSuppress {
        framework: usize,
    },
    Attach {
        volume: usize,
        agent: Option<usize>,
    },
    Tick {
        ms: u64,
    },
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        3 => (0..50usize, 0..=100u64, any::<bool>())
            .prop_map(|(offer, percent, take_volumes)| Event::Accept { offer, percent, take_volumes }),
        2 => (0..50usize, any::<bool>(), 0..10u64)
            .prop_map(|(offer, whole_agent, seconds)| Event::Decline { offer, whole_agent, seconds }),
        2 => (0..10usize, 0..3000u64).prop_map(|(pool, free_mb)| Event::SetFree { pool, free_mb }),
        1 => (0..10usize).prop_map(|pool| Event::ToggleAvailable { pool }),
        1 => (0..10usize).prop_map(|reservation| Event::Materialize { reservation }),
        1 => (0..10usize).prop_map(|reservation| Event::Provision { reservation }),
        1 => (0..10usize).prop_map(|framework| Event::ToggleSuppress { framework }),
        1 => (0..10usize, proptest::option::of(0..10usize))
            .prop_map(|(volume, agent)| Event::Attach { volume, agent }),
        2 => (0..8000u64).prop_map(|ms| Event::Tick { ms }),
    ]
}

type PoolSpec = (usize, u64, bool);
type FwSpec = (u8, u8, Option<u64>, Option<u32>, bool);
type VolSpec = (usize, u64, u8, Option<usize>, bool);

fn world(
    pools: Vec<PoolSpec>,
    agents: Vec<usize>,
    fws: Vec<FwSpec>,
    vols: Vec<VolSpec>,
    config: Config,
    role_quota: Quota,
) -> Snapshot {
    let role_quotas = BTreeMap::from([("r0".to_string(), role_quota)]);
    let pools: Vec<Pool> = pools
        .into_iter()
        .enumerate()
        .map(|(i, (z, free, available))| Pool {
            available,
            ..pool(&format!("p{i}"), ZONES[z], free)
        })
        .collect();
    let agents: Vec<Agent> = agents
        .into_iter()
        .enumerate()
        .map(|(i, z)| agent(&format!("a{i}"), ZONES[z]))
        .collect();
    let frameworks: Vec<Framework> = fws
        .into_iter()
        .enumerate()
        .map(
            |(i, (w, role, max_mb, max_volumes, suppressed))| Framework {
                role: format!("r{role}"),
                weight: f64::from(w),
                quota: Quota {
                    max_mb,
                    max_volumes,
                },
                suppressed,
                ..fw(&format!("f{i}"))
            },
        )
        .collect();
    let volumes: Vec<ExistingVolume> = vols
        .into_iter()
        .enumerate()
        .map(|(i, (p, mb, mode, attached, block))| {
            let p = &pools[p % pools.len()];
            let mut v = volume(&format!("v{i}"), &p.id, p.zone.as_deref(), mb);
            let owner = frameworks[i % frameworks.len()].id.clone();
            match mode {
                0 => {}
                1 => v.frameworks = vec![owner],
                _ => v.reserved_by = Some(owner),
            }
            v.attached_to_agent = attached.map(|a| agents[a % agents.len()].id.clone());
            if block {
                v.kind = VolumeKind::Block;
            }
            v
        })
        .collect();
    Snapshot {
        now_ms: 0,
        next_offer_id: 1,
        config,
        pools,
        agents,
        frameworks,
        volumes,
        role_weights: BTreeMap::from([("r1".to_string(), 2.0)]),
        role_quotas,
        ..Snapshot::default()
    }
}

fn active_filter(s: &Snapshot, f: &Framework, agent: &str, pool: &str) -> bool {
    f.filters.iter().any(|x| {
        x.until_ms > s.now_ms
            && x.agent_id == agent
            && x.pool_id.as_deref().is_none_or(|p| p == pool)
    })
}

/// The invariants of the module doc, over the outstanding offers in `s`.
fn assert_invariants(s: &Snapshot) {
    let pools: HashMap<&str, &Pool> = s.pools.iter().map(|p| (p.id.as_str(), p)).collect();
    let agents: HashMap<&str, &Agent> = s.agents.iter().map(|a| (a.id.as_str(), a)).collect();
    let fws: HashMap<&str, &Framework> = s.frameworks.iter().map(|f| (f.id.as_str(), f)).collect();
    let vols: HashMap<&str, &ExistingVolume> = s
        .volumes
        .iter()
        .map(|v| (v.volume_id.as_str(), v))
        .collect();

    let mut share: HashMap<(&str, &str), u64> = HashMap::new();
    let mut holder: HashMap<&str, &str> = HashMap::new();
    let mut offered_vols: BTreeSet<(&str, &str)> = BTreeSet::new();
    let mut ids = BTreeSet::new();
    for o in &s.outstanding {
        assert!(ids.insert(o.id), "offer id {} twice", o.id);
        assert!(
            o.expires_ms > s.now_ms,
            "offer {} outlived its timeout",
            o.id
        );
        let agent = agents[o.agent_id.as_str()];
        assert!(fws.contains_key(o.framework_id.as_str()));
        for d in &o.disks {
            match d {
                DiskOffer::Raw { pool_id, mb, .. } => {
                    let p = pools[pool_id.as_str()];
                    assert!(p.available, "offer {} on unavailable {}", o.id, p.id);
                    assert!(reachable(agent.zone.as_deref(), p.zone.as_deref()));
                    let e = share
                        .entry((o.framework_id.as_str(), pool_id.as_str()))
                        .or_default();
                    *e = (*e).max(*mb);
                }
                DiskOffer::Volume { volume_id, mb, .. } => {
                    let v = vols[volume_id.as_str()];
                    assert_eq!(*mb, v.mb);
                    let h = holder
                        .entry(volume_id.as_str())
                        .or_insert(o.framework_id.as_str());
                    assert_eq!(
                        *h, o.framework_id,
                        "volume {volume_id} offered to two frameworks"
                    );
                    match &v.attached_to_agent {
                        Some(at) => assert_eq!(*at, o.agent_id, "{volume_id} attached elsewhere"),
                        None => assert!(reachable(agent.zone.as_deref(), v.zone.as_deref())),
                    }
                    match &v.reserved_by {
                        Some(owner) => assert_eq!(*owner, o.framework_id),
                        None => assert!(
                            v.frameworks.is_empty() || v.frameworks.contains(&o.framework_id)
                        ),
                    }
                    offered_vols.insert((o.framework_id.as_str(), volume_id.as_str()));
                }
            }
        }
    }
    // Never overcommitted: a provisioned reservation is in `free_mb` already.
    for p in &s.pools {
        let reserved: u64 = s
            .reservations
            .iter()
            .filter(|r| r.pool_id == p.id && !r.provisioned)
            .map(|r| r.mb)
            .sum();
        let shares: u64 = share
            .iter()
            .filter(|((_, pp), _)| *pp == p.id)
            .map(|(_, mb)| mb)
            .sum();
        let budget = if p.available {
            p.free_mb
                .saturating_sub(s.config.headroom_mb)
                .saturating_sub(reserved)
        } else {
            0
        };
        assert!(
            shares <= budget,
            "pool {}: {shares} MB offered, budget {budget}",
            p.id
        );
    }
    // Quotas, per framework and per role.
    let mut per_role: HashMap<&str, (u64, u64, u64, u64)> = HashMap::new();
    for f in &s.frameworks {
        let mut mb: u64 = s
            .reservations
            .iter()
            .filter(|r| r.framework_id == f.id)
            .map(|r| r.mb)
            .sum();
        let mut count = s
            .reservations
            .iter()
            .filter(|r| r.framework_id == f.id && r.volume_id.is_none())
            .count() as u64;
        for v in s
            .volumes
            .iter()
            .filter(|v| v.reserved_by.as_deref() == Some(&f.id))
        {
            mb += v.mb;
            count += 1;
        }
        // What is held may already exceed a quota (it was set lower later); then nothing
        // more may be offered.
        let (mut offered_mb, mut offered_count) = (0, 0);
        for ((_, _), s_mb) in share.iter().filter(|((ff, _), _)| *ff == f.id) {
            offered_mb += s_mb;
            offered_count += 1;
        }
        for (_, v) in offered_vols.iter().filter(|(ff, _)| *ff == f.id) {
            if vols[v].reserved_by.is_none() {
                offered_mb += vols[v].mb;
                offered_count += 1;
            }
        }
        let e = per_role.entry(f.role.as_str()).or_default();
        *e = (e.0 + mb, e.1 + offered_mb, e.2 + count, e.3 + offered_count);
        if let Some(max) = f.quota.max_mb {
            assert!(
                offered_mb == 0 || mb + offered_mb <= max,
                "{} holds {mb} MB and is offered {offered_mb} MB, quota {max}",
                f.id
            );
        }
        if let Some(max) = f.quota.max_volumes {
            assert!(
                offered_count == 0 || count + offered_count <= u64::from(max),
                "{} holds {count} volumes and is offered {offered_count}, quota {max}",
                f.id
            );
        }
    }
    for (role, q) in &s.role_quotas {
        let Some(&(mb, offered_mb, count, offered_count)) = per_role.get(role.as_str()) else {
            continue;
        };
        if let Some(max) = q.max_mb {
            assert!(
                offered_mb == 0 || mb + offered_mb <= max,
                "role {role} holds {mb} MB and is offered {offered_mb} MB, quota {max}"
            );
        }
        if let Some(max) = q.max_volumes {
            assert!(
                offered_count == 0 || count + offered_count <= u64::from(max),
                "role {role} holds {count} volumes and is offered {offered_count}, quota {max}"
            );
        }
    }
}

/// Run a round, check what it made, and apply it to `s`.
fn round(s: &mut Snapshot) {
    let a = allocate(s);
    for r in &a.rescinds {
        let before = s.outstanding.len();
        s.outstanding.retain(|o| o.id != r.offer_id);
        assert_eq!(
            s.outstanding.len() + 1,
            before,
            "rescinded unknown offer {}",
            r.offer_id
        );
    }
    for o in &a.new_offers {
        assert!(o.id >= s.next_offer_id && o.id < a.next_offer_id);
        assert!(!o.disks.is_empty());
        let f = s
            .frameworks
            .iter()
            .find(|f| f.id == o.framework_id)
            .unwrap();
        assert!(!f.suppressed, "suppressed {} was offered", f.id);
        for d in &o.disks {
            let pool_id = match d {
                DiskOffer::Raw { pool_id, .. } | DiskOffer::Volume { pool_id, .. } => pool_id,
            };
            assert!(
                !active_filter(s, f, &o.agent_id, pool_id),
                "{} declined {pool_id} on {} but was offered it",
                f.id,
                o.agent_id
            );
        }
    }
    s.next_offer_id = a.next_offer_id;
    s.outstanding.extend(a.new_offers);
    assert_invariants(s);
}

fn apply(s: &mut Snapshot, e: &Event) {
    match *e {
        Event::Accept {
            offer,
            percent,
            take_volumes,
        } => {
            if s.outstanding.is_empty() {
                return;
            }
            let o = s.outstanding[offer % s.outstanding.len()].clone();
            let uses: Vec<Use> = o
                .disks
                .iter()
                .filter_map(|d| match d {
                    DiskOffer::Raw { pool_id, mb, .. } if mb * percent / 100 > 0 => {
                        Some(Use::Raw {
                            pool_id: pool_id.clone(),
                            mb: mb * percent / 100,
                        })
                    }
                    DiskOffer::Volume { volume_id, .. } if take_volumes => Some(Use::Volume {
                        volume_id: volume_id.clone(),
                    }),
                    _ => None,
                })
                .collect();
            let got = apply_accept(s, &o.framework_id, o.id, &uses)
                .unwrap_or_else(|e| panic!("accept of {o:?} refused: {e}"));
            s.outstanding
                .retain(|x| x.id != o.id && !got.rescinds.iter().any(|r| r.offer_id == x.id));
            s.reservations.extend(got.reservations);
            for v in s
                .volumes
                .iter_mut()
                .filter(|v| got.reserved_volumes.contains(&v.volume_id))
            {
                v.reserved_by = Some(o.framework_id.clone());
            }
        }
        Event::Decline {
            offer,
            whole_agent,
            seconds,
        } => {
            if s.outstanding.is_empty() {
                return;
            }
            let o = s.outstanding.remove(offer % s.outstanding.len());
            let until_ms = s.now_ms + seconds * 1000;
            let f = s
                .frameworks
                .iter_mut()
                .find(|f| f.id == o.framework_id)
                .unwrap();
            let pools: Vec<Option<String>> = if whole_agent {
                vec![None]
            } else {
                o.disks
                    .iter()
                    .map(|d| match d {
                        DiskOffer::Raw { pool_id, .. } | DiskOffer::Volume { pool_id, .. } => {
                            Some(pool_id.clone())
                        }
                    })
                    .collect()
            };
            for pool_id in pools {
                f.filters.push(Filter {
                    agent_id: o.agent_id.clone(),
                    pool_id,
                    until_ms,
                });
            }
        }
        Event::SetFree { pool, free_mb } => {
            let n = s.pools.len();
            s.pools[pool % n].free_mb = free_mb;
        }
        Event::ToggleAvailable { pool } => {
            let n = s.pools.len();
            s.pools[pool % n].available ^= true;
        }
        Event::Provision { reservation } => {
            let n = s.reservations.len();
            let Some(r) = s.reservations.get_mut(reservation % n.max(1)) else {
                return;
            };
            if !r.provisioned {
                r.provisioned = true;
                let p = s.pools.iter_mut().find(|p| p.id == r.pool_id).unwrap();
                p.free_mb = p.free_mb.saturating_sub(r.mb);
            }
        }
        Event::Materialize { reservation } => {
            if s.reservations.is_empty() {
                return;
            }
            let r = s.reservations.remove(reservation % s.reservations.len());
            let p = s.pools.iter_mut().find(|p| p.id == r.pool_id).unwrap();
            if !r.provisioned {
                p.free_mb = p.free_mb.saturating_sub(r.mb);
            }
            let zone = p.zone.clone();
            let mut v = volume(
                &format!("m{}", s.volumes.len()),
                &r.pool_id,
                zone.as_deref(),
                r.mb,
            );
            v.reserved_by = Some(r.framework_id);
            s.volumes.push(v);
        }
        Event::ToggleSuppress { framework } => {
            let n = s.frameworks.len();
            s.frameworks[framework % n].suppressed ^= true;
        }
        Event::Attach { volume, agent } => {
            if s.volumes.is_empty() {
                return;
            }
            let n = s.volumes.len();
            s.volumes[volume % n].attached_to_agent =
                agent.map(|a| s.agents[a % s.agents.len()].id.clone());
        }
        Event::Tick { ms } => s.now_ms += ms,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn invariants_hold_over_random_rounds(
        pools in prop::collection::vec((0..3usize, 0..3000u64, prop::bool::weighted(0.9)), 1..5),
        agents in prop::collection::vec(0..3usize, 1..6),
        fws in prop::collection::vec(
            (1..4u8, 0..2u8, proptest::option::of(0..3000u64), proptest::option::of(0..4u32),
             prop::bool::weighted(0.2)),
            1..5),
        vols in prop::collection::vec(
            (0..5usize, 1..500u64, 0..3u8, proptest::option::of(0..6usize), any::<bool>()), 0..5),
        headroom_mb in 0..200u64,
        offer_timeout_ms in 1000..10_000u64,
        min_offer_mb in 1..50u64,
        events in prop::collection::vec(event(), 1..40),
        role_max_mb in proptest::option::of(0..4000u64),
        role_max_volumes in proptest::option::of(0..5u32),
    ) {
        let config = Config { headroom_mb, offer_timeout_ms, min_offer_mb };
        let role_quota = Quota { max_mb: role_max_mb, max_volumes: role_max_volumes };
        let mut s = world(pools, agents, fws, vols, config, role_quota);
        round(&mut s);
        for e in &events {
            apply(&mut s, e);
            round(&mut s);
        }
    }
}
