//! The Mesos scheduler client against the fake master (tests/harness/fakes/master.rs): subscription
//! over JSON and protobuf, agents and zones, DECLINE filters and SUPPRESS, leader change,
//! 503, dropped streams, missed heartbeats, garbage from the master, refusals, removed
//! frameworks, acknowledgements, REVIVE and the operator API. Also checks the fake itself
//! against the reference's status-code rules.

mod harness;

use std::time::Duration;

use harness::fakes::master::{self, default_agents, Cluster, FakeAgent};
use polly::mesos::client::{AgentSource, Client, ConnState, Handle, FRAMEWORK_ID_KEY};
use polly::mesos::client::{MesosConfig, MesosContentType};
use polly::store::Store;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const HEARTBEAT: f64 = 0.1;

fn config(cluster: &Cluster, n: usize, ct: MesosContentType) -> MesosConfig {
    MesosConfig {
        masters: (0..n).map(|i| cluster.addr(i)).collect(),
        content_type: ct,
        refuse_seconds: 123.0,
        quiet_secs: 0.3,
        revive_interval_secs: 3600.0,
        backoff_initial_ms: 50,
        backoff_max_ms: 400,
        request_timeout_secs: 5.0,
        failover_timeout_secs: 3600.0,
        ..Default::default()
    }
}

struct Running {
    handle: Handle,
    store: Store,
    token: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(cfg: MesosConfig) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let handle = Handle::new(&cfg, Default::default());
        let client = Client::new(cfg, store.clone(), handle.clone()).unwrap();
        let token = CancellationToken::new();
        let task = tokio::spawn(client.run(token.clone()));
        Running {
            handle,
            store,
            token,
            task,
            _dir: dir,
        }
    }

    fn framework_id(&self) -> Option<String> {
        self.handle.status().framework_id
    }

    async fn stop(self) {
        self.token.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("client stops on cancel")
            .unwrap();
    }
}

/// Poll `f` every 20 ms for up to 20 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn subscribe_flow(ct: MesosContentType, wire: &str) {
    let cluster = Cluster::start(1, HEARTBEAT, default_agents()).await;
    let p = Running::start(config(&cluster, 1, ct));
    eventually("subscribed", || {
        p.handle.status().state == ConnState::Subscribed
    })
    .await;
    let fid = p.framework_id().unwrap();
    assert_eq!(cluster.subscribed_ids(), vec![fid.clone()]);
    let sub = &cluster.subscribes()[0];
    assert_eq!(sub.content_type, wire);
    assert_eq!(sub.framework_id, None, "a new framework sends no id");
    assert_eq!(sub.framework_info["name"], "polly");
    assert_eq!(sub.framework_info["failover_timeout"], 3600.0);
    assert_eq!(
        p.store.meta(FRAMEWORK_ID_KEY).unwrap().as_deref(),
        Some(fid.as_str())
    );

    eventually("four agents", || p.handle.agents().len() == 4).await;
    for (i, a) in p.handle.agents().iter().enumerate() {
        assert_eq!(a.id, format!("agent-S{i}"));
        assert_eq!(a.hostname, format!("node-{i}.example"));
        assert_eq!(a.region.as_deref(), Some("eu-1"));
        let zone = if i % 2 == 0 { "eu-1a" } else { "eu-1b" };
        assert_eq!(a.zone.as_deref(), Some(zone));
        assert_eq!(a.attributes["rack"], format!("r{}", 10 + i));
        assert_eq!(a.source, AgentSource::Offer);
        assert!(!a.lost);
    }

    eventually("DECLINE and SUPPRESS", || {
        !cluster.calls_of("DECLINE").is_empty() && !cluster.calls_of("SUPPRESS").is_empty()
    })
    .await;
    let declines = cluster.calls_of("DECLINE");
    let d = &declines[0];
    assert_eq!(d.content_type, wire);
    assert_eq!(d.body["framework_id"]["value"], fid.as_str());
    assert_eq!(d.body["decline"]["filters"]["refuse_seconds"], 123.0);
    assert_eq!(d.body["decline"]["offer_ids"].as_array().unwrap().len(), 4);
    // Calls carry the stream id and travel on connections other than the stream's.
    let stream_peer = cluster.stream_peer(&fid).unwrap();
    for c in cluster.calls() {
        assert_eq!(
            Some(c.stream_id.as_str()),
            p.handle.status().stream_id.as_deref()
        );
        assert_ne!(
            c.peer, stream_peer,
            "{} sent on the subscription connection",
            c.kind
        );
    }
    eventually("suppressed in status", || p.handle.status().suppressed).await;
    assert_eq!(p.handle.status().offers_declined, 4);
    assert!(cluster.rejected().is_empty(), "{:?}", cluster.rejected());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_over_json_learns_agents_declines_and_suppresses() {
    subscribe_flow(MesosContentType::Json, master::JSON).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribes_over_protobuf_learns_agents_declines_and_suppresses() {
    subscribe_flow(MesosContentType::Protobuf, master::PROTOBUF).await;
}

/// Wait for one more successful subscription than `before`, and check it kept `fid`.
async fn resubscribed(cluster: &Cluster, p: &Running, before: usize, fid: &str) {
    eventually("re-subscription", || {
        cluster.subscribed_ids().len() > before && p.handle.status().state == ConnState::Subscribed
    })
    .await;
    let last = cluster
        .subscribes()
        .into_iter()
        .rev()
        .find(|s| s.outcome.is_ok())
        .unwrap();
    assert_eq!(last.framework_id.as_deref(), Some(fid));
    assert_eq!(last.framework_info["id"]["value"], fid);
    assert_eq!(p.framework_id().as_deref(), Some(fid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_change_503_dropped_stream_and_missed_heartbeats_keep_the_framework_id() {
    let cluster = Cluster::start(2, HEARTBEAT, default_agents()).await;
    let p = Running::start(config(&cluster, 2, MesosContentType::Json));
    eventually("subscribed", || {
        p.handle.status().state == ConnState::Subscribed
    })
    .await;
    let fid = p.framework_id().unwrap();

    // Leader change: master 0 now redirects to master 1.
    cluster.set_leader(Some(1));
    cluster.drop_streams();
    resubscribed(&cluster, &p, 1, &fid).await;
    assert_eq!(cluster.subscribes().last().unwrap().master, 1);
    assert!(cluster.rejected().contains(&(0, 307)));
    assert_eq!(p.handle.status().master, Some(cluster.addr(1)));

    // The leader recovers for a while: 503s, backoff, then back.
    cluster.set_recovering(true);
    cluster.drop_streams();
    eventually("a few 503s", || {
        cluster.rejected().iter().filter(|r| r.1 == 503).count() >= 3
    })
    .await;
    let mut seen = None;
    eventually("backing off", || {
        let s = p.handle.status();
        let backing_off = s.state == ConnState::BackingOff;
        seen = Some(s);
        backing_off
    })
    .await;
    let st = seen.unwrap();
    assert!(st.last_error.unwrap().contains("503"));
    assert!(st.backoff_ms.unwrap() <= 400);
    cluster.set_recovering(false);
    resubscribed(&cluster, &p, 2, &fid).await;

    // A dropped stream.
    cluster.drop_streams();
    resubscribed(&cluster, &p, 3, &fid).await;

    // A master that stops sending heartbeats: the watchdog reconnects.
    cluster.silence(&fid);
    resubscribed(&cluster, &p, 4, &fid).await;
    assert!(
        p.handle.status().last_error.unwrap().contains("heartbeat"),
        "{:?}",
        p.handle.status()
    );
    assert_eq!(p.handle.status().subscriptions, 5);
    p.stop().await;
}

async fn garbage_case(ct: MesosContentType, bytes: &[u8], close: bool, expect: &str) {
    let cluster = Cluster::start(1, HEARTBEAT, default_agents()).await;
    let p = Running::start(config(&cluster, 1, ct));
    eventually("subscribed", || {
        p.handle.status().state == ConnState::Subscribed
    })
    .await;
    let fid = p.framework_id().unwrap();
    cluster.inject(&fid, bytes).await;
    if close {
        cluster.close_stream(&fid);
    }
    resubscribed(&cluster, &p, 1, &fid).await;
    let err = p.handle.status().last_error.unwrap();
    assert!(err.contains(expect), "{expect:?} not in {err:?}");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_from_the_master_is_a_clear_error_and_a_reconnect() {
    use MesosContentType::{Json, Protobuf};
    garbage_case(Json, b"hello, world\n", false, "invalid length prefix").await;
    garbage_case(
        Json,
        b"100\n{\"type\":",
        true,
        "stream ended inside a record",
    )
    .await;
    garbage_case(
        Json,
        b"10737418240\n{\"type\":",
        false,
        "exceeds the maximum",
    )
    .await;
    garbage_case(Json, b"0\n", false, "zero record length").await;
    garbage_case(Json, b"6\n{nope}", false, "invalid Mesos JSON").await;
    garbage_case(Protobuf, b"3\n\xff\xff\xff", false, "invalid protobuf").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_lost_and_acknowledgements() {
    let cluster = Cluster::start(1, HEARTBEAT, default_agents()).await;
    let p = Running::start(config(&cluster, 1, MesosContentType::Json));
    eventually("agents", || p.handle.agents().len() == 4).await;
    let fid = p.framework_id().unwrap();
    cluster
        .push_event(
            &fid,
            json!({"type":"FAILURE","failure":{"agent_id":{"value":"agent-S1"}}}),
        )
        .await;
    // An executor exit is not an agent loss.
    cluster
        .push_event(
            &fid,
            json!({"type":"FAILURE","failure":{"agent_id":{"value":"agent-S2"},
            "executor_id":{"value":"e1"},"status":1}}),
        )
        .await;
    eventually("agent-S1 lost", || {
        p.handle
            .agents()
            .iter()
            .any(|a| a.id == "agent-S1" && a.lost)
    })
    .await;
    let st = p.handle.status();
    assert_eq!(st.agents_lost, 1);
    assert!(!p
        .handle
        .agents()
        .iter()
        .any(|a| a.id == "agent-S2" && a.lost));

    let uuid = "AAECAwQFBgcICQoLDA0ODw==";
    cluster
        .push_event(
            &fid,
            json!({"type":"UPDATE","update":{"status":{"task_id":{"value":"t1"},
            "state":"TASK_RUNNING","agent_id":{"value":"agent-S0"},"uuid":uuid}}}),
        )
        .await;
    cluster
        .push_event(
            &fid,
            json!({"type":"UPDATE","update":{"status":{"task_id":{"value":"t2"},
            "state":"TASK_LOST"}}}),
        )
        .await;
    cluster
        .push_event(
            &fid,
            json!({"type":"UPDATE_OPERATION_STATUS","update_operation_status":{
            "status":{"operation_id":{"value":"op-1"},"state":"OPERATION_FINISHED",
            "uuid":{"value":uuid},"agent_id":{"value":"agent-S0"},
            "resource_provider_id":{"value":"rp-1"}}}}),
        )
        .await;
    eventually("acknowledgements", || {
        !cluster.calls_of("ACKNOWLEDGE").is_empty()
            && !cluster.calls_of("ACKNOWLEDGE_OPERATION_STATUS").is_empty()
    })
    .await;
    let acks = cluster.calls_of("ACKNOWLEDGE");
    assert_eq!(acks.len(), 1, "only the status with a uuid is acknowledged");
    assert_eq!(acks[0].body["acknowledge"]["uuid"], uuid);
    assert_eq!(acks[0].body["acknowledge"]["task_id"]["value"], "t1");
    let op = &cluster.calls_of("ACKNOWLEDGE_OPERATION_STATUS")[0].body;
    assert_eq!(op["acknowledge_operation_status"]["uuid"], uuid);
    assert_eq!(
        op["acknowledge_operation_status"]["operation_id"]["value"],
        "op-1"
    );
    assert!(cluster.rejected().is_empty(), "{:?}", cluster.rejected());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_subscription_retries_and_a_removed_framework_starts_over() {
    let cluster = Cluster::start(1, HEARTBEAT, default_agents()).await;
    cluster.refuse_next("Role 'x' is not a valid role");
    let mut cfg = config(&cluster, 1, MesosContentType::Json);
    cfg.failover_timeout_secs = 0.3;
    let p = Running::start(cfg);
    eventually("subscribed after a refusal", || {
        p.handle.status().state == ConnState::Subscribed
    })
    .await;
    let subs = cluster.subscribes();
    assert!(subs[0].outcome.is_err());
    assert_eq!(
        subs[1].framework_id, None,
        "a refusal does not invent an id"
    );
    let first = p.framework_id().unwrap();

    // Disconnected longer than failover_timeout: the master removes the framework, and only
    // then does Polly subscribe as a new one.
    cluster.set_leader(None);
    cluster.drop_streams();
    tokio::time::sleep(Duration::from_millis(600)).await;
    cluster.set_leader(Some(0));
    eventually("a new framework", || {
        p.framework_id().is_some_and(|f| f != first)
            && p.handle.status().state == ConnState::Subscribed
    })
    .await;
    let subs = cluster.subscribes();
    let removed = subs
        .iter()
        .find(|s| {
            s.outcome
                .as_ref()
                .err()
                .is_some_and(|e| e.contains("removed"))
        })
        .expect("the re-subscription with the old id was refused");
    assert_eq!(removed.framework_id.as_deref(), Some(first.as_str()));
    let second = p.framework_id().unwrap();
    assert_eq!(
        p.store.meta(FRAMEWORK_ID_KEY).unwrap().as_deref(),
        Some(second.as_str())
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revive_finds_new_agents_and_operator_api_fills_the_inventory() {
    let mut agents = default_agents();
    agents.push(FakeAgent {
        id: "agent-quiet".into(),
        hostname: "quiet.example".into(),
        region: "eu-1".into(),
        zone: "eu-1b".into(),
        rack: "r99".into(),
        operator_only: true,
    });
    let cluster = Cluster::start(1, HEARTBEAT, agents).await;
    let mut cfg = config(&cluster, 1, MesosContentType::Json);
    cfg.revive_interval_secs = 0.5;
    cfg.operator_agents = true;
    cfg.principal = Some("polly-svc".into());
    cfg.secret = Some("s3cret".into());
    cfg.roles = vec!["storage".into()];
    let p = Running::start(cfg);
    eventually("operator-only agent", || {
        p.handle
            .agents()
            .iter()
            .any(|a| a.id == "agent-quiet" && a.source == AgentSource::Operator)
    })
    .await;
    eventually("suppressed", || p.handle.status().suppressed).await;
    cluster.add_agent(FakeAgent {
        id: "agent-new".into(),
        hostname: "new.example".into(),
        region: "eu-1".into(),
        zone: "eu-1a".into(),
        rack: "r50".into(),
        operator_only: false,
    });
    eventually("new agent after REVIVE", || {
        p.handle
            .agents()
            .iter()
            .any(|a| a.id == "agent-new" && a.zone.as_deref() == Some("eu-1a"))
    })
    .await;
    assert!(!cluster.calls_of("REVIVE").is_empty());
    let sub = &cluster.subscribes()[0];
    // base64("polly-svc:s3cret")
    assert_eq!(
        sub.authorization.as_deref(),
        Some("Basic cG9sbHktc3ZjOnMzY3JldA==")
    );
    assert_eq!(sub.framework_info["principal"], "polly-svc");
    assert_eq!(sub.framework_info["roles"], json!(["storage"]));
    assert_eq!(sub.framework_info["checkpoint"], true);
    assert_eq!(
        sub.framework_info["capabilities"],
        json!([{"type":"MULTI_ROLE"},{"type":"RESERVATION_REFINEMENT"},{"type":"REGION_AWARE"}])
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_past_a_refused_connection_and_a_master_that_never_answers() {
    let cluster = Cluster::start(1, HEARTBEAT, default_agents()).await;
    // A port nobody listens on, and one that accepts and then says nothing.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let held = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            conns.push(c);
        }
    });
    let mut cfg = config(&cluster, 1, MesosContentType::Json);
    cfg.masters = vec![closed_addr, silent_addr.clone(), cluster.addr(0)];
    cfg.request_timeout_secs = 0.5;
    let p = Running::start(cfg);
    eventually("subscribed to the third master", || {
        p.handle.status().state == ConnState::Subscribed
    })
    .await;
    assert_eq!(p.handle.status().master, Some(cluster.addr(0)));
    assert!(p
        .handle
        .status()
        .last_error
        .unwrap()
        .contains("no SUBSCRIBE response"));
    p.stop().await;
    held.abort();
}

/// The fake master itself follows the reference's rules (so the tests above mean something).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_master_follows_the_reference() {
    use futures::StreamExt;
    use master::JSON;
    let cluster = Cluster::start(2, HEARTBEAT, default_agents()).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = |i: usize| format!("http://{}/api/v1/scheduler", cluster.addr(i));
    let sub = json!({"type":"SUBSCRIBE","subscribe":{"framework_info":{"user":"u","name":"n"}}});
    let post = |i: usize, ct: Option<&str>, body: String| {
        let mut r = http.post(url(i)).body(body);
        if let Some(ct) = ct {
            r = r.header("Content-Type", ct);
        }
        r
    };
    let status = |r: reqwest::Response| r.status().as_u16();

    let r = post(1, Some(JSON), sub.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 307);
    let loc = r.headers()["location"].to_str().unwrap();
    assert_eq!(loc, format!("//{}/api/v1/scheduler", cluster.addr(0)));
    assert_eq!(
        status(http.get(url(1)).send().await.unwrap()),
        307,
        "307 before the method check"
    );
    assert_eq!(status(http.get(url(0)).send().await.unwrap()), 405);
    assert_eq!(
        status(post(0, None, sub.to_string()).send().await.unwrap()),
        400
    );
    let charset = post(0, Some("application/json; charset=utf-8"), sub.to_string());
    assert_eq!(status(charset.send().await.unwrap()), 415);
    assert_eq!(
        status(post(0, Some(JSON), "{".into()).send().await.unwrap()),
        400
    );
    assert_eq!(
        status(post(0, Some(JSON), "{}".into()).send().await.unwrap()),
        400
    );
    let unknown = json!({"type":"UNKNOWN"}).to_string();
    assert_eq!(
        status(post(0, Some(JSON), unknown).send().await.unwrap()),
        501
    );
    let with_sid = post(0, Some(JSON), sub.to_string()).header("Mesos-Stream-Id", "x");
    assert_eq!(status(with_sid.send().await.unwrap()), 400);
    let mismatch = json!({"type":"SUBSCRIBE","framework_id":{"value":"a"},
        "subscribe":{"framework_info":{"user":"u","name":"n","id":{"value":"b"}}}});
    assert_eq!(
        status(
            post(0, Some(JSON), mismatch.to_string())
                .send()
                .await
                .unwrap()
        ),
        400
    );
    let not_acceptable = post(0, Some(JSON), sub.to_string()).header("Accept", "text/html");
    assert_eq!(status(not_acceptable.send().await.unwrap()), 406);

    // A subscription: 200, chunked, stream id, SUBSCRIBED, HEARTBEAT, OFFERS in two zones.
    let r = post(0, Some(JSON), sub.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-length").is_none());
    assert_eq!(r.headers()["transfer-encoding"], "chunked");
    assert_eq!(r.headers()["content-type"], JSON);
    let sid = r.headers()["mesos-stream-id"].to_str().unwrap().to_string();
    let mut body = r.bytes_stream();
    let mut dec = polly::mesos::recordio::Decoder::new(1 << 20);
    let mut events = Vec::new();
    let mut chunks = 0;
    while events.len() < 3 {
        dec.push(&body.next().await.unwrap().unwrap());
        chunks += 1;
        while let Some(rec) = dec.next_record().unwrap() {
            events.push(serde_json::from_slice::<serde_json::Value>(&rec).unwrap());
        }
    }
    assert!(chunks > 3, "records are split across chunks");
    assert_eq!(events[0]["type"], "SUBSCRIBED");
    assert_eq!(events[1]["type"], "HEARTBEAT");
    assert_eq!(events[2]["type"], "OFFERS");
    let fid = events[0]["subscribed"]["framework_id"]["value"]
        .as_str()
        .unwrap()
        .to_string();
    let zones: std::collections::BTreeSet<String> = events[2]["offers"]["offers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            o["domain"]["fault_domain"]["zone"]["name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(zones.len(), 2);

    // Non-SUBSCRIBE rules.
    let revive = |f: &str| json!({"type":"REVIVE","framework_id":{"value":f}}).to_string();
    let no_fid = json!({"type":"REVIVE"}).to_string();
    assert_eq!(
        status(post(0, Some(JSON), no_fid).send().await.unwrap()),
        400
    );
    assert_eq!(
        status(post(0, Some(JSON), revive("nope")).send().await.unwrap()),
        400
    );
    assert_eq!(
        status(post(0, Some(JSON), revive(&fid)).send().await.unwrap()),
        400,
        "no stream id"
    );
    let wrong = post(0, Some(JSON), revive(&fid)).header("Mesos-Stream-Id", "wrong");
    assert_eq!(status(wrong.send().await.unwrap()), 400);
    let right = post(0, Some(JSON), revive(&fid)).header("Mesos-Stream-Id", &sid);
    let r = right.send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.text().await.unwrap(), "");
    let bad_ack = json!({"type":"ACKNOWLEDGE","framework_id":{"value":fid},
        "acknowledge":{"agent_id":{"value":"a"},"task_id":{"value":"t"},"uuid":"AAEC"}});
    let r = post(0, Some(JSON), bad_ack.to_string()).header("Mesos-Stream-Id", &sid);
    assert_eq!(status(r.send().await.unwrap()), 400);

    // Once the stream is gone the framework is known but not subscribed: 403.
    drop(body);
    eventually("disconnected", || !cluster.connected(&fid)).await;
    let r = post(0, Some(JSON), revive(&fid)).header("Mesos-Stream-Id", &sid);
    assert_eq!(status(r.send().await.unwrap()), 403);

    // A refused subscription: 200, one ERROR event, then the stream ends.
    cluster.refuse_next("Framework has been removed");
    let r = post(0, Some(JSON), sub.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let all = r.bytes().await.unwrap();
    let mut dec = polly::mesos::recordio::Decoder::new(1 << 20);
    dec.push(&all);
    let rec = dec.next_record().unwrap().unwrap();
    let ev: serde_json::Value = serde_json::from_slice(&rec).unwrap();
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(ev["error"]["message"], "Framework has been removed");
    assert!(dec.next_record().unwrap().is_none());
    dec.finish().unwrap();

    // No leader: 503.
    cluster.set_leader(None);
    assert_eq!(
        status(post(0, Some(JSON), sub.to_string()).send().await.unwrap()),
        503
    );
}

/// A FAILURE missed while disconnected: the agent the master removed meanwhile is absent
/// from `GET_AGENTS` after re-subscribing, so the client marks it lost all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_removed_while_disconnected_is_lost_from_the_operator_inventory() {
    let cluster = Cluster::start(1, HEARTBEAT, default_agents()).await;
    let mut cfg = config(&cluster, 1, MesosContentType::Json);
    cfg.operator_agents = true;
    let p = Running::start(cfg);
    eventually("agents from offers", || p.handle.agents().len() == 4).await;
    // The master goes leaderless (503), the stream drops, the agent is removed while no
    // framework is connected (no FAILURE reaches anyone), then the leader is back.
    cluster.set_leader(None);
    cluster.drop_streams();
    cluster.remove_agent("agent-S1").await;
    eventually("a failed attempt while leaderless", || {
        cluster.rejected().iter().any(|r| r.1 == 503)
    })
    .await;
    cluster.set_leader(Some(0));
    eventually("agent-S1 lost", || {
        p.handle
            .agents()
            .iter()
            .any(|a| a.id == "agent-S1" && a.lost)
    })
    .await;
    let others: Vec<_> = p
        .handle
        .agents()
        .into_iter()
        .filter(|a| a.id != "agent-S1")
        .collect();
    assert_eq!(others.len(), 3);
    assert!(others.iter().all(|a| !a.lost), "{others:?}");
    assert_eq!(p.handle.status().agents_lost, 1);
    p.stop().await;
}
