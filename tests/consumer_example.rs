//! The example consumer framework (`examples/consumer.rs`) run as a user runs it, as a
//! process against the real `polly serve`: over JSON it creates a volume that the admin API
//! shows reserved to its framework and attached to the agent's instance; over protobuf with
//! `--destroy` it creates and destroys one; an impossible size ends in a clear timeout with a
//! non-zero exit. So the example cannot rot unnoticed.

mod harness;

use std::path::PathBuf;
use std::process::{Command, Output};

use harness::{vfs_volume_dirs, Polly};

const CONFIG: &str = r#"
[[services]]
name = "vfs"
driver = "vfs"
zone = "zone-a"
quota_bytes = 10737418240

[mesos]
agents = [{ id = "agent-a", hostname = "host-a", region = "eu", zone = "zone-a" }]

[offers]
poll_interval_secs = 0.2
allocation_interval_ms = 100
[offers.instances]
agent-a = "i-a"
"#;

/// Build the example the way `cargo run --example consumer` does and return its path.
/// (`cargo test` builds examples only for some target selections, so build it here; with the
/// same profile and target dir this is a no-op when it is up to date.)
fn consumer_binary() -> PathBuf {
    let mut cargo = Command::new(env!("CARGO"));
    // Not the variables cargo sets for this test process: build scripts of dependencies
    // (ring's) track some of them, and seeing this package's values would rebuild them.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k == "OUT_DIR"
            || k == "CARGO_PRIMARY_PACKAGE"
            || k == "CARGO_TARGET_TMPDIR"
            || k == "CARGO_RUSTC_CURRENT_DIR"
            || [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
            ]
            .iter()
            .any(|p| k.starts_with(p))
        {
            cargo.env_remove(&*k);
        }
    }
    let out = cargo
        .args([
            "build",
            "--example",
            "consumer",
            "--message-format=json",
            "--quiet",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo build --example consumer");
    assert!(
        out.status.success(),
        "cargo build --example consumer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == "consumer")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the consumer executable")
}

fn run_consumer(bin: &PathBuf, polly: &Polly, args: &[&str]) -> (Output, String, String) {
    let out = Command::new(bin)
        .args(["--master", &polly.offers])
        .args(args)
        .env_remove("POLLY_OFFERS")
        .output()
        .expect("run the consumer example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// `key=value` pairs of the consumer's `result` line.
fn result_line(stdout: &str) -> std::collections::BTreeMap<String, String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("consumer: result "))
        .unwrap_or_else(|| panic!("no result line in:\n{stdout}"));
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_consumer_creates_reserved_attached_volumes_and_destroys_one() {
    let bin = consumer_binary();
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(&dir.path().join("d"), Some(CONFIG), None);
    let client = polly.client();

    // JSON: CREATE_DISK of 64 MB, kept.
    let (out, stdout, stderr) = run_consumer(&bin, &polly, &["--size", "64MB", "--timeout", "60s"]);
    assert!(out.status.success(), "consumer failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("subscribed to "), "{stdout}");
    assert!(stdout.contains("(JSON,"), "{stdout}");
    assert!(stdout.contains("from agent agent-a (host-a)"), "{stdout}");
    assert!(stdout.contains("RAW "), "{stdout}");
    let pending = stdout.find(": OPERATION_PENDING").expect("PENDING printed");
    let finished = stdout
        .find(": OPERATION_FINISHED")
        .expect("FINISHED printed");
    assert!(pending < finished, "{stdout}");
    assert!(
        stdout.contains("converted to MOUNT 64 MB volume "),
        "{stdout}"
    );
    assert!(stdout.contains(": acknowledged"), "{stdout}");
    let r = result_line(&stdout);
    assert_eq!(r["agent"], "agent-a");
    assert_eq!(r["size_mb"], "64");
    assert_eq!(r["destroyed"], "false");
    let (fw, vol_id) = (r["framework"].clone(), r["volume"].clone());

    let vol = client.inspect(&vol_id, None).await.unwrap();
    assert_eq!(vol.service, "vfs");
    assert_eq!(vol.size_bytes, 64 << 20);
    assert!(vol.restrict_frameworks.contains(&fw), "{vol:?}");
    assert_eq!(vol.attachments.len(), 1);
    assert_eq!(vol.attachments[0].instance_id, "i-a");
    assert_eq!(vfs_volume_dirs(&polly.data_dir, "vfs").len(), 1);
    let dump = client.dump().await.unwrap();
    assert_eq!(dump.reservations.len(), 1);
    assert_eq!(dump.reservations[0].framework_id, fw);
    assert_eq!(dump.reservations[0].volume_id, vol_id);
    let ops: Vec<_> = dump
        .operations
        .iter()
        .filter(|o| o.framework_id == fw)
        .collect();
    assert_eq!(ops.len(), 1);
    assert!(
        ops[0].acknowledged && ops[0].state == "OPERATION_FINISHED",
        "the example acknowledges its statuses: {:?}",
        ops[0]
    );
    let (code, ls, _) = polly.cli(&["volume", "ls"]);
    assert_eq!(code, 0);
    assert!(ls.contains(&vol_id), "{ls}");

    // Protobuf, --destroy: a second volume is created, then destroyed from a later offer.
    let (out, stdout, stderr) = run_consumer(
        &bin,
        &polly,
        &[
            "--content-type",
            "protobuf",
            "--size",
            "32",
            "--agent",
            "agent-a",
            "--profile",
            "default",
            "--destroy",
            "--teardown",
        ],
    );
    assert!(out.status.success(), "consumer failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("(protobuf,"), "{stdout}");
    assert!(stdout.contains("with DESTROY_DISK of volume "), "{stdout}");
    assert!(stdout.contains("volume destroyed"), "{stdout}");
    let r2 = result_line(&stdout);
    assert_eq!(r2["destroyed"], "true");
    assert_ne!(r2["volume"], vol_id);
    assert!(client.inspect(&r2["volume"], None).await.is_err());
    let left = client.volumes(false).await.unwrap().volumes;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].id, vol_id);
    assert_eq!(vfs_volume_dirs(&polly.data_dir, "vfs").len(), 1);
    assert!(
        !client
            .frameworks()
            .await
            .unwrap()
            .iter()
            .any(|f| f.id == r2["framework"]),
        "--teardown removed the framework"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_consumer_fails_clearly() {
    let bin = consumer_binary();
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(&dir.path().join("d"), Some(CONFIG), None);

    // No pool has 100 TB: no offer fits, a clear timeout, exit 1, nothing created.
    let (out, stdout, stderr) = run_consumer(&bin, &polly, &["--size", "100TB", "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("consumer: error: timed out after 3s waiting for an offer with a RAW disk of at least 104857600 MB"),
        "{stderr}"
    );
    assert!(
        stdout.contains("offer "),
        "offers were seen and declined: {stdout}"
    );
    assert!(polly
        .client()
        .volumes(false)
        .await
        .unwrap()
        .volumes
        .is_empty());

    // Nobody listening: a clear error naming the address.
    let out = Command::new(&bin)
        .args(["--master", "127.0.0.1:9", "--timeout", "5s"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot subscribe to 127.0.0.1:9"),
        "{stderr}"
    );

    // Usage errors exit 2.
    let out = Command::new(&bin)
        .args(["--size", "lots"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid size"));
}
