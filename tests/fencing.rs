//! Fencing end to end with the real `polly serve`, the fake Mesos master and a framework on
//! Polly's storage-offer endpoint: an agent lost with an attached volume keeps the attachment
//! and the volume is not offered; `polly agent fence` force-detaches it exactly once (counted
//! in the fault driver's call log) and the volume is offered again; auto-release fences on
//! its own only when configured; a fence interrupted by SIGKILL is resumed without repeating
//! the detach; bad fence requests change nothing.

mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::fakes::master::{default_agents, Cluster};
use harness::Polly;
use serde_json::{json, Value};

const FRAMEWORK: &str = "fw-fence";

fn config(master: Option<&str>, call_log: &Path, extra: &str) -> String {
    let mesos = match master {
        Some(m) => format!(
            "[mesos]\nmasters = [\"{m}\"]\nbackoff_initial_ms = 50\nbackoff_max_ms = 400\n\
             request_timeout_secs = 5.0\n"
        ),
        None => String::new(),
    };
    format!(
        r#"
[[services]]
name = "vfs"
driver = "vfs"
zone = "eu-1a"
quota_bytes = 10737418240
[services.fault]
call_log = "{log}"
{extra}

{mesos}
[offers]
poll_interval_secs = 0.2
allocation_interval_ms = 100
offer_timeout_secs = 1.0
[offers.instances]
agent-S0 = "i-0"
agent-S2 = "i-2"

[reconciler]
interval_secs = 0.2
"#,
        log = call_log.display()
    )
}

async fn start(data: PathBuf, cfg: String) -> Polly {
    tokio::task::spawn_blocking(move || Polly::start_with(&data, Some(&cfg), None))
        .await
        .unwrap()
}

fn cli(p: &Polly, args: &[&str]) -> (i32, String, String) {
    tokio::task::block_in_place(|| p.cli(args))
}

fn cli_json(p: &Polly, args: &[&str]) -> Value {
    tokio::task::block_in_place(|| p.cli_json(args))
}

/// Lines of the fault driver's call log naming `method`.
fn calls(log: &Path, method: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.split(' ').next() == Some(method))
        .map(String::from)
        .collect()
}

/// Polls `f` every 20 ms for up to 30 s.
async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..1500 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Subscribes a framework to the storage-offer endpoint and keeps its stream open.
async fn subscribe(offers: &str) -> tokio::task::JoinHandle<()> {
    let body = json!({
        "type": "SUBSCRIBE",
        "framework_id": {"value": FRAMEWORK},
        "subscribe": {"framework_info": {"user": "root", "name": "fence-test",
                                         "id": {"value": FRAMEWORK}}}
    });
    let resp = reqwest::Client::new()
        .post(format!("{offers}/api/v1/scheduler"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    tokio::spawn(async move {
        let mut resp = resp;
        while let Ok(Some(_)) = resp.chunk().await {}
    })
}

/// Outstanding offers (admin view) and the highest offer number among them.
async fn offers(p: &Polly) -> (Vec<Value>, u64) {
    let v: Vec<Value> = p
        .client()
        .offers()
        .await
        .unwrap()
        .into_iter()
        .map(|o| serde_json::to_value(o).unwrap())
        .collect();
    let max = v
        .iter()
        .filter_map(|o| o["id"].as_str()?.rsplit("-O").next()?.parse().ok())
        .max()
        .unwrap_or(0);
    (v, max)
}

fn offered_on(offers: &[Value], volume: &str) -> Vec<String> {
    offers
        .iter()
        .filter(|o| o["disks"].to_string().contains(volume))
        .map(|o| o["agent_id"].as_str().unwrap().to_string())
        .collect()
}

/// Creates a volume restricted to the test framework (so it is offered) attached to `inst`.
async fn attached_volume(p: &Polly, name: &str, inst: &str) -> (String, String) {
    let c = p.client();
    let v = c
        .create(&polly::volumes::CreateVolume {
            service: "vfs".into(),
            name: name.into(),
            size_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    let r = polly::volumes::Restriction {
        frameworks: [FRAMEWORK.to_string()].into(),
        ..Default::default()
    };
    c.restrict(&v.id, None, &r).await.unwrap();
    c.attach(&v.id, None, inst, None).await.unwrap();
    (v.id, v.driver_id.unwrap())
}

async fn attachments(p: &Polly, id: &str) -> Vec<String> {
    p.client()
        .inspect(id, None)
        .await
        .unwrap()
        .attachments
        .into_iter()
        .map(|a| a.instance_id)
        .collect()
}

/// The fencing state `polly agent ls --json` shows for a node (`None`: active or unknown).
fn fence_state(p: &Polly, id: &str) -> Option<String> {
    let a = cli_json(p, &["agent", "ls"]);
    a.as_array()
        .unwrap()
        .iter()
        .find(|x| x["id"] == id)
        .and_then(|x| x["fence"].as_str().map(String::from))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_agent_keeps_its_volume_until_fenced_then_it_is_detached_once_and_offered_again() {
    let cluster = Cluster::start(1, 0.5, default_agents()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let p = start(
        dir.path().join("data"),
        config(Some(&cluster.addr(0)), &log, "") + "[fencing]\ncheck_interval_secs = 0.1\n",
    )
    .await;
    let (vol, driver_id) = attached_volume(&p, "db", "i-0").await;
    cluster.register_framework(FRAMEWORK, "*");
    let _fw = subscribe(&p.offers).await;

    // Healthy: the attached volume is offered on the agent that holds it, and only there.
    let c = p.client();
    wait_for("the volume offered on agent-S0", || async {
        offered_on(&offers(&p).await.0, &vol) == vec!["agent-S0".to_string()]
    })
    .await;

    // The master loses agent-S0.
    cluster.remove_agent("agent-S0").await;
    wait_for("agent-S0 recorded lost", || async {
        fence_state(&p, "agent-S0").as_deref() == Some("lost")
    })
    .await;
    let (_, at_loss) = offers(&p).await;
    let runs_at_loss = c.reconciler().await.unwrap().unwrap().runs;
    let record_at_loss = c.dump().await.unwrap().nodes;
    // Let offer rounds (new offers beyond those outstanding at the loss) and reconciler
    // passes run, then check: still attached, never offered, nothing detached.
    wait_for(
        "new offers and reconciler passes after the loss",
        || async {
            let (o, max) = offers(&p).await;
            let runs = c.reconciler().await.unwrap().unwrap().runs;
            max > at_loss + 2 && runs >= runs_at_loss + 2 && !o.is_empty()
        },
    )
    .await;
    for _ in 0..10 {
        let (o, _) = offers(&p).await;
        assert!(
            offered_on(&o, &vol).is_empty(),
            "held volume offered: {o:?}"
        );
        assert!(o.iter().all(|x| x["agent_id"] != "agent-S0"), "{o:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(attachments(&p, &vol).await, vec!["i-0"]);
    assert!(calls(&log, "force_detach").is_empty() && calls(&log, "detach").is_empty());
    // The loss is recorded once and stays (no flapping between lost and active).
    assert_eq!(c.dump().await.unwrap().nodes, record_at_loss);
    let (code, out, _) = cli(&p, &["agent", "ls"]);
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.contains("agent-S0")).unwrap();
    assert!(line.contains("lost"), "{out}");

    // Fencing needs the operator's confirmation; without it nothing changes.
    let (code, _, err) = cli(&p, &["agent", "fence", "agent-S0"]);
    assert_ne!(code, 0);
    assert!(err.contains("--yes") && err.contains("agent-S0"), "{err}");
    assert_eq!(attachments(&p, &vol).await, vec!["i-0"]);

    let r = cli_json(&p, &["agent", "fence", "agent-S0", "--yes"]);
    assert_eq!(r["state"], "fenced");
    assert_eq!(r["fenced_by"], "operator");
    assert_eq!(r["released"], json!([vol]));
    assert!(attachments(&p, &vol).await.is_empty());
    assert_eq!(
        calls(&log, "force_detach"),
        vec![format!("force_detach {driver_id} ok")]
    );
    // Fencing again changes nothing and detaches nothing.
    let again = cli_json(&p, &["agent", "fence", "agent-S0", "--yes"]);
    assert_eq!(again["state"], "fenced");
    assert_eq!(calls(&log, "force_detach").len(), 1);
    assert_eq!(fence_state(&p, "agent-S0").as_deref(), Some("fenced"));

    // Offered again, on the other agent of its zone.
    wait_for("the volume offered again on agent-S2", || async {
        offered_on(&offers(&p).await.0, &vol) == vec!["agent-S2".to_string()]
    })
    .await;
    let metrics = reqwest::get(format!("{}/metrics", p.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("polly_fence_released_volumes_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("polly_nodes{state=\"fenced\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_release_fences_a_lost_agent_after_the_configured_time() {
    let cluster = Cluster::start(1, 0.5, default_agents()).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let p = start(
        dir.path().join("data"),
        config(Some(&cluster.addr(0)), &log, "")
            + "[fencing]\ncheck_interval_secs = 0.1\nauto_release_after_secs = 1.0\n",
    )
    .await;
    let (vol, driver_id) = attached_volume(&p, "db", "i-0").await;
    // Wait until Polly knows agent-S0 from an offer, then lose it.
    wait_for("agent-S0 known", || async {
        let a = p.client().agents().await.unwrap();
        a.iter().any(|x| x.id == "agent-S0")
    })
    .await;
    cluster.remove_agent("agent-S0").await;
    wait_for("agent-S0 fenced by auto-release", || async {
        fence_state(&p, "agent-S0").as_deref() == Some("fenced")
    })
    .await;
    assert!(attachments(&p, &vol).await.is_empty());
    assert_eq!(
        calls(&log, "force_detach"),
        vec![format!("force_detach {driver_id} ok")]
    );
    let dump = cli_json(&p, &["store", "dump"]);
    let node = &dump["nodes"][0];
    assert_eq!(node["id"], "agent-S0");
    assert_eq!(node["fenced_by"], "auto_release");
    let lost_at = node["lost_at"].as_u64().unwrap();
    let fenced_at = node["fenced_at"].as_u64().unwrap();
    assert!(fenced_at > lost_at, "{node}");
}

async fn sigkill_during_fence(phase: &str) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("calls.log");
    // Embedded (no master): the node is a host known from an attach, fenced by instance id.
    let p = start(data.clone(), config(None, &log, "")).await;
    let (vol, driver_id) = attached_volume(&p, "db", "i-7").await;
    drop(p);
    let hang = format!("hang = [\"force_detach\"]\nhang_phase = \"{phase}\"");
    let p = start(data.clone(), config(None, &log, &hang)).await;
    let c = p.client();
    let fence = tokio::spawn(async move { c.fence("i-7").await });
    let c = p.client();
    wait_for("the fence and its detach intent to be durable", || async {
        let d = c.dump().await.unwrap();
        let fencing = d
            .nodes
            .iter()
            .any(|n| n.state == polly::store::NodeState::Fencing);
        let reached = phase == "before" || !calls(&log, "force_detach").is_empty();
        fencing && d.intents.len() == 1 && reached
    })
    .await;
    tokio::task::block_in_place(|| p.kill9());
    assert!(fence.await.unwrap().is_err(), "the client saw no answer");

    // Restart without the hang: the fence is resumed and finished by the worker.
    let p = start(
        data.clone(),
        config(None, &log, "") + "[fencing]\ncheck_interval_secs = 0.1\n",
    )
    .await;
    wait_for("the fence to finish after the restart", || async {
        fence_state(&p, "i-7").as_deref() == Some("fenced")
    })
    .await;
    assert!(attachments(&p, &vol).await.is_empty());
    assert_eq!(
        calls(&log, "force_detach"),
        vec![format!("force_detach {driver_id} ok")],
        "detached exactly once"
    );
    let c = p.client();
    assert!(c.operations().await.unwrap().is_empty());
    let d = c.dump().await.unwrap();
    assert_eq!(d.nodes.len(), 1);
    assert_eq!(d.nodes[0].released, vec![vol.clone()]);
    assert!(d.nodes[0].pending.is_empty());
    // The volume can be attached elsewhere now.
    let v = c.attach(&vol, None, "i-8", None).await.unwrap();
    assert_eq!(v.attachments.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_the_fence_detach_hangs_after_the_backend_detached() {
    sigkill_during_fence("after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_the_fence_detach_hangs_before_the_backend_detached() {
    sigkill_during_fence("before").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_instance_is_lost_and_comes_back_without_losing_its_attachment() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let p = start(
        dir.path().join("data"),
        config(None, &log, "")
            + "[fencing]\ncheck_interval_secs = 0.1\ninstance_lost_after_secs = 1.0\n",
    )
    .await;
    let (vol, _) = attached_volume(&p, "db", "i-5").await;
    wait_for("i-5 lost after a second of silence", || async {
        fence_state(&p, "i-5").as_deref() == Some("lost")
    })
    .await;
    assert_eq!(attachments(&p, &vol).await, vec!["i-5"]);
    assert!(calls(&log, "force_detach").is_empty());
    // It reports again (an attach it already holds): it is back, still holding the volume.
    p.client().attach(&vol, None, "i-5", None).await.unwrap();
    wait_for("i-5 back", || async { fence_state(&p, "i-5").is_none() }).await;
    assert_eq!(attachments(&p, &vol).await, vec!["i-5"]);
    assert!(calls(&log, "force_detach").is_empty() && calls(&log, "detach").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_an_unknown_node_is_not_found_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let p = start(dir.path().join("data"), config(None, &log, "")).await;
    let (vol, _) = attached_volume(&p, "db", "i-1").await;
    let before = cli_json(&p, &["store", "dump"]);
    let (code, _, err) = cli(&p, &["agent", "fence", "no-such-node", "--yes"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("no-such-node") && err.contains("not found"),
        "{err}"
    );
    // The admin API: 404 in its own error format; a malformed body is a 400.
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{}/admin/agents/no-such-node/fence", p.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["error"], "not_found");
    assert!(b["message"].as_str().unwrap().contains("no-such-node"));
    let r = http
        .post(format!("{}/admin/agents/i-1/fence", p.admin))
        .body("{\"force\": 1}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "bad_request");
    assert_eq!(cli_json(&p, &["store", "dump"]), before);
    assert_eq!(attachments(&p, &vol).await, vec!["i-1"]);
    assert!(calls(&log, "force_detach").is_empty());
}
