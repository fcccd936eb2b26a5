//! Framework authentication on the storage-offer endpoint: HTTP basic credentials per
//! principal (`[[offers.credentials]]`) on every scheduler call, and a framework id bound to
//! the principal that registered it. Another principal's SUBSCRIBE with a victim's framework
//! id is refused with 403; the victim keeps its stream and its volumes. A missing or wrong
//! secret is 401; a framework principal that is not the authenticated one is 400; a start
//! beyond loopback without credentials is refused unless the operator leaves it open.

mod harness;

use std::time::Duration;

use harness::fakes::framework::{create_disk, offer_on, try_subscribe_with};
use harness::Polly;
use polly::mesos::client::MesosContentType;
use serde_json::{json, Value};

const CREDENTIALS: &str = r#"
[[offers.credentials]]
principal = "spark"
secret = "spark-secret"

[[offers.credentials]]
principal = "intruder"
secret = "intruder-secret"
"#;

fn config() -> String {
    format!(
        r#"
[[services]]
name = "vfs"
driver = "vfs"
quota_bytes = 10737418240

[mesos]
agents = [{{ id = "agent-a", hostname = "host-a" }}]

[offers]
poll_interval_secs = 0.2
allocation_interval_ms = 100
offer_timeout_secs = 600
heartbeat_interval_secs = 1
[offers.instances]
agent-a = "i-a"
{CREDENTIALS}
"#
    )
}

/// A raw SUBSCRIBE as JSON with these basic credentials (none: no header): status and body
/// (a 200 stream is dropped at once).
async fn subscribe_raw(base: &str, creds: Option<(&str, &str)>, info: Value) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/api/v1/scheduler"))
        .header("content-type", "application/json")
        .header("accept", "application/json");
    if let Some((u, p)) = creds {
        req = req.basic_auth(u, Some(p));
    }
    let mut body = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": info}});
    if let Some(id) = info_id(&body) {
        body["framework_id"] = json!({ "value": id });
    }
    let r = req.body(body.to_string()).send().await.unwrap();
    let status = r.status().as_u16();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    if status == 200 {
        return (status, String::new());
    }
    let text = r.text().await.unwrap();
    if status == 401 {
        assert_eq!(
            www.as_deref(),
            Some("Basic realm=\"mesos-master-scheduler\""),
            "{text}"
        );
    }
    (status, text)
}

fn info_id(body: &Value) -> Option<String> {
    body["subscribe"]["framework_info"]["id"]["value"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principal_cannot_take_a_framework_over() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(&dir.path().join("d"), Some(&config()), None);
    let base = polly.offers.clone();

    // Without credentials, or with wrong ones: 401, nothing subscribed.
    let anon = json!({"user": "root", "name": "anon"});
    assert_eq!(subscribe_raw(&base, None, anon.clone()).await.0, 401);
    assert_eq!(
        subscribe_raw(&base, Some(("spark", "wrong")), anon.clone())
            .await
            .0,
        401
    );
    assert_eq!(
        subscribe_raw(&base, Some(("nobody", "spark-secret")), anon.clone())
            .await
            .0,
        401
    );
    // A FrameworkInfo.principal that is not the authenticated one: 400.
    let (status, text) = subscribe_raw(
        &base,
        Some(("intruder", "intruder-secret")),
        json!({"user": "root", "name": "x", "principal": "spark"}),
    )
    .await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("does not match"), "{text}");

    // The victim subscribes and creates a volume.
    let mut victim = try_subscribe_with(
        &base,
        MesosContentType::Json,
        None,
        None,
        Some(("spark", "spark-secret")),
    )
    .await
    .unwrap();
    let offers = victim.offers_for(&["agent-a"]).await;
    let o = offer_on(&offers, "agent-a").clone();
    victim.call(create_disk(&victim.id, &o, "op-1", 64.0)).await;
    let done = loop {
        let s = victim.status("op-1", 30).await;
        if s["state"] != "OPERATION_PENDING" {
            break s;
        }
    };
    assert_eq!(done["state"], "OPERATION_FINISHED", "{done}");
    let before = polly.client().dump().await.unwrap();
    assert_eq!(before.reservations.len(), 1);
    // Framework ids are not shown to façade clients (they do not own the framework); the
    // operator still sees them.
    let facade = reqwest::get(format!("{}/volumes", polly.libstorage))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(facade.contains(&before.volumes[0].id), "{facade}");
    assert!(
        !facade.contains(&victim.id),
        "the façade shows the framework id: {facade}"
    );
    assert_eq!(
        before.volumes[0].labels.get("mesos.framework_id"),
        Some(&victim.id)
    );

    // The intruder, properly authenticated as itself, SUBSCRIBEs with the victim's id: 403,
    // over JSON and protobuf.
    let takeover = json!({"user": "root", "name": "x", "id": {"value": victim.id}});
    let (status, text) = subscribe_raw(
        &base,
        Some(("intruder", "intruder-secret")),
        takeover.clone(),
    )
    .await;
    assert_eq!(status, 403, "{text}");
    let err = try_subscribe_with(
        &base,
        MesosContentType::Protobuf,
        Some(&victim.id),
        None,
        Some(("intruder", "intruder-secret")),
    )
    .await
    .err()
    .expect("the protobuf takeover was accepted");
    assert!(err.contains("403"), "{err}");
    // Its calls on the victim's id are refused too (it never got the stream id, and a
    // stream id guessed or leaked does not help): 403 before anything is read.
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/scheduler"))
        .basic_auth("intruder", Some("intruder-secret"))
        .header("content-type", "application/json")
        .header("mesos-stream-id", &victim.stream_id)
        .body(json!({"type": "TEARDOWN", "framework_id": {"value": victim.id}}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "{}", r.text().await.unwrap());

    // The victim's stream is still open (heartbeats keep coming), its calls still work, and
    // nothing it holds changed.
    victim
        .next_where("HEARTBEAT", 20, |e| e["type"] == "HEARTBEAT")
        .await;
    victim
        .call(json!({"type": "REVIVE", "framework_id": {"value": victim.id}}))
        .await;
    let after = polly.client().dump().await.unwrap();
    assert_eq!(after.reservations, before.reservations);
    assert_eq!(after.volumes, before.volumes);
    let rows = polly.client().frameworks().await.unwrap();
    let row = rows.iter().find(|f| f.id == victim.id).unwrap();
    assert!(row.connected, "the victim lost its stream: {rows:?}");

    // The binding survives a restart: after it the intruder still cannot take the id, and
    // the victim can re-subscribe with it.
    drop(victim);
    let polly = polly.restart(&config());
    let base = polly.offers.clone();
    let (status, text) =
        subscribe_raw(&base, Some(("intruder", "intruder-secret")), takeover).await;
    assert_eq!(status, 403, "after a restart: {text}");
    let id = before.reservations[0].framework_id.clone();
    let again = try_subscribe_with(
        &base,
        MesosContentType::Json,
        Some(&id),
        None,
        Some(("spark", "spark-secret")),
    )
    .await
    .unwrap();
    assert_eq!(again.id, id);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        polly.client().dump().await.unwrap().reservations,
        before.reservations
    );
}

#[test]
fn beyond_loopback_frameworks_must_authenticate_unless_the_operator_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("polly.toml");
    std::fs::write(&cfg, "[offers]\nlisten = \"0.0.0.0:0\"\n").unwrap();
    let out = std::process::Command::new(harness::BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("d"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("offers.credentials") && err.contains("authentication = \"off\""),
        "{err}"
    );
    assert!(!dir.path().join("d").exists(), "it started: {err}");
}
