//! `polly serve` on the etcd store end to end (cargo feature `etcd`): a real etcd on
//! loopback, the real `polly` binary with `[store] backend = "etcd"`; volumes created and
//! attached through the admin API and the libStorage façade are all there after polly is
//! SIGKILLed and restarted, and again after etcd itself is SIGKILLed and restarted. Nothing
//! of the state is in the data dir (no sled store).
#![cfg(feature = "etcd")]

mod harness;

use harness::etcd;
use harness::{refs, Polly};
use polly::client::AdminClient;
use polly::volumes::CreateVolume;
use serde_json::json;

fn config(url: &str, prefix: &str) -> String {
    format!(
        r#"
[[services]]
name = "vfs"
driver = "vfs"

[store]
backend = "etcd"

[store.etcd]
endpoints = ["{url}"]
prefix = "{prefix}"
"#
    )
}

fn ls_headers(instance: &str) -> Vec<(&'static str, String)> {
    harness::ls_headers("vfs", instance)
}

/// The volumes as the admin API and the façade show them after a restart.
async fn check_state(p: &Polly, dump: &polly::store::Dump, ls_id: &str) {
    let c = AdminClient::new(&p.admin, None);
    assert_eq!(
        &c.dump().await.unwrap(),
        dump,
        "state changed across the restart"
    );
    let vols = c.volumes(false).await.unwrap().volumes;
    assert_eq!(vols.len(), 2, "{vols:?}");
    let a1 = vols.iter().find(|v| v.name == "a1").unwrap();
    assert_eq!(a1.attachments.len(), 1);
    assert_eq!(a1.attachments[0].instance_id, "i-1");
    let r = c.orphans().await.unwrap();
    assert!(r.orphans.is_empty() && r.missing.is_empty(), "{r:?}");
    assert!(c.operations().await.unwrap().is_empty(), "intent left over");
    let h = ls_headers("vm");
    let r = p
        .req(
            "GET",
            &format!("/volumes/vfs/{ls_id}?attachments=31"),
            &refs(&h),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.json["attachmentState"], 2, "{}", r.raw);
    assert_eq!(r.json["attachments"][0]["instanceID"]["id"], "vm");
    assert_eq!(r.json["name"], "demo1");
}

#[tokio::test]
async fn serve_keeps_its_state_in_etcd_across_restarts() {
    if etcd::skip().is_some() {
        return;
    }
    let mut server = etcd::Etcd::start();
    let prefix = etcd::unique_prefix("serve");
    let cfg = config(&server.url(), &prefix);
    let p = Polly::start_config(&cfg);
    let c = AdminClient::new(&p.admin, None);

    // Through the admin API: create and attach.
    let a1 = c
        .create(&CreateVolume {
            service: "vfs".into(),
            name: "a1".into(),
            size_bytes: 1 << 20,
            ..Default::default()
        })
        .await
        .unwrap();
    c.attach(&a1.id, None, "i-1", None).await.unwrap();

    // Through the libStorage façade, as REX-Ray: create, then attach to "vm".
    let h = ls_headers("vm");
    let r = p
        .req(
            "POST",
            "/volumes/vfs",
            &refs(&h),
            Some(r#"{"name":"demo1","availabilityZone":"","encrypted":false,"iops":0,"size":1,"type":""}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    let ls_id = r.json["id"].as_str().unwrap().to_string();
    let h = ls_headers("vm");
    let r = p
        .req(
            "POST",
            &format!("/volumes/vfs/{ls_id}?attach"),
            &refs(&h),
            Some(r#"{"nextDeviceName":"/dev/xvda"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    // A second volume of the same name is refused by the name check (in etcd's Txn).
    let dup = c
        .create(&CreateVolume {
            service: "vfs".into(),
            name: "a1".into(),
            size_bytes: 2 << 20,
            ..Default::default()
        })
        .await;
    assert!(dup.is_err(), "{dup:?}");

    let dump = c.dump().await.unwrap();
    assert_eq!(dump.volumes.len(), 2);
    assert!(
        !p.data_dir.join("store").exists(),
        "a sled store was created beside the etcd one"
    );
    // The records are in etcd, under the prefix.
    let keys = server.ctl(&[
        "get",
        "--prefix",
        "--keys-only",
        &format!("{prefix}volumes/"),
    ]);
    assert!(keys.contains(&a1.id) && keys.contains(&ls_id), "{keys}");

    // SIGKILL polly and start it again: everything is there.
    let p = p.restart(&cfg);
    check_state(&p, &dump, &ls_id).await;

    // SIGKILL etcd too, restart it, then polly: still everything.
    server.kill9();
    server.restart();
    let p = p.restart(&cfg);
    check_state(&p, &dump, &ls_id).await;

    // And it keeps writing: detach through the façade, seen by the admin API.
    let h = ls_headers("vm");
    let r = p
        .req(
            "POST",
            &format!("/volumes/vfs/{ls_id}?detach"),
            &refs(&h),
            Some("{}"),
        )
        .await;
    assert_eq!(r.status, 205, "{}", r.raw);
    let vols = p.volumes().await;
    let demo = vols.iter().find(|v| v["name"] == "demo1").unwrap();
    assert_eq!(demo["attachments"], json!([]));
}

/// `backend = "etcd"` with no etcd listening: `polly serve` exits non-zero with one line
/// naming the endpoint, before serving.
#[test]
fn serve_refuses_to_start_without_etcd() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(&format!("http://127.0.0.1:{port}"), "/p/")
        + "request_timeout_secs = 2\nconnect_timeout_secs = 1\n";
    let path = dir.path().join("polly.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = std::process::Command::new(harness::BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&path)
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--libstorage-listen", "127.0.0.1:0"])
        .args(["--offers-listen", "127.0.0.1:0"])
        .env_remove("POLLY_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&port.to_string()), "{stderr}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("polly: ready"),
        "served without its store"
    );
}
