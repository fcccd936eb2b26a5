//! JWT bearer auth and TLS on the libStorage façade, over real HTTP against `polly serve`:
//! the bad-token matrix (each refused with the reference's exact 401 body and the store left
//! unchanged), global versus per-service scope, a service with its own auth as a tenant
//! (its volumes out of reach through every route, tasks kept to their caller), and a TLS
//! listener that answers TLS only.

mod harness;

use std::sync::Arc;

use harness::{iid, refs, Polly};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use rustls::pki_types::pem::PemObject;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "polly-test-secret";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A token as `rexray token new` makes it, from explicit claims.
fn token_with(key: &str, alg: Algorithm, claims: Value) -> String {
    encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

/// A valid HS256 token for `sub` signed with `key`.
fn token(key: &str, sub: &str) -> String {
    token_with(
        key,
        Algorithm::HS256,
        json!({"sub": sub, "iat": now(), "nbf": now() - 5, "exp": now() + 3600}),
    )
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

/// The reference's 401, to the byte.
fn check_401(r: &harness::Reply, what: &str) {
    r.check_servername();
    assert_eq!(r.status, 401, "{what}: {}", r.raw);
    assert_eq!(
        r.json,
        json!({"message": "invalid security token", "status": 401, "error": "invalid security token"}),
        "{what}"
    );
}

#[tokio::test]
async fn global_auth_refuses_every_bad_token_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("jwt.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    // allow: a bare subject (other case), a whole JWT (carol), bob; deny bob by tag:<JWT>.
    let carol_entry = token("unrelated-key", "carol");
    let bob_tag = format!("tag:{}", token("unrelated-key", "BOB"));
    let cfg = format!(
        "[libstorage.auth]\nkey = {:?}\nallow = [\"Alice\", \"bob\", {carol_entry:?}]\ndeny = [{bob_tag:?}]\n",
        key_file.display().to_string()
    );
    let p = Polly::start_services(&["vfs"], &cfg);
    let alice = bearer(&token(KEY, "alice"));
    let vol_headers = |auth: &str| {
        vec![
            ("Authorization", auth.to_string()),
            ("Libstorage-Instanceid", iid("vfs", "hostA")),
        ]
    };
    let h = vol_headers(&alice);
    let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let r = p
        .req("POST", "/volumes/vfs", &h, Some(r#"{"name":"keep"}"#))
        .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    let before = p.admin_get("/admin/store/dump").await;

    let t = now();
    let hs = |claims: Value| bearer(&token_with(KEY, Algorithm::HS256, claims));
    let bad: Vec<(&str, String)> = vec![
        ("no token", String::new()),
        ("garbage token", bearer("not.a.jwt")),
        ("not bearer", format!("Basic {}", token(KEY, "alice"))),
        ("wrong key", bearer(&token("another-key", "alice"))),
        (
            "wrong alg",
            bearer(&token_with(
                KEY,
                Algorithm::HS512,
                json!({"sub": "alice", "iat": t, "nbf": t, "exp": t + 60}),
            )),
        ),
        (
            "expired 30 s ago",
            hs(json!({"sub": "alice", "iat": t - 90, "nbf": t - 90, "exp": t - 30})),
        ),
        (
            "exp 0",
            hs(json!({"sub": "alice", "iat": t, "nbf": t, "exp": 0})),
        ),
        (
            "not valid for 30 s",
            hs(json!({"sub": "alice", "iat": t, "nbf": t + 30, "exp": t + 600})),
        ),
        ("no sub", hs(json!({"iat": t, "nbf": t, "exp": t + 60}))),
        (
            "no iat",
            hs(json!({"sub": "alice", "nbf": t, "exp": t + 60})),
        ),
        (
            "no nbf",
            hs(json!({"sub": "alice", "iat": t, "exp": t + 60})),
        ),
        ("no exp", hs(json!({"sub": "alice", "iat": t, "nbf": t}))),
        ("subject not allowed", bearer(&token(KEY, "dave"))),
        ("denied subject (also allowed)", bearer(&token(KEY, "bob"))),
    ];
    for (what, auth) in &bad {
        let headers = vol_headers(auth);
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, v.as_str()))
            .collect();
        // Global auth covers every route, `/` and unknown ones included, and `?async` too.
        for (m, path, body) in [
            ("GET", "/", None),
            ("GET", "/services", None),
            ("GET", "/volumes/vfs", None),
            ("POST", "/volumes/vfs", Some(r#"{"name":"sneaky"}"#)),
            ("POST", "/volumes/vfs?async", Some(r#"{"name":"sneaky2"}"#)),
            ("DELETE", "/volumes/vfs/keep", None),
            ("GET", "/tasks", None),
            ("GET", "/no/such/route", None),
        ] {
            let r = p.req(m, path, &headers, body).await;
            check_401(&r, &format!("{what}: {m} {path}"));
        }
    }

    // Still up, store unchanged, and the good tokens work.
    let after = p.admin_get("/admin/store/dump").await;
    assert_eq!(after["volumes"], before["volumes"]);
    assert_eq!(after["intents"], before["intents"]);
    for sub in ["alice", "ALICE", "carol"] {
        let a = bearer(&token(KEY, sub));
        let r = p.req("GET", "/", &[("Authorization", &a)], None).await;
        assert_eq!(r.status, 200, "{sub}: {}", r.raw);
        let r = p
            .req("GET", "/volumes/vfs", &[("Authorization", &a)], None)
            .await;
        assert_eq!(r.status, 200, "{sub}: {}", r.raw);
        assert_eq!(r.json.as_object().unwrap().len(), 1, "{sub}: {}", r.raw);
    }
}

#[tokio::test]
async fn per_service_auth_guards_only_its_service() {
    // The global section is off (no allow) and only lends its key to vfs2.
    let cfg = format!(
        "[libstorage.auth]\nkey = {KEY:?}\n[libstorage.services.vfs2.auth]\nallow = [\"bob\"]\n"
    );
    let p = Polly::start_services(&["vfs", "vfs2"], &cfg);
    let bob = bearer(&token(KEY, "bob"));
    let alice = bearer(&token(KEY, "alice"));
    let forged = bearer(&token("not-the-key", "bob"));

    // Service vfs and service-less routes need nothing.
    for (m, path, body) in [
        ("GET", "/", None),
        ("GET", "/volumes/vfs", None),
        ("GET", "/services/vfs", None),
        ("POST", "/volumes/vfs", Some(r#"{"name":"open"}"#)),
        ("GET", "/tasks", None),
    ] {
        let r = p.req(m, path, &[], body).await;
        assert!(r.status.is_success(), "{m} {path}: {}", r.raw);
    }
    let before = p.admin_get("/admin/store/dump").await;

    // vfs2, by name or percent-encoded, and the all-services routes need bob.
    let guarded = [
        ("GET", "/volumes/vfs2", None),
        ("GET", "/volumes/%76fs2", None),
        ("GET", "/services/vfs2", None),
        ("GET", "/snapshots/vfs2", None),
        ("POST", "/volumes/vfs2", Some(r#"{"name":"closed"}"#)),
        ("POST", "/volumes/vfs2?async", Some(r#"{"name":"closed2"}"#)),
        ("GET", "/volumes", None),
        ("GET", "/services", None),
        ("GET", "/snapshots", None),
    ];
    for (m, path, body) in guarded {
        for (what, auth) in [
            ("none", None),
            ("alice", Some(&alice)),
            ("forged", Some(&forged)),
        ] {
            let h: Vec<(&str, &str)> = auth
                .map(|a| ("Authorization", a.as_str()))
                .into_iter()
                .collect();
            let r = p.req(m, path, &h, body).await;
            check_401(&r, &format!("{what}: {m} {path}"));
        }
    }
    let after = p.admin_get("/admin/store/dump").await;
    assert_eq!(after["volumes"], before["volumes"]);
    assert_eq!(after["intents"], before["intents"]);

    for (m, path, body) in guarded {
        let r = p.req(m, path, &[("Authorization", &bob)], body).await;
        assert!(r.status.is_success(), "bob: {m} {path}: {}", r.raw);
    }
    let names: Vec<String> = p
        .volumes()
        .await
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"closed".to_string()), "{names:?}");
}

#[tokio::test]
async fn a_service_with_its_own_auth_is_a_tenant() {
    // vfs is alice's, vfs2 bob's, vfs3 open to all; the volumes are unrestricted, so without
    // the tenant rule each is visible through every service.
    let cfg = format!(
        "[libstorage.auth]\nkey = {KEY:?}\n[libstorage.services.vfs.auth]\nallow = [\"alice\"]\n\
         [libstorage.services.vfs2.auth]\nallow = [\"bob\"]\n"
    );
    let p = Polly::start_services(&["vfs", "vfs2", "vfs3"], &cfg);
    let alice = vec![
        ("Authorization", bearer(&token(KEY, "alice"))),
        ("Libstorage-Instanceid", iid("vfs", "hostA")),
    ];
    let r = p
        .req(
            "POST",
            "/volumes/vfs",
            &refs(&alice),
            Some(r#"{"name":"a-vol"}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    let a_id = r.json["id"].as_str().unwrap().to_string();
    let r = p
        .req(
            "POST",
            &format!("/volumes/vfs/{a_id}?attach"),
            &refs(&alice),
            Some("{}"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let bob = vec![
        ("Authorization", bearer(&token(KEY, "bob"))),
        ("Libstorage-Instanceid", iid("vfs2", "hostB")),
    ];
    let r = p
        .req(
            "POST",
            "/volumes/vfs2",
            &refs(&bob),
            Some(r#"{"name":"b-vol"}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    let b_id = r.json["id"].as_str().unwrap().to_string();
    let before = p.admin_get("/admin/store/dump").await;

    // Bob through his own service, and anyone (bob too) through the open one.
    let anyone = vec![("Libstorage-Instanceid", iid("vfs3", "hostC"))];
    let mut bob_on_vfs3 = bob.clone();
    bob_on_vfs3.push(("Libstorage-Instanceid", iid("vfs3", "hostB")));
    for (who, svc, h) in [
        ("bob", "vfs2", &bob),
        ("anyone", "vfs3", &anyone),
        ("bob", "vfs3", &bob_on_vfs3),
    ] {
        let h = refs(h);
        for (m, path, body) in [
            ("GET", format!("/volumes/{svc}/{a_id}"), None),
            ("GET", format!("/volumes/{svc}/{a_id}?attachments"), None),
            ("GET", format!("/volumes/{svc}/a-vol?byName"), None),
            (
                "POST",
                format!("/volumes/{svc}/{a_id}?attach"),
                Some(r#"{"force":true}"#),
            ),
            (
                "POST",
                format!("/volumes/{svc}/{a_id}?detach"),
                Some(r#"{"force":true}"#),
            ),
            (
                "POST",
                format!("/volumes/{svc}/{a_id}?snapshot"),
                Some(r#"{"snapshotName":"s"}"#),
            ),
            (
                "POST",
                format!("/volumes/{svc}/{a_id}?copy"),
                Some(r#"{"volumeName":"c"}"#),
            ),
            ("DELETE", format!("/volumes/{svc}/{a_id}?force"), None),
        ] {
            let r = p.req(m, &path, &h, body).await;
            r.check_error(404, "resource not found");
            let asked = if path.contains("byName") {
                "a-vol"
            } else {
                &a_id
            };
            assert_eq!(r.json["error"]["resourceID"], asked, "{who}: {m} {path}");
        }
        for q in ["", "?attachments", "?attachments=1", "?filter=(name=a-vol)"] {
            let r = p.req("GET", &format!("/volumes/{svc}{q}"), &h, None).await;
            assert_eq!(r.status, 200, "{who}: {svc}{q}: {}", r.raw);
            let ids: Vec<&String> = r.json.as_object().unwrap().keys().collect();
            assert!(
                !ids.contains(&&a_id),
                "{who} lists alice's volume via {svc}{q}: {ids:?}"
            );
        }
        // Detaching "all my volumes" through the service leaves alice's attachment alone.
        let r = p
            .req(
                "POST",
                &format!("/volumes/{svc}?detach"),
                &h,
                Some(r#"{"force":true}"#),
            )
            .await;
        assert_eq!(r.status, 205, "{who}: {}", r.raw);
        let r = p.req("GET", &format!("/snapshots/{svc}"), &h, None).await;
        assert_eq!(r.status, 200, "{who}: {}", r.raw);
    }
    // Bob still lists his own volume; the all-services list stays closed to him.
    let r = p.req("GET", "/volumes/vfs2", &refs(&bob), None).await;
    assert!(r.json.get(&b_id).is_some(), "{}", r.raw);
    let r = p.req("GET", "/volumes", &refs(&bob), None).await;
    check_401(&r, "bob: GET /volumes");
    // In the background (`?async`) the same route finds nothing either.
    let r = p
        .req(
            "DELETE",
            &format!("/volumes/vfs2/{a_id}?async&force"),
            &refs(&bob),
            None,
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.raw);
    let task = task_done(&p, r.json["id"].as_u64().unwrap(), &refs(&bob)).await;
    assert_eq!(task["state"], "error", "{task}");
    assert_eq!(task["error"]["status"], 404, "{task}");
    let after = p.admin_get("/admin/store/dump").await;
    assert_eq!(after["volumes"], before["volumes"]);
    assert_eq!(after["intents"], before["intents"]);

    // Alice reaches her volume through her service and through the open one, not bob's.
    let r = p
        .req("GET", &format!("/volumes/vfs/{a_id}"), &refs(&alice), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let mut alice_on_vfs3 = alice.clone();
    alice_on_vfs3.push(("Libstorage-Instanceid", iid("vfs3", "hostA")));
    let r = p
        .req("GET", "/volumes/vfs3", &refs(&alice_on_vfs3), None)
        .await;
    let ids: Vec<&String> = r.json.as_object().unwrap().keys().collect();
    assert_eq!(ids, vec![&a_id], "{}", r.raw);
    let r = p
        .req("GET", &format!("/volumes/vfs/{b_id}"), &refs(&alice), None)
        .await;
    r.check_error(404, "resource not found");
}

/// Task `id` once it has finished, as the caller with `headers` reads it.
async fn task_done(p: &Polly, id: u64, headers: &[(&str, &str)]) -> Value {
    for _ in 0..500 {
        let r = p.req("GET", &format!("/tasks/{id}"), headers, None).await;
        assert_eq!(r.status, 200, "task {id}: {}", r.raw);
        if r.json["state"] == "success" || r.json["state"] == "error" {
            return r.json;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("task {id} did not finish in 10 s");
}

#[tokio::test]
async fn a_task_belongs_to_its_caller() {
    let cfg = format!("[libstorage.auth]\nkey = {KEY:?}\n[libstorage.services.vfs2.auth]\nallow = [\"alice\", \"bob\"]\n");
    let p = Polly::start_services(&["vfs", "vfs2"], &cfg);
    let alice = vec![("Authorization", bearer(&token(KEY, "alice")))];
    let bob = vec![("Authorization", bearer(&token(KEY, "bob")))];
    let host_a = vec![("Libstorage-Instanceid", iid("vfs", "hostA"))];
    let host_b = vec![("Libstorage-Instanceid", iid("vfs", "hostB"))];
    let nobody: Vec<(&'static str, String)> = vec![];

    // One task by token (alice), one by instance id (hostA), one by neither.
    let mut tasks = Vec::new();
    for (owner, h, path) in [
        ("alice", &alice, "/volumes/vfs2?async"),
        ("hostA", &host_a, "/volumes/vfs?async"),
        ("nobody", &nobody, "/volumes/vfs?async"),
    ] {
        let body = format!(r#"{{"name":"by-{owner}"}}"#);
        let r = p.req("POST", path, &refs(h), Some(&body)).await;
        assert_eq!(r.status, 202, "{owner}: {}", r.raw);
        tasks.push((owner, h, r.json["id"].as_u64().unwrap().to_string()));
    }
    for (owner, h, id) in &tasks {
        let t = task_done(&p, id.parse().unwrap(), &refs(h)).await;
        assert_eq!(t["state"], "success", "{t}");
        assert_eq!(t["result"]["name"], format!("by-{owner}"), "{t}");
    }
    let readers = [
        ("alice", &alice),
        ("bob", &bob),
        ("hostA", &host_a),
        ("hostB", &host_b),
        ("nobody", &nobody),
    ];
    for (owner, _, id) in &tasks {
        for (reader, h) in readers {
            let r = p.req("GET", &format!("/tasks/{id}"), &refs(h), None).await;
            let listed = p.req("GET", "/tasks", &refs(h), None).await;
            assert_eq!(listed.status, 200, "{}", listed.raw);
            let in_list = listed.json.get(id.as_str()).is_some();
            if reader == *owner {
                assert_eq!(r.status, 200, "{reader} reading its task: {}", r.raw);
                assert!(in_list, "{reader}'s list lacks its task: {}", listed.raw);
            } else {
                r.check_error(404, "resource not found");
                assert!(!in_list, "{reader} lists {owner}'s task: {}", listed.raw);
            }
        }
    }
}

/// A self-signed certificate for `localhost` and its key, written as PEM files.
fn self_signed(dir: &std::path::Path) -> (String, std::path::PathBuf, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert_pem = ck.cert.pem();
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, &cert_pem).unwrap();
    std::fs::write(&k, ck.signing_key.serialize_pem()).unwrap();
    (cert_pem, c, k)
}

/// One HTTP/1.1 request over `stream`; returns the raw response.
async fn http_get<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    path: &str,
) -> std::io::Result<String> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn tls_listener_speaks_tls_only() {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, c, k) = self_signed(dir.path());
    let cfg = format!(
        "[libstorage.tls]\ncert_file = {:?}\nkey_file = {:?}\n",
        c.display().to_string(),
        k.display().to_string()
    );
    let server = Polly::start_with(&dir.path().join("data"), Some(&cfg), None);
    let addr = server
        .libstorage
        .strip_prefix("https://")
        .unwrap_or_else(|| panic!("TLS listener not announced as https: {}", server.libstorage))
        .to_string();

    // A client that trusts exactly this certificate.
    let mut roots = rustls::RootCertStore::empty();
    for der in rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes()) {
        roots.add(der.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let resp = http_get(tls, "/services").await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(
        resp.to_ascii_lowercase().contains("libstorage-servername:"),
        "{resp}"
    );
    assert!(resp.contains(r#""vfs""#), "{resp}");

    // Plain HTTP to the TLS port gets no HTTP answer.
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let plain = http_get(tcp, "/services").await.unwrap_or_default();
    assert!(
        !plain.contains("HTTP/1.1"),
        "plain HTTP was answered: {plain}"
    );

    // The server is still up for TLS clients afterwards.
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let resp = http_get(tls, "/").await.unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}
