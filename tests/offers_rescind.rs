//! Capacity loss rescinds: the real `polly serve` with a healthy vfs service in zone-b and one
//! behind the fault injector in zone-a, switched by a file (`active_while_exists`). While the
//! zone-a back-end fails its capacity calls (errors, or hangs past `driver_timeout_secs`), the
//! poller marks its pool unavailable, Polly sends RESCIND for the offers that carry it, offers
//! nothing from it, and an ACCEPT of a rescinded offer is DROPPED; when the back-end answers
//! again its pool is offered again. Zone-b's offers are untouched throughout.

mod harness;

use std::path::Path;
use std::time::Duration;

use harness::fakes::framework::{create_disk, subscribe, Framework};
use harness::Polly;
use polly::mesos::client::MesosContentType;
use serde_json::Value;

fn config(switch: &Path, fault: &str) -> String {
    format!(
        r#"
driver_timeout_secs = 1

[[services]]
name = "vfs-a"
driver = "vfs"
zone = "zone-a"
quota_bytes = 1073741824
[services.fault]
{fault}
active_while_exists = "{switch}"

[[services]]
name = "vfs-b"
driver = "vfs"
zone = "zone-b"
quota_bytes = 1073741824

[mesos]
agents = [
  {{ id = "agent-a", hostname = "host-a", zone = "zone-a" }},
  {{ id = "agent-b", hostname = "host-b", zone = "zone-b" }},
]

[offers]
poll_interval_secs = 0.2
allocation_interval_ms = 100
offer_timeout_secs = 600
[offers.instances]
agent-a = "i-a"
agent-b = "i-b"
"#,
        switch = switch.display()
    )
}

fn pools(offer: &Value) -> Vec<String> {
    offer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["provider_id"]["value"].as_str().unwrap().to_string())
        .collect()
}

/// Every OFFERS and RESCIND event of the next `ms` milliseconds (heartbeats dropped).
async fn events_for(fw: &mut Framework, ms: u64) -> Vec<Value> {
    let mut out: Vec<Value> = fw.skipped.drain(..).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(ms);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, fw.events.recv()).await {
        if ev["type"] != "HEARTBEAT" {
            out.push(ev);
        }
    }
    out
}

async fn outage_rescinds_and_recovery_offers_again(fault: &str) {
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("zone-a-down");
    let polly = Polly::start_with(&dir.path().join("d"), Some(&config(&switch, fault)), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-a", "agent-b"]).await;
    let a = offers
        .iter()
        .find(|o| o["agent_id"]["value"] == "agent-a")
        .unwrap()
        .clone();
    let b_id = offers
        .iter()
        .find(|o| o["agent_id"]["value"] == "agent-b")
        .unwrap()["id"]
        .clone();
    assert_eq!(pools(&a), ["vfs-a/default/zone-a"]);

    // The zone-a back-end goes down.
    std::fs::write(&switch, b"").unwrap();
    loop {
        let ev = fw.next("RESCIND", 30).await;
        let gone = &ev["rescind"]["offer_id"];
        assert_ne!(gone, &b_id, "zone-b's offer was rescinded: {ev}");
        if gone == &a["id"] {
            break;
        }
    }
    let client = polly.client();
    let svc = client.services().await.unwrap();
    let down = svc.iter().find(|s| s.name == "vfs-a").unwrap();
    assert!(!down.available, "vfs-a still available: {down:?}");
    assert!(down.poll_error.is_some());
    assert!(svc.iter().find(|s| s.name == "vfs-b").unwrap().available);

    // While it is down nothing of it is offered, and the rescinded offer is DROPPED.
    fw.call(create_disk(&fw.id, &a, "late", 10.0)).await;
    assert_eq!(fw.status("late", 10).await["state"], "OPERATION_DROPPED");
    for ev in events_for(&mut fw, 1500).await {
        if ev["type"] == "OFFERS" {
            for o in ev["offers"]["offers"].as_array().unwrap() {
                assert!(
                    !pools(o).iter().any(|p| p.starts_with("vfs-a/")),
                    "an unavailable pool was offered: {o}"
                );
            }
        }
        if ev["type"] == "RESCIND" {
            assert_ne!(ev["rescind"]["offer_id"], b_id, "zone-b's offer rescinded");
        }
    }
    for o in client.offers().await.unwrap() {
        assert!(
            o.agent_id != "agent-a",
            "agent-a still has an outstanding offer: {o:?}"
        );
    }
    assert!(client.volumes(false).await.unwrap().volumes.is_empty());
    assert!(
        client
            .offers()
            .await
            .unwrap()
            .iter()
            .any(|o| o.id == b_id["value"]),
        "zone-b's offer stays outstanding"
    );

    // It comes back: its pool is offered on agent-a again, and can be used.
    std::fs::remove_file(&switch).unwrap();
    let back = fw.offers_for(&["agent-a"]).await;
    let a2 = back
        .iter()
        .find(|o| o["agent_id"]["value"] == "agent-a")
        .unwrap()
        .clone();
    assert_ne!(a2["id"], a["id"], "a new offer, not the rescinded one");
    assert_eq!(pools(&a2), ["vfs-a/default/zone-a"]);
    assert!(client.services().await.unwrap().iter().all(|s| s.available));
    fw.call(create_disk(&fw.id, &a2, "after", 10.0)).await;
    let st = loop {
        let st = fw.status("after", 30).await;
        if st["state"] != "OPERATION_PENDING" {
            break st;
        }
    };
    assert_eq!(st["state"], "OPERATION_FINISHED", "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_errors_rescind_offers_of_the_pool_and_recovery_offers_it_again() {
    outage_rescinds_and_recovery_offers_again("error_rate = 1.0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capacity_timeouts_rescind_offers_of_the_pool_and_recovery_offers_it_again() {
    // A capacity call that never returns: the poller gives up after driver_timeout_secs.
    outage_rescinds_and_recovery_offers_again("hang = [\"capacity\"]").await;
}
