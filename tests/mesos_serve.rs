//! The real `polly serve` binary with a `[mesos]` section against the fake master:
//! SIGKILL and restart re-subscribe with the persisted framework id; a lost agent shows in
//! `polly agent ls`; the client's state is in `/admin/mesos` and `/metrics`. Without a
//! master Polly runs embedded, with agents from static config only.

mod harness;

use std::time::Duration;

use harness::fakes::master::{default_agents, Cluster};
use harness::Polly;
use polly::mesos::client::ConnState;
use serde_json::json;

fn config(master: &str) -> String {
    format!(
        "[mesos]\nmasters = [\"{master}\"]\nbackoff_initial_ms = 50\nbackoff_max_ms = 400\n\
         quiet_secs = 0.3\nrequest_timeout_secs = 5.0\nrefuse_seconds = 60.0\n"
    )
}

async fn start(data: std::path::PathBuf, cfg: String) -> Polly {
    tokio::task::spawn_blocking(move || Polly::start_with(&data, Some(&cfg), None))
        .await
        .unwrap()
}

async fn wait_subscribed(p: &Polly) -> String {
    let c = p.client();
    for _ in 0..1000 {
        if let Ok(s) = c.mesos().await {
            if s.state == ConnState::Subscribed {
                return s.framework_id.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("polly did not subscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restart_resubscribes_and_lost_agents_show_in_the_cli() {
    let cluster = Cluster::start(1, 0.1, default_agents()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = start(data.clone(), config(&cluster.addr(0))).await;
    let fid = wait_subscribed(&p).await;
    assert_eq!(cluster.subscribes()[0].framework_id, None);
    tokio::task::block_in_place(|| p.kill9());

    let p = start(data.clone(), config(&cluster.addr(0))).await;
    assert_eq!(wait_subscribed(&p).await, fid);
    let subs = cluster.subscribed_ids();
    assert_eq!(subs, vec![fid.clone(), fid.clone()]);
    let last = cluster.subscribes().pop().unwrap();
    assert_eq!(last.framework_id.as_deref(), Some(fid.as_str()));
    assert_eq!(last.framework_info["id"]["value"], fid.as_str());

    cluster
        .push_event(
            &fid,
            json!({"type":"FAILURE","failure":{"agent_id":{"value":"agent-S3"}}}),
        )
        .await;
    let c = p.client();
    for i in 0.. {
        let agents = c.agents().await.unwrap();
        if agents.len() == 4 && agents.iter().any(|a| a.id == "agent-S3" && a.lost) {
            break;
        }
        assert!(i < 1000, "agent-S3 never reported lost: {agents:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, out, err) = tokio::task::block_in_place(|| p.cli(&["agent", "ls"]));
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.contains("agent-S3")).unwrap();
    assert!(
        line.contains("lost") && line.contains("eu-1b") && line.contains("node-3.example"),
        "{out}"
    );
    let line = out.lines().find(|l| l.contains("agent-S0")).unwrap();
    assert!(line.contains("active") && line.contains("eu-1a"), "{out}");
    let j = tokio::task::block_in_place(|| p.cli_json(&["agent", "ls"]));
    assert_eq!(j.as_array().unwrap().len(), 4);

    let metrics = reqwest::get(format!("{}/metrics", p.admin))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        "polly_mesos_connected 1",
        "polly_mesos_agents 4",
        "polly_mesos_agents_lost 1",
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
    let st = c.mesos().await.unwrap();
    assert_eq!(st.masters, vec![cluster.addr(0)]);
    assert_eq!(st.agents_lost, 1);
    assert!(st.last_heartbeat.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_master_polly_is_embedded_with_static_agents() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = "[[mesos.agents]]\nid = \"s1\"\nhostname = \"h1\"\nzone = \"z1\"\n".to_string();
    let p = start(dir.path().join("data"), cfg).await;
    let c = p.client();
    let st = c.mesos().await.unwrap();
    assert_eq!(st.state, ConnState::Disabled);
    assert_eq!(st.framework_id, None);
    let agents = c.agents().await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(
        (agents[0].id.as_str(), agents[0].zone.as_deref()),
        ("s1", Some("z1"))
    );
}
