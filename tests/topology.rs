//! Topology refused up front: a create in a zone its service does not serve fails with a
//! message naming both zones, before any driver call, and leaves store and back-end as they
//! were.

mod common;

use common::{vfs_volume_dirs, Polly};

#[test]
fn create_in_a_zone_the_service_does_not_serve_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[[services]]
name = "vfs"
driver = "vfs"
zone = "us-east-1a"

[[services]]
name = "nozone"
driver = "vfs"
"#;
    let polly = Polly::start_with(dir.path(), Some(config), None);
    let (code, _, err) = polly.cli(&[
        "volume",
        "create",
        "db",
        "--size",
        "1MiB",
        "--zone",
        "us-east-1b",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("us-east-1a") && err.contains("us-east-1b"),
        "{err}"
    );
    let (code, _, err) = polly.cli(&[
        "volume",
        "create",
        "db",
        "--size",
        "1MiB",
        "--zone",
        "us-east-1b",
        "--service",
        "nozone",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("us-east-1b") && err.contains("no zone"),
        "{err}"
    );

    assert!(vfs_volume_dirs(dir.path(), "vfs").is_empty());
    assert!(vfs_volume_dirs(dir.path(), "nozone").is_empty());
    let ls = polly.cli_json(&["volume", "ls"]);
    assert!(ls["volumes"].as_array().unwrap().is_empty());
    assert!(polly
        .cli_json(&["operation", "ls"])
        .as_array()
        .unwrap()
        .is_empty());

    // The zone it serves works.
    let v = polly.cli_json(&[
        "volume",
        "create",
        "db",
        "--size",
        "1MiB",
        "--zone",
        "us-east-1a",
    ]);
    assert_eq!(v["zone"], "us-east-1a");
}
