//! Capacity loss rescinds: the real `polly serve` with a healthy vfs service in zone-b and one
//! behind the fault injector in zone-a, switched by a file (`active_while_exists`). While the
//! zone-a back-end fails its capacity calls (errors, or hangs past `driver_timeout_secs`), the
//! poller marks its pool unavailable, Polly sends RESCIND for the offers that carry it, offers
//! nothing from it, and an ACCEPT of a rescinded offer is DROPPED; when the back-end answers
//! again its pool is offered again. Zone-b's offers are untouched throughout. An operation on
//! a held volume of the pool that is down is DROPPED too (never attempted, nothing changed),
//! and goes through once the back-end is back.

mod harness;

use std::path::Path;
use std::time::Duration;

use harness::fakes::framework::{create_disk, offer_on, subscribe, Framework};
use harness::Polly;
use polly::client::AdminClient;
use polly::mesos::client::MesosContentType;
use serde_json::{json, Value};

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

/// The terminal status of `op` (statuses before it skipped).
async fn outcome(fw: &mut Framework, op: &str) -> Value {
    loop {
        let st = fw.status(op, 30).await;
        if st["state"] != "OPERATION_PENDING" {
            return st;
        }
    }
}

/// Wait until the capacity poller's word on `service` is `available`.
async fn until_available(client: &AdminClient, service: &str, available: bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let svc = client.services().await.unwrap();
        let s = svc.iter().find(|s| s.name == service).unwrap();
        if s.available == available {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{service} never became available = {available}: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether `fw` holds `vol`, and the instances `vol` is attached to.
async fn held(client: &AdminClient, fw: &str, vol: &str) -> (bool, Vec<String>) {
    let r = client.reservations().await.unwrap();
    let v = client.inspect(vol, None).await.unwrap();
    (
        r.iter().any(|r| r.volume_id == vol && r.framework_id == fw),
        v.attachments.into_iter().map(|a| a.instance_id).collect(),
    )
}

/// One ACCEPT of `offer` with one operation on the disk `disk`.
fn accept_one(fw: &Framework, offer: &Value, op: &str, kind: &str, disk: &Value) -> Value {
    let operation = match kind {
        "UNRESERVE" => json!({"type": kind, "id": {"value": op},
            "unreserve": {"resources": [disk]}}),
        _ => json!({"type": kind, "id": {"value": op}, "destroy_disk": {"source": disk}}),
    };
    json!({"type": "ACCEPT", "framework_id": {"value": fw.id},
        "accept": {"offer_ids": [offer["id"].clone()], "operations": [operation],
            "filters": {"refuse_seconds": 0}}})
}

/// While a held volume's back-end is down (and a capacity poll has seen it), UNRESERVE and
/// DESTROY_DISK of it are DROPPED, saying why, without touching the back-end: the volume stays
/// reserved, attached and in place, and the offer the ACCEPT named stays usable. Once the
/// back-end answers again, the same UNRESERVE finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_a_held_volume_whose_back_end_is_down_are_dropped_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let switch = dir.path().join("zone-a-down");
    let cfg = config(&switch, "error_rate = 1.0");
    let polly = Polly::start_with(&dir.path().join("d"), Some(&cfg), None);
    let client = polly.client();
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-a", "agent-b"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    let b = offer_on(&offers, "agent-b").clone();
    fw.call(create_disk(&fw.id, &a, "make", 10.0)).await;
    let made = outcome(&mut fw, "make").await;
    assert_eq!(made["state"], "OPERATION_FINISHED", "{made}");
    let disk = made["converted_resources"][0].clone();
    let vol = disk["disk"]["source"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        held(&client, &fw.id, &vol).await,
        (true, vec!["i-a".to_string()])
    );

    std::fs::write(&switch, b"").unwrap();
    until_available(&client, "vfs-a", false).await;
    // Agent-a has nothing to offer now (its one pool is down); agent-b's offer still stands.
    for (op, kind) in [("free", "UNRESERVE"), ("destroy", "DESTROY_DISK")] {
        fw.call(accept_one(&fw, &b, op, kind, &disk)).await;
        let st = outcome(&mut fw, op).await;
        assert_eq!(st["state"], "OPERATION_DROPPED", "{kind}: {st}");
        let msg = st["message"].as_str().unwrap();
        assert!(
            msg.contains(&format!("volume {vol} lives in pool vfs-a/default/zone-a"))
                && msg.contains("failed the last capacity poll")
                && msg.contains("nothing was done"),
            "{kind}: {msg}"
        );
        assert!(
            st.get("uuid").is_none(),
            "nothing recorded to acknowledge: {st}"
        );
        assert_eq!(
            held(&client, &fw.id, &vol).await,
            (true, vec!["i-a".to_string()]),
            "{kind} changed the volume"
        );
    }
    assert!(
        client
            .dump()
            .await
            .unwrap()
            .operations
            .iter()
            .all(|o| o.operation_id == "make"),
        "the dropped operations were recorded"
    );

    // The back-end is back: the UNRESERVE goes through.
    std::fs::remove_file(&switch).unwrap();
    until_available(&client, "vfs-a", true).await;
    fw.call(accept_one(&fw, &b, "free-again", "UNRESERVE", &disk))
        .await;
    let st = outcome(&mut fw, "free-again").await;
    assert_eq!(st["state"], "OPERATION_FINISHED", "{st}");
    assert_eq!(
        held(&client, &fw.id, &vol).await,
        (false, Vec::<String>::new())
    );
}
