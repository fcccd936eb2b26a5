//! Snapshots, copies and `?async` tasks through the libStorage façade of `polly serve`.

mod harness;

use std::time::Duration;

use harness::{iid, Polly};
use serde_json::{json, Value};

#[tokio::test]
async fn snapshot_copy_and_create_from_snapshot() {
    let p = Polly::start_services(&["vfs"], "");
    let me = iid("vfs", "vm");
    let h = [("Libstorage-Instanceid", me.as_str())];
    let r = p
        .req(
            "POST",
            "/volumes/vfs",
            &h,
            Some(r#"{"name":"src","size":2,"opts":{"owner":"me"}}"#),
        )
        .await;
    let src = r.json["id"].as_str().unwrap().to_string();

    // ?snapshot → 201 Snapshot
    let r = p
        .req(
            "POST",
            &format!("/volumes/vfs/{src}?snapshot"),
            &h,
            Some(r#"{"snapshotName":"snap1"}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    r.check_servername();
    let snap = r.json["id"].as_str().unwrap().to_string();
    assert_eq!(r.json["name"], "snap1");
    assert_eq!(r.json["status"], "online");
    assert_eq!(r.json["volumeID"], src.as_str());
    assert_eq!(r.json["volumeSize"], 2);
    assert!(r.json["startTime"].as_u64().unwrap() > 0);

    // Listed per service, globally, and inspectable.
    let r = p.req("GET", "/snapshots/vfs", &[], None).await;
    assert_eq!(
        r.json.as_object().unwrap().keys().collect::<Vec<_>>(),
        [&snap]
    );
    let r = p.req("GET", "/snapshots", &[], None).await;
    assert_eq!(r.json["vfs"][&snap]["name"], "snap1");
    let r = p
        .req("GET", &format!("/snapshots/vfs/{snap}"), &[], None)
        .await;
    assert_eq!((r.status.as_u16(), &r.json["id"]), (200, &json!(snap)));

    // ?copy → 201 Volume, a new managed volume with the source's size and fields.
    let r = p
        .req(
            "POST",
            &format!("/volumes/vfs/{src}?copy"),
            &h,
            Some(r#"{"volumeName":"copy1"}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    assert_eq!(r.json["name"], "copy1");
    assert_eq!(r.json["size"], 2);
    assert_eq!(r.json["fields"], json!({"owner": "me"}));
    assert_ne!(r.json["id"], json!(src));

    // Snapshot ?create → 201 Volume.
    let r = p
        .req(
            "POST",
            &format!("/snapshots/vfs/{snap}?create"),
            &h,
            Some(r#"{"name":"fromsnap"}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    assert_eq!(r.json["name"], "fromsnap");
    assert_eq!(r.json["attachmentState"], 3);
    let names: Vec<String> = p
        .volumes()
        .await
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    for n in ["src", "copy1", "fromsnap"] {
        assert!(names.contains(&n.to_string()), "{names:?}");
    }

    // ?copy → 201 Snapshot: a second snapshot of the same volume; the same copy again is
    // the same snapshot; a new volume from the copy holds the snapshot-time data.
    let r = p
        .req(
            "POST",
            &format!("/snapshots/vfs/{snap}?copy"),
            &h,
            Some(r#"{"snapshotName":"s2","destinationID":"here"}"#),
        )
        .await;
    assert_eq!(r.status.as_u16(), 201, "{}", r.raw);
    r.check_servername();
    let copy = r.json["id"].as_str().unwrap().to_string();
    assert_ne!(copy, snap);
    assert_eq!(r.json["name"], "s2");
    assert_eq!(r.json["volumeID"], src.as_str());
    let again = p
        .req(
            "POST",
            &format!("/snapshots/vfs/{snap}?copy"),
            &h,
            Some(r#"{"snapshotName":"s2","destinationID":"here"}"#),
        )
        .await;
    assert_eq!(again.json["id"], copy.as_str());
    let listed = p.req("GET", "/snapshots/vfs", &[], None).await;
    assert!(listed.json.get(&copy).is_some(), "{}", listed.raw);
    // Both names are required, as the request schema says.
    let r = p
        .req(
            "POST",
            &format!("/snapshots/vfs/{snap}?copy"),
            &h,
            Some(r#"{"snapshotName":"s3"}"#),
        )
        .await;
    assert_eq!(r.status.as_u16(), 400, "{}", r.raw);
    p.req("DELETE", &format!("/snapshots/vfs/{copy}"), &[], None)
        .await;

    // DELETE → 205 with a JSON null body; then it is gone.
    let r = p
        .req("DELETE", &format!("/snapshots/vfs/{snap}"), &[], None)
        .await;
    assert_eq!((r.status.as_u16(), r.raw.trim()), (205, "null"));
    p.req("GET", &format!("/snapshots/vfs/{snap}"), &[], None)
        .await
        .check_error(404, "resource not found");
    p.req(
        "POST",
        "/volumes/vfs/pv-nosuch?snapshot",
        &h,
        Some(r#"{"snapshotName":"x"}"#),
    )
    .await
    .check_error(404, "resource not found");
}

#[tokio::test]
async fn async_requests_answer_202_and_finish_as_tasks() {
    let p = Polly::start_services(&["vfs"], "");
    let r = p
        .req(
            "POST",
            "/volumes/vfs?async",
            &[],
            Some(r#"{"name":"bg","size":1}"#),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.raw);
    r.check_servername();
    let id = r.json["id"].as_u64().unwrap();
    assert!(r.json["queueTime"].as_u64().unwrap() > 0);
    let mut task = Value::Null;
    for _ in 0..100 {
        task = p.req("GET", &format!("/tasks/{id}"), &[], None).await.json;
        if task["state"] == "success" || task["state"] == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(task["state"], "success", "{task}");
    assert_eq!(task["result"]["name"], "bg");
    assert!(task["completeTime"].as_u64().unwrap() > 0);
    assert_eq!(p.volumes().await.len(), 1);

    // A failing async call ends in state "error" with the libStorage error.
    let r = p
        .req("DELETE", "/volumes/vfs/pv-nosuch?async", &[], None)
        .await;
    assert_eq!(r.status, 202);
    let id = r.json["id"].as_u64().unwrap();
    for _ in 0..100 {
        task = p.req("GET", &format!("/tasks/{id}"), &[], None).await.json;
        if task["state"] == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(task["error"]["status"], 404, "{task}");
    let r = p.req("GET", "/tasks", &[], None).await;
    assert_eq!(r.json.as_object().unwrap().len(), 2);
    p.req("GET", "/tasks/999", &[], None)
        .await
        .check_error(404, "resource not found");
}
