//! Unit tests of parsing and of every check rule, against hand-built snapshots.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::admin::{VolumeStatusView, VolumeView};
use crate::driver::{AccessMode, PoolCapacity};
use crate::volumes::ServiceInfo;

const GIB: u64 = 1 << 30;

fn service(name: &str, pool: &str, zone: Option<&str>, free_gib: u64) -> ServiceInfo {
    ServiceInfo {
        name: name.into(),
        driver: "vfs".into(),
        capacity: vec![PoolCapacity {
            pool: pool.into(),
            zone: zone.map(String::from),
            total_bytes: 100 * GIB,
            free_bytes: free_gib * GIB,
        }],
        capacity_error: None,
        volumes: 0,
        provisioned_bytes: 0,
        polled_at: None,
        available: true,
        poll_error: None,
    }
}

fn volume(service: &str, name: &str, gib: u64) -> VolumeView {
    VolumeView {
        id: format!("pv-{name}"),
        service: service.into(),
        driver_id: Some("vfs-000001".into()),
        name: name.into(),
        size_bytes: gib * GIB,
        pool: Some("default".into()),
        zone: Some("us-east-1a".into()),
        access_mode: AccessMode::SingleWriter,
        labels: BTreeMap::new(),
        restrict_services: BTreeSet::new(),
        restrict_frameworks: BTreeSet::new(),
        status: VolumeStatusView::Available,
        attachments: vec![],
        created_at: 0,
        path: None,
    }
}

fn cluster() -> Cluster {
    Cluster {
        services: vec![
            service("vfs", "default", Some("us-east-1a"), 50),
            service("archive", "fast", Some("us-east-1b"), 5),
        ],
        volumes: vec![],
    }
}

fn app(volumes: &str, extra: &str) -> String {
    format!(
        r#"{{"id": "/db", "instances": 1, "cpus": 1, "env": {{"X": "y"}},
            "upgradeStrategy": {{"minimumHealthCapacity": 0, "maximumOverCapacity": 0}},
            "container": {{"type": "MESOS", "volumes": [{volumes}]}} {extra} }}"#
    )
}

fn ext(name: &str, size: Option<u64>, opts: &str) -> String {
    let size = size.map(|s| format!(r#""size": {s},"#)).unwrap_or_default();
    format!(
        r#"{{"containerPath": "/data", "mode": "RW", "external": {{"name": "{name}", "provider": "dvdi", {size}
            "options": {{"dvdi/driver": "rexray" {opts}}}}}}}"#
    )
}

fn run(text: &str, c: &Cluster) -> Report {
    check(&parse(text).unwrap(), c, &Options::default())
}

fn rules(r: &Report) -> Vec<Rule> {
    r.problems.iter().map(|p| p.rule).collect()
}

#[test]
fn parses_apps_and_nested_groups_with_relative_ids() {
    let g = r#"{"id": "/shop", "apps": [{"id": "web"}],
                "groups": [{"id": "back", "apps": [{"id": "db", "instances": 0}, {"id": "/abs"}]}]}"#;
    let d = parse(g).unwrap();
    let ids: Vec<String> = d.apps().into_iter().map(|a| a.id).collect();
    assert_eq!(ids, ["/shop/web", "/shop/back/db", "/abs"]);
    let a = parse(r#"{"id": "a/../b", "unknown": {"deep": [1]}}"#).unwrap();
    assert_eq!(a.apps()[0].id, "/b");
    assert_eq!(
        a.apps()[0].instances,
        1,
        "Marathon's default is one instance"
    );
    assert!(matches!(parse("[1]"), Err(ParseError::NotObject(_))));
    assert!(matches!(parse("{"), Err(ParseError::Json(_))));
    assert!(matches!(
        parse(r#"{"cpus": 1}"#),
        Err(ParseError::Shape { .. })
    ));
}

#[test]
fn a_missing_volume_with_a_size_is_planned_restricted_and_claimed() {
    let r = run(&app(&ext("pgdata", Some(10), ""), ""), &cluster());
    assert!(r.ok, "{:?}", r.problems);
    assert_eq!(r.volumes[0].state, VolumeState::ToCreate);
    assert_eq!(r.volumes[0].zone.as_deref(), Some("us-east-1a"));
    let [Action::Create { app, volume }] = &r.actions[..] else {
        panic!("{:?}", r.actions)
    };
    assert_eq!(app, "/db");
    assert_eq!(volume.size_bytes, 10 * GIB);
    assert_eq!(volume.service, "vfs");
    assert_eq!(
        volume.restrict_services,
        BTreeSet::from(["vfs".to_string()])
    );
    assert_eq!(volume.labels[CLAIM_LABEL], "/db");
    assert_eq!(volume.access_mode, AccessMode::SingleWriter);
}

#[test]
fn missing_size_wrong_provider_driver_and_service_are_problems() {
    assert_eq!(
        rules(&run(&app(&ext("pgdata", None, ""), ""), &cluster())),
        [Rule::Size]
    );
    let csi = app(
        r#"{"containerPath": "/d", "external": {"name": "x", "provider": "csi", "options": {}}}"#,
        "",
    );
    assert_eq!(rules(&run(&csi, &cluster())), [Rule::Provider]);
    let other = app(&ext("pgdata", Some(1), "").replace("rexray", "convoy"), "");
    assert_eq!(rules(&run(&other, &cluster())), [Rule::Driver]);
    let svc = app(
        &ext("pgdata", Some(1), r#", "dvdi/polly.service": "nope""#),
        "",
    );
    assert_eq!(rules(&run(&svc, &cluster())), [Rule::Service]);
    let bad = app(&ext("bad/name", Some(1), ""), "");
    assert_eq!(rules(&run(&bad, &cluster())), [Rule::Name]);
}

#[test]
fn single_writer_needs_one_instance_and_a_stop_first_upgrade() {
    let two =
        app(&ext("pgdata", Some(1), ""), "").replace(r#""instances": 1"#, r#""instances": 2"#);
    assert_eq!(rules(&run(&two, &cluster())), [Rule::SingleInstance]);
    let rolling = app(&ext("pgdata", Some(1), ""), "").replace(
        r#""maximumOverCapacity": 0"#,
        r#""maximumOverCapacity": 0.5"#,
    );
    assert_eq!(rules(&run(&rolling, &cluster())), [Rule::UpgradeStrategy]);
    let none = r#"{"id": "/db", "container": {"volumes": [VOL]}}"#
        .replace("VOL", &ext("pgdata", Some(1), ""));
    let r = run(&none, &cluster());
    assert_eq!(rules(&r), [Rule::UpgradeStrategy]);
    assert!(r.problems[0].message.contains("default is 1, 1"));
    // A shared volume may have several instances and a rolling upgrade.
    let shared = two
        .replace(
            r#""provider": "dvdi""#,
            r#""provider": "dvdi", "shared": true"#,
        )
        .replace(r#""maximumOverCapacity": 0"#, r#""maximumOverCapacity": 1"#);
    let r = run(&shared, &cluster());
    assert!(r.ok, "{:?}", r.problems);
    let [Action::Create { volume, .. }] = &r.actions[..] else {
        panic!()
    };
    assert_eq!(volume.access_mode, AccessMode::MultiWriter);
    assert!(volume.labels.is_empty(), "shared volumes carry no claim");
}

#[test]
fn capacity_and_zones_come_from_the_pools_and_the_constraints() {
    let big = app(&ext("pgdata", Some(51), ""), "");
    let r = run(&big, &cluster());
    assert_eq!(rules(&r), [Rule::Capacity]);
    assert!(
        r.problems[0].message.contains("50 GiB free"),
        "{}",
        r.problems[0].message
    );
    let elsewhere = app(
        &ext("pgdata", Some(1), ""),
        r#", "constraints": [["zone", "LIKE", "us-west-.*"], ["hostname", "UNIQUE"]]"#,
    );
    assert_eq!(rules(&run(&elsewhere, &cluster())), [Rule::Zone]);
    let like = app(
        &ext("pgdata", Some(1), ""),
        r#", "constraints": [["@zone", "LIKE", "us-east-1[ab]"]]"#,
    );
    assert!(run(&like, &cluster()).ok);
    let bad = app(
        &ext("pgdata", Some(1), ""),
        r#", "constraints": [["zone", "LIKE", "("]]"#,
    );
    assert!(rules(&run(&bad, &cluster())).contains(&Rule::Constraint));
    // Two new volumes in one pool count against the same free space.
    let two = app(
        &format!("{},{}", ext("a", Some(30), ""), ext("b", Some(30), "")),
        "",
    );
    assert_eq!(rules(&run(&two, &cluster())), [Rule::Capacity]);
    let mut c = cluster();
    c.services[0].capacity_error = Some("disk gone".into());
    assert_eq!(
        rules(&run(&app(&ext("a", Some(1), ""), ""), &c)),
        [Rule::Capacity]
    );
}

#[test]
fn existing_volumes_are_checked_for_restriction_zone_and_claims() {
    let def = app(&ext("pgdata", None, ""), "");
    let mut c = cluster();
    c.volumes.push(volume("vfs", "pgdata", 10));
    let r = run(&def, &c);
    assert!(r.ok, "{:?}", r.problems);
    assert_eq!(r.volumes[0].state, VolumeState::Exists);
    assert!(
        matches!(&r.actions[..], [Action::Claim { volume_id, .. }] if volume_id == "pv-pgdata")
    );

    c.volumes[0].labels.insert(CLAIM_LABEL.into(), "/db".into());
    let r = run(&def, &c);
    assert!(r.ok && r.actions.is_empty(), "own claim: nothing to do");

    c.volumes[0]
        .labels
        .insert(CLAIM_LABEL.into(), "/other".into());
    assert_eq!(rules(&run(&def, &c)), [Rule::Claimed]);

    c.volumes[0].labels.clear();
    c.volumes[0].restrict_services.insert("archive".into());
    assert_eq!(rules(&run(&def, &c)), [Rule::Restricted]);
    c.volumes[0].restrict_services.insert("vfs".into());
    assert!(run(&def, &c).ok);

    let west = app(
        &ext("pgdata", None, ""),
        r#", "constraints": [["zone", "IS", "us-west-2a"]]"#,
    );
    assert_eq!(rules(&run(&west, &c)), [Rule::Zone]);

    let resized = app(&ext("pgdata", Some(20), ""), "");
    let r = run(&resized, &c);
    assert!(r.ok);
    assert_eq!(r.warnings[0].rule, Rule::Size);
}

#[test]
fn two_apps_of_one_group_cannot_share_a_single_writer_volume() {
    let a = app(&ext("pgdata", Some(1), ""), "");
    let b = a.replace(r#""id": "/db""#, r#""id": "/db2""#);
    let g = format!(r#"{{"id": "/g", "apps": [{a}, {b}]}}"#);
    assert_eq!(rules(&run(&g, &cluster())), [Rule::Claimed]);
}

#[test]
fn persistent_volumes_with_a_profile_need_a_pool_of_that_name() {
    let p = |profile: &str, mib: u64| {
        app(
            &format!(
                r#"{{"containerPath": "data", "mode": "RW", "persistent": {{"type": "mount", "size": {mib}, "profileName": "{profile}"}}}}"#
            ),
            r#", "unreachableStrategy": "disabled""#,
        )
    };
    let r = run(&p("fast", 1024), &cluster());
    assert!(r.ok, "{:?}", r.problems);
    assert_eq!(r.volumes[0].state, VolumeState::Offered);
    assert_eq!(r.volumes[0].service.as_deref(), Some("archive"));
    assert!(
        r.actions.is_empty(),
        "Marathon creates persistent volumes from offers"
    );
    assert_eq!(rules(&run(&p("gold", 1024), &cluster())), [Rule::Profile]);
    assert_eq!(
        rules(&run(&p("fast", 6 * 1024), &cluster())),
        [Rule::Capacity]
    );
    let reachable = p("fast", 1).replace(r#", "unreachableStrategy": "disabled""#, "");
    assert_eq!(
        rules(&run(&reachable, &cluster())),
        [Rule::UnreachableStrategy]
    );
    let plain = app(
        r#"{"containerPath": "data", "persistent": {"size": 10}}, {"containerPath": "/h", "hostPath": "/tmp"}"#,
        "",
    );
    let r = run(&plain, &cluster());
    assert!(r.ok);
    assert!(r.volumes.iter().all(|v| v.state == VolumeState::NotPolly));
}
