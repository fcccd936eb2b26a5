//! Crash safety with real processes: SIGKILL `polly serve` while the fault driver holds a
//! create or an attach (before and after the back-end side effect), or in the middle of a
//! burst of acknowledged creates; restart; check that nothing is duplicated, lost, orphaned
//! or double-attached and that every intent is resolved.

mod harness;

use std::time::Duration;

use harness::{vfs_volume_dirs, Polly};
use polly::admin::{VolumeStatusView, VolumeView};
use polly::volumes::CreateVolume;

fn fault_config(hang: &str, phase: &str) -> String {
    format!(
        r#"
[[services]]
name = "vfs"
driver = "vfs"
[services.fault]
hang = ["{hang}"]
hang_phase = "{phase}"
"#
    )
}

fn req(name: &str) -> CreateVolume {
    CreateVolume {
        service: "vfs".into(),
        name: name.into(),
        size_bytes: 1 << 20,
        ..Default::default()
    }
}

/// The invariants after a restart: no intents, no orphans, no missing volumes, the store's
/// volumes and the back-end's match one to one.
async fn check_invariants(polly: &Polly) -> Vec<VolumeView> {
    let c = polly.client();
    assert!(
        c.operations().await.unwrap().is_empty(),
        "intent left unresolved"
    );
    let r = c.orphans().await.unwrap();
    assert!(r.orphans.is_empty(), "orphans: {:?}", r.orphans);
    assert!(r.missing.is_empty(), "missing: {:?}", r.missing);
    let vols = c.volumes(false).await.unwrap().volumes;
    for v in &vols {
        assert_eq!(v.status, VolumeStatusView::Available, "{v:?}");
        assert!(v.attachments.len() <= 1, "double attachment: {v:?}");
    }
    assert_eq!(vfs_volume_dirs(&polly.data_dir, "vfs").len(), vols.len());
    vols
}

async fn sigkill_during_create(phase: &str) -> Vec<VolumeView> {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let polly = Polly::start_with(&data, Some(&fault_config("create", phase)), None);
    let c = polly.client();
    let pending = tokio::spawn(async move { c.create(&req("crashy")).await });
    let c = polly.client();
    // Wait until the intent is durable and, for "after", the back-end has the volume.
    for _ in 0..1500 {
        let intents = c.operations().await.unwrap();
        let backend = vfs_volume_dirs(&data, "vfs").len();
        if intents.len() == 1 && (phase == "before" || backend == 1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.operations().await.unwrap().len(), 1);
    polly.kill9();
    assert!(pending.await.unwrap().is_err(), "the client saw no answer");

    let polly = Polly::start(&data);
    let vols = check_invariants(&polly).await;
    // The start-up reconciler pass resolved the intent from the back-end; it found nothing
    // to report (the created volume is adopted from the intent, not left an orphan).
    let pass = polly
        .client()
        .reconciler()
        .await
        .unwrap()
        .expect("start-up pass");
    assert!(pass.runs >= 1 && pass.unresolved_intents == 0, "{pass:?}");
    assert!(pass.report.orphans.is_empty() && pass.report.missing.is_empty());
    // The client retries with the same name, as it must after no answer: one volume.
    let c = polly.client();
    let again = c.create(&req("crashy")).await.unwrap();
    let vols_after = check_invariants(&polly).await;
    assert_eq!(vols_after.len(), 1);
    assert_eq!(vols_after[0].id, again.id);
    vols
}

#[tokio::test]
async fn sigkill_while_create_hangs_after_the_backend_created() {
    let vols = sigkill_during_create("after").await;
    assert_eq!(vols.len(), 1, "the created volume is adopted, not lost");
    assert_eq!(vols[0].name, "crashy");
    assert!(vols[0].driver_id.is_some());
}

#[tokio::test]
async fn sigkill_while_create_hangs_before_the_backend_created() {
    let vols = sigkill_during_create("before").await;
    assert!(vols.is_empty(), "the unfinished create is rolled back");
}

async fn sigkill_during_attach(phase: &str) -> VolumeView {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let id = {
        let polly = Polly::start(&data);
        polly.client().create(&req("att")).await.unwrap().id
    };
    let polly = Polly::start_with(&data, Some(&fault_config("attach", phase)), None);
    let c = polly.client();
    let vid = id.clone();
    let pending = tokio::spawn(async move { c.attach(&vid, None, "host-a", None).await });
    let meta = vfs_volume_dirs(&data, "vfs")[0].join("volume.json");
    let c = polly.client();
    for _ in 0..1500 {
        let intents = c.operations().await.unwrap();
        let attached = std::fs::read_to_string(&meta).unwrap().contains("host-a");
        if intents.len() == 1 && (phase == "before" || attached) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(c.operations().await.unwrap().len(), 1);
    polly.kill9();
    assert!(pending.await.unwrap().is_err());

    let polly = Polly::start(&data);
    let vols = check_invariants(&polly).await;
    assert_eq!(vols.len(), 1);
    let c = polly.client();
    let v = c.inspect(&id, None).await.unwrap();
    // Whatever the outcome, another host cannot attach while host-a holds it, and host-a's
    // retry gives exactly one attachment.
    let v2 = c.attach(&id, None, "host-a", None).await.unwrap();
    assert_eq!(v2.attachments.len(), 1);
    match c.attach(&id, None, "host-b", None).await {
        Err(polly::client::Error::Api { status: 409, .. }) => {}
        other => panic!("second host attached: {other:?}"),
    }
    check_invariants(&polly).await;
    v
}

#[tokio::test]
async fn sigkill_while_attach_hangs_after_the_backend_attached() {
    let v = sigkill_during_attach("after").await;
    assert_eq!(
        v.attachments.len(),
        1,
        "the back-end attachment is recorded"
    );
    assert_eq!(v.attachments[0].instance_id, "host-a");
}

#[tokio::test]
async fn sigkill_while_attach_hangs_before_the_backend_attached() {
    let v = sigkill_during_attach("before").await;
    assert!(v.attachments.is_empty(), "no attachment was made");
}

#[tokio::test]
async fn sigkill_during_a_burst_of_creates_loses_no_acknowledged_volume() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut acked = Vec::new();
    for round in 0..3 {
        let polly = Polly::start(&data);
        let c = polly.client();
        // Four concurrent writers; the kill lands while requests are in flight, after at
        // least eight creates of this round were acknowledged.
        let round_acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for w in 0..4 {
            let c = c.clone();
            let acks = round_acks.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0.. {
                    match c.create(&req(&format!("r{round}-w{w}-{i}"))).await {
                        Ok(v) => acks.lock().unwrap().push(v.id),
                        Err(_) => break,
                    }
                }
            }));
        }
        let mut waited = 0;
        while round_acks.lock().unwrap().len() < 8 {
            assert!(waited < 3000, "timed out waiting for creates");
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
        }
        polly.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        acked.extend(round_acks.lock().unwrap().drain(..));
        let polly = Polly::start(&data);
        let vols = check_invariants(&polly).await;
        for id in &acked {
            assert!(
                vols.iter().any(|v| &v.id == id),
                "acknowledged volume {id} lost"
            );
        }
        // Names are unique: no duplicate from a create that raced the kill.
        let mut names: Vec<_> = vols.iter().map(|v| &v.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), vols.len());
        polly.kill9();
    }
    assert!(acked.len() >= 24);
}
