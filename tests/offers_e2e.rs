//! End to end: the real `polly serve` with two vfs services in two zones and static agents in
//! those zones, and a consumer framework written here with raw HTTP (JSON) and Polly's own
//! Mesos types (protobuf): subscription, zone-correct disk offers, CREATE_DISK → a volume that
//! is created, restricted to the framework and attached to the agent's instance, DECLINE
//! filters, offer timeouts, bad input, and a SIGKILL between accept and mapping.

mod common;
mod framework;

use std::time::Duration;

use common::{vfs_volume_dirs, Polly};
use framework::{create_disk, offer_on, subscribe};
use polly::config::MesosContentType;
use polly::mesos::client::encode_call;
use polly::mesos::v1;
use polly::mesos::v1::scheduler::{call, Call};
use serde_json::{json, Value};

fn config(extra: &str) -> String {
    format!(
        r#"
[[services]]
name = "vfs-a"
driver = "vfs"
zone = "zone-a"
# A quota keeps the pools' capacity steady whatever else writes to this disk meanwhile.
quota_bytes = 10737418240
{extra}

[[services]]
name = "vfs-b"
driver = "vfs"
zone = "zone-b"
quota_bytes = 10737418240

[mesos]
agents = [
  {{ id = "agent-a", hostname = "host-a", region = "eu", zone = "zone-a" }},
  {{ id = "agent-b", hostname = "host-b", region = "eu", zone = "zone-b" }},
]

[offers]
poll_interval_secs = 0.2
allocation_interval_ms = 100
offer_timeout_secs = 600
[offers.instances]
agent-a = "i-a"
agent-b = "i-b"
"#
    )
}

fn config_with_timeout(secs: f64) -> String {
    config("").replace(
        "offer_timeout_secs = 600",
        &format!("offer_timeout_secs = {secs}"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_framework_gets_zone_offers_and_create_disk_maps_a_volume() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(&dir.path().join("d"), Some(&config("")), None);
    let v: Value = reqwest::get(format!("{}/version", polly.offers))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let version = v["version"].as_str().unwrap();
    assert!(
        version.split('.').all(|p| p.parse::<u32>().is_ok()),
        "{version}"
    );

    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-a", "agent-b"]).await;
    // Offers stay outstanding until used, declined or rescinded: keep agent-b's for later.
    let first_b = offer_on(&offers, "agent-b").clone();
    for (agent, service) in [("agent-a", "vfs-a/"), ("agent-b", "vfs-b/")] {
        let o = offer_on(&offers, agent);
        assert_eq!(o["framework_id"]["value"], fw.id.as_str());
        let res = o["resources"].as_array().unwrap();
        assert!(!res.is_empty());
        for r in res {
            assert_eq!(r["name"], "disk");
            assert_eq!(r["disk"]["source"]["type"], "RAW");
            assert_eq!(r["disk"]["source"]["vendor"], "polly");
            assert_eq!(r["disk"]["source"]["profile"], "default");
            let p = r["provider_id"]["value"].as_str().unwrap();
            assert!(p.starts_with(service), "{agent} offered pool {p}");
        }
    }

    let a = offer_on(&offers, "agent-a").clone();
    fw.call(create_disk(&fw.id, &a, "op-1", 64.0)).await;
    let pending = fw.status("op-1", 10).await;
    assert_eq!(pending["state"], "OPERATION_PENDING");
    let done = fw.status("op-1", 30).await;
    assert_eq!(done["state"], "OPERATION_FINISHED", "{done}");
    assert_eq!(done["agent_id"]["value"], "agent-a");
    let disk = &done["converted_resources"][0];
    assert_eq!(disk["disk"]["source"]["type"], "MOUNT");
    assert_eq!(disk["scalar"]["value"], 64.0);
    let vol_id = disk["disk"]["source"]["id"].as_str().unwrap().to_string();

    let client = polly.client();
    let vol = client.inspect(&vol_id, None).await.unwrap();
    assert_eq!(vol.service, "vfs-a");
    assert_eq!(vol.size_bytes, 64 << 20);
    assert!(vol.restrict_frameworks.contains(&fw.id));
    assert_eq!(vol.attachments.len(), 1);
    assert_eq!(vol.attachments[0].instance_id, "i-a");
    assert_eq!(vfs_volume_dirs(&polly.data_dir, "vfs-a").len(), 1);
    assert!(vfs_volume_dirs(&polly.data_dir, "vfs-b").is_empty());
    let dump = client.dump().await.unwrap();
    assert_eq!(dump.reservations.len(), 1);
    assert_eq!(dump.reservations[0].framework_id, fw.id);
    assert_eq!(dump.reservations[0].volume_id, vol_id);

    // Acknowledge in pymesos' shape: the whole status object, uuid as {"value": …}.
    fw.call(
        json!({"type": "ACKNOWLEDGE_OPERATION_STATUS", "framework_id": {"value": fw.id},
        "acknowledge_operation_status": done.clone()}),
    )
    .await;
    let acked = client.dump().await.unwrap().operations;
    assert_eq!(acked.len(), 1);
    assert!(acked[0].acknowledged && acked[0].state == "OPERATION_FINISHED");

    // The same operation id again: reported, never run twice.
    let offers = fw.offers_for(&["agent-a"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    fw.call(create_disk(&fw.id, &a, "op-1", 64.0)).await;
    let again = fw.status("op-1", 10).await;
    assert_eq!(again["state"], "OPERATION_FINISHED");
    assert_eq!(client.volumes(false).await.unwrap().volumes.len(), 1);

    // RECONCILE_OPERATIONS answers from the record, and unknown ids as unknown.
    fw.call(
        json!({"type": "RECONCILE_OPERATIONS", "framework_id": {"value": fw.id},
        "reconcile_operations": {"operations": [{"operation_id": {"value": "op-1"}},
            {"operation_id": {"value": "nope"}}]}}),
    )
    .await;
    assert_eq!(fw.status("op-1", 10).await["state"], "OPERATION_FINISHED");
    assert_eq!(fw.status("nope", 10).await["state"], "OPERATION_UNKNOWN");

    // DECLINE with a long filter: agent-b is not offered again until REVIVE.
    let b = first_b;
    fw.call(json!({"type": "DECLINE", "framework_id": {"value": fw.id},
        "decline": {"offer_ids": [b["id"].clone()], "filters": {"refuse_seconds": 3600}}}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1500);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, fw.events.recv()).await {
        if ev["type"] == "OFFERS" {
            for o in ev["offers"]["offers"].as_array().unwrap() {
                assert_ne!(
                    o["agent_id"]["value"], "agent-b",
                    "declined agent offered again"
                );
            }
        }
    }
    fw.call(json!({"type": "REVIVE", "framework_id": {"value": fw.id}}))
        .await;
    fw.offers_for(&["agent-b"]).await;

    // The admin API and CLI list the framework, its offers and its reservation.
    let fws = client.frameworks().await.unwrap();
    assert!(fws.iter().any(|f| f.id == fw.id && f.connected));
    assert!(client
        .offers()
        .await
        .unwrap()
        .iter()
        .any(|o| o.framework_id == fw.id));
    let r = polly.cli_json(&["reservation", "ls"]);
    assert_eq!(r[0]["volume_id"], vol_id.as_str());
    let (code, out, _) = polly.cli(&["framework", "ls"]);
    assert_eq!(code, 0);
    assert!(out.contains(&fw.id), "{out}");

    // TEARDOWN keeps the reservation and the volume.
    fw.call(json!({"type": "TEARDOWN", "framework_id": {"value": fw.id}}))
        .await;
    assert_eq!(client.dump().await.unwrap().reservations.len(), 1);
    assert_eq!(client.volumes(false).await.unwrap().volumes.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_framework_subscribes_receives_offers_and_declines() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(&dir.path().join("d"), Some(&config("")), None);
    let mut fw = subscribe(
        &polly.offers,
        MesosContentType::Protobuf,
        Some("fw-from-real-master"),
    )
    .await;
    assert_eq!(
        fw.id, "fw-from-real-master",
        "the framework keeps its real id"
    );
    let offers = fw.offers_for(&["agent-a", "agent-b"]).await;
    let c = Call {
        framework_id: Some(v1::FrameworkId {
            value: fw.id.clone(),
        }),
        r#type: Some(call::Type::Decline as i32),
        decline: Some(call::Decline {
            offer_ids: vec![v1::OfferId {
                value: offers[0]["id"]["value"].as_str().unwrap().into(),
            }],
            filters: None,
        }),
        ..Default::default()
    };
    let r = fw
        .http
        .post(format!("{}/master/api/v1/scheduler", fw.base))
        .header("content-type", "application/x-protobuf")
        .header("mesos-stream-id", &fw.stream_id)
        .body(encode_call(MesosContentType::Protobuf, &c).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    fw.next("HEARTBEAT", 30).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offer_timeout_rescinds() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(&dir.path().join("d"), Some(&config_with_timeout(0.5)), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-a"]).await;
    let id = offer_on(&offers, "agent-a")["id"].clone();
    loop {
        let ev = fw.next("RESCIND", 20).await;
        if ev["rescind"]["offer_id"] == id {
            break;
        }
    }
    // The rescinded offer is gone: accepting it is DROPPED and does nothing.
    let stale = json!({"id": id, "resources": offer_on(&offers, "agent-a")["resources"]});
    fw.call(create_disk(&fw.id, &stale, "late", 10.0)).await;
    assert_eq!(fw.status("late", 10).await["state"], "OPERATION_DROPPED");
    assert!(polly
        .client()
        .volumes(false)
        .await
        .unwrap()
        .volumes
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_reference_status_codes_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(&dir.path().join("d"), Some(&config("")), None);
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/scheduler", polly.offers);
    let post = |ct: Option<&str>, stream: Option<&str>, body: Vec<u8>| {
        let mut r = http.post(&url).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        if let Some(s) = stream {
            r = r.header("mesos-stream-id", s);
        }
        async move { r.send().await.unwrap().status().as_u16() }
    };
    let sub =
        json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "n"}}})
            .to_string()
            .into_bytes();
    assert_eq!(post(None, None, sub.clone()).await, 400, "no content type");
    assert_eq!(
        post(Some("application/json; charset=utf-8"), None, sub.clone()).await,
        415
    );
    assert_eq!(post(Some("text/plain"), None, sub.clone()).await, 415);
    assert_eq!(
        post(Some("application/json"), None, b"{not json".to_vec()).await,
        400
    );
    assert_eq!(
        post(Some("application/x-protobuf"), None, vec![0xff, 0xff, 0xff]).await,
        400,
        "malformed protobuf"
    );
    assert_eq!(
        post(
            Some("application/json"),
            None,
            br#"{"subscribe":{}}"#.to_vec()
        )
        .await,
        400,
        "type missing"
    );
    assert_eq!(
        post(
            Some("application/json"),
            None,
            br#"{"type":"UNKNOWN"}"#.to_vec()
        )
        .await,
        501
    );
    assert_eq!(
        post(Some("application/json"), Some("x"), sub.clone()).await,
        400,
        "stream id on SUBSCRIBE"
    );
    assert_eq!(http.get(&url).send().await.unwrap().status().as_u16(), 405);

    let mut a = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let mut b = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let decline = |fw: &str| {
        json!({"type": "DECLINE", "framework_id": {"value": fw}, "decline": {"offer_ids": []}})
            .to_string()
            .into_bytes()
    };
    assert_eq!(
        post(Some("application/json"), None, decline(&a.id)).await,
        400,
        "no stream id"
    );
    assert_eq!(
        post(Some("application/json"), Some(&b.stream_id), decline(&a.id)).await,
        400,
        "another framework's stream id"
    );
    assert_eq!(
        post(
            Some("application/json"),
            Some(&a.stream_id),
            decline("nobody")
        )
        .await,
        400,
        "unknown framework"
    );
    assert_eq!(
        post(
            Some("application/json"),
            Some(&a.stream_id),
            br#"{"type":"ACCEPT","framework_id":{"value":"x"}}"#.to_vec()
        )
        .await,
        400
    );
    // RecordIO-framed bytes are not a call body.
    let framed = polly::mesos::recordio::encode(&decline(&a.id));
    assert_eq!(
        post(Some("application/json"), Some(&a.stream_id), framed).await,
        400
    );

    // One framework at a time holds an agent's offer (as with a Mesos master): B turns down,
    // for long, whatever it was offered, so A is offered agent-a.
    let mut held = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
    let mut seen: Vec<Value> = b.skipped.drain(..).collect();
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, b.events.recv()).await {
        seen.push(ev);
    }
    for ev in seen.iter().filter(|e| e["type"] == "OFFERS") {
        for o in ev["offers"]["offers"].as_array().unwrap() {
            held.push(o["id"].clone());
        }
    }
    if !held.is_empty() {
        b.call(json!({"type": "DECLINE", "framework_id": {"value": b.id},
            "decline": {"offer_ids": held, "filters": {"refuse_seconds": 3600}}}))
            .await;
    }

    // B accepts A's offer: DROPPED, nothing created, A's offer still usable.
    let offers = a.offers_for(&["agent-a"]).await;
    let offer = offer_on(&offers, "agent-a").clone();
    b.call(create_disk(&b.id, &offer, "steal", 10.0)).await;
    assert_eq!(b.status("steal", 10).await["state"], "OPERATION_DROPPED");
    let client = polly.client();
    assert!(client.volumes(false).await.unwrap().volumes.is_empty());
    assert!(client.dump().await.unwrap().reservations.is_empty());
    a.call(create_disk(&a.id, &offer, "mine", 10.0)).await;
    let st = loop {
        let st = a.status("mine", 30).await;
        if st["state"] != "OPERATION_PENDING" {
            break st;
        }
    };
    assert_eq!(st["state"], "OPERATION_FINISHED", "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_accept_and_mapping_then_restart_finishes_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let hang = "[services.fault]\nhang = [\"attach\"]";
    let polly = Polly::start_with(&data, Some(&config(hang)), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-a"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    fw.call(create_disk(&fw.id, &a, "op-k", 32.0)).await;
    assert_eq!(fw.status("op-k", 10).await["state"], "OPERATION_PENDING");
    let client = polly.client();
    let mut waited = 0;
    while client.operations().await.unwrap().is_empty() {
        waited += 1;
        assert!(waited < 1500, "the attach never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    polly.kill9();

    let polly = Polly::start_with(&data, Some(&config("")), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, Some(&fw.id)).await;
    let st = loop {
        let st = fw.status("op-k", 30).await;
        if st["state"] != "OPERATION_PENDING" {
            break st;
        }
    };
    assert_eq!(st["state"], "OPERATION_FINISHED", "{st}");
    let vol_id = st["converted_resources"][0]["disk"]["source"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let client = polly.client();
    let vols = client.volumes(true).await.unwrap();
    assert_eq!(vols.volumes.len(), 1, "no duplicate");
    assert!(vols.unmanaged.unwrap_or_default().is_empty(), "no orphan");
    assert_eq!(vols.volumes[0].id, vol_id);
    assert_eq!(vols.volumes[0].attachments[0].instance_id, "i-a");
    assert_eq!(vfs_volume_dirs(&data, "vfs-a").len(), 1);
    assert!(
        client.operations().await.unwrap().is_empty(),
        "no intent left"
    );
}
