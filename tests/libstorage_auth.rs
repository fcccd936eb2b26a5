//! JWT bearer auth and TLS on the libStorage façade, over real HTTP against `polly serve`:
//! the bad-token matrix (each refused with the reference's exact 401 body and the store left
//! unchanged), global versus per-service scope, and a TLS listener that answers TLS only.

mod harness;

use std::sync::Arc;

use harness::{iid, Polly};
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
