//! An unmodified pymesos 0.3.15 scheduler (`tests/fixtures/pymesos/create_disk.py`, run with
//! the venv `scripts/pymesos-venv.sh` builds) against the real `polly serve`: it subscribes,
//! receives disk offers and completes a CREATE_DISK; the volume exists, is reserved to its
//! framework and attached to the agent's instance. pymesos acknowledges every operation
//! status implicitly with the whole status object (`uuid` as `{"value": …}`, `state` and
//! all), which a real master would refuse with a 400 that kills the driver: Polly accepts it,
//! the acknowledgement is recorded, and both the driver and Polly stay up.
//!
//! The venv's python is `POLLY_PYMESOS_PYTHON`, or `.venv-pymesos/bin/python` at the repo
//! root. Without it the test fails when `CI` is set and otherwise skips, saying so loudly.

mod harness;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use harness::{vfs_volume_dirs, Polly};
use serde_json::Value;

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

/// The venv's python, or `None` (after saying why) when the test must skip.
fn pymesos_python() -> Option<PathBuf> {
    let python = std::env::var_os("POLLY_PYMESOS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv-pymesos/bin/python")
        });
    if python.exists() {
        return Some(python);
    }
    let why = format!(
        "no pymesos venv at {} (build it with scripts/pymesos-venv.sh, or set POLLY_PYMESOS_PYTHON)",
        python.display()
    );
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if ci {
        panic!("pymesos acceptance test cannot run in CI: {why}");
    }
    eprintln!("\n************************************************************");
    eprintln!("skipped: pymesos acceptance test: {why}");
    eprintln!("************************************************************\n");
    None
}

/// Kills the script if the test fails half way.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The JSON after `prefix` on the next line that has it.
fn line_with(rx: &mpsc::Receiver<String>, prefix: &str, secs: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("no {prefix} line from the pymesos script: {e}"));
        if let Some(j) = line.strip_prefix(prefix) {
            return serde_json::from_str(j.trim()).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmodified_pymesos_scheduler_completes_a_create_disk() {
    let Some(python) = pymesos_python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut polly = Polly::start_with(&dir.path().join("d"), Some(CONFIG), None);
    let client = polly.client();
    let master = polly.offers.trim_start_matches("http://").to_string();
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pymesos/create_disk.py");
    let mut child = Script(
        Command::new(&python)
            .arg(&script)
            .args([
                "--master",
                &master,
                "--size-mb",
                "64",
                "--timeout",
                "60",
                "--hold",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the pymesos script"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("pymesos: {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let r = line_with(&rx, "POLLY_PYMESOS_RESULT ", 90);
    assert_eq!(r["subscribed"], true, "{r}");
    assert_eq!(r["timed_out"], false, "{r}");
    assert!(r["offers"].as_u64().unwrap() >= 1, "{r}");
    assert!(r["error"].is_null(), "{r}");
    assert_eq!(r["states"][0], "OPERATION_PENDING", "{r}");
    assert_eq!(r["final_state"], "OPERATION_FINISHED", "{r}");
    assert_eq!(r["agent_id"], "agent-a");
    assert_eq!(r["volume_type"], "MOUNT");
    assert_eq!(r["volume_mb"], 64.0);
    let fw = r["framework_id"].as_str().unwrap().to_string();
    let vol_id = r["volume_id"].as_str().unwrap().to_string();

    let vol = client.inspect(&vol_id, None).await.unwrap();
    assert_eq!(vol.size_bytes, 64 << 20);
    assert!(vol.restrict_frameworks.contains(&fw), "{vol:?}");
    assert_eq!(vol.attachments.len(), 1);
    assert_eq!(vol.attachments[0].instance_id, "i-a");
    assert_eq!(vfs_volume_dirs(&polly.data_dir, "vfs").len(), 1);
    let dump = client.dump().await.unwrap();
    assert_eq!(dump.reservations.len(), 1);
    assert_eq!(dump.reservations[0].framework_id, fw);
    assert_eq!(dump.reservations[0].volume_id, vol_id);

    // pymesos' implicit acknowledgement (the whole status object) is taken as one.
    let mut acked = false;
    for _ in 0..300 {
        acked = client
            .dump()
            .await
            .unwrap()
            .operations
            .iter()
            .any(|o| o.framework_id == fw && o.acknowledged && o.state == "OPERATION_FINISHED");
        if acked {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        acked,
        "pymesos' acknowledgement of FINISHED was not recorded"
    );
    assert!(polly.alive(), "polly serve died");
    assert!(client
        .frameworks()
        .await
        .unwrap()
        .iter()
        .any(|f| f.id == fw && f.connected));

    // Release the script: the driver must still be running and subscribed, then it stops
    // with a TEARDOWN (pymesos' default) and exits 0.
    let stdin = child.0.stdin.as_mut().unwrap();
    stdin.write_all(b"stop\n").unwrap();
    stdin.flush().unwrap();
    let alive = line_with(&rx, "POLLY_PYMESOS_ALIVE ", 30);
    assert_eq!(alive["running"], true, "{alive}");
    assert_eq!(alive["connected"], true, "{alive}");
    let mut exited = None;
    for _ in 0..300 {
        if let Some(s) = child.0.try_wait().unwrap() {
            exited = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = exited.expect("the pymesos script exits after stop");
    assert!(status.success(), "pymesos script: {status}");
    assert!(polly.alive(), "polly serve died");
    // TEARDOWN disconnects the framework and records it as torn down, holding its
    // reservation for the grace period; the reservation and the volume stay.
    let frameworks = client.frameworks().await.unwrap();
    let torn = frameworks
        .iter()
        .find(|f| f.id == fw)
        .expect("a torn-down framework holding a reservation is still listed");
    assert!(!torn.connected, "{torn:?}");
    assert!(torn.torn_down_at.is_some(), "{torn:?}");
    assert_eq!(torn.reservations, 1, "{torn:?}");
    assert_eq!(client.dump().await.unwrap().reservations.len(), 1);
    assert!(client.inspect(&vol_id, None).await.is_ok());
}
