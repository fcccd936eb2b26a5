//! Orphans end to end against the real `polly serve`: a back-end volume made behind Polly's
//! back is listed, adopted exactly once (a retried create of its name then finds it instead of
//! making a second), and an orphan can be deleted from its back-end only while it is one.

mod common;

use std::collections::BTreeMap;

use common::{vfs_volume_dirs, Polly};
use polly::driver::vfs::{VfsConfig, VfsDriver};
use polly::driver::{CreateRequest, Driver, DriverVolume};

/// Creates a volume straight through the vfs driver on the service's root, as a crash
/// between the back-end create and the store write (or another tool) would leave it.
fn behind_pollys_back(data_dir: &std::path::Path, name: &str) -> DriverVolume {
    let root = data_dir.join("vfs").join("vfs");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let d = VfsDriver::open(VfsConfig::new(root)).unwrap();
        d.create(&CreateRequest {
            name: name.into(),
            size_bytes: 1 << 20,
            pool: None,
            zone: None,
            access_mode: Default::default(),
            fields: BTreeMap::new(),
        })
        .await
        .unwrap()
    })
}

fn orphan_ids(polly: &Polly) -> Vec<String> {
    polly.cli_json(&["orphan", "ls"])["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["driver_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn orphan_is_listed_adopted_once_and_not_duplicated_by_a_retried_create() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start(dir.path());
    let ghost = behind_pollys_back(dir.path(), "ghost");
    assert_eq!(orphan_ids(&polly), vec![ghost.id.clone()]);

    let v = polly.cli_json(&["orphan", "adopt", "vfs", &ghost.id]);
    assert_eq!(v["name"], "ghost");
    assert_eq!(v["driver_id"], ghost.id.as_str());
    assert_eq!(v["status"], "available");
    assert_eq!(v["size_bytes"], 1 << 20);
    assert!(orphan_ids(&polly).is_empty());

    // A second adopt is refused, and names why.
    let (code, _, err) = polly.cli(&["orphan", "adopt", "vfs", &ghost.id]);
    assert_ne!(code, 0);
    assert!(err.contains("not an orphan"), "{err}");
    // So is deleting it as an orphan: it is managed now.
    let (code, _, err) = polly.cli(&["orphan", "rm", "vfs", &ghost.id, "--yes"]);
    assert_ne!(code, 0);
    assert!(err.contains("not an orphan"), "{err}");

    // A retried create of the same name returns the adopted volume; nothing new is made.
    let again = polly.cli_json(&["volume", "create", "ghost", "--size", "1MiB"]);
    assert_eq!(again["id"], v["id"]);
    assert_eq!(vfs_volume_dirs(dir.path(), "vfs").len(), 1);
    assert_eq!(
        polly.cli_json(&["volume", "ls"])["volumes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn orphan_adopt_under_another_name_and_rm() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start(dir.path());
    polly.cli_json(&["volume", "create", "taken", "--size", "1MiB"]);
    let a = behind_pollys_back(dir.path(), "taken-elsewhere");
    let b = behind_pollys_back(dir.path(), "junk");

    // The name is free → adopt under a chosen name; a taken name is refused.
    let (code, _, err) = polly.cli(&["orphan", "adopt", "vfs", &a.id, "--name", "taken"]);
    assert_ne!(code, 0);
    assert!(err.contains("already has a volume named"), "{err}");
    let v = polly.cli_json(&["orphan", "adopt", "vfs", &a.id, "--name", "renamed"]);
    assert_eq!(v["name"], "renamed");
    assert_eq!(orphan_ids(&polly), vec![b.id.clone()]);

    // rm needs --yes, then deletes the back-end volume; a second rm finds nothing.
    let (code, _, err) = polly.cli(&["orphan", "rm", "vfs", &b.id]);
    assert_ne!(code, 0);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(vfs_volume_dirs(dir.path(), "vfs").len(), 3);
    polly.cli_json(&["orphan", "rm", "vfs", &b.id, "--yes"]);
    assert_eq!(vfs_volume_dirs(dir.path(), "vfs").len(), 2);
    assert!(orphan_ids(&polly).is_empty());
    let (code, _, err) = polly.cli(&["orphan", "rm", "vfs", &b.id, "--yes"]);
    assert_ne!(code, 0);
    assert!(err.contains("not found"), "{err}");

    // Unknown service and unknown id are clear errors.
    let (code, _, err) = polly.cli(&["orphan", "adopt", "nope", &b.id]);
    assert_ne!(code, 0);
    assert!(err.contains("nope"), "{err}");
}
