//! `polly marathon` end to end: every file in `marathon/` parses, every example passes
//! `polly marathon check` against the real `polly serve` (configured with
//! `marathon/polly.toml`), every fixture in `tests/fixtures/marathon/` fails with the rule it
//! was written for and exit code 1, `provision` twice creates once, and the scripts are valid
//! bash in strict mode (shellcheck runs in `.ci/run`).
//!
//! vfs reports the file system's free space (capped by the quotas in `marathon/polly.toml`),
//! so the examples ask for at most 1 GiB per pool: the machine needs that much free disk.

mod harness;

use std::path::{Path, PathBuf};
use std::process::Command;

use harness::Polly;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

fn start(dir: &Path) -> Polly {
    let config = std::fs::read_to_string(root().join("marathon/polly.toml")).unwrap();
    Polly::start_with(&dir.join("data"), Some(&config), None)
}

/// `polly --json marathon <cmd> <file>`: exit code and parsed stdout.
fn marathon(p: &Polly, cmd: &str, file: &Path) -> (i32, serde_json::Value, String) {
    let (code, out, err) = p.cli(&["--json", "marathon", cmd, file.to_str().unwrap()]);
    let v = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    (code, v, err)
}

#[test]
fn every_file_in_marathon_parses_and_the_readme_explains_it() {
    let readme = std::fs::read_to_string(root().join("marathon/README.md")).unwrap();
    let mut seen = 0;
    for e in std::fs::read_dir(root().join("marathon")).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                let def = polly::marathon::parse(&text)
                    .unwrap_or_else(|e| panic!("marathon/{name} does not parse: {e}"));
                assert!(!def.apps().is_empty(), "marathon/{name} has no app");
            }
            Some("toml") => {
                toml::from_str::<polly::config::Config>(&text)
                    .unwrap_or_else(|e| panic!("marathon/{name} is not a Polly config: {e}"));
            }
            Some("md") => continue,
            _ => panic!("marathon/{name}: only app definitions (.json), the Polly config they assume (.toml) and README.md belong here"),
        }
        assert!(
            readme.contains(&format!("`{name}`")),
            "marathon/README.md does not explain {name}"
        );
        seen += 1;
    }
    assert!(
        seen >= 4,
        "expected the examples and polly.toml, saw {seen} files"
    );
}

#[test]
fn examples_pass_and_each_fixture_fails_for_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path());
    for f in files("marathon", "json") {
        let (code, v, err) = marathon(&p, "check", &f);
        assert_eq!(code, 0, "{}: {v:#} {err}", f.display());
        assert_eq!(v["ok"], true);
        assert!(!v["volumes"].as_array().unwrap().is_empty());
        // The human report says so too.
        let (code, out, _) = p.cli(&["marathon", "check", f.to_str().unwrap()]);
        assert_eq!(code, 0);
        assert!(out.contains("verdict: OK"), "{out}");
    }
    // A volume restricted to the other service, and one claimed by another app.
    let (code, _, err) = p.cli(&[
        "volume",
        "create",
        "ledger",
        "--size",
        "1GiB",
        "--restrict-service",
        "fast",
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = p.cli(&[
        "volume",
        "create",
        "pgdata",
        "--size",
        "1GiB",
        "--label",
        "marathon.app=/postgres",
    ]);
    assert_eq!(code, 0, "{err}");
    let expected = [
        ("claimed.json", "claimed"),
        ("missing-size.json", "size"),
        ("over-capacity.json", "capacity"),
        ("restricted.json", "restricted"),
        ("rolling-upgrade.json", "upgrade_strategy"),
        ("two-instances.json", "single_instance"),
        ("wrong-zone.json", "zone"),
    ];
    let fixtures = files("tests/fixtures/marathon", "json");
    assert_eq!(
        fixtures.len(),
        expected.len(),
        "every fixture has an expected verdict"
    );
    for (name, rule) in expected {
        let f = root().join("tests/fixtures/marathon").join(name);
        let (code, v, err) = marathon(&p, "check", &f);
        assert_eq!(code, 1, "{name}: {v:#}");
        assert!(err.contains("problem(s) found"), "{name}: {err}");
        assert_eq!(v["ok"], false);
        let rules: Vec<&str> = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rule"].as_str().unwrap())
            .collect();
        assert_eq!(rules, [rule], "{name}: {v:#}");
        let (code, out, _) = p.cli(&["marathon", "check", f.to_str().unwrap()]);
        assert_eq!(code, 1);
        assert!(
            out.contains(&format!("[{rule}]")) && out.contains("verdict: FAIL"),
            "{out}"
        );
        // Provision refuses and creates nothing.
        let before = p.cli_json(&["volume", "ls"])["volumes"]
            .as_array()
            .unwrap()
            .len();
        let (code, _, _) = marathon(&p, "provision", &f);
        assert_eq!(code, 1, "{name}");
        let after = p.cli_json(&["volume", "ls"])["volumes"]
            .as_array()
            .unwrap()
            .len();
        assert_eq!(before, after, "{name}: provision created something");
    }
}

#[test]
fn provision_twice_creates_once_and_then_claims_hold() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path());
    let shop = root().join("marathon/shop.json");
    let (code, v, err) = marathon(&p, "provision", &shop);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["created"].as_array().unwrap().len(), 2, "{v:#}");
    let (code, v, err) = marathon(&p, "provision", &shop);
    assert_eq!(code, 0, "{err}");
    assert_eq!(v["created"].as_array().unwrap().len(), 0, "{v:#}");
    assert_eq!(v["claimed"].as_array().unwrap().len(), 0);
    let vols = p.cli_json(&["volume", "ls"]);
    let vols = vols["volumes"].as_array().unwrap();
    assert_eq!(vols.len(), 2);
    let orders = vols.iter().find(|v| v["name"] == "shop-orders").unwrap();
    assert_eq!(orders["labels"]["marathon.app"], "/shop/orders-db");
    assert_eq!(orders["restrict_services"], serde_json::json!(["vfs"]));
    assert_eq!(orders["access_mode"], "single_writer");
    let images = vols.iter().find(|v| v["name"] == "shop-images").unwrap();
    assert_eq!(images["service"], "fast");
    assert_eq!(images["access_mode"], "multi_writer");
    assert_eq!(harness::vfs_volume_dirs(&p.data_dir, "vfs").len(), 1);
    assert_eq!(harness::vfs_volume_dirs(&p.data_dir, "fast").len(), 1);

    // An existing unclaimed volume is claimed, once.
    let (code, _, err) = p.cli(&["volume", "create", "pgdata", "--size", "1GiB"]);
    assert_eq!(code, 0, "{err}");
    let pg = root().join("marathon/postgres.json");
    let (code, v, _) = marathon(&p, "provision", &pg);
    assert_eq!(
        (code, v["claimed"].as_array().unwrap().len()),
        (0, 1),
        "{v:#}"
    );
    let (code, v, _) = marathon(&p, "provision", &pg);
    assert_eq!(
        (code, v["claimed"].as_array().unwrap().len()),
        (0, 0),
        "{v:#}"
    );
    // Now another app naming pgdata is refused.
    let other = root().join("tests/fixtures/marathon/claimed.json");
    let (code, v, _) = marathon(&p, "check", &other);
    assert_eq!(code, 1);
    assert_eq!(v["problems"][0]["rule"], "claimed");
}

#[test]
fn exit_code_two_for_bad_input_and_unreachable_polly() {
    let dir = tempfile::tempdir().unwrap();
    let p = start(dir.path());
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, "{\"id\": ").unwrap();
    let (code, _, err) = p.cli(&["marathon", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not valid JSON"), "{err}");
    let (code, _, err) = p.cli(&["marathon", "check", "/nonexistent/app.json"]);
    assert_eq!(code, 2, "{err}");
    let pg = root().join("marathon/postgres.json");
    let out = Command::new(harness::BIN)
        .args(["--admin-url", "http://127.0.0.1:1", "marathon", "check"])
        .arg(&pg)
        .env_remove("POLLY_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach polly"));
    // stdin works as a file.
    let mut child = Command::new(harness::BIN)
        .args(["--admin-url", &p.admin, "marathon", "check", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&pg).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("<stdin>"));
}
#[test]
fn scripts_are_strict_bash_and_listed() {
    let listing = std::fs::read_to_string(root().join("scripts/README.md")).unwrap();
    let mut scripts = files("scripts", "sh");
    scripts.extend(files("scripts/vagrant", "sh"));
    assert!(scripts.len() >= 4, "{scripts:?}");
    for s in scripts {
        let rel = s
            .strip_prefix(root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let out = Command::new("bash").arg("-n").arg(&s).output().unwrap();
        assert!(
            out.status.success(),
            "bash -n {rel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = std::fs::read_to_string(&s).unwrap();
        let first_code = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .unwrap_or_default();
        assert_eq!(
            first_code, "set -euo pipefail",
            "{rel} must start in strict mode"
        );
        assert!(
            listing.contains(&format!("`{rel}`")),
            "scripts/README.md does not list {rel}"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&s).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{rel} is not executable");
    }
}
