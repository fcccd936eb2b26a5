//! Unit tests of the composed config: defaults, TOML with every section, overrides, and the
//! checks that span sections. Each section's own checks are tested beside its type.

use std::path::{Path, PathBuf};

use super::*;
use crate::store::StoreBackend;

#[test]
fn defaults_match_the_documented_contract() {
    let c = Config::default();
    assert_eq!(c.data_dir, PathBuf::from("./polly-data"));
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:7978");
    assert_eq!(c.libstorage.listen.to_string(), "127.0.0.1:7979");
    assert_eq!(c.offers.listen.to_string(), "127.0.0.1:7980");
    assert_eq!(c.offers.poll_interval_secs, 10.0);
    assert!(c.csi.enabled);
    assert_eq!(
        c.csi.endpoint(&c.data_dir).to_string(),
        "unix://./polly-data/csi.sock"
    );
    assert_eq!(c.services.len(), 1);
    assert_eq!(c.services[0].name, "vfs");
    assert_eq!(c.services[0].driver, DriverKind::Vfs);
    assert_eq!(c.driver_timeout_secs, 60);
    assert_eq!(c.store_dir(), PathBuf::from("./polly-data/store"));
    assert_eq!(
        c.services[0].root_in(&c.data_dir),
        PathBuf::from("./polly-data/vfs/vfs")
    );
    c.validate().unwrap();
}

#[test]
fn empty_file_is_the_default() {
    assert_eq!(Config::from_toml("").unwrap(), Config::default());
}

#[test]
fn file_and_overrides() {
    let c = Config::from_toml(
        r#"
        data_dir = "/tmp/x"
        [admin]
        listen = "127.0.0.1:1"
        [[services]]
        name = "fast"
        driver = "vfs"
        quota_bytes = 1000
        [services.fault]
        latency_ms = 5
        "#,
    )
    .unwrap();
    assert_eq!(c.services[0].quota_bytes, Some(1000));
    assert_eq!(c.services[0].fault.as_ref().unwrap().latency_ms, 5);
    assert_eq!(c.libstorage.listen.port(), 7979);
}

#[test]
fn overrides_win_over_the_file_and_an_empty_token_is_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("polly.toml");
    std::fs::write(
        &path,
        "data_dir = \"/from/file\"\n[admin]\ntoken = \"file\"\n[offers]\nlisten = \"127.0.0.1:9\"",
    )
    .unwrap();
    let c = Config::load(Some(&path), &Overrides::default()).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/from/file"));
    assert_eq!(c.admin.token.as_deref(), Some("file"));
    let o = Overrides {
        data_dir: Some("/from/flag".into()),
        admin_listen: Some("127.0.0.1:11".parse().unwrap()),
        admin_token: Some(String::new()),
        libstorage_listen: Some("127.0.0.1:12".parse().unwrap()),
        offers_listen: Some("127.0.0.1:13".parse().unwrap()),
        csi_listen: Some("tcp://127.0.0.1:14".parse().unwrap()),
        broker_listen: Some("127.0.0.1:15".parse().unwrap()),
    };
    let c = Config::load(Some(&path), &o).unwrap();
    assert_eq!(c.broker.listen.port(), 15);
    assert_eq!(
        c.csi.endpoint(&c.data_dir).to_string(),
        "tcp://127.0.0.1:14"
    );
    assert_eq!(c.data_dir, PathBuf::from("/from/flag"));
    assert_eq!(c.admin.listen.port(), 11);
    assert_eq!(c.admin.token, None);
    assert_eq!(c.libstorage.listen.port(), 12);
    assert_eq!(c.offers.listen.port(), 13);
    let c = Config::load(None, &o).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/from/flag"));

    let e = Config::load(Some(&dir.path().join("missing.toml")), &o).unwrap_err();
    assert!(matches!(e, Error::Read { .. }), "{e}");
    assert!(e.to_string().starts_with("cannot read config file "), "{e}");
    std::fs::write(&path, "nope = 1").unwrap();
    let e = Config::load(Some(&path), &o).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("invalid config file {}: ", path.display())),
        "{e}"
    );
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn unknown_keys_and_bad_values_are_one_line_errors() {
    for bad in [
        "nope = 1",
        "[admin]\nlisten = \"not an address\"",
        "[[services]]\nname = \"a\"\ndriver = \"floppy\"",
    ] {
        let e = Config::from_toml(bad).unwrap_err().message;
        assert!(!e.contains('\n') && !e.is_empty(), "{e:?}");
    }
    let mut c = Config::default();
    c.services.push(c.services[0].clone());
    assert!(c.validate().unwrap_err().to_string().contains("twice"));
    c.services.clear();
    assert!(c.validate().is_err());
}

/// The checks that span sections, and a section's own error as Polly prints it.
#[test]
fn cross_checks_read_as_before() {
    let check = |toml: &str| Config::from_toml(toml).unwrap().validate().map(|_| ());
    for (toml, want) in [
        (
            "services = []",
            "invalid config: no services configured: add at least one [[services]] entry",
        ),
        (
            "[[services]]\nname = \"a b\"\ndriver = \"vfs\"",
            "invalid config: service name \"a b\" must be 1-128 letters, digits, '.', '_' or '-'",
        ),
        (
            "[[services]]\nname = \"a\"\ndriver = \"vfs\"\n[[services]]\nname = \"a\"\ndriver = \"loop\"",
            "invalid config: service \"a\" is configured twice",
        ),
        (
            "driver_timeout_secs = 0",
            "invalid config: driver_timeout_secs must be positive",
        ),
        (
            "[libstorage.services.nope]",
            "invalid config: libstorage.services.nope: no [[services]] entry is named \"nope\"",
        ),
        (
            "[admin]\nlisten = \"127.0.0.1:7979\"",
            "invalid config: admin and libstorage both listen on 127.0.0.1:7979",
        ),
        (
            "[[services]]\nname = \"a\"\ndriver = \"vfs\"\nquota_bytes = 0",
            "invalid config: service \"a\": quota_bytes must be positive",
        ),
        (
            "[libstorage]\nexe_timeout_ms = 0",
            "invalid config: libstorage.exe_timeout_ms must be positive",
        ),
        (
            "[mesos]\nsecret = \"s\"",
            "invalid config: mesos.secret needs mesos.principal",
        ),
        (
            "[offers]\nallocation_interval_ms = 0",
            "invalid config: offers.allocation_interval_ms must be positive",
        ),
        (
            "[fencing]\ncheck_interval_secs = 0",
            "invalid config: fencing.check_interval_secs must be a positive number of seconds, not 0",
        ),
        (
            "[reconciler]\ninterval_secs = -1",
            "invalid config: reconciler.interval_secs must be a positive number of seconds, not -1",
        ),
        (
            "[ha]\nenabled = true",
            "invalid config: ha.enabled needs store.backend = \"etcd\": the instances elect their leader in the shared etcd store",
        ),
    ] {
        assert_eq!(check(toml).unwrap_err().to_string(), want, "{toml}");
    }
    // Two listeners on port 0 each get their own port.
    check("[admin]\nlisten = \"127.0.0.1:0\"\n[libstorage]\nlisten = \"127.0.0.1:0\"").unwrap();
}

#[test]
fn offer_shares_and_teardown_grace_parse_and_validate() {
    let c = Config::from_toml(
        r#"
        [offers]
        teardown_grace_secs = 60
        operation_retention_secs = 120
        [offers.roles.analytics]
        weight = 3
        quota_bytes = 10485760
        [offers.frameworks."fw-1"]
        quota_volumes = 2
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    assert_eq!(c.offers.teardown_grace_secs, 60.0);
    assert_eq!(c.offers.operation_retention_secs, 120.0);
    let role = &c.offers.roles["analytics"];
    assert_eq!(role.weight, 3.0);
    assert_eq!(role.quota().max_mb, Some(10));
    let fw = &c.offers.frameworks["fw-1"];
    assert_eq!(fw.weight, 1.0);
    assert_eq!(fw.quota().max_volumes, Some(2));
    assert_eq!(Config::default().offers.teardown_grace_secs, 3600.0);
    assert_eq!(Config::default().offers.operation_retention_secs, 3600.0);
    for bad in [
        "[offers]\noperation_retention_secs = -1",
        "[offers.roles.r]\nweight = 0",
        "[offers.frameworks.f]\nweight = -1",
        "[offers]\nteardown_grace_secs = -5",
    ] {
        let c = Config::from_toml(bad).unwrap();
        assert!(
            c.validate().unwrap_err().to_string().contains("offers."),
            "{bad}"
        );
    }
    assert!(Config::from_toml("[offers.roles.r]\nwieght = 2").is_err());
}

#[test]
fn mesos_section_is_composed_and_checked() {
    let c = Config::from_toml("").unwrap();
    assert!(!c.mesos.enabled());
    let c = Config::from_toml(
        "[mesos]\nmasters = [\"m1:5050\", \"m2:5050\"]\ncontent_type = \"protobuf\"",
    )
    .unwrap();
    assert!(c.mesos.enabled());
    assert_eq!(
        c.mesos.content_type,
        crate::mesos::client::MesosContentType::Protobuf
    );
    c.validate().unwrap();
    for bad in [
        "[mesos]\nmasters = [\"http://m1\"]",
        "[mesos]\ncapabilities = [\"TIME_TRAVEL\"]",
        "[mesos]\nbackoff_initial_ms = 0",
    ] {
        let c = Config::from_toml(bad).unwrap();
        assert!(
            c.validate().unwrap_err().to_string().contains("mesos"),
            "{bad}"
        );
    }
}

#[test]
fn ebs_service_parses_validates_and_builds_on_the_fake_cloud() {
    let c = Config::from_toml(
        r#"
        [[services]]
        name = "ebs"
        driver = "ebs"
        [services.ebs]
        region = "us-east-1"
        zones = ["us-east-1a", "us-east-1b"]
        [[services.ebs.quotas]]
        volume_type = "gp3"
        gib = 10240
        [[services.ebs.quotas]]
        volume_type = "io2"
        zone = "us-east-1a"
        gib = 2048
        [services.ebs.fake_cloud]
        instances = [{ zone = "us-east-1a", hostname = "node1" }]
        "#,
    )
    .unwrap();
    c.validate().unwrap();
    let e = c.services[0].ebs.as_ref().unwrap();
    assert_eq!(e.default_type, "gp3");
    assert_eq!(e.attach_timeout_secs, 45.0);
    let d = crate::driver::build(&c.services[0], Path::new("/nonexistent")).unwrap();
    assert_eq!(d.kind(), "ebs");

    for (bad, needle) in [
        ("[[services]]\nname = \"e\"\ndriver = \"ebs\"", "[services.ebs]"),
        (
            "[[services]]\nname = \"e\"\ndriver = \"ebs\"\n[services.ebs]\nzones = []",
            "zones",
        ),
        (
            "[[services]]\nname = \"e\"\ndriver = \"ebs\"\n[services.ebs]\nzones = [\"a\"]\ndefault_type = \"gp9\"",
            "gp9",
        ),
        (
            "[[services]]\nname = \"e\"\ndriver = \"ebs\"\n[services.ebs]\nzones = [\"a\"]\nattach_timeout_secs = 90",
            "driver_timeout_secs",
        ),
        (
            "[[services]]\nname = \"v\"\ndriver = \"vfs\"\n[services.ebs]\nzones = [\"a\"]",
            "only for driver ebs",
        ),
    ] {
        let c = Config::from_toml(bad).unwrap();
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains(needle), "{bad}: {e}");
    }
    // The attach timeout is checked against the configured driver timeout.
    let c = Config::from_toml(
        "driver_timeout_secs = 120\n[[services]]\nname = \"e\"\ndriver = \"ebs\"\n[services.ebs]\nzones = [\"a\"]\nattach_timeout_secs = 90",
    )
    .unwrap();
    c.validate().unwrap();
}

#[cfg(not(feature = "ebs"))]
#[test]
fn ebs_without_the_feature_or_a_fake_cloud_says_how_to_get_it() {
    let c = Config::from_toml(
        "[[services]]\nname = \"e\"\ndriver = \"ebs\"\n[services.ebs]\nzones = [\"a\"]",
    )
    .unwrap();
    c.validate().unwrap();
    let Err(e) = crate::driver::build(&c.services[0], Path::new("/x")) else {
        panic!("built an ebs driver with neither the SDK nor a fake cloud");
    };
    assert!(e.to_string().contains("--features ebs"), "{e}");
}

#[test]
fn ha_needs_the_etcd_store() {
    let c = Config::from_toml("").unwrap();
    assert!(!c.ha.enabled);
    let c = Config::from_toml("[ha]\nenabled = true").unwrap();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("store.backend = \"etcd\""), "{e}");
    let c = Config::from_toml(
        "[store]\nbackend = \"etcd\"\n[ha]\nenabled = true\nadvertise_host = \"polly-1\"",
    )
    .unwrap();
    c.ha.validate(c.store.backend).unwrap();
    let e = c.validate().map(|_| ());
    if cfg!(feature = "etcd") {
        e.unwrap();
    } else {
        assert!(e.unwrap_err().to_string().contains("--features etcd"));
    }
    assert!(Config::from_toml("[ha]\nttl = 3").is_err());
}

#[test]
fn store_section_is_composed_and_checked() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.store.backend, StoreBackend::Sled);
    let c = Config::from_toml(
        "[store]\nbackend = \"etcd\"\n[store.etcd]\nprefix = \"/a\"\nuser = \"u\"\npassword = \"p\"",
    )
    .unwrap();
    assert_eq!(c.store.etcd.key_prefix(), "/a/");
    let err = c.validate().map(|_| ());
    if cfg!(feature = "etcd") {
        err.unwrap();
    } else {
        let e = err.unwrap_err().to_string();
        assert_eq!(
            e,
            format!("invalid config: {}", crate::store::ETCD_FEATURE_MISSING)
        );
    }
    // The etcd section is checked only when it is used.
    Config::from_toml("[store.etcd]\nendpoints = []")
        .unwrap()
        .validate()
        .unwrap();
    assert!(Config::from_toml("[store]\nbackend = \"zk\"").is_err());
    assert!(Config::from_toml("[store.etcd]\nendpoint = []").is_err());
}

#[test]
fn a_node_table_is_left_to_polly_node() {
    // One file may configure `polly serve` and `polly node` on a host that runs both.
    let c = Config::from_toml(
        "[admin]\nlisten = \"127.0.0.1:7978\"\n[node]\nserver = \"http://127.0.0.1:7978\"\nzone = \"a\"\n",
    )
    .unwrap();
    assert!(c.validate().is_ok());
    assert_eq!(
        c.node.and_then(|n| n.get("zone").cloned()),
        Some(toml::Value::String("a".into()))
    );
    // Other unknown tables are still refused.
    assert!(Config::from_toml("[nodes]\nx = 1\n").is_err());
}
