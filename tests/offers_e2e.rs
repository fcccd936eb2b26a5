//! End to end: the real `polly serve` with two vfs services in two zones and static agents in
//! those zones, and a consumer framework written here with raw HTTP (JSON) and Polly's own
//! Mesos types (protobuf): subscription, zone-correct disk offers, CREATE_DISK → a volume that
//! is created, restricted to the framework and attached to the agent's instance, GROW_VOLUME,
//! DECLINE filters, offer timeouts, role and framework weights and quotas from config, the
//! three sources of an agent's instance, TEARDOWN's grace and the admin release, framework
//! ids checked with the fake master's GET_FRAMEWORKS, bad input, and SIGKILLs between accept
//! and mapping and during a release.

mod harness;

use std::time::Duration;

use harness::fakes::framework::{create_disk, offer_on, subscribe, subscribe_as, Framework};
use harness::fakes::master as fake_master;
use harness::{vfs_volume_dirs, Polly};
use polly::mesos::client::encode_call;
use polly::mesos::client::MesosContentType;
use polly::mesos::recordio::Decoder;
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

    // The REX-Ray agent on that instance lists the volume through the libStorage façade as
    // attached to itself.
    let seen: Value = reqwest::Client::new()
        .get(format!("{}/volumes/vfs-a?attachments", polly.libstorage))
        .header("Libstorage-Instanceid", "vfs:vfs-a=i-a")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = &seen[vol_id.as_str()];
    assert_eq!(listed["attachmentState"], 2, "{seen}");
    assert_eq!(
        listed["attachments"][0]["instanceID"]["id"], "i-a",
        "{seen}"
    );

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
            {"operation_id": {"value": "nope"}},
            {"operation_id": {"value": "nope-on-b"}, "agent_id": {"value": "agent-b"}}]}}),
    )
    .await;
    assert_eq!(fw.status("op-1", 10).await["state"], "OPERATION_FINISHED");
    // An unknown operation's status names the agent the framework asked about, or none
    // (never an empty agent id).
    let nope = fw.status("nope", 10).await;
    assert_eq!(nope["state"], "OPERATION_UNKNOWN");
    assert!(nope.get("agent_id").is_none(), "{nope}");
    let on_b = fw.status("nope-on-b", 10).await;
    assert_eq!(on_b["state"], "OPERATION_UNKNOWN");
    assert_eq!(on_b["agent_id"]["value"], "agent-b", "{on_b}");

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
    let torn = client.frameworks().await.unwrap();
    assert!(torn
        .iter()
        .any(|f| f.id == fw.id && f.torn_down_at.is_some()));
    // Coming back with the same id cancels the teardown: the reservation is its own again.
    let back = subscribe(&polly.offers, MesosContentType::Json, Some(&fw.id)).await;
    let fws = client.frameworks().await.unwrap();
    let me = fws.iter().find(|f| f.id == back.id).unwrap();
    assert!(me.connected && me.torn_down_at.is_none() && me.reservations == 1);
    assert_eq!(fws.iter().filter(|f| f.id == back.id).count(), 1);
    assert!(client
        .release_reservations(&back.id, None, true)
        .await
        .is_err());
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
    // Accept is negotiated as RFC 9110 says: ranges, q-values, case.
    for (accept, want) in [
        ("application/*", Some("application/json")),
        ("APPLICATION/JSON", Some("application/json")),
        (
            "application/json;q=0, application/x-protobuf",
            Some("application/x-protobuf"),
        ),
        ("application/json;q=0", None),
        ("text/*", None),
    ] {
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", accept)
            .body(sub.clone())
            .send()
            .await
            .unwrap();
        match want {
            Some(ct) => {
                assert_eq!(r.status(), 200, "{accept}");
                assert_eq!(r.headers()["content-type"], ct, "{accept}");
            }
            None => assert_eq!(r.status(), 406, "{accept}"),
        }
    }
    // Oversize SUBSCRIBEs: a body over the limit, a framework name or FrameworkInfo over its
    // cap. 400 each, nothing kept (no framework listed).
    let frameworks_before = polly.client().frameworks().await.unwrap().len();
    for (what, info) in [
        (
            "a 1.5 MB name",
            json!({"user": "u", "name": "n".repeat(1_500_000)}),
        ),
        (
            "a 2 KiB name",
            json!({"user": "u", "name": "n".repeat(2048)}),
        ),
        (
            "100 KiB of labels",
            json!({"user": "u", "name": "n", "labels": {"labels": (0..100)
                .map(|i| json!({"key": format!("k{i}"), "value": "v".repeat(1000)}))
                .collect::<Vec<_>>()}}),
        ),
    ] {
        let body = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}});
        let r = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{what}");
        let text = r.text().await.unwrap();
        assert!(text.contains("at most"), "{what}: {text}");
    }
    assert_eq!(
        polly.client().frameworks().await.unwrap().len(),
        frameworks_before
    );
    // SUBSCRIBED carries master_info, as a master's does: this endpoint's address.
    let mut r = http
        .post(&url)
        .header("content-type", "application/json")
        .body(sub.clone())
        .send()
        .await
        .unwrap();
    let mut dec = Decoder::new(1 << 20);
    let first = loop {
        if let Some(rec) = dec.next_record().unwrap() {
            break serde_json::from_slice::<Value>(&rec).unwrap();
        }
        dec.push(&r.chunk().await.unwrap().expect("stream open"));
    };
    let info = &first["subscribed"]["master_info"];
    let port: u16 = polly.offers.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(info["port"], port, "{first}");
    assert_eq!(info["ip"], u32::from_le_bytes([127, 0, 0, 1]), "{first}");
    assert_eq!(info["address"]["ip"], "127.0.0.1", "{first}");
    assert!(
        info["id"].as_str().unwrap().starts_with("polly-"),
        "{first}"
    );
    assert_eq!(info["version"], polly::offer_endpoint::MESOS_VERSION);
    drop(r);

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
    // Protobuf calls missing required fields are refused as a master refuses them (prost
    // always writes required fields, so the bytes are made field by field as a client built
    // from the official protos sends them with partial serialization).
    let empty_info = Call {
        r#type: Some(call::Type::Subscribe as i32),
        subscribe: Some(call::Subscribe::default()),
        ..Default::default()
    };
    for field in ["user", "name"] {
        let bytes = without(&empty_info, &["subscribe", "framework_info"], field);
        assert_eq!(
            post(Some("application/x-protobuf"), None, bytes).await,
            400,
            "protobuf SUBSCRIBE without framework_info.{field}"
        );
    }
    let offer = json!({"id": {"value": "o-1"}, "agent_id": {"value": "agent-a"},
        "resources": [{"name": "disk", "type": "SCALAR", "scalar": {"value": 10.0}}]});
    let create: Call =
        polly::mesos::json::from_value(&create_disk(&a.id, &offer, "op-x", 10.0)).unwrap();
    let bytes = without(
        &create,
        &["accept", "operations", "create_disk"],
        "target_type",
    );
    assert_eq!(
        post(Some("application/x-protobuf"), Some(&a.stream_id), bytes).await,
        400,
        "protobuf CREATE_DISK without target_type"
    );
    let mut json_create = create_disk(&a.id, &offer, "op-x", 10.0);
    json_create["accept"]["operations"][0]["create_disk"]
        .as_object_mut()
        .unwrap()
        .remove("target_type");
    assert_eq!(
        post(
            Some("application/json"),
            Some(&a.stream_id),
            json_create.to_string().into_bytes()
        )
        .await,
        400,
        "JSON CREATE_DISK without target_type"
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

impl Framework {
    /// The first status of `op` that is not PENDING.
    async fn outcome(&mut self, op: &str, secs: u64) -> Value {
        loop {
            let st = self.status(op, secs).await;
            if st["state"] != "OPERATION_PENDING" {
                return st;
            }
        }
    }

    /// The next offer on `agent` that `want` accepts. Offers on that agent that do not fit
    /// (a framework may hold several per agent: its RAW share and, in another, a volume) are
    /// gathered for a moment and declined together without a filter, so the next round
    /// offers the agent again as one offer.
    async fn offer_where(&mut self, agent: &str, want: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..50 {
            let mut unwanted = Vec::new();
            let first = self.next("OFFERS", 20).await;
            let mut events = vec![first];
            let settle = tokio::time::Instant::now() + Duration::from_millis(300);
            while let Ok(Some(ev)) = tokio::time::timeout_at(settle, self.events.recv()).await {
                if ev["type"] == "OFFERS" {
                    events.push(ev);
                } else if ev["type"] != "HEARTBEAT" {
                    self.skipped.push_back(ev);
                }
            }
            for ev in &events {
                for o in ev["offers"]["offers"].as_array().unwrap() {
                    if o["agent_id"]["value"] != agent {
                        continue;
                    }
                    if want(o) {
                        return o.clone();
                    }
                    unwanted.push(o["id"].clone());
                }
            }
            if !unwanted.is_empty() {
                self.call(
                    json!({"type": "DECLINE", "framework_id": {"value": self.id},
                    "decline": {"offer_ids": unwanted, "filters": {"refuse_seconds": 0}}}),
                )
                .await;
            }
        }
        panic!("no wanted offer on {agent}");
    }
}

/// The disk of `offer` with source type `ty` (and volume id `id`, when given).
/// `call` as protobuf with `field` cleared in the message at `path` (the first element of
/// a repeated field on the way).
fn without(call: &Call, path: &[&str], field: &str) -> Vec<u8> {
    use prost::Message as _;
    use prost_reflect::{DynamicMessage, Value as Field};
    let desc = polly::mesos::json::descriptors()
        .get_message_by_name("mesos.v1.scheduler.Call")
        .unwrap();
    let mut dm = DynamicMessage::decode(desc, call.encode_to_vec().as_slice()).unwrap();
    let mut at = &mut dm;
    for step in path {
        at = match at.get_field_by_name_mut(step).unwrap() {
            Field::Message(m) => m,
            Field::List(items) => match &mut items[0] {
                Field::Message(m) => m,
                other => panic!("{step}: {other:?}"),
            },
            other => panic!("{step}: {other:?}"),
        };
    }
    at.clear_field_by_name(field);
    dm.encode_to_vec()
}

fn disk_of(offer: &Value, ty: &str, id: Option<&str>) -> Option<Value> {
    offer["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["disk"]["source"]["type"] == ty && id.is_none_or(|i| r["disk"]["source"]["id"] == i)
        })
        .cloned()
}

fn grow_volume(fw: &str, offer: &Value, op: &str, volume: &Value, addition: &Value) -> Value {
    json!({"type": "ACCEPT", "framework_id": {"value": fw},
        "accept": {"offer_ids": [offer["id"].clone()],
            "operations": [{"type": "GROW_VOLUME", "id": {"value": op},
                "grow_volume": {"volume": volume, "addition": addition}}],
            "filters": {"refuse_seconds": 0}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_volume_grows_a_held_volume_from_its_pool_share() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(&dir.path().join("d"), Some(&config("")), None);
    let client = polly.client();
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-a"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    fw.call(create_disk(&fw.id, &a, "c1", 64.0)).await;
    let done = fw.outcome("c1", 30).await;
    assert_eq!(done["state"], "OPERATION_FINISHED", "{done}");
    let vol = done["converted_resources"][0]["disk"]["source"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // An offer on agent-a showing both the held volume and the pool's share.
    let both =
        |o: &Value| disk_of(o, "RAW", None).is_some() && disk_of(o, "MOUNT", Some(&vol)).is_some();
    let o = fw.offer_where("agent-a", both).await;
    let mount = disk_of(&o, "MOUNT", Some(&vol)).unwrap();
    assert_eq!(mount["scalar"]["value"], 64.0);
    // A volume the framework holds is offered with its reservation, as a master shows a
    // dynamic reservation; the pool's share is unreserved. The CREATE_DISK's converted
    // resource says the same.
    let reserved = json!([{"type": "DYNAMIC", "role": "*"}]);
    assert_eq!(mount["reservations"], reserved, "{mount}");
    assert_eq!(done["converted_resources"][0]["reservations"], reserved);
    let raw = disk_of(&o, "RAW", None).unwrap();
    assert!(raw.get("reservations").is_none(), "{raw}");
    let share = raw["scalar"]["value"].as_f64().unwrap();
    assert!(share >= 32.0, "{raw}");

    // More than the offered share: refused, nothing grows.
    let mut too_much = raw.clone();
    too_much["scalar"]["value"] = json!(share + 1.0);
    fw.call(grow_volume(&fw.id, &o, "g-big", &mount, &too_much))
        .await;
    let refused = fw.outcome("g-big", 10).await;
    assert_eq!(refused["state"], "OPERATION_ERROR", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("were offered"),
        "{refused}"
    );
    assert_eq!(
        client.inspect(&vol, None).await.unwrap().size_bytes,
        64 << 20
    );

    // A refused ACCEPT uses nothing: the same offer still stands. 32 MB from its share: the
    // volume has 96 MB, reported as the converted MOUNT disk.
    let mut addition = raw.clone();
    addition["scalar"]["value"] = json!(32.0);
    fw.call(grow_volume(&fw.id, &o, "g1", &mount, &addition))
        .await;
    assert_eq!(fw.status("g1", 10).await["state"], "OPERATION_PENDING");
    let grown = fw.outcome("g1", 30).await;
    assert_eq!(grown["state"], "OPERATION_FINISHED", "{grown}");
    let disk = &grown["converted_resources"][0];
    assert_eq!(disk["disk"]["source"]["type"], "MOUNT");
    assert_eq!(disk["disk"]["source"]["id"], vol.as_str());
    assert_eq!(disk["scalar"]["value"], 96.0);
    let v = client.inspect(&vol, None).await.unwrap();
    assert_eq!(v.size_bytes, 96 << 20);
    assert_eq!(v.attachments.len(), 1, "still mapped");
    let r = client.reservations().await.unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].bytes, 96 << 20);
    let rec = client
        .dump()
        .await
        .unwrap()
        .operations
        .into_iter()
        .find(|o| o.operation_id == "g1")
        .unwrap();
    assert_eq!(rec.target_bytes, Some(96 << 20));

    // The same operation id again: the recorded outcome, no second growth.
    let o = fw.offer_where("agent-a", both).await;
    let mount = disk_of(&o, "MOUNT", Some(&vol)).unwrap();
    assert_eq!(mount["scalar"]["value"], 96.0, "offers show the new size");
    let mut addition = disk_of(&o, "RAW", None).unwrap();
    addition["scalar"]["value"] = json!(32.0);
    fw.call(grow_volume(&fw.id, &o, "g1", &mount, &addition))
        .await;
    assert_eq!(fw.outcome("g1", 10).await["state"], "OPERATION_FINISHED");
    assert_eq!(
        client.inspect(&vol, None).await.unwrap().size_bytes,
        96 << 20
    );

    // A volume this framework does not hold: FAILED, saying so.
    let o = fw.offer_where("agent-a", both).await;
    let mut other = disk_of(&o, "MOUNT", Some(&vol)).unwrap();
    other["disk"]["source"]["id"] = json!("pv-not-mine");
    let mut addition = disk_of(&o, "RAW", None).unwrap();
    addition["scalar"]["value"] = json!(8.0);
    fw.call(grow_volume(&fw.id, &o, "g-other", &other, &addition))
        .await;
    let failed = fw.outcome("g-other", 30).await;
    assert_eq!(failed["state"], "OPERATION_FAILED", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("holds no volume pv-not-mine"),
        "{failed}"
    );
    assert_eq!(client.volumes(false).await.unwrap().volumes.len(), 1);
}

/// A pool of `pool_prefix` offered to `fw` in its outstanding offers (MB), per the admin API.
async fn raw_offered(client: &polly::client::AdminClient, fw: &str, pool_prefix: &str) -> Vec<u64> {
    client
        .offers()
        .await
        .unwrap()
        .iter()
        .filter(|o| o.framework_id == fw)
        .flat_map(|o| o.disks.clone())
        .filter_map(|d| match d {
            polly::offers::DiskOffer::Raw { pool_id, mb, .. }
                if pool_id.starts_with(pool_prefix) =>
            {
                Some(mb)
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_and_framework_quotas_from_config_limit_offers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "{}\n[offers.roles.limited]\nquota_volumes = 1\n\n[offers.frameworks.small-fw]\nquota_bytes = 52428800\n",
        config("")
    );
    let polly = Polly::start_with(&dir.path().join("d"), Some(&cfg), None);
    let client = polly.client();
    let mut lim = subscribe_as(
        &polly.offers,
        MesosContentType::Json,
        Some("lim-fw"),
        Some("limited"),
    )
    .await;
    let offers = lim.offers_for(&["agent-a"]).await;
    // One volume for the role: a share of one pool, never both.
    assert!(raw_offered(&client, "lim-fw", "vfs-b/").await.is_empty());
    let a = offer_on(&offers, "agent-a").clone();
    lim.call(create_disk(&lim.id, &a, "q1", 16.0)).await;
    let done = lim.outcome("q1", 30).await;
    assert_eq!(done["state"], "OPERATION_FINISHED", "{done}");
    let vol = done["converted_resources"][0]["disk"]["source"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Rounds go on (the held volume is offered back), but no RAW share any more.
    lim.offer_where("agent-a", |o| disk_of(o, "MOUNT", Some(&vol)).is_some())
        .await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        raw_offered(&client, "lim-fw", "").await.is_empty(),
        "a role at its volume quota was offered a RAW share"
    );
    let deadline = tokio::time::Instant::now() + Duration::from_millis(800);
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, lim.events.recv()).await {
        if ev["type"] == "OFFERS" {
            for o in ev["offers"]["offers"].as_array().unwrap() {
                assert!(disk_of(o, "RAW", None).is_none(), "RAW offered: {o}");
            }
        }
    }

    // A framework quota of 50 MiB caps every share it is offered.
    let _small = subscribe(&polly.offers, MesosContentType::Json, Some("small-fw")).await;
    let mut got = Vec::new();
    for _ in 0..500 {
        got = raw_offered(&client, "small-fw", "").await;
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!got.is_empty(), "small-fw was offered nothing");
    assert!(got.iter().all(|&mb| mb <= 50), "{got:?}");
}

/// Two frameworks `(id, role)` on a Polly with one pool, vfs-a, seen by two agents in zone-a,
/// and `extra` config: the first subscribes alone and is offered all of it, then gives back
/// what it holds until the second is offered too; the rounds then share the pool. Returns the
/// MB each is offered.
async fn share_of_vfs_a(extra: &str, first: (&str, &str), second: (&str, &str)) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    // Only pool vfs-a (no zone-b service or agent): with a second pool the weighted split
    // holds over both pools together, not necessarily within each one.
    let cfg = format!(
        "{}\n{extra}",
        config("")
            .replace(
                "[[services]]\nname = \"vfs-b\"\ndriver = \"vfs\"\nzone = \"zone-b\"\nquota_bytes = 10737418240\n",
                "",
            )
            .replace(
                "  { id = \"agent-b\", hostname = \"host-b\", region = \"eu\", zone = \"zone-b\" },\n",
                "  { id = \"agent-a2\", hostname = \"host-a2\", region = \"eu\", zone = \"zone-a\" },\n",
            )
            .replace("agent-b = \"i-b\"\n", "")
    );
    assert!(!cfg.contains("vfs-b") && !cfg.contains("agent-b"), "{cfg}");
    let polly = Polly::start_with(&dir.path().join("d"), Some(&cfg), None);
    let client = polly.client();
    let mut one = subscribe_as(
        &polly.offers,
        MesosContentType::Json,
        Some(first.0),
        Some(first.1),
    )
    .await;
    one.offers_for(&["agent-a"]).await;
    let _two = subscribe_as(
        &polly.offers,
        MesosContentType::Json,
        Some(second.0),
        Some(second.1),
    )
    .await;
    // Whatever the first framework was offered before the second subscribed (on either
    // agent of the pool, in however many rounds) goes back, until the second is offered its
    // share too; from then on both are offered their weighted shares.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..1500 {
        a = raw_offered(&client, first.0, "vfs-a/").await;
        b = raw_offered(&client, second.0, "vfs-a/").await;
        if !a.is_empty() && !b.is_empty() {
            break;
        }
        if b.is_empty() {
            let held: Vec<Value> = client
                .offers()
                .await
                .unwrap()
                .iter()
                .filter(|o| o.framework_id == first.0)
                .map(|o| json!({"value": o.id}))
                .collect();
            if !held.is_empty() {
                one.call(
                    json!({"type": "DECLINE", "framework_id": {"value": first.0},
                    "decline": {"offer_ids": held, "filters": {"refuse_seconds": 0}}}),
                )
                .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (Some(a), Some(b)) = (a.iter().max().copied(), b.iter().max().copied()) else {
        panic!("both should be offered a share of vfs-a: {a:?}, {b:?}");
    };
    assert!(a + b <= 10240, "{a} + {b} MB over the pool");
    assert!(a + b >= 10200, "{a} + {b} MB: the pool was not shared out");
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_weights_from_config_share_a_pool() {
    let (gold, bronze) = share_of_vfs_a(
        "[offers.roles.gold]\nweight = 3\n\n[offers.roles.bronze]\nweight = 1\n",
        ("gold-fw", "gold"),
        ("bronze-fw", "bronze"),
    )
    .await;
    assert!(
        gold.abs_diff(3 * bronze) <= 3,
        "gold {gold} MB, bronze {bronze} MB: not 3:1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_weights_from_config_share_a_pool_within_a_role() {
    let (light, heavy) = share_of_vfs_a(
        "[offers.frameworks.heavy-fw]\nweight = 3\n",
        ("light-fw", "team"),
        ("heavy-fw", "team"),
    )
    .await;
    assert!(
        heavy.abs_diff(3 * light) <= 3,
        "heavy {heavy} MB, light {light} MB: not 3:1"
    );
}

/// Two CREATE_DISKs of `mb` each in one ACCEPT of `offer`.
fn create_two(fw: &str, offer: &Value, ops: [&str; 2], mb: f64) -> Value {
    let mut source = offer["resources"][0].clone();
    source["scalar"]["value"] = json!(mb);
    let op = |id: &str| {
        json!({"type": "CREATE_DISK", "id": {"value": id},
            "create_disk": {"source": source.clone(), "target_type": "MOUNT"}})
    };
    json!({"type": "ACCEPT", "framework_id": {"value": fw},
        "accept": {"offer_ids": [offer["id"].clone()],
            "operations": [op(ops[0]), op(ops[1])],
            "filters": {"refuse_seconds": 0}}})
}

fn framework_row(polly: &Polly, id: &str) -> Option<Value> {
    polly
        .cli_json(&["framework", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == id)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_keeps_reservations_for_the_grace_then_an_admin_releases_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let cfg = config("").replace(
        "offer_timeout_secs = 600",
        "offer_timeout_secs = 600\nteardown_grace_secs = 8",
    );
    let polly = Polly::start_with(&data, Some(&cfg), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, Some("td-fw")).await;
    let offers = fw.offers_for(&["agent-a"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    fw.call(create_two(&fw.id, &a, ["t1", "t2"], 16.0)).await;
    let mut vols = Vec::new();
    for op in ["t1", "t2"] {
        let st = fw.outcome(op, 30).await;
        assert_eq!(st["state"], "OPERATION_FINISHED", "{st}");
        vols.push(
            st["converted_resources"][0]["disk"]["source"]["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    // A subscribed framework's reservations are its own business.
    let client = polly.client();
    let e = client
        .release_reservations("td-fw", None, true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("subscribed"), "{e}");

    fw.call(json!({"type": "TEARDOWN", "framework_id": {"value": fw.id}}))
        .await;
    let torn = framework_row(&polly, "td-fw").expect("torn-down framework listed");
    assert_eq!(torn["reservations"], 2);
    assert_eq!(torn["releasable"], false);
    assert!(torn["torn_down_at"].is_string() && torn["grace_ends"].is_string());
    let (code, out, _) = polly.cli(&["framework", "ls"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("torn down") && out.contains("GRACE ENDS"),
        "{out}"
    );

    // Within the grace: refused, unless forced.
    let (code, _, err) = polly.cli(&["reservation", "release", "td-fw"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--force") && err.contains("kept until"),
        "{err}"
    );
    assert_eq!(client.reservations().await.unwrap().len(), 2);
    let (code, _, err) = polly.cli(&["reservation", "release", "td-fw", "--volume", "pv-nope"]);
    assert_ne!(code, 0);
    assert!(err.contains("holds no volume pv-nope"), "{err}");
    let r = polly.cli_json(&[
        "reservation",
        "release",
        "td-fw",
        "--volume",
        &vols[0],
        "--force",
    ]);
    assert_eq!(r["released"], json!([vols[0]]));
    assert_eq!(r["remaining"], 1);
    let v0 = client.inspect(&vols[0], None).await.unwrap();
    assert!(v0.attachments.is_empty(), "released = unmapped");
    assert!(!v0.restrict_frameworks.contains("td-fw"));
    let v1 = client.inspect(&vols[1], None).await.unwrap();
    assert_eq!(v1.attachments.len(), 1, "the other volume is still mapped");

    // The teardown record is durable: a restart still shows it, with the same grace.
    polly.kill9();
    let polly = Polly::start_with(&data, Some(&cfg), None);
    let client = polly.client();
    let again = framework_row(&polly, "td-fw").expect("listed after a restart");
    assert_eq!(again["grace_ends"], torn["grace_ends"]);
    assert_eq!(again["reservations"], 1);

    // After the grace: releasable, and released without --force.
    let mut waited = 0;
    while framework_row(&polly, "td-fw").unwrap()["releasable"] != true {
        waited += 1;
        assert!(waited < 300, "never releasable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (code, out, err) = polly.cli(&["reservation", "release", "td-fw"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&vols[1]), "{out}");
    assert!(client.reservations().await.unwrap().is_empty());
    assert!(
        framework_row(&polly, "td-fw").is_none(),
        "nothing left to list"
    );
    // Volumes are never deleted by a release.
    let all = client.volumes(false).await.unwrap().volumes;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|v| v.attachments.is_empty()));
    assert_eq!(vfs_volume_dirs(&data, "vfs-a").len(), 2);
    let e = client
        .release_reservations("td-fw", None, false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("holds no reservations"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_release_then_releasing_again_finishes_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let hang = config("[services.fault]\nhang = [\"detach\"]");
    let polly = Polly::start_with(&data, Some(&hang), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, Some("rk-fw")).await;
    let offers = fw.offers_for(&["agent-a"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    fw.call(create_disk(&fw.id, &a, "k1", 16.0)).await;
    let st = fw.outcome("k1", 30).await;
    assert_eq!(st["state"], "OPERATION_FINISHED", "{st}");
    let vol = st["converted_resources"][0]["disk"]["source"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    fw.call(json!({"type": "TEARDOWN", "framework_id": {"value": fw.id}}))
        .await;
    // The release hangs in the driver's detach: kill Polly there.
    let client = polly.client();
    let c2 = polly.client();
    let release = tokio::spawn(async move { c2.release_reservations("rk-fw", None, true).await });
    let mut waited = 0;
    while client.operations().await.unwrap().is_empty() {
        waited += 1;
        assert!(waited < 1500, "the detach never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    polly.kill9();
    assert!(
        release.await.unwrap().is_err(),
        "no answer from a killed Polly"
    );

    let polly = Polly::start_with(&data, Some(&config("")), None);
    let client = polly.client();
    // Nothing was acknowledged: the reservation still stands, the intent was resolved.
    assert_eq!(client.reservations().await.unwrap().len(), 1);
    assert!(client.operations().await.unwrap().is_empty());
    let r = client
        .release_reservations("rk-fw", None, true)
        .await
        .unwrap();
    assert_eq!(r.released, std::slice::from_ref(&vol));
    let v = client.inspect(&vol, None).await.unwrap();
    assert!(v.attachments.is_empty());
    assert!(client.reservations().await.unwrap().is_empty());
    let all = client.volumes(true).await.unwrap();
    assert_eq!(all.volumes.len(), 1, "the volume stays");
    assert!(all.unmanaged.unwrap_or_default().is_empty(), "no orphan");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_instances_come_from_rexray_reports_attributes_or_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("")
        .replace(
            "agents = [\n",
            "agents = [\n  { id = \"agent-attr\", hostname = \"host-attr\", zone = \"zone-a\", attributes = { storage_host = \"i-attr\" } },\n  { id = \"agent-rr\", hostname = \"host-rr\", zone = \"zone-a\" },\n  { id = \"agent-none\", hostname = \"host-none\", zone = \"zone-a\" },\n",
        )
        .replace(
            "offer_timeout_secs = 600",
            "offer_timeout_secs = 600\ninstance_attribute = \"storage_host\"",
        );
    let polly = Polly::start_with(&dir.path().join("d"), Some(&cfg), None);
    // A REX-Ray client on host-rr reports its instance id (and hostname, in the vfs
    // metadata) through the libStorage façade.
    use base64::Engine;
    let meta = base64::engine::general_purpose::STANDARD.encode("\"host-rr\"");
    let r = reqwest::Client::new()
        .get(format!("{}/volumes/vfs-a?attachments", polly.libstorage))
        .header(
            "Libstorage-Instanceid",
            format!("vfs:vfs-a=i-rexray,,{meta}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let client = polly.client();
    let inst = client.instances().await.unwrap();
    assert!(
        inst.iter()
            .any(|i| i.instance_id == "i-rexray" && i.hostname.as_deref() == Some("host-rr")),
        "{inst:?}"
    );

    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    for (agent, op, want) in [
        ("agent-attr", "via-attribute", "i-attr"),
        ("agent-rr", "via-rexray", "i-rexray"),
        ("agent-a", "via-config", "i-a"),
    ] {
        let o = fw
            .offer_where(agent, |o| disk_of(o, "RAW", None).is_some())
            .await;
        fw.call(create_disk(&fw.id, &o, op, 8.0)).await;
        let st = fw.outcome(op, 30).await;
        assert_eq!(st["state"], "OPERATION_FINISHED", "{agent}: {st}");
        let vol = st["converted_resources"][0]["disk"]["source"]["id"]
            .as_str()
            .unwrap()
            .to_string();
        let v = client.inspect(&vol, None).await.unwrap();
        assert_eq!(v.attachments[0].instance_id, want, "{agent}");
    }
    let o = fw
        .offer_where("agent-none", |o| disk_of(o, "RAW", None).is_some())
        .await;
    fw.call(create_disk(&fw.id, &o, "via-nothing", 8.0)).await;
    let st = fw.outcome("via-nothing", 30).await;
    assert_eq!(st["state"], "OPERATION_FAILED", "{st}");
    let msg = st["message"].as_str().unwrap();
    assert!(
        msg.contains("agent-none") && msg.contains("storage_host"),
        "{msg}"
    );
    assert_eq!(
        client.volumes(false).await.unwrap().volumes.len(),
        3,
        "nothing created for the agent without an instance"
    );
}

/// SUBSCRIBE to Polly with `id`; the status and, on a 200, the first event.
async fn subscribe_raw(base: &str, id: &str) -> (u16, String, Option<Value>) {
    let body = json!({"type": "SUBSCRIBE", "framework_id": {"value": id},
        "subscribe": {"framework_info": {"user": "root", "name": "consumer", "id": {"value": id}}}});
    let mut resp = reqwest::Client::new()
        .post(format!("{base}/api/v1/scheduler"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return (status, resp.text().await.unwrap(), None);
    }
    let mut dec = Decoder::new(1 << 20);
    loop {
        match tokio::time::timeout(Duration::from_secs(10), resp.chunk())
            .await
            .expect("an event within 10 s")
        {
            Ok(Some(chunk)) => {
                dec.push(&chunk);
                if let Ok(Some(rec)) = dec.next_record() {
                    return (
                        200,
                        String::new(),
                        Some(serde_json::from_slice(&rec).unwrap()),
                    );
                }
            }
            _ => return (200, String::new(), None),
        }
    }
}

/// SUBSCRIBE a new framework to the fake master (JSON); its id and the open stream.
async fn master_framework(master: &str) -> (String, String, reqwest::Response) {
    let body = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info":
        {"user": "root", "name": "consumer", "failover_timeout": 3600.0}}});
    let mut resp = reqwest::Client::new()
        .post(format!("http://{master}/api/v1/scheduler"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let stream_id = resp.headers()["mesos-stream-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut dec = Decoder::new(1 << 20);
    loop {
        let chunk = resp.chunk().await.unwrap().expect("SUBSCRIBED");
        dec.push(&chunk);
        if let Ok(Some(rec)) = dec.next_record() {
            let ev: Value = serde_json::from_slice(&rec).unwrap();
            assert_eq!(ev["type"], "SUBSCRIBED");
            let id = ev["subscribed"]["framework_id"]["value"]
                .as_str()
                .unwrap()
                .to_string();
            return (id, stream_id, resp);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_ids_are_checked_with_the_masters_get_frameworks() {
    let cluster = fake_master::Cluster::start(1, 1.0, fake_master::default_agents()).await;
    let master = cluster.addr(0);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("").replace(
        "[mesos]\n",
        &format!(
            "[mesos]\nmasters = [\"{master}\"]\nbackoff_initial_ms = 50\nbackoff_max_ms = 200\n"
        ),
    );
    let polly = Polly::start_with(&dir.path().join("d"), Some(&cfg), None);

    // A framework the master knows subscribes with its real id.
    let (known, _sid, _stream) = master_framework(&master).await;
    let fw = subscribe(&polly.offers, MesosContentType::Json, Some(&known)).await;
    assert_eq!(fw.id, known);

    // An id the master has never heard of: refused as a master refuses a subscription
    // (200, one ERROR event, end of stream), and not registered.
    let (status, _, ev) = subscribe_raw(&polly.offers, "made-up-framework").await;
    assert_eq!(status, 200);
    let ev = ev.expect("an ERROR event");
    assert_eq!(ev["type"], "ERROR", "{ev}");
    let msg = ev["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("made-up-framework") && msg.contains("not known"),
        "{msg}"
    );
    let client = polly.client();
    assert!(!client
        .frameworks()
        .await
        .unwrap()
        .iter()
        .any(|f| f.id == "made-up-framework"));

    // A framework the master removed (TEARDOWN there): refused too.
    let (gone, gone_sid, _gone_stream) = master_framework(&master).await;
    let r = reqwest::Client::new()
        .post(format!("http://{master}/api/v1/scheduler"))
        .header("content-type", "application/json")
        .header("mesos-stream-id", gone_sid)
        .body(json!({"type": "TEARDOWN", "framework_id": {"value": gone}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let (status, _, ev) = subscribe_raw(&polly.offers, &gone).await;
    assert_eq!(status, 200);
    let ev = ev.unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert!(
        ev["error"]["message"].as_str().unwrap().contains("removed"),
        "{ev}"
    );

    // No master can answer: 503, which scheduler libraries retry.
    cluster.set_leader(None);
    let (status, body, _) = subscribe_raw(&polly.offers, &known).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains(&known) && body.contains("retry"), "{body}");
    cluster.set_leader(Some(0));
    let (status, _, ev) = subscribe_raw(&polly.offers, &known).await;
    assert_eq!(status, 200);
    assert_eq!(ev.unwrap()["type"], "SUBSCRIBED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_grow_volume_then_restart_grows_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    // The back-end grows, then the call never returns: Polly dies not knowing.
    let hang = config("[services.fault]\nhang = [\"grow\"]\nhang_phase = \"after\"");
    let polly = Polly::start_with(&data, Some(&hang), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, Some("gk-fw")).await;
    let offers = fw.offers_for(&["agent-a"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    fw.call(create_disk(&fw.id, &a, "gk-c", 64.0)).await;
    let st = fw.outcome("gk-c", 30).await;
    assert_eq!(st["state"], "OPERATION_FINISHED", "{st}");
    let vol = st["converted_resources"][0]["disk"]["source"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let both =
        |o: &Value| disk_of(o, "RAW", None).is_some() && disk_of(o, "MOUNT", Some(&vol)).is_some();
    let o = fw.offer_where("agent-a", both).await;
    let mount = disk_of(&o, "MOUNT", Some(&vol)).unwrap();
    let mut addition = disk_of(&o, "RAW", None).unwrap();
    addition["scalar"]["value"] = json!(32.0);
    fw.call(grow_volume(&fw.id, &o, "gk", &mount, &addition))
        .await;
    assert_eq!(fw.status("gk", 10).await["state"], "OPERATION_PENDING");
    let client = polly.client();
    let mut waited = 0;
    while client.operations().await.unwrap().is_empty() {
        waited += 1;
        assert!(waited < 1500, "the grow never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    polly.kill9();

    let polly = Polly::start_with(&data, Some(&config("")), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, Some("gk-fw")).await;
    let st = fw.outcome("gk", 30).await;
    assert_eq!(st["state"], "OPERATION_FINISHED", "{st}");
    assert_eq!(st["converted_resources"][0]["scalar"]["value"], 96.0);
    let client = polly.client();
    assert_eq!(
        client.inspect(&vol, None).await.unwrap().size_bytes,
        96 << 20,
        "grown once, not twice"
    );
    assert_eq!(client.reservations().await.unwrap()[0].bytes, 96 << 20);
    assert!(
        client.operations().await.unwrap().is_empty(),
        "no intent left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_volume_may_take_the_volume_and_the_share_from_two_offers_of_one_agent() {
    let dir = tempfile::tempdir().unwrap();
    // Slow driver calls (a second each, so even a loaded machine runs several allocation
    // rounds meanwhile): the share is offered again before the new volume exists, so the
    // volume comes later in an offer of its own on the same agent.
    let slow = config("[services.fault]\nlatency_ms = 1000");
    let polly = Polly::start_with(&dir.path().join("d"), Some(&slow), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-a"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    fw.call(create_disk(&fw.id, &a, "c2", 64.0)).await;
    let done = fw.outcome("c2", 30).await;
    assert_eq!(done["state"], "OPERATION_FINISHED", "{done}");
    let vol = done["converted_resources"][0]["disk"]["source"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (mut with_raw, mut with_mount) = (None, None);
    while with_raw.is_none() || with_mount.is_none() {
        let ev = fw.next("OFFERS", 20).await;
        for o in ev["offers"]["offers"].as_array().unwrap() {
            if o["agent_id"] != json!({"value": "agent-a"}) {
                continue;
            }
            if disk_of(o, "RAW", None).is_some() {
                with_raw = Some(o.clone());
            }
            if disk_of(o, "MOUNT", Some(&vol)).is_some() {
                with_mount = Some(o.clone());
            }
        }
    }
    let (r, m) = (with_raw.unwrap(), with_mount.unwrap());
    assert_ne!(
        r["id"], m["id"],
        "the share and the volume came in two offers"
    );
    let mut addition = disk_of(&r, "RAW", None).unwrap();
    addition["scalar"]["value"] = json!(16.0);
    let mut call = grow_volume(
        &fw.id,
        &m,
        "g2",
        &disk_of(&m, "MOUNT", Some(&vol)).unwrap(),
        &addition,
    );
    call["accept"]["offer_ids"] = json!([m["id"], r["id"]]);
    fw.call(call).await;
    let grown = fw.outcome("g2", 30).await;
    assert_eq!(grown["state"], "OPERATION_FINISHED", "{grown}");
    assert_eq!(grown["converted_resources"][0]["scalar"]["value"], 80.0);
    assert_eq!(
        polly.client().inspect(&vol, None).await.unwrap().size_bytes,
        80 << 20
    );
}

/// What a framework saw on agent-a around one operation.
#[derive(Default)]
struct Watched {
    /// Per offer on agent-a, in order: whether the operation's terminal status had arrived,
    /// the RAW MB of vfs-a's pool, and the ids of the volumes offered.
    offers: Vec<(bool, Option<u64>, Vec<String>)>,
    terminal: Value,
}

impl Watched {
    /// The offers made before the operation's terminal status.
    fn in_flight(&self) -> Vec<&(bool, Option<u64>, Vec<String>)> {
        self.offers.iter().filter(|(done, ..)| !done).collect()
    }
}

/// Read every event until `op`'s terminal status and for `after` more, declining every offer
/// at once (`refuse_seconds` 0, so each round offers again).
async fn watch(fw: &mut Framework, op: &str, after: Duration) -> Watched {
    let mut w = Watched::default();
    let mut until = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut done = false;
    loop {
        let Ok(ev) = tokio::time::timeout_at(until, fw.events.recv()).await else {
            assert!(done, "no terminal status of {op} within 30 s");
            return w;
        };
        let ev = ev.expect("stream open");
        if ev["type"] == "UPDATE_OPERATION_STATUS" {
            let s = &ev["update_operation_status"]["status"];
            if s["operation_id"]["value"] == op && s["state"] != "OPERATION_PENDING" {
                done = true;
                w.terminal = s.clone();
                until = tokio::time::Instant::now() + after;
            }
        }
        if ev["type"] != "OFFERS" {
            continue;
        }
        let offers = ev["offers"]["offers"].as_array().unwrap().clone();
        for o in offers
            .iter()
            .filter(|o| o["agent_id"]["value"] == "agent-a")
        {
            let res = o["resources"].as_array().unwrap();
            let raw = res
                .iter()
                .find(|r| {
                    r["disk"]["source"]["type"] == "RAW"
                        && r["provider_id"]["value"]
                            .as_str()
                            .unwrap()
                            .starts_with("vfs-a/")
                })
                .map(|r| r["scalar"]["value"].as_f64().unwrap() as u64);
            let vols = res
                .iter()
                .filter_map(|r| r["disk"]["source"]["id"].as_str().map(str::to_string))
                .collect();
            w.offers.push((done, raw, vols));
        }
        let ids: Vec<Value> = offers.iter().map(|o| o["id"].clone()).collect();
        fw.call(json!({"type": "DECLINE", "framework_id": {"value": fw.id},
            "decline": {"offer_ids": ids, "filters": {"refuse_seconds": 0}}}))
            .await;
    }
}

/// vfs-a answers every call 300 ms late, so allocation rounds (every 100 ms) run while a
/// CREATE_DISK creates its volume, maps it and reports it, and while capacity is polled.
fn slow_vfs_a() -> String {
    config("[services.fault]\nlatency_ms = 300")
}

/// A CREATE_DISK of 64 MB on agent-a's next offer, watched (see [`watch`]) until its
/// terminal status and for `after` more; it must finish. Returns what was watched and the
/// new volume's id.
async fn create_on_a(fw: &mut Framework, op: &str, after: Duration) -> (Watched, String) {
    let offers = fw.offers_for(&["agent-a"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    fw.call(create_disk(&fw.id, &a, op, 64.0)).await;
    let w = watch(fw, op, after).await;
    assert_eq!(w.terminal["state"], "OPERATION_FINISHED", "{}", w.terminal);
    let vol = w.terminal["converted_resources"][0]["disk"]["source"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    (w, vol)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_volume_is_offered_only_after_its_create_disk_finished() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(&dir.path().join("d"), Some(&slow_vfs_a()), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let (w, vol) = create_on_a(&mut fw, "op-1", Duration::from_secs(3)).await;
    let before = w.in_flight();
    assert!(
        before.len() >= 3,
        "rounds ran while the operation was in flight: {before:?}"
    );
    let early = before.iter().filter(|(_, _, v)| v.contains(&vol)).count();
    assert_eq!(
        early,
        0,
        "volume {vol} was in {early} of the {} offers made before OPERATION_FINISHED",
        before.len()
    );
    assert!(
        w.offers
            .iter()
            .any(|(done, _, v)| *done && v.contains(&vol)),
        "after OPERATION_FINISHED the framework is offered its volume"
    );
}

/// A volume a DESTROY_DISK acts on is not offered again while the operation runs: the ACCEPT
/// took it out of its offer, and no allocation round gives it back before the terminal
/// status (as a Mesos master does not re-offer what an operation in flight consumes), so a
/// framework is never offered a volume that is being destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_is_not_offered_while_a_destroy_disk_runs_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(&dir.path().join("d"), Some(&slow_vfs_a()), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let (_, vol) = create_on_a(&mut fw, "op-1", Duration::from_millis(500)).await;
    // The next offer of agent-a with the volume in it.
    let (offer, source) = loop {
        let offers = fw.offers_for(&["agent-a"]).await;
        let found = offers.iter().find_map(|o| {
            o["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["disk"]["source"]["id"] == vol.as_str())
                .map(|r| (o.clone(), r.clone()))
        });
        if let Some(f) = found {
            break f;
        }
        let ids: Vec<Value> = offers.iter().map(|o| o["id"].clone()).collect();
        fw.call(json!({"type": "DECLINE", "framework_id": {"value": fw.id},
            "decline": {"offer_ids": ids, "filters": {"refuse_seconds": 0}}}))
            .await;
    };
    fw.call(json!({"type": "ACCEPT", "framework_id": {"value": fw.id},
        "accept": {"offer_ids": [offer["id"].clone()],
            "operations": [{"type": "DESTROY_DISK", "id": {"value": "op-2"},
                "destroy_disk": {"source": source}}],
            "filters": {"refuse_seconds": 0}}}))
        .await;
    let w = watch(&mut fw, "op-2", Duration::from_millis(500)).await;
    assert_eq!(w.terminal["state"], "OPERATION_FINISHED", "{}", w.terminal);
    let during = w.in_flight();
    assert!(
        !during.is_empty(),
        "rounds ran while the operation was in flight: {during:?}"
    );
    let offered = during.iter().filter(|(_, _, v)| v.contains(&vol)).count();
    assert_eq!(
        offered,
        0,
        "volume {vol} was in {offered} of the {} offers made while it was being destroyed",
        during.len()
    );
    assert!(
        w.offers.iter().all(|(_, _, v)| !v.contains(&vol)),
        "a destroyed volume is not offered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offered_capacity_drops_once_and_exactly_by_a_create_disks_slice() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(&dir.path().join("d"), Some(&slow_vfs_a()), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-a"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    let before = a["resources"][0]["scalar"]["value"].as_f64().unwrap() as u64;
    assert!(before > 64, "{a}");
    fw.call(create_disk(&fw.id, &a, "op-1", 64.0)).await;
    // Past FINISHED long enough for several capacity polls to show the new volume.
    let w = watch(&mut fw, "op-1", Duration::from_secs(3)).await;
    assert_eq!(w.terminal["state"], "OPERATION_FINISHED", "{}", w.terminal);
    let seen: Vec<u64> = w.offers.iter().filter_map(|(_, raw, _)| *raw).collect();
    assert!(
        w.in_flight().len() >= 3 && w.offers.iter().filter(|(done, ..)| *done).count() >= 3,
        "offers came during and after the operation: {seen:?}"
    );
    // Pending, then the volume: each MB counted once, so every offer shows the same.
    let mut steps = seen.clone();
    steps.dedup();
    assert_eq!(
        steps,
        [before - 64],
        "offered before the accept: {before} MB; then, during and after the 64 MB CREATE_DISK \
         (repeats left out): {steps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volumes_made_through_the_admin_api_change_offers_before_the_next_poll() {
    let dir = tempfile::tempdir().unwrap();
    // One poll at start-up, then none during the test.
    let cfg = config("").replace("poll_interval_secs = 0.2", "poll_interval_secs = 3600");
    let polly = Polly::start_with(&dir.path().join("d"), Some(&cfg), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-a"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    let before = a["resources"][0]["scalar"]["value"].as_f64().unwrap() as u64;
    assert!(before > 1024, "{a}");

    let client = polly.client();
    let vol = client
        .create(&polly::volumes::CreateVolume {
            service: "vfs-a".into(),
            name: "made-by-an-admin".into(),
            size_bytes: 1 << 30,
            ..Default::default()
        })
        .await
        .unwrap();
    // The outstanding offer no longer fits: rescinded, and the next one is 1024 MB smaller.
    let gone = fw.next("RESCIND", 10).await;
    assert_eq!(gone["rescind"]["offer_id"], a["id"]);
    let agent_a = |e: &Value| {
        e["type"] == "OFFERS"
            && e["offers"]["offers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|o| o["agent_id"]["value"] == "agent-a")
    };
    let ev = fw.next_where("OFFERS on agent-a", 10, agent_a).await;
    let o = ev["offers"]["offers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["agent_id"]["value"] == "agent-a")
        .unwrap()
        .clone();
    assert_eq!(
        o["resources"][0]["scalar"]["value"].as_f64().unwrap() as u64,
        before - 1024,
        "{o}"
    );

    // Deleted: the space is offered again (after a DECLINE, as outstanding offers stay).
    client.delete(&vol.id, None).await.unwrap();
    fw.call(json!({"type": "DECLINE", "framework_id": {"value": fw.id},
        "decline": {"offer_ids": [o["id"].clone()], "filters": {"refuse_seconds": 0}}}))
        .await;
    let ev = fw.next_where("OFFERS on agent-a", 10, agent_a).await;
    let o = ev["offers"]["offers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["agent_id"]["value"] == "agent-a")
        .unwrap()
        .clone();
    assert_eq!(
        o["resources"][0]["scalar"]["value"].as_f64().unwrap() as u64,
        before,
        "{o}"
    );
}

/// An `ebs` service on the fake cloud and an agent known only by hostname: CREATE_DISK asks
/// the driver for the agent's EC2 instance (DescribeInstances by private DNS name) and
/// attaches the new volume there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebs_agent_known_by_hostname_gets_the_volume_on_its_ec2_instance() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = r#"
[[services]]
name = "ebs"
driver = "ebs"
[services.ebs]
zones = ["us-east-1a"]
poll_interval_ms = 10
[services.ebs.fake_cloud]
zones = ["us-east-1a"]
instances = [{ zone = "us-east-1a", hostname = "ip-10-0-0-7.ec2.internal" }]

[mesos]
agents = [
  { id = "agent-e", hostname = "ip-10-0-0-7.ec2.internal", region = "us-east-1", zone = "us-east-1a" },
]

[offers]
poll_interval_secs = 0.2
allocation_interval_ms = 100
offer_timeout_secs = 600
"#;
    let polly = Polly::start_with(&dir.path().join("d"), Some(cfg), None);
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-e"]).await;
    let o = offer_on(&offers, "agent-e").clone();
    let p = o["resources"][0]["provider_id"]["value"].as_str().unwrap();
    assert!(p.starts_with("ebs/gp3/us-east-1a"), "{p}");
    fw.call(create_disk(&fw.id, &o, "op-e", 1024.0)).await;
    let mut done = fw.status("op-e", 30).await;
    if done["state"] == "OPERATION_PENDING" {
        done = fw.status("op-e", 30).await;
    }
    assert_eq!(done["state"], "OPERATION_FINISHED", "{done}");
    let vol_id = done["converted_resources"][0]["disk"]["source"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let vol = polly.client().inspect(&vol_id, None).await.unwrap();
    assert_eq!(vol.service, "ebs");
    assert_eq!(vol.attachments.len(), 1);
    let inst = &vol.attachments[0].instance_id;
    assert!(inst.starts_with("i-"), "{inst}");
}

/// An acknowledged terminal status is forgotten after `operation_retention_secs`: its record
/// leaves the store and RECONCILE_OPERATIONS answers OPERATION_UNKNOWN, as a master does.
/// An unacknowledged one of the same age stays, and is still answered from its record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_operation_records_are_removed_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("").replace(
        "offer_timeout_secs = 600",
        "offer_timeout_secs = 600\noperation_retention_secs = 1",
    );
    let polly = Polly::start_with(&dir.path().join("d"), Some(&cfg), None);
    let client = polly.client();
    let mut fw = subscribe(&polly.offers, MesosContentType::Json, None).await;
    let offers = fw.offers_for(&["agent-a"]).await;
    let a = offer_on(&offers, "agent-a").clone();
    fw.call(create_two(&fw.id, &a, ["op-1", "op-2"], 64.0))
        .await;
    let mut first = Value::Null;
    for op in ["op-1", "op-2"] {
        let mut status = fw.status(op, 30).await;
        while status["state"] == "OPERATION_PENDING" {
            status = fw.status(op, 30).await;
        }
        assert_eq!(status["state"], "OPERATION_FINISHED", "{status}");
        if op == "op-1" {
            first = status;
        }
    }
    fw.call(
        json!({"type": "ACKNOWLEDGE_OPERATION_STATUS", "framework_id": {"value": fw.id},
        "acknowledge_operation_status": first}),
    )
    .await;
    let ids = |ops: &[polly::store::OperationRecord]| -> Vec<String> {
        ops.iter().map(|o| o.operation_id.clone()).collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ops = client.dump().await.unwrap().operations;
        if !ids(&ops).contains(&"op-1".to_string()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "op-1's acknowledged record still kept: {ops:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Several more passes: the unacknowledged record, as old, is never removed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ops = client.dump().await.unwrap().operations;
    assert_eq!(ids(&ops), ["op-2"]);
    assert!(!ops[0].acknowledged);

    fw.call(
        json!({"type": "RECONCILE_OPERATIONS", "framework_id": {"value": fw.id},
        "reconcile_operations": {"operations": [{"operation_id": {"value": "op-1"}},
            {"operation_id": {"value": "op-2"}}]}}),
    )
    .await;
    assert_eq!(fw.status("op-1", 10).await["state"], "OPERATION_UNKNOWN");
    assert_eq!(fw.status("op-2", 10).await["state"], "OPERATION_FINISHED");
    // The volumes the operations made are untouched.
    assert_eq!(client.volumes(false).await.unwrap().volumes.len(), 2);
}
