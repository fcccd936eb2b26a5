//! Admin API round trips and the bad-input matrix, against the real `polly serve`.

mod harness;

use std::collections::BTreeMap;

use harness::{vfs_volume_dirs, Polly};
use polly::client::Error as ClientError;
use polly::volumes::{CreateVolume, Restriction};

fn create_req(name: &str, size: u64) -> CreateVolume {
    CreateVolume {
        service: "vfs".into(),
        name: name.into(),
        size_bytes: size,
        ..Default::default()
    }
}

fn api_status<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, code, .. }) => (status, code),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn every_admin_call_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start(dir.path());
    let c = polly.client();

    let v = c.version().await.unwrap();
    assert_eq!(v.version, env!("CARGO_PKG_VERSION"));

    // create (201), idempotent repeat (same volume), then a conflicting size
    let mut req = create_req("db", 1 << 30);
    req.labels = BTreeMap::from([("tier".into(), "gold".into())]);
    let vol = c.create(&req).await.unwrap();
    assert!(vol.id.starts_with("pv-"));
    assert_eq!(vol.labels["tier"], "gold");
    let again = c.create(&req).await.unwrap();
    assert_eq!(again.id, vol.id);
    let (status, code) = api_status(c.create(&create_req("db", 2 << 30)).await);
    assert_eq!((status, code.as_str()), (409, "conflict"));
    assert_eq!(vfs_volume_dirs(dir.path(), "vfs").len(), 1);

    // inspect by id and by name
    assert_eq!(c.inspect(&vol.id, None).await.unwrap(), vol);
    assert_eq!(c.inspect("db", Some("vfs")).await.unwrap().id, vol.id);
    assert_eq!(c.inspect("db", None).await.unwrap().id, vol.id);

    // list
    let l = c.volumes(false).await.unwrap();
    assert_eq!(l.volumes.len(), 1);
    assert!(l.unmanaged.is_none());

    // restrict / unrestrict
    let r = Restriction {
        services: ["vfs".to_string()].into(),
        frameworks: ["fw-1".to_string(), "fw-2".to_string()].into(),
    };
    let v2 = c.restrict(&vol.id, None, &r).await.unwrap();
    assert_eq!(v2.restrict_frameworks.len(), 2);
    assert!(v2.restrict_services.contains("vfs"));
    let v3 = c
        .unrestrict(
            &vol.id,
            None,
            &Restriction {
                services: Default::default(),
                frameworks: ["fw-1".to_string()].into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        v3.restrict_frameworks.iter().collect::<Vec<_>>(),
        vec!["fw-2"]
    );
    let v4 = c
        .unrestrict(&vol.id, None, &Restriction::default())
        .await
        .unwrap();
    assert!(v4.restrict_frameworks.is_empty() && v4.restrict_services.is_empty());

    // label / unlabel
    let v5 = c
        .label(
            &vol.id,
            None,
            BTreeMap::from([
                ("app".into(), "pg".into()),
                ("tier".into(), "silver".into()),
            ]),
        )
        .await
        .unwrap();
    assert_eq!(v5.labels["tier"], "silver");
    assert_eq!(v5.labels["app"], "pg");
    let v6 = c.unlabel(&vol.id, None, vec!["tier".into()]).await.unwrap();
    assert_eq!(v6.labels.keys().collect::<Vec<_>>(), vec!["app"]);

    // attach / detach, instances
    let a = c
        .attach(&vol.id, None, "host-a", Some("/dev/xvdb".into()))
        .await
        .unwrap();
    assert_eq!(a.attachments.len(), 1);
    assert_eq!(a.attachments[0].device, "/dev/xvdb");
    let a2 = c.attach(&vol.id, None, "host-a", None).await.unwrap();
    assert_eq!(a2.attachments.len(), 1, "attach is idempotent per instance");
    let (status, _) = api_status(c.attach(&vol.id, None, "host-b", None).await);
    assert_eq!(status, 409, "single writer");
    let inst = c.instances().await.unwrap();
    assert!(inst.iter().any(|i| i.instance_id == "host-a"));
    let (status, _) = api_status(c.delete(&vol.id, None).await);
    assert_eq!(status, 409, "attached volumes are not deleted");
    let d = c
        .detach(&vol.id, None, Some("host-a".into()), false)
        .await
        .unwrap();
    assert!(d.attachments.is_empty());
    c.attach(&vol.id, None, "host-b", None).await.unwrap();
    let f = c.detach(&vol.id, None, None, true).await.unwrap();
    assert!(f.attachments.is_empty(), "force-detach clears all");

    // services with capacity
    let s = c.services().await.unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].name, "vfs");
    assert_eq!(s[0].driver, "vfs");
    assert_eq!(s[0].volumes, 1);
    assert_eq!(s[0].provisioned_bytes, 1 << 30);
    assert!(s[0].capacity[0].total_bytes >= s[0].capacity[0].free_bytes);
    assert!(s[0].capacity[0].total_bytes > 0);

    // operations: nothing in flight
    assert!(c.operations().await.unwrap().is_empty());

    // orphans: none, then one made behind Polly's back by erasing the store
    assert!(c.orphans().await.unwrap().orphans.is_empty());
    let dump = c.dump().await.unwrap();
    assert_eq!(dump.volumes.len(), 1);
    assert_eq!(dump.schema_version, polly::store::SCHEMA_VERSION);

    // delete, then it is gone on the back-end too
    c.delete(&vol.id, None).await.unwrap();
    assert!(vfs_volume_dirs(dir.path(), "vfs").is_empty());
    let (status, _) = api_status(c.inspect(&vol.id, None).await);
    assert_eq!(status, 404);

    // erase: records go, back-end volumes stay and show as orphans (and in ls --all)
    let kept = c.create(&create_req("kept", 4096)).await.unwrap();
    c.erase().await.unwrap();
    assert!(c.volumes(false).await.unwrap().volumes.is_empty());
    let o = c.orphans().await.unwrap();
    assert_eq!(o.orphans.len(), 1);
    assert_eq!(o.orphans[0].name, "kept");
    assert_eq!(Some(o.orphans[0].driver_id.clone()), kept.driver_id);
    let all = c.volumes(true).await.unwrap();
    assert_eq!(all.unmanaged.unwrap().len(), 1);
    assert_eq!(vfs_volume_dirs(dir.path(), "vfs").len(), 1, "never deleted");
}

#[tokio::test]
async fn health_ready_metrics_and_openapi() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start(dir.path());
    let http = reqwest::Client::new();
    let get = |p: &str| http.get(format!("{}{p}", polly.admin)).send();
    assert_eq!(get("/admin/health").await.unwrap().status(), 200);
    assert_eq!(get("/admin/ready").await.unwrap().status(), 200);
    polly.client().create(&create_req("m", 4096)).await.unwrap();
    let m = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        m.contains(r#"polly_operations_total{op="create",outcome="ok"} 1"#),
        "{m}"
    );
    assert!(m.contains("polly_driver_call_seconds_bucket"), "{m}");
    assert!(m.contains("polly_operations_in_flight 0"), "{m}");
    let doc: serde_json::Value = get("/admin/openapi.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
}

/// Send a raw request; returns status and JSON body.
async fn raw(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut r = http.request(method, url);
    if let Some(t) = token {
        r = r.header("Authorization", format!("Bearer {t}"));
    }
    if let Some(b) = body {
        r = r.body(b.to_string());
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, json)
}

/// method, path, token, body, expected status
type Case<'a> = (
    reqwest::Method,
    String,
    Option<&'a str>,
    Option<String>,
    u16,
);

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error_and_changes_nothing() {
    use reqwest::Method as M;
    let dir = tempfile::tempdir().unwrap();
    let mut polly = Polly::start_with(dir.path(), None, Some("s3cret"));
    let c = polly.client();
    let vol = c.create(&create_req("keep", 1 << 20)).await.unwrap();
    let before = c.dump().await.unwrap();
    let http = reqwest::Client::new();
    let base = polly.admin.clone();
    let id = vol.id.clone();
    let t = Some("s3cret");
    let huge = format!("{}", u64::MAX);
    let cases: Vec<Case> = vec![
        // auth
        (M::GET, "/admin/volumes".into(), None, None, 401),
        (M::GET, "/admin/volumes".into(), Some("wrong"), None, 401),
        (
            M::POST,
            "/admin/volumes".into(),
            None,
            Some(r#"{"service":"vfs","name":"x","size_bytes":1}"#.into()),
            401,
        ),
        // malformed JSON and wrong shapes
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some("{not json".into()),
            400,
        ),
        (M::POST, "/admin/volumes".into(), t, Some("[]".into()), 400),
        // serde reads a struct from an array of its fields: `[]` is not `{}`
        (
            M::POST,
            format!("/admin/volumes/{id}/unlabel"),
            t,
            Some(r#"[["tier"]]"#.into()),
            400,
        ),
        (
            M::POST,
            "/admin/agents/n1/fence".into(),
            t,
            Some("[]".into()),
            400,
        ),
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(r#"{"service":"vfs","name":"x"}"#.into()),
            400,
        ),
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(r#"{"service":"vfs","name":"x","size_bytes":1,"bogus":1}"#.into()),
            400,
        ),
        // sizes: negative, zero, beyond u64, beyond the 1 PiB limit
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(r#"{"service":"vfs","name":"x","size_bytes":-1}"#.into()),
            400,
        ),
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(r#"{"service":"vfs","name":"x","size_bytes":0}"#.into()),
            400,
        ),
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(format!(
                r#"{{"service":"vfs","name":"x","size_bytes":{huge}0}}"#
            )),
            400,
        ),
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(format!(
                r#"{{"service":"vfs","name":"x","size_bytes":{huge}}}"#
            )),
            400,
        ),
        // bad names, labels, services
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(r#"{"service":"vfs","name":"../etc","size_bytes":1}"#.into()),
            400,
        ),
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(r#"{"service":"vfs","name":"","size_bytes":1}"#.into()),
            400,
        ),
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(format!(
                r#"{{"service":"vfs","name":"{}","size_bytes":1}}"#,
                "a".repeat(129)
            )),
            400,
        ),
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(r#"{"service":"vfs","name":"x","size_bytes":1,"labels":{"bad key":"v"}}"#.into()),
            400,
        ),
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(r#"{"service":"nope","name":"x","size_bytes":1}"#.into()),
            404,
        ),
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(
                r#"{"service":"vfs","name":"x","size_bytes":1,"restrict_services":["nope"]}"#
                    .into(),
            ),
            404,
        ),
        (
            M::POST,
            "/admin/volumes".into(),
            t,
            Some(r#"{"service":"vfs","name":"x","size_bytes":1,"access_mode":"everyone"}"#.into()),
            400,
        ),
        // unknown ids
        (M::GET, "/admin/volumes/pv-unknown".into(), t, None, 404),
        (M::DELETE, "/admin/volumes/pv-unknown".into(), t, None, 404),
        (
            M::POST,
            "/admin/volumes/pv-unknown/attach".into(),
            t,
            Some(r#"{"instance_id":"h"}"#.into()),
            404,
        ),
        (
            M::POST,
            "/admin/volumes/pv-unknown/label".into(),
            t,
            Some(r#"{"labels":{"a":"b"}}"#.into()),
            404,
        ),
        // bad bodies on a real volume
        (
            M::POST,
            format!("/admin/volumes/{id}/attach"),
            t,
            Some(r#"{"instance_id":""}"#.into()),
            400,
        ),
        (
            M::POST,
            format!("/admin/volumes/{id}/attach"),
            t,
            Some("{}".into()),
            400,
        ),
        (
            M::POST,
            format!("/admin/volumes/{id}/detach"),
            t,
            Some("{}".into()),
            400,
        ),
        (
            M::POST,
            format!("/admin/volumes/{id}/label"),
            t,
            Some(r#"{"labels":{"":"v"}}"#.into()),
            400,
        ),
        (
            M::POST,
            format!("/admin/volumes/{id}/restrict"),
            t,
            Some(r#"{"services":["nope"]}"#.into()),
            404,
        ),
        (
            M::POST,
            format!("/admin/volumes/{id}/unlabel"),
            t,
            Some(r#"{"keys":"notalist"}"#.into()),
            400,
        ),
        (
            M::POST,
            "/admin/store/erase".into(),
            t,
            Some("{}".into()),
            400,
        ),
        // query strings and paths that do not parse: JSON errors naming them, not axum's
        // plain text
        (M::GET, "/admin/volumes?all=maybe".into(), t, None, 400),
        (M::GET, "/admin/volumes/%FF".into(), t, None, 400),
        (M::GET, format!("/admin/volumes/{id}/source"), t, None, 400),
        // unknown routes and methods
        (M::GET, "/admin/nothing".into(), t, None, 404),
        (M::PUT, "/admin/volumes".into(), t, None, 405),
    ];
    for (method, path, token, body, want) in cases {
        let (status, json) = raw(
            &http,
            method.clone(),
            format!("{base}{path}"),
            token,
            body.as_deref(),
        )
        .await;
        assert_eq!(status, want, "{method} {path} {body:?}: {json}");
        assert!(
            json["error"].is_string() && json["message"].is_string(),
            "{method} {path}: {json}"
        );
        assert!(polly.alive(), "server died on {method} {path}");
    }
    assert_eq!(
        c.dump().await.unwrap(),
        before,
        "store changed by bad input"
    );
    assert_eq!(vfs_volume_dirs(dir.path(), "vfs").len(), 1);
    // health stays open without a token
    let (s, _) = raw(&http, M::GET, format!("{base}/admin/health"), None, None).await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn label_values_are_capped_in_characters_as_the_openapi_document_says() {
    // maxLength counts characters: 1024 of them in 2 bytes each is a valid value.
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start(dir.path());
    let c = polly.client();
    let v = c.create(&create_req("l", 4096)).await.unwrap();
    let ok = BTreeMap::from([("k".to_string(), "é".repeat(1024))]);
    let labelled = c.label(&v.id, None, ok).await.unwrap();
    assert_eq!(labelled.labels["k"].chars().count(), 1024);
    let over = BTreeMap::from([("k".to_string(), "é".repeat(1025))]);
    let (status, _) = api_status(c.label(&v.id, None, over).await);
    assert_eq!(status, 400);
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(dir.path(), None, Some("s3cret"));
    let http = reqwest::Client::new();
    for (auth, want) in [
        ("Bearer s3cret", 200),
        ("bearer s3cret", 200),
        ("BEARER s3cret", 200),
        ("bearer wrong", 401),
        ("Basic s3cret", 401),
    ] {
        let r = http
            .get(format!("{}/admin/version", polly.admin))
            .header("Authorization", auth)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want, "{auth}");
    }
}

#[tokio::test]
async fn metrics_are_text_0_0_4_unless_openmetrics_is_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start(dir.path());
    polly.client().create(&create_req("m", 4096)).await.unwrap();
    let http = reqwest::Client::new();
    let scrape = |accept: Option<&'static str>| {
        let mut r = http.get(format!("{}/metrics", polly.admin));
        if let Some(a) = accept {
            r = r.header("Accept", a);
        }
        async move {
            let r = r.send().await.unwrap();
            let ct = r.headers()["content-type"].to_str().unwrap().to_string();
            (ct, r.text().await.unwrap())
        }
    };
    for accept in [None, Some("*/*"), Some("text/plain;version=0.0.4")] {
        let (ct, text) = scrape(accept).await;
        assert!(
            ct.starts_with("text/plain; version=0.0.4"),
            "{accept:?}: {ct}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        // A 0.0.4 parser ties HELP and TYPE to the samples' name: `_total` for counters.
        assert!(
            text.contains("# HELP polly_operations_total ")
                && text.contains("# TYPE polly_operations_total counter"),
            "{text}"
        );
        assert!(text.contains(r#"polly_operations_total{op="create",outcome="ok"} 1"#));
    }
    // Prometheus' own scrape header prefers OpenMetrics.
    let (ct, om) = scrape(Some(
        "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
    ))
    .await;
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    assert!(om.ends_with("# EOF\n") && om.contains("# TYPE polly_operations counter"));
}

#[tokio::test]
async fn unrestricting_a_service_that_no_longer_exists_is_allowed() {
    // Restrictions name services; removing a name that is not configured must still work so
    // an operator can clean up after a service was removed from the config.
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start(dir.path());
    let c = polly.client();
    let v = c.create(&create_req("r", 4096)).await.unwrap();
    let r = Restriction {
        services: ["gone".to_string()].into(),
        frameworks: Default::default(),
    };
    assert_eq!(api_status(c.restrict(&v.id, None, &r).await).0, 404);
    c.unrestrict(&v.id, None, &r).await.unwrap();
}

#[tokio::test]
async fn every_documented_operation_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start(dir.path());
    let v = polly
        .client()
        .create(&create_req("doc", 4096))
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_str(polly::admin::OPENAPI).unwrap();
    let http = reqwest::Client::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            let url = format!("{}{}", polly.admin, path.replace("{id}", &v.id));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            // An empty JSON object: enough to reach the handler, never a destructive erase.
            let resp = http.request(m, &url).body("{}").send().await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.text().await.unwrap();
            assert_ne!(status, 405, "{method} {path} not routed");
            let code = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|j| j.get("error").cloned());
            assert_ne!(code, Some("no_route".into()), "{method} {path} not routed");
            let documented = ops[method]["responses"].get(status.to_string()).is_some();
            assert!(
                documented,
                "{method} {path} answered {status}, not documented: {body}"
            );
        }
    }
}

/// The default vfs service has no `quota_bytes`: its volumes are thin, but one larger than
/// the file system could never be filled, so it is refused as a quota refusal is (admin 507
/// `insufficient_capacity`, the façade's driver error with the same message), and nothing is
/// stored or made on disk.
#[tokio::test]
async fn the_default_vfs_service_refuses_what_the_file_system_cannot_hold() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start(dir.path());
    let c = polly.client();
    let kept = c.create(&create_req("fits", 1 << 30)).await.unwrap();
    let before = c.dump().await.unwrap();

    let pib = 1u64 << 50; // the largest size Polly takes, far beyond this disk
    match c.create(&create_req("huge", pib)).await {
        Err(ClientError::Api {
            status,
            code,
            message,
        }) => {
            assert_eq!((status, code.as_str()), (507, "insufficient_capacity"));
            assert!(
                message.contains("service \"vfs\"")
                    && message.contains(&format!("{pib} requested")),
                "{message}"
            );
        }
        other => panic!("a 1 PiB volume on the default vfs service: {other:?}"),
    }
    let r = polly
        .req(
            "POST",
            "/volumes/vfs",
            &[],
            Some(r#"{"name":"huge2","size":1048576}"#),
        )
        .await;
    r.check_error(500, "bytes free");
    assert!(r.raw.contains(&format!("{pib} requested")), "{}", r.raw);

    assert_eq!(c.dump().await.unwrap(), before);
    assert_eq!(vfs_volume_dirs(dir.path(), "vfs").len(), 1);
    // What fits still does.
    assert_ne!(
        c.create(&create_req("fits2", 1 << 30)).await.unwrap().id,
        kept.id
    );
}

/// Device names, instance ids and hostnames with NUL or control characters, a `..` path
/// component or more than 256 characters are refused with a 400 naming the input, through the
/// admin API and the libStorage façade, and nothing is stored: no attachment, no instance.
#[tokio::test]
async fn bad_device_names_and_instance_ids_are_refused_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start(dir.path());
    let c = polly.client();
    let vol = c.create(&create_req("v", 1 << 20)).await.unwrap();
    let before = c.dump().await.unwrap();
    let http = reqwest::Client::new();
    let huge = "x".repeat(900_000);
    let long = "y".repeat(257);
    let attach = format!("{}/admin/volumes/{}/attach", polly.admin, vol.id);
    let report = format!("{}/admin/instances", polly.admin);
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            &attach,
            serde_json::json!({"instance_id": "h", "device": "../../etc"}),
            "device name",
        ),
        (
            &attach,
            serde_json::json!({"instance_id": "h", "device": "/dev/\u{0}xvdb"}),
            "device name",
        ),
        (
            &attach,
            serde_json::json!({"instance_id": "h", "device": huge}),
            "device name",
        ),
        (
            &attach,
            serde_json::json!({"instance_id": "../../etc"}),
            "instance id",
        ),
        (
            &attach,
            serde_json::json!({"instance_id": "h\u{0}"}),
            "instance id",
        ),
        (
            &attach,
            serde_json::json!({"instance_id": "h\nforged"}),
            "instance id",
        ),
        (
            &attach,
            serde_json::json!({"instance_id": long}),
            "instance id",
        ),
        (
            &attach,
            serde_json::json!({"instance_id": huge}),
            "instance id",
        ),
        (
            &report,
            serde_json::json!({"instance_id": ".."}),
            "instance id",
        ),
        (
            &report,
            serde_json::json!({"instance_id": huge}),
            "instance id",
        ),
        (
            &report,
            serde_json::json!({"instance_id": "n\u{1b}[2J"}),
            "instance id",
        ),
        (
            &report,
            serde_json::json!({"instance_id": "n", "hostname": "a\u{0}b"}),
            "hostname",
        ),
        (
            &report,
            serde_json::json!({"instance_id": "n", "hostname": long}),
            "hostname",
        ),
    ];
    for (url, body, names) in &cases {
        let resp = http.post(*url).json(body).send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let shown: String = body.to_string().chars().take(80).collect();
        assert_eq!(status, 400, "{url} {shown}: {text}");
        let j: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(j["error"], "bad_request", "{text}");
        let msg = j["message"].as_str().unwrap();
        assert!(msg.contains(names) && msg.len() < 400, "{shown}: {msg}");
    }

    // The façade: the attach body's device name, and the instance id header.
    let good = harness::iid("vfs", "hostA");
    let path = format!("/volumes/vfs/{}?attach", vol.id);
    for device in ["../../etc", "/dev/xvdb\u{0}", &huge] {
        let body = serde_json::json!({ "nextDeviceName": device }).to_string();
        let r = polly
            .req(
                "POST",
                &path,
                &[("Libstorage-Instanceid", &good)],
                Some(&body),
            )
            .await;
        r.check_error(400, "device name");
    }
    let meta = |host: &str| {
        use base64::Engine;
        let json = serde_json::to_string(host).unwrap();
        format!(
            "vfs=,,{}",
            base64::engine::general_purpose::STANDARD.encode(json)
        )
    };
    for header in [
        "vfs=../../etc".to_string(),
        "vfs:vfs=a\tb".to_string(),
        format!("vfs={long}"),
        meta("host\u{0}"),
        meta(&long),
    ] {
        for (m, p, body) in [
            ("POST", path.as_str(), Some("{}")),
            ("GET", "/volumes/vfs?attachments", None),
        ] {
            let r = polly
                .req(m, p, &[("Libstorage-Instanceid", &header)], body)
                .await;
            r.check_error(400, "invalid InstanceID");
            let reason = r.json["error"]["reason"].as_str().unwrap_or_default();
            assert!(
                reason.contains("instance id") || reason.contains("hostname"),
                "{header:?}: {}",
                r.raw
            );
        }
    }
    assert_eq!(c.dump().await.unwrap(), before);
}

/// `polly serve` raises its soft open-files limit to the hard one at start: each client
/// connection is a file, and a soft limit of 1,024 is reached by a thousand idle
/// connections, after which no listener (health included) accepts anything.
#[test]
fn the_server_raises_its_open_files_limit() {
    let limits = |pid: u32| -> (String, String) {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_string();
        let mut cols = line.split_whitespace().skip(3);
        (
            cols.next().unwrap().to_string(),
            cols.next().unwrap().to_string(),
        )
    };
    let own = limits(std::process::id());
    if own.1 == "256" || own.1 == "unlimited" {
        panic!(
            "the test needs a hard open-files limit above 256, not {}",
            own.1
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let wrap: Vec<String> = ["prlimit", "--nofile=256:", "--"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut p = Polly::start_wrapped(&dir.path().join("d"), None, &wrap);
    let pid = p.server_pid().expect("polly runs");
    let (soft, hard) = limits(pid);
    assert_eq!(soft, hard, "soft limit left at {soft}");
    assert_eq!(hard, own.1);
    p.stop_wrapped(std::time::Duration::from_secs(10));
}
