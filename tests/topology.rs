//! Topology refused up front: a create in a zone its service does not serve fails with a
//! message naming both zones, before any driver call, and leaves store and back-end as they
//! were.

mod harness;

use harness::{vfs_volume_dirs, Polly};

#[test]
fn create_in_a_zone_the_service_does_not_serve_is_refused_naming_both() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[[services]]
name = "vfs"
driver = "vfs"
zone = "us-east-1a"

[[services]]
name = "nozone"
driver = "vfs"
"#;
    let polly = Polly::start_with(dir.path(), Some(config), None);
    let (code, _, err) = polly.cli(&[
        "volume",
        "create",
        "db",
        "--size",
        "1MiB",
        "--zone",
        "us-east-1b",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("us-east-1a") && err.contains("us-east-1b"),
        "{err}"
    );
    let (code, _, err) = polly.cli(&[
        "volume",
        "create",
        "db",
        "--size",
        "1MiB",
        "--zone",
        "us-east-1b",
        "--service",
        "nozone",
    ]);
    assert_ne!(code, 0);
    assert!(
        err.contains("us-east-1b") && err.contains("no zone"),
        "{err}"
    );

    assert!(vfs_volume_dirs(dir.path(), "vfs").is_empty());
    assert!(vfs_volume_dirs(dir.path(), "nozone").is_empty());
    let ls = polly.cli_json(&["volume", "ls"]);
    assert!(ls["volumes"].as_array().unwrap().is_empty());
    assert!(polly
        .cli_json(&["operation", "ls"])
        .as_array()
        .unwrap()
        .is_empty());

    // The zone it serves works.
    let v = polly.cli_json(&[
        "volume",
        "create",
        "db",
        "--size",
        "1MiB",
        "--zone",
        "us-east-1a",
    ]);
    assert_eq!(v["zone"], "us-east-1a");
}

fn zoned_config(call_log: &std::path::Path) -> String {
    format!(
        r#"
[[services]]
name = "vfs"
driver = "vfs"
zone = "us-east-1a"
[services.fault]
call_log = "{}"

[[mesos.agents]]
id = "agent-c"
hostname = "host-c"
zone = "us-east-1c"

[offers.instances]
agent-c = "i-c"
"#,
        call_log.display()
    )
}

/// Driver calls that attach or detach, from the fault driver's call log.
fn attach_calls(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("create "))
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_to_an_instance_in_another_zone_is_refused_naming_both_before_any_backend_call() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls.log");
    let data = dir.path().join("data");
    let cfg = zoned_config(&log);
    let polly = tokio::task::spawn_blocking(move || Polly::start_with(&data, Some(&cfg), None))
        .await
        .unwrap();
    let c = polly.client();
    let v = c
        .create(&polly::volumes::CreateVolume {
            service: "vfs".into(),
            name: "db".into(),
            size_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(v.zone.as_deref(), Some("us-east-1a"));
    let http = reqwest::Client::new();
    let ls = |path: String, iid: &str, body: &str| {
        http.post(format!("{}{path}", polly.libstorage))
            .header("Libstorage-Instanceid", iid)
            .header("Libstorage-Localdevices", "vfs=/dev/xvda::,/dev/xvdb::")
            .header(
                "Libstorage-Tx",
                format!("txID={}, txCR=1", uuid::Uuid::new_v4()),
            )
            .body(body.to_string())
            .send()
    };

    // A REX-Ray host in us-east-1a attaches; one in us-east-1b is refused, even with
    // `force` (pre-empt), which would otherwise detach the first host.
    let r = ls(
        format!("/volumes/vfs/{}?attach", v.id),
        "vfs=host-a,availabilityZone=us-east-1a",
        r#"{"nextDeviceName":"/dev/xvdb"}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    let calls_before = attach_calls(&log);
    assert_eq!(calls_before.len(), 1, "{calls_before:?}");
    let r = ls(
        format!("/volumes/vfs/{}?attach", v.id),
        "vfs=host-b,availabilityZone=us-east-1b",
        r#"{"nextDeviceName":"/dev/xvdb","force":true}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("us-east-1a") && msg.contains("us-east-1b") && msg.contains("host-b"),
        "{body}"
    );
    assert_eq!(body["status"], 400);
    assert_eq!(attach_calls(&log), calls_before, "no back-end call");
    let after = c.inspect(&v.id, None).await.unwrap();
    assert_eq!(after.attachments.len(), 1);
    assert_eq!(after.attachments[0].instance_id, "host-a");
    assert!(c.operations().await.unwrap().is_empty());

    // The admin API refuses the same, from the zone host-b reported.
    c.detach(&v.id, None, Some("host-a".into()), false)
        .await
        .unwrap();
    let calls_before = attach_calls(&log);
    match c.attach(&v.id, None, "host-b", None).await {
        Err(polly::client::Error::Api {
            status: 400,
            message,
            ..
        }) => assert!(
            message.contains("us-east-1a") && message.contains("us-east-1b"),
            "{message}"
        ),
        other => panic!("cross-zone attach not refused: {other:?}"),
    }
    assert_eq!(attach_calls(&log), calls_before, "no back-end call");
    assert!(c.inspect(&v.id, None).await.unwrap().attachments.is_empty());
    // A Mesos agent's zone stands for the instance it maps to.
    match c.attach(&v.id, None, "i-c", None).await {
        Err(polly::client::Error::Api {
            status: 400,
            message,
            ..
        }) => assert!(
            message.contains("us-east-1a") && message.contains("us-east-1c"),
            "{message}"
        ),
        other => panic!("attach across to agent-c's zone not refused: {other:?}"),
    }
    assert_eq!(attach_calls(&log), calls_before, "no back-end call");
    // An instance whose zone nobody reported is not refused (nothing to compare).
    let ok = c.attach(&v.id, None, "host-unknown", None).await.unwrap();
    assert_eq!(ok.attachments[0].instance_id, "host-unknown");
}

/// Bad input and back-end errors: each refusal names what is wrong, and the store is exactly
/// as before. A back-end that fails without saying whether it acted keeps the create's
/// intent (nothing is acknowledged) until the back-end can be asked; then the store is back
/// to what it was.
#[test]
fn bad_sizes_unknown_zones_and_backend_errors_name_the_problem_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = |flaky: &str| {
        format!(
            r#"
[[services]]
name = "vfs"
driver = "vfs"
zone = "us-east-1a"
quota_bytes = 4194304

[[services]]
name = "flaky"
driver = "vfs"
zone = "us-east-1a"
{flaky}
"#
        )
    };
    let polly = Polly::start_with(
        &data,
        Some(&config("[services.fault]\nerror_rate = 1.0")),
        None,
    );
    polly.cli_json(&["volume", "create", "keep", "--size", "1MiB"]);
    let before = polly.cli_json(&["store", "dump"]);
    let refused = |args: &[&str], wants: &[&str]| {
        let (code, _, err) = polly.cli(args);
        assert_ne!(code, 0, "{args:?} accepted");
        for w in wants {
            assert!(err.contains(w), "{args:?}: {err:?} does not name {w:?}");
        }
    };
    refused(
        &["volume", "create", "x", "--size", "0"],
        &["invalid size \"0\""],
    );
    refused(&["volume", "create", "x", "--size", "lots"], &["lots"]);
    refused(&["volume", "create", "x", "--size", "2PiB"], &["2PiB"]);
    refused(
        &[
            "volume", "create", "x", "--size", "1MiB", "--zone", "mars-1",
        ],
        &["mars-1", "us-east-1a"],
    );
    refused(
        &[
            "volume",
            "create",
            "x",
            "--size",
            "1MiB",
            "--service",
            "nope",
        ],
        &["nope"],
    );
    refused(
        &["volume", "attach", "nope-volume", "--instance", "i-1"],
        &["nope-volume"],
    );
    refused(&["agent", "fence", "nope-node", "--yes"], &["nope-node"]);
    // The back-end refuses (quota): 507 naming the pool and sizes.
    refused(
        &["volume", "create", "big", "--size", "8MiB"],
        &["insufficient capacity", "8388608", "507"],
    );
    assert_eq!(polly.cli_json(&["store", "dump"]), before);

    // The back-end fails without an answer: a 502 naming the service and the back-end's
    // message; the create is not acknowledged and stays pending, not available.
    refused(
        &[
            "volume",
            "create",
            "x",
            "--size",
            "1MiB",
            "--service",
            "flaky",
        ],
        &["flaky", "injected fault in create", "502"],
    );
    let ls = polly.cli_json(&["volume", "ls"]);
    assert!(ls["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["name"] != "x" || v["status"] == "creating"));
    drop(polly);
    // Once the back-end answers again, start-up reconciliation rolls the create back.
    let polly = Polly::start_with(&data, Some(&config("")), None);
    assert_eq!(polly.cli_json(&["store", "dump"]), before);
    assert!(vfs_volume_dirs(&data, "flaky").is_empty());
    assert_eq!(vfs_volume_dirs(&data, "vfs").len(), 1);
}
