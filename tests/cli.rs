//! CLI round trips: every `polly` command against a real `polly serve`, in table and JSON
//! form, plus the error contract (one line on stderr, non-zero exit) and config errors.

mod harness;

use harness::{Polly, BIN};

#[test]
fn every_cli_command_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_with(dir.path(), None, Some("tok"));

    let v = polly.cli_json(&["version"]);
    assert_eq!(v["server"]["version"], env!("CARGO_PKG_VERSION"));

    let vol = polly.cli_json(&[
        "volume",
        "create",
        "web",
        "--size",
        "2GiB",
        "--label",
        "app=nginx",
        "--restrict-framework",
        "marathon",
    ]);
    let id = vol["id"].as_str().unwrap().to_string();
    assert_eq!(vol["size_bytes"], 2u64 << 30);
    assert_eq!(vol["labels"]["app"], "nginx");
    assert_eq!(vol["restrict_frameworks"][0], "marathon");

    // table output names the volume and its human size
    let (code, out, _) = polly.cli(&["volume", "ls"]);
    assert_eq!(code, 0);
    assert!(out.lines().next().unwrap().starts_with("ID"), "{out}");
    assert!(
        out.contains("web") && out.contains("2 GiB") && out.contains("app=nginx"),
        "{out}"
    );
    assert_eq!(
        polly.cli_json(&["volume", "ls"])["volumes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(polly.cli_json(&["volume", "ls", "--all"])["unmanaged"]
        .as_array()
        .unwrap()
        .is_empty());

    assert_eq!(
        polly.cli_json(&["volume", "inspect", "web"])["id"],
        id.as_str()
    );
    assert_eq!(
        polly.cli_json(&["volume", "inspect", &id, "--in-service", "vfs"])["name"],
        "web"
    );

    let r = polly.cli_json(&[
        "volume",
        "restrict",
        &id,
        "--to-service",
        "vfs",
        "--to-framework",
        "spark",
    ]);
    assert_eq!(r["restrict_services"][0], "vfs");
    assert_eq!(r["restrict_frameworks"].as_array().unwrap().len(), 2);
    let r = polly.cli_json(&["volume", "unrestrict", &id, "--to-framework", "marathon"]);
    assert_eq!(r["restrict_frameworks"], serde_json::json!(["spark"]));
    let r = polly.cli_json(&["volume", "unrestrict", &id]);
    assert_eq!(r["restrict_services"], serde_json::json!([]));

    let l = polly.cli_json(&["volume", "label", "web", "tier=gold", "owner=ops"]);
    assert_eq!(l["labels"]["tier"], "gold");
    let l = polly.cli_json(&["volume", "unlabel", "web", "tier"]);
    assert!(l["labels"].get("tier").is_none());
    assert_eq!(l["labels"]["owner"], "ops");

    let a = polly.cli_json(&[
        "volume",
        "attach",
        "web",
        "--instance",
        "node-1",
        "--device",
        "/dev/xvdb",
    ]);
    assert_eq!(a["attachments"][0]["instance_id"], "node-1");
    // The table reads `attached` while an attachment exists, `available` after detach.
    let status_of_web = |out: &str| {
        // Columns are aligned: the status starts where the STATUS header does.
        let col = out.lines().next().unwrap().find("STATUS").unwrap();
        let row = out.lines().find(|l| l.contains(" web ")).unwrap();
        row[col..].split_whitespace().next().unwrap().to_string()
    };
    assert_eq!(status_of_web(&polly.cli(&["volume", "ls"]).1), "attached");
    let inst = polly.cli_json(&["instance", "ls"]);
    assert_eq!(inst[0]["instance_id"], "node-1");
    let (code, out, _) = polly.cli(&["instance", "ls"]);
    assert_eq!(code, 0);
    assert!(out.contains("node-1"));
    let d = polly.cli_json(&["volume", "detach", "web", "--instance", "node-1"]);
    assert_eq!(d["attachments"], serde_json::json!([]));
    assert_eq!(status_of_web(&polly.cli(&["volume", "ls"]).1), "available");

    let s = polly.cli_json(&["service", "ls"]);
    assert_eq!(s[0]["name"], "vfs");
    assert!(s[0]["capacity"][0]["free_bytes"].as_u64().unwrap() > 0);
    let (_, out, _) = polly.cli(&["service", "ls"]);
    assert!(
        out.contains("SERVICE") && out.contains("vfs") && out.contains("default"),
        "{out}"
    );

    assert!(polly
        .cli_json(&["operation", "ls"])
        .as_array()
        .unwrap()
        .is_empty());
    assert!(polly.cli_json(&["orphan", "ls"])["orphans"]
        .as_array()
        .unwrap()
        .is_empty());

    let dump = polly.cli_json(&["store", "dump"]);
    assert_eq!(dump["volumes"][0]["id"], id.as_str());
    let backup = dir.path().with_extension("backup.json");
    let (code, out, err) = polly.cli(&["store", "backup", backup.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 volumes"), "{out}");
    let saved: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&backup).unwrap()).unwrap();
    assert_eq!(saved, dump);

    // rm, then the name is free and the back-end is empty
    let (code, _, err) = polly.cli(&["volume", "rm", "web"]);
    assert_eq!(code, 0, "{err}");
    assert!(harness::vfs_volume_dirs(dir.path(), "vfs").is_empty());

    // erase needs --yes; with it, a kept volume becomes an orphan
    polly.cli_json(&["volume", "create", "kept", "--size", "1MiB"]);
    let (code, _, err) = polly.cli(&["store", "erase"]);
    assert_ne!(code, 0);
    assert!(err.contains("--yes"), "{err}");
    assert_eq!(
        polly.cli_json(&["volume", "ls"])["volumes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    polly.cli_json(&["store", "erase", "--yes"]);
    let o = polly.cli_json(&["orphan", "ls"]);
    assert_eq!(o["orphans"][0]["name"], "kept");
    let (_, out, _) = polly.cli(&["orphan", "ls"]);
    assert!(out.contains("kept"), "{out}");
}

#[test]
fn cli_errors_are_one_line_with_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start(dir.path());
    for (args, needle) in [
        (vec!["volume", "inspect", "nope"], "not found"),
        (
            vec!["volume", "create", "x", "--size", "ten"],
            "invalid size",
        ),
        (
            vec![
                "volume",
                "create",
                "x",
                "--size",
                "1GiB",
                "--service",
                "nope",
            ],
            "service \"nope\" not found",
        ),
        (vec!["volume", "label", "nope", "novalue"], "key=value"),
    ] {
        let (code, out, err) = polly.cli(&args);
        assert_eq!(code, 1, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("polly: error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    // unreachable server
    let out = std::process::Command::new(BIN)
        .args(["--admin-url", "http://127.0.0.1:9", "volume", "ls"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `polly serve` running?"));
}

#[test]
fn invalid_config_fails_with_one_line_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    for (text, needle) in [
        ("nonsense = 1", "unknown field"),
        ("[[services]]\nname = \"a\"\ndriver = \"floppy\"", "floppy"),
        (
            "[[services]]\nname = \"a b\"\ndriver = \"vfs\"",
            "service name",
        ),
        (
            "[[services]]\nname = \"v\"\ndriver = \"vfs\"\n[services.fault]\nerror_rate = 2.0",
            "error_rate",
        ),
        // libStorage auth and TLS
        (
            "[libstorage.auth]\nkey = \"k\"\nalg = \"HS999\"\nallow = [\"a\"]",
            "libstorage.auth.alg",
        ),
        ("[libstorage.auth]\nallow = [\"a\"]", "no key"),
        (
            "[libstorage.auth]\nkey = \"/nonexistent/polly.key\"\nallow = [\"a\"]",
            "cannot read key file /nonexistent/polly.key",
        ),
        (
            "[libstorage.services.nosvc.auth]\nkey = \"k\"\nallow = [\"a\"]",
            "nosvc",
        ),
        (
            "[[services]]\nname = \"v\"\ndriver = \"vfs\"\n[libstorage.services.v.auth]\nkey = \"k\"\nalg = \"RS256\"\nallow = [\"a\"]",
            "libstorage.services.v.auth.key",
        ),
        (
            "[libstorage.tls]\ncert_file = \"/nonexistent/c.pem\"\nkey_file = \"/nonexistent/k.pem\"",
            "libstorage.tls.cert_file /nonexistent/c.pem",
        ),
    ] {
        std::fs::write(&cfg, text).unwrap();
        let data = dir.path().join("data");
        let out = std::process::Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--admin-listen",
                "127.0.0.1:0",
                "--libstorage-listen",
                "127.0.0.1:0",
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{text}: {err}");
        assert!(err.contains(needle), "{text}: {err}");
        assert!(
            String::from_utf8_lossy(&out.stdout).is_empty(),
            "bound before failing"
        );
        assert!(
            !data.exists(),
            "data dir created before the config was validated"
        );
    }
    // Missing config file
    let out = std::process::Command::new(BIN)
        .args(["serve", "--config", "/nonexistent/polly.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn env_overrides_reach_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["serve"])
        .env("POLLY_DATA_DIR", dir.path())
        .env("POLLY_ADMIN_LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "clap rejects the bad env value");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("POLLY_ADMIN_LISTEN")
            || String::from_utf8_lossy(&out.stderr).contains("admin-listen")
    );
}

/// SIGTERM while `polly serve` is still in start-up reconciliation (held there by a back-end
/// whose every call takes 3 s) is a graceful stop with exit 0, not death by the signal's
/// default action: the handlers are installed before the store is opened.
#[test]
fn sigterm_during_start_up_reconciliation_is_a_graceful_stop() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("polly.toml");
    std::fs::write(
        &config,
        "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n[services.fault]\nlatency_ms = 3000\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .args(["--admin-listen", "127.0.0.1:0"])
        .args(["--libstorage-listen", "127.0.0.1:0"])
        .args(["--offers-listen", "127.0.0.1:0"])
        .env_remove("POLLY_CONFIG")
        .env_remove("POLLY_ADMIN_TOKEN")
        .env("POLLY_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Addresses are printed before start-up reconciliation, which the slow back-end holds.
    let mut seen = Vec::new();
    loop {
        let line = lines.next().expect("polly printed its addresses").unwrap();
        assert_ne!(
            line, "polly: ready",
            "start-up reconciliation was not held: {seen:?}"
        );
        let last = line.starts_with("polly: storage offers on ");
        seen.push(line);
        if last {
            break;
        }
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("polly did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
}

/// A client command whose reader has gone (`polly volume ls | head -1`, `| grep -q`) ends
/// as other command-line tools do, by SIGPIPE, without a panic message; the server it talked
/// to is untouched.
#[test]
fn a_client_command_piped_into_a_closed_reader_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().unwrap();
    let mut polly = Polly::start_with(dir.path(), None, None);
    polly.cli_json(&["volume", "create", "piped", "--size", "1MiB"]);
    let mut child = Command::new(BIN)
        .args(["--admin-url", &polly.admin, "volume", "ls"])
        .env_remove("POLLY_ADMIN_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the command writes its table.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {stderr}",
        out.status
    );
    assert!(polly.alive());
    assert_eq!(polly.cli(&["volume", "inspect", "piped"]).0, 0);
}
