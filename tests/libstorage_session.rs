//! The libStorage façade over real HTTP against `polly serve`: the REX-Ray 0.11 flows of the
//! reference (§6) request by request, the attachments mask, service restrictions,
//! single-writer with pre-emption, idempotency and a bad-input matrix.

mod harness;

use harness::{iid, ls_headers as h, refs, tx, Polly, IID_META};
use serde_json::{json, Value};

const GIB: u64 = 1 << 30;

/// A volume a mask lets through: name, attachmentState, attachments shown.
type Listed = (&'static str, u64, usize);
/// method, path, headers, body, expected status, expected message part.
type BadCase<'a> = (
    &'a str,
    String,
    Vec<(&'a str, &'a str)>,
    Option<&'a str>,
    u16,
    &'a str,
);

fn driver_info() -> Value {
    json!({"name": "vfs", "type": "object", "nextDevice": {"ignore": true, "prefix": "", "pattern": ""}})
}

/// Start-up of every REX-Ray CLI invocation: `GET /services`, then
/// `GET /services/{svc}?instance` with the metadata-only instance id.
async fn dial(p: &Polly, services: &[&str]) {
    let r = p
        .req("GET", "/services", &[("Libstorage-Tx", &tx())], None)
        .await;
    assert_eq!(r.status, 200);
    r.check_servername();
    assert!(r.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let mut want = serde_json::Map::new();
    for s in services {
        want.insert(s.to_string(), json!({"name": s, "driver": driver_info()}));
    }
    assert_eq!(r.json, Value::Object(want));
    for s in services {
        let r = p
            .req(
                "GET",
                &format!("/services/{s}?instance"),
                &[
                    ("Libstorage-Instanceid", IID_META),
                    ("Libstorage-Tx", &tx()),
                ],
                None,
            )
            .await;
        assert_eq!(r.status, 200);
        r.check_servername();
        assert_eq!(
            r.json,
            json!({"name": s, "driver": driver_info(), "instance": {
                "instanceID": {"id": "vm", "driver": "vfs", "service": ""},
                "name": "vfsInstance", "providerName": ""}})
        );
    }
}

#[tokio::test]
async fn rexray_session_replay() {
    let p = Polly::start_services(&["vfs", "vfs2"], "");
    let svcs = ["vfs", "vfs2"];
    let hv = h("vfs", "vm");
    let hv = refs(&hv);

    // The instance a client reported is in the store, with its hostname.
    dial(&p, &svcs).await;
    let inst = p.admin_get("/admin/instances").await;
    assert!(
        inst.as_array()
            .unwrap()
            .iter()
            .any(|i| i["instance_id"] == "vm" && i["driver"] == "vfs" && i["hostname"] == "vm"),
        "{inst}"
    );

    // volume ls
    let r = p.req("GET", "/volumes/vfs?attachments=1", &hv, None).await;
    assert_eq!((r.status.as_u16(), &r.json), (200, &json!({})));
    r.check_servername();

    // volume create demo1 --size 2 (no Content-Type)
    dial(&p, &svcs).await;
    let r = p
        .req(
            "POST",
            "/volumes/vfs",
            &hv,
            Some(r#"{"name":"demo1","availabilityZone":"","encrypted":false,"iops":0,"size":2,"type":""}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    r.check_servername();
    let id = r.json["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("pv-"), "{id}");
    assert_eq!(
        r.json,
        json!({"attachmentState": 3, "name": "demo1", "size": 2, "id": id, "type": ""})
    );
    let vols = p.volumes().await;
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0]["size_bytes"], 2 * GIB);
    let plain = json!({"attachmentState": 3, "name": "demo1", "size": 2, "id": id, "type": ""});

    // volume ls, volume attach demo1 (ls 17, then attach)
    for m in [1, 17] {
        dial(&p, &svcs).await;
        let r = p
            .req("GET", &format!("/volumes/vfs?attachments={m}"), &hv, None)
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json, json!({ id.clone(): plain.clone() }), "mask {m}");
    }

    // volume mount demo1: ls 27, inspect 31, attach, inspect 15, services?instance.
    dial(&p, &svcs).await;
    let r = p.req("GET", "/volumes/vfs?attachments=27", &hv, None).await;
    assert_eq!(r.json, json!({ id.clone(): plain.clone() }));
    let r = p
        .req(
            "GET",
            &format!("/volumes/vfs/{id}?attachments=31"),
            &hv,
            None,
        )
        .await;
    assert_eq!((r.status.as_u16(), &r.json), (200, &plain));
    // The Docker plug-in's by-name inspect finds the same volume.
    let r = p
        .req("GET", "/volumes/vfs/DEMO1?attachments=31&byName", &hv, None)
        .await;
    assert_eq!((r.status.as_u16(), &r.json), (200, &plain));
    let r = p
        .req(
            "POST",
            &format!("/volumes/vfs/{id}?attach"),
            &hv,
            Some(r#"{"nextDeviceName":"/dev/xvda"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    r.check_servername();
    let att = json!([{"deviceName": "/dev/xvda",
        "instanceID": {"id": "vm", "driver": "vfs", "service": "vfs"},
        "status": "attached", "volumeID": id}]);
    let attached = json!({"attachments": att, "attachmentState": 2, "name": "demo1",
        "size": 2, "id": id, "type": ""});
    assert_eq!(
        r.json,
        json!({"volume": attached, "attachToken": "/dev/xvda"})
    );
    let r = p
        .req(
            "GET",
            &format!("/volumes/vfs/{id}?attachments=15"),
            &hv,
            None,
        )
        .await;
    assert_eq!((r.status.as_u16(), &r.json), (200, &attached));
    let r = p
        .req(
            "GET",
            "/services/vfs?instance",
            &[("Libstorage-Instanceid", &iid("vfs", "vm"))],
            None,
        )
        .await;
    assert_eq!(
        r.json["instance"]["instanceID"],
        json!({"id": "vm", "driver": "vfs", "service": "vfs"})
    );
    let vols = p.volumes().await;
    assert_eq!(vols[0]["attachments"].as_array().unwrap().len(), 1);
    assert_eq!(vols[0]["attachments"][0]["instance_id"], "vm");
    assert_eq!(vols[0]["attachments"][0]["device"], "/dev/xvda");

    // volume unmount demo1: ls 11, inspect 15, detach {} → 205 with the volume.
    dial(&p, &svcs).await;
    let r = p.req("GET", "/volumes/vfs?attachments=11", &hv, None).await;
    assert_eq!(r.json, json!({ id.clone(): attached.clone() }));
    let r = p
        .req(
            "POST",
            &format!("/volumes/vfs/{id}?detach"),
            &hv,
            Some("{}"),
        )
        .await;
    assert_eq!(r.status, 205);
    r.check_servername();
    assert_eq!(r.json, plain);
    assert!(p.volumes().await[0]["attachments"]
        .as_array()
        .unwrap()
        .is_empty());
    // After the detach, "attached only" lists are empty.
    let r = p.req("GET", "/volumes/vfs?attachments=11", &hv, None).await;
    assert_eq!(r.json, json!({}));

    // volume rm demo1: ls 0 (no state, no attachments), DELETE → 204 without a body.
    dial(&p, &svcs).await;
    let r = p.req("GET", "/volumes/vfs?attachments=0", &hv, None).await;
    assert_eq!(
        r.json,
        json!({ id.clone(): {"name": "demo1", "size": 2, "id": id, "type": ""} })
    );
    let r = p
        .req(
            "DELETE",
            &format!("/volumes/vfs/{id}"),
            &[
                ("Libstorage-Instanceid", &iid("vfs", "vm")),
                ("Libstorage-Tx", &tx()),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    r.check_servername();
    assert!(r.raw.is_empty());
    assert!(p.volumes().await.is_empty());

    // volume rm nosuchvol: the list is empty.
    let r = p.req("GET", "/volumes/vfs?attachments=0", &hv, None).await;
    assert_eq!(r.json, json!({}));

    // adapter instances -s vfs: one instance id header per service.
    let (a, b) = (iid("vfs", "vm"), iid("vfs2", "vm"));
    let r = p
        .req(
            "GET",
            "/services?instance",
            &[("Libstorage-Instanceid", &a), ("Libstorage-Instanceid", &b)],
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    for s in svcs {
        assert_eq!(
            r.json[s]["instance"]["instanceID"],
            json!({"id": "vm", "driver": "vfs", "service": s})
        );
    }

    // All-services list: every service appears.
    let r = p.req("GET", "/volumes", &[], None).await;
    assert_eq!(r.json, json!({"vfs": {}, "vfs2": {}}));

    // curl probes of the capture.
    let r = p.req("GET", "/volumes/vfs/nosuch", &[], None).await;
    assert_eq!(
        r.json,
        json!({"message": "resource not found", "status": 404, "error": {"resourceID": "nosuch"}})
    );
    r.check_error(404, "resource not found");
    p.req("POST", "/volumes/vfs", &[], Some("{bad json"))
        .await
        .check_error(400, "validate req schema");
    p.req("GET", "/nosuchsvc", &[], None)
        .await
        .check_error(404, "404 page not found");
    let r = p.req("GET", "/volumes/nosvc", &[], None).await;
    r.check_error(404, "resource not found");
    assert_eq!(r.json["error"], json!({"resourceID": "nosvc"}));

    // Root and help.
    let r = p.req("GET", "/", &[], None).await;
    let host = p.libstorage.strip_prefix("http://").unwrap();
    assert_eq!(
        r.json,
        json!(["services", "snapshots", "tasks", "help", "volumes"]
            .iter()
            .map(|s| format!("http://{host}/{s}"))
            .collect::<Vec<_>>())
    );
    let r = p.req("GET", "/help/version", &[], None).await;
    assert_eq!(r.json, json!(env!("CARGO_PKG_VERSION")));
    // A 0.6.3+ server: no executor download.
    p.req("GET", "/executors", &[], None)
        .await
        .check_error(404, "404 page not found");
}

/// Three volumes: free, attached to "me", attached to "other"; each mask REX-Ray sends.
#[tokio::test]
async fn attachments_mask_filters_like_the_reference() {
    let p = Polly::start_services(&["vfs"], "");
    let me = h("vfs", "me");
    let me = refs(&me);
    let other = h("vfs", "other");
    let other = refs(&other);
    let mut ids = std::collections::BTreeMap::new();
    for name in ["free", "mine", "theirs"] {
        let r = p
            .req(
                "POST",
                "/volumes/vfs",
                &me,
                Some(&format!(r#"{{"name":"{name}"}}"#)),
            )
            .await;
        assert_eq!(r.status, 201);
        assert_eq!(r.json["size"], 1, "default size is 1 GiB");
        ids.insert(name, r.json["id"].as_str().unwrap().to_string());
    }
    let r = p
        .req(
            "POST",
            &format!("/volumes/vfs/{}?attach", ids["mine"]),
            &me,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let r = p
        .req(
            "POST",
            &format!("/volumes/vfs/{}?attach", ids["theirs"]),
            &other,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);

    // (mask, expected names with their attachmentState and number of attachments shown)
    let cases: &[(u32, &[Listed])] = &[
        (0, &[("free", 0, 0), ("mine", 0, 0), ("theirs", 0, 0)]),
        (1, &[("free", 3, 0), ("mine", 2, 1), ("theirs", 4, 1)]),
        (3, &[("free", 3, 0), ("mine", 2, 1), ("theirs", 4, 0)]),
        (9, &[("mine", 2, 1), ("theirs", 4, 1)]),
        (11, &[("mine", 2, 1)]),
        (15, &[("mine", 2, 1)]),
        (17, &[("free", 3, 0)]),
        (19, &[("free", 3, 0)]),
        (25, &[("free", 3, 0), ("mine", 2, 1), ("theirs", 4, 1)]),
        (27, &[("free", 3, 0), ("mine", 2, 1)]),
        (31, &[("free", 3, 0), ("mine", 2, 1)]),
    ];
    for (m, want) in cases {
        let r = p
            .req("GET", &format!("/volumes/vfs?attachments={m}"), &me, None)
            .await;
        assert_eq!(r.status, 200);
        let got: Vec<(String, u64, usize)> = r
            .json
            .as_object()
            .unwrap()
            .values()
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["attachmentState"].as_u64().unwrap_or(0),
                    v["attachments"].as_array().map_or(0, Vec::len),
                )
            })
            .collect();
        let mut got = got;
        got.sort();
        let want: Vec<(String, u64, usize)> = want
            .iter()
            .map(|(n, s, a)| (n.to_string(), *s, *a))
            .collect();
        assert_eq!(got, want, "mask {m}");
        // Inspect agrees with the list: filtered out means 404.
        for (name, id) in &ids {
            let r = p
                .req(
                    "GET",
                    &format!("/volumes/vfs/{id}?attachments={m}"),
                    &me,
                    None,
                )
                .await;
            let listed = want.iter().any(|(n, _, _)| n == name);
            assert_eq!(
                r.status.as_u16(),
                if listed { 200 } else { 404 },
                "mask {m} {name}"
            );
        }
    }
    // Masks that need the instance id refuse to run without it.
    let r = p.req("GET", "/volumes/vfs?attachments=2", &[], None).await;
    r.check_error(400, "missing instance ID");
    assert_eq!(r.json["error"], json!({"service": "vfs"}));
    // "true"/empty mean 15, "false" means 1.
    let r = p.req("GET", "/volumes/vfs?attachments", &me, None).await;
    assert_eq!(r.json.as_object().unwrap().len(), 1);
    let r = p
        .req("GET", "/volumes/vfs?attachments=false", &me, None)
        .await;
    assert_eq!(r.json.as_object().unwrap().len(), 3);
}

#[tokio::test]
async fn service_restrictions_hide_volumes_from_other_services() {
    let p = Polly::start_services(&["svcA", "svcB"], "");
    let ha = h("svcA", "host1");
    let ha = refs(&ha);
    let hb = h("svcB", "host1");
    let hb = refs(&hb);
    let r = p
        .req("POST", "/volumes/svcA", &ha, Some(r#"{"name":"secret"}"#))
        .await;
    let secret = r.json["id"].as_str().unwrap().to_string();
    let r = p
        .req("POST", "/volumes/svcA", &ha, Some(r#"{"name":"shared"}"#))
        .await;
    let shared = r.json["id"].as_str().unwrap().to_string();
    p.admin_post(
        &format!("/admin/volumes/{secret}/restrict"),
        json!({"services": ["svcA"]}),
    )
    .await;

    let names = |v: &Value| {
        let mut n: Vec<String> = v
            .as_object()
            .unwrap()
            .values()
            .map(|x| x["name"].as_str().unwrap().to_string())
            .collect();
        n.sort();
        n
    };
    let r = p.req("GET", "/volumes/svcA?attachments=1", &ha, None).await;
    assert_eq!(names(&r.json), ["secret", "shared"]);
    let r = p.req("GET", "/volumes/svcB?attachments=1", &hb, None).await;
    assert_eq!(names(&r.json), ["shared"]);
    let r = p.req("GET", "/volumes", &[], None).await;
    assert_eq!(names(&r.json["svcA"]), ["secret", "shared"]);
    assert_eq!(names(&r.json["svcB"]), ["shared"]);

    // Direct access through svcB: not found, whatever the verb.
    for (m, path, body) in [
        ("GET", format!("/volumes/svcB/{secret}"), None),
        ("GET", "/volumes/svcB/secret?byName".to_string(), None),
        ("POST", format!("/volumes/svcB/{secret}?attach"), Some("{}")),
        ("POST", format!("/volumes/svcB/{secret}?detach"), Some("{}")),
        ("DELETE", format!("/volumes/svcB/{secret}"), None),
    ] {
        let r = p.req(m, &path, &hb, body).await;
        r.check_error(404, "resource not found");
    }
    // Through svcA it works, and the unrestricted one works through both.
    let r = p
        .req("GET", &format!("/volumes/svcA/{secret}"), &ha, None)
        .await;
    assert_eq!(r.status, 200);
    for (svc, hs) in [("svcA", &ha), ("svcB", &hb)] {
        let path = format!("/volumes/{svc}/{shared}?attachments=1");
        let r = p.req("GET", &path, hs, None).await;
        assert_eq!(r.status, 200, "{svc}");
    }
    // The restricted volume is still there, untouched.
    let vols = p.volumes().await;
    assert_eq!(vols.len(), 2);
}

#[tokio::test]
async fn single_writer_refuses_other_instances_unless_forced() {
    let p = Polly::start_services(&["vfs"], "");
    let a = h("vfs", "hostA");
    let a = refs(&a);
    let b = h("vfs", "hostB");
    let b = refs(&b);
    let r = p
        .req("POST", "/volumes/vfs", &a, Some(r#"{"name":"db"}"#))
        .await;
    let id = r.json["id"].as_str().unwrap().to_string();
    let path = format!("/volumes/vfs/{id}?attach");
    let r = p
        .req("POST", &path, &a, Some(r#"{"nextDeviceName":"/dev/xvda"}"#))
        .await;
    assert_eq!(r.status, 200);

    let r = p
        .req("POST", &path, &b, Some(r#"{"nextDeviceName":"/dev/xvdb"}"#))
        .await;
    r.check_error(500, "attached to hostA");
    let vols = p.volumes().await;
    assert_eq!(vols[0]["attachments"].as_array().unwrap().len(), 1);
    assert_eq!(vols[0]["attachments"][0]["instance_id"], "hostA");
    // Through hostB's eyes the volume is unavailable.
    let r = p
        .req("GET", &format!("/volumes/vfs/{id}?attachments=1"), &b, None)
        .await;
    assert_eq!(r.json["attachmentState"], 4);

    let r = p
        .req(
            "POST",
            &path,
            &b,
            Some(r#"{"nextDeviceName":"/dev/xvdb","force":true}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    assert_eq!(r.json["attachToken"], "/dev/xvdb");
    assert_eq!(r.json["volume"]["attachmentState"], 2);
    let vols = p.volumes().await;
    let atts = vols[0]["attachments"].as_array().unwrap();
    assert_eq!(atts.len(), 1);
    assert_eq!(atts[0]["instance_id"], "hostB");
    assert_eq!(atts[0]["device"], "/dev/xvdb");

    // hostA's detach of a volume it no longer holds is a harmless 205.
    let r = p
        .req("POST", &format!("/volumes/vfs/{id}?detach"), &a, Some("{}"))
        .await;
    assert_eq!(r.status, 205);
    assert_eq!(r.json["attachmentState"], 4);
    assert_eq!(
        p.volumes().await[0]["attachments"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Deleting an attached volume fails; detach-all for hostB frees it.
    p.req("DELETE", &format!("/volumes/vfs/{id}"), &a, None)
        .await
        .check_error(500, "attached");
    let r = p.req("POST", "/volumes/vfs?detach", &b, Some("{}")).await;
    assert_eq!(r.status, 205);
    assert_eq!(r.json[&id]["attachmentState"], 3);
    assert!(p.volumes().await[0]["attachments"]
        .as_array()
        .unwrap()
        .is_empty());
    // Global detach-all with nothing attached: an empty map.
    let r = p.req("POST", "/volumes?detach", &b, Some("{}")).await;
    assert_eq!((r.status.as_u16(), &r.json), (205, &json!({})));
}

#[tokio::test]
async fn create_and_attach_are_idempotent() {
    let p = Polly::start_services(&["vfs"], "");
    let a = h("vfs", "hostA");
    let a = refs(&a);
    let body = r#"{"name":"same","size":3,"opts":{"owner":"me","priority":2}}"#;
    let r1 = p.req("POST", "/volumes/vfs", &a, Some(body)).await;
    let r2 = p.req("POST", "/volumes/vfs", &a, Some(body)).await;
    assert_eq!((r1.status.as_u16(), r2.status.as_u16()), (201, 201));
    assert_eq!(r1.json["id"], r2.json["id"]);
    assert_eq!(r1.json["fields"], json!({"owner": "me", "priority": "2"}));
    assert_eq!(p.volumes().await.len(), 1);
    // Same name, other size: refused, nothing created.
    let r = p
        .req(
            "POST",
            "/volumes/vfs",
            &a,
            Some(r#"{"name":"same","size":4}"#),
        )
        .await;
    r.check_error(500, "already exists");
    assert_eq!(p.volumes().await.len(), 1);

    let id = r1.json["id"].as_str().unwrap();
    for _ in 0..2 {
        let r = p
            .req(
                "POST",
                &format!("/volumes/vfs/{id}?attach"),
                &a,
                Some(r#"{"nextDeviceName":"/dev/xvda"}"#),
            )
            .await;
        assert_eq!(r.status, 200);
        assert_eq!(r.json["volume"]["attachments"].as_array().unwrap().len(), 1);
    }
    let v = &p.volumes().await[0];
    assert_eq!(v["attachments"].as_array().unwrap().len(), 1);
    assert_eq!(v["labels"], json!({"owner": "me", "priority": "2"}));
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let p = Polly::start_services(&["vfs"], "");
    let a = h("vfs", "hostA");
    let a = refs(&a);
    let r = p
        .req("POST", "/volumes/vfs", &a, Some(r#"{"name":"keep"}"#))
        .await;
    let id = r.json["id"].as_str().unwrap().to_string();
    let before = p.admin_get("/admin/store/dump").await;

    let big = format!(
        r#"{{"name":"x","opts":{{"pad":"{}"}}}}"#,
        "a".repeat(2 << 20)
    );
    let vpath = format!("/volumes/vfs/{id}");
    let attach = format!("/volumes/vfs/{id}?attach");
    let cases: Vec<BadCase> = vec![
        // malformed or wrong JSON
        (
            "POST",
            "/volumes/vfs".into(),
            a.clone(),
            Some("{bad json"),
            400,
            "validate req schema",
        ),
        (
            "POST",
            "/volumes/vfs".into(),
            a.clone(),
            Some("[1,2]"),
            400,
            "validate req schema",
        ),
        (
            "POST",
            "/volumes/vfs".into(),
            a.clone(),
            Some("{}"),
            400,
            "validate req schema",
        ),
        (
            "POST",
            "/volumes/vfs".into(),
            a.clone(),
            Some(r#"{"name":"x","bogus":1}"#),
            400,
            "validate req schema",
        ),
        (
            "POST",
            "/volumes/vfs".into(),
            a.clone(),
            Some(r#"{"name":"x","size":-1}"#),
            400,
            "size",
        ),
        (
            "POST",
            "/volumes/vfs".into(),
            a.clone(),
            Some(r#"{"name":"bad name!"}"#),
            400,
            "volume name",
        ),
        (
            "POST",
            attach.clone(),
            a.clone(),
            Some(r#"{"force":"yes"}"#),
            400,
            "validate req schema",
        ),
        (
            "POST",
            "/volumes/vfs".into(),
            a.clone(),
            Some(&big),
            413,
            "larger than",
        ),
        // unknown service / volume / route
        (
            "GET",
            "/services/nosvc".into(),
            vec![],
            None,
            404,
            "resource not found",
        ),
        (
            "GET",
            "/volumes/nosvc".into(),
            vec![],
            None,
            404,
            "resource not found",
        ),
        (
            "POST",
            "/volumes/nosvc".into(),
            a.clone(),
            Some(r#"{"name":"x"}"#),
            404,
            "resource not found",
        ),
        (
            "GET",
            "/volumes/vfs/pv-nosuch".into(),
            a.clone(),
            None,
            404,
            "resource not found",
        ),
        (
            "POST",
            "/volumes/vfs/pv-nosuch?attach".into(),
            a.clone(),
            Some("{}"),
            404,
            "resource not found",
        ),
        (
            "POST",
            "/volumes/vfs/pv-nosuch?detach".into(),
            a.clone(),
            Some("{}"),
            404,
            "resource not found",
        ),
        (
            "DELETE",
            "/volumes/vfs/pv-nosuch".into(),
            a.clone(),
            None,
            404,
            "resource not found",
        ),
        (
            "POST",
            vpath.clone(),
            a.clone(),
            Some("{}"),
            404,
            "404 page not found",
        ),
        (
            "PUT",
            vpath.clone(),
            a.clone(),
            Some("{}"),
            404,
            "404 page not found",
        ),
        // missing instance id
        (
            "POST",
            attach.clone(),
            vec![],
            Some("{}"),
            400,
            "missing instance ID",
        ),
        (
            "GET",
            "/services/vfs?instance".into(),
            vec![],
            None,
            400,
            "missing instance ID",
        ),
        // garbage in each Libstorage-* header
        (
            "GET",
            "/volumes/vfs".into(),
            vec![("Libstorage-Instanceid", "garbage")],
            None,
            400,
            "invalid InstanceID",
        ),
        (
            "POST",
            attach.clone(),
            vec![("Libstorage-Instanceid", "vfs=,,@@@")],
            Some("{}"),
            400,
            "invalid InstanceID",
        ),
        (
            "DELETE",
            vpath.clone(),
            vec![("Libstorage-Instanceid", "=x")],
            None,
            400,
            "invalid InstanceID",
        ),
        (
            "GET",
            "/volumes/vfs".into(),
            vec![("Libstorage-Localdevices", "vfs=/dev/xvda")],
            None,
            400,
            "invalid LocalDevices",
        ),
        (
            "DELETE",
            vpath.clone(),
            vec![("Libstorage-Localdevices", "nodriver")],
            None,
            400,
            "invalid LocalDevices",
        ),
        (
            "GET",
            "/services".into(),
            vec![("Libstorage-Tx", "txID=nope, txCR=1")],
            None,
            400,
            "invalid transaction",
        ),
        (
            "DELETE",
            vpath.clone(),
            vec![("Libstorage-Tx", "garbage")],
            None,
            400,
            "invalid transaction",
        ),
    ];
    for (m, path, hs, body, status, msg) in &cases {
        let r = p.req(m, path, hs, *body).await;
        r.check_error(*status, msg);
    }
    // Still up, and the store is exactly as before.
    let r = p.req("GET", "/services", &[], None).await;
    assert_eq!(r.status, 200);
    let after = p.admin_get("/admin/store/dump").await;
    assert_eq!(after["volumes"], before["volumes"]);
    assert_eq!(after["intents"], before["intents"]);
    assert_eq!(p.volumes().await.len(), 1);
}

#[tokio::test]
async fn a_slow_synchronous_request_answers_408_and_finishes_as_a_task() {
    // Every driver call of service `slow` takes 1.5 s; requests may take 0.3 s.
    let p = Polly::start_services(
        &["vfs"],
        "[[services]]\nname = \"slow\"\ndriver = \"vfs\"\n[services.fault]\nlatency_ms = 1500\n\
         [libstorage]\nexe_timeout_ms = 300\n",
    );
    let a = h("slow", "hostA");
    let a = refs(&a);
    // Requests that touch no driver answer normally.
    let r = p.req("GET", "/volumes/slow", &a, None).await;
    assert_eq!(r.status, 200, "{}", r.raw);

    let started = std::time::Instant::now();
    let r = p
        .req(
            "POST",
            "/volumes/slow",
            &a,
            Some(r#"{"name":"late","size":1}"#),
        )
        .await;
    assert_eq!(r.status, 408, "{}", r.raw);
    r.check_servername();
    assert!(
        started.elapsed() < std::time::Duration::from_millis(1400),
        "408 came only after the driver call: {:?}",
        started.elapsed()
    );
    assert_eq!(r.json["state"], "running", "{}", r.raw);
    let id = r.json["id"].as_u64().unwrap();

    // The task keeps running and reports the volume the synchronous call would have, to
    // its caller (hostA) only.
    let r = p.req("GET", &format!("/tasks/{id}"), &[], None).await;
    r.check_error(404, "resource not found");
    let mut task = Value::Null;
    for _ in 0..300 {
        task = p.req("GET", &format!("/tasks/{id}"), &a, None).await.json;
        if task["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(task["state"], "success", "{task}");
    assert_eq!(task["result"]["name"], "late", "{task}");
    let vols = p.volumes().await;
    assert!(vols.iter().any(|v| v["name"] == "late"), "{vols:?}");
}
