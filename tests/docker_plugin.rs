//! Polly's Docker volume plugin against a real Docker daemon (`tests/harness/docker.rs`:
//! needs root, `docker.io` and `busybox-static`; skipped loudly without them, and failing
//! under `CI`). First the harness itself, with Docker's built-in `local` driver.

mod harness;

use harness::docker::{plugin_name, plugin_socket, Dockerd};

#[test]
fn harness_runs_a_container_with_a_local_volume() {
    let Some(docker) = Dockerd::start() else {
        return;
    };
    assert_eq!(
        docker.ok(&["volume", "create", "--driver", "local", "polly-local"]),
        "polly-local\n"
    );
    let written = docker.run_sh("polly-local:/data", "echo from the first > /data/f");
    assert_eq!(written, "");
    assert_eq!(
        docker.run_sh("polly-local:/data", "cat /data/f"),
        "from the first\n"
    );
    docker.ok(&["volume", "rm", "polly-local"]);
    let gone = docker.fails(&["volume", "inspect", "polly-local"]);
    assert!(gone.contains("No such volume"), "{gone}");
}

/// Two daemons at once (as parallel plugin tests run them): own sockets, exec roots and
/// containerds, volumes of the same name that are not the same volume, distinct plugin
/// names.
#[test]
fn two_daemons_run_side_by_side_without_sharing_anything() {
    let Some(one) = Dockerd::start() else {
        return;
    };
    let two = Dockerd::start().expect("a second daemon");
    assert_ne!(one.host(), two.host());
    for (d, text) in [(&one, "one"), (&two, "two")] {
        d.ok(&["volume", "create", "polly-same-name"]);
        d.run_sh("polly-same-name:/data", &format!("echo {text} > /data/f"));
    }
    for (d, text) in [(&one, "one\n"), (&two, "two\n")] {
        assert_eq!(d.run_sh("polly-same-name:/data", "cat /data/f"), text);
    }
    let (a, b) = (plugin_name(), plugin_name());
    assert_ne!(a, b);
    assert_eq!(
        plugin_socket(&a).to_str(),
        Some(format!("/run/docker/plugins/{a}.sock").as_str())
    );
}
