//! The one-subscription scheduler connection (`polly::mesos::client::scheduler`, what the
//! example framework uses) against the fake master (tests/harness/fakes/master.rs): a 307 from a
//! non-leader is followed, events arrive over JSON and protobuf, calls carry the stream id
//! and framework id, a refusal is `Refused`, a silent stream is `HeartbeatTimeout`, and a
//! 400 to a call is `Status` with the master's message.

mod harness;

use std::time::Duration;

use harness::fakes::master::{default_agents, Cluster};
use polly::mesos::client::MesosContentType;
use polly::mesos::client::{SubscribeOptions, Subscription};
use polly::mesos::v1::scheduler::{call, event};
use polly::mesos::v1::{self, FrameworkInfo};
use polly::mesos::Error;

fn info(name: &str) -> FrameworkInfo {
    FrameworkInfo {
        user: "root".into(),
        name: name.into(),
        ..Default::default()
    }
}

fn opts(ct: MesosContentType) -> SubscribeOptions {
    SubscribeOptions {
        content_type: ct,
        request_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

async fn offers(sub: &mut Subscription) -> Vec<v1::Offer> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), sub.next_event())
            .await
            .expect("an event within 10s")
            .expect("a good event");
        if ev.r#type == Some(event::Type::Offers as i32) {
            return ev.offers.unwrap().offers;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_the_leader_and_sends_calls_on_its_stream() {
    for ct in [MesosContentType::Json, MesosContentType::Protobuf] {
        let cluster = Cluster::start(2, 0.2, default_agents()).await;
        cluster.set_leader(Some(1));
        let mut sub = Subscription::subscribe(&cluster.addr(0), info("consumer"), opts(ct))
            .await
            .unwrap();
        assert_eq!(
            sub.master(),
            cluster.addr(1),
            "followed the 307 to the leader"
        );
        assert_eq!(
            cluster.subscribed_ids(),
            vec![sub.framework_id().to_string()]
        );
        assert_eq!(sub.heartbeat_interval(), Duration::from_millis(200));

        let got = offers(&mut sub).await;
        assert!(!got.is_empty());
        let caller = sub.caller();
        caller
            .decline(got.iter().map(|o| o.id.clone()).collect(), Some(42.0))
            .await
            .unwrap();
        let declines = cluster.calls_of("DECLINE");
        assert_eq!(declines.len(), 1, "{ct:?}");
        assert_eq!(declines[0].master, 1);
        assert_eq!(declines[0].stream_id, sub.stream_id());
        assert_eq!(
            declines[0].body["framework_id"]["value"],
            sub.framework_id()
        );
        assert_eq!(
            declines[0].body["decline"]["filters"]["refuse_seconds"],
            42.0
        );
        assert_eq!(
            declines[0].body["decline"]["offer_ids"]
                .as_array()
                .unwrap()
                .len(),
            got.len()
        );

        // A status without a uuid needs no acknowledgement: nothing is sent.
        let st = v1::OperationStatus {
            operation_id: Some(v1::OperationId { value: "op".into() }),
            state: v1::OperationState::OperationFinished as i32,
            ..Default::default()
        };
        assert!(!caller.acknowledge_operation_status(&st).await.unwrap());
        assert!(cluster.calls_of("ACKNOWLEDGE_OPERATION_STATUS").is_empty());

        caller.teardown().await.unwrap();
        assert_eq!(cluster.calls_of("TEARDOWN").len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_silence_and_bad_calls_are_errors() {
    let cluster = Cluster::start(1, 0.1, default_agents()).await;
    cluster.refuse_next("Framework has been removed");
    match Subscription::subscribe(&cluster.addr(0), info("x"), opts(MesosContentType::Json)).await {
        Err(Error::Refused { message, .. }) => assert!(message.contains("removed"), "{message}"),
        Err(e) => panic!("expected Refused, got {e}"),
        Ok(_) => panic!("expected Refused, got a subscription"),
    }

    let mut sub =
        Subscription::subscribe(&cluster.addr(0), info("x"), opts(MesosContentType::Json))
            .await
            .unwrap();
    // A call the master refuses (ACCEPT without `accept`): the status and its message.
    let err = sub
        .caller()
        .call(call::Type::Accept, |_| {})
        .await
        .unwrap_err();
    match err {
        Error::Status { status, .. } => assert_eq!(status, 400),
        e => panic!("expected Status, got {e}"),
    }
    // Silence: five heartbeat intervals (0.5 s) without any event end the stream.
    cluster.silence(sub.framework_id());
    let started = std::time::Instant::now();
    let err = loop {
        match tokio::time::timeout(Duration::from_secs(10), sub.next_event())
            .await
            .expect("the watchdog fires before 10s")
        {
            Ok(_) => continue,
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::HeartbeatTimeout { .. }), "{err}");
    assert!(started.elapsed() >= Duration::from_millis(400));
}
