//! Polly's Docker volume plugin (`polly node`) against a real Docker daemon
//! (`tests/harness/docker.rs`: needs root, `docker.io` and `busybox-static`; skipped loudly
//! without them, and failing under `CI`) and the real `polly serve`: the "Hello Polly" flow
//! for vfs and loop volumes, two containers sharing one mount, a SIGKILLed agent, a second
//! node refused a single-writer volume, and Docker users seeing Polly's errors. First the
//! harness itself, with Docker's built-in `local` driver.

mod harness;

use std::path::{Path, PathBuf};

use harness::docker::{plugin_name, plugin_socket, Dockerd};
use harness::node::{mounts_under, Node, NodeDirs};
use harness::{wait_until, Polly};
use serde_json::Value;

const SERVICES: &str = "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n[[services]]\nname = \"loop\"\ndriver = \"loop\"\n";

/// Central polly, one node agent serving a plugin under a name of its own, and a Docker
/// daemon. Fields drop in order: Docker first (removing its containers calls the plugin),
/// then the agent (its socket removed), then central, then the temp dir.
struct Cluster {
    docker: Dockerd,
    node: Node,
    polly: Polly,
    /// The plugin's name: `docker volume create --driver <driver>`.
    driver: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn start() -> Option<Cluster> {
        let docker = Dockerd::start()?;
        let dir = tempfile::tempdir().unwrap();
        let polly = Polly::start_with(&dir.path().join("data"), Some(SERVICES), None);
        let driver = plugin_name();
        let dirs = NodeDirs::new(dir.path(), "node-a", &plugin_socket(&driver));
        let node = Node::start(&polly.admin, &dirs, &["--report-interval-secs", "1"]);
        Some(Cluster {
            docker,
            node,
            polly,
            driver,
            dir,
        })
    }

    /// A second agent, as on another node: its own instance id, plugin name and socket.
    fn second_node(&self, instance: &str) -> (Node, String) {
        let driver = plugin_name();
        let dirs = NodeDirs::new(self.dir.path(), instance, &plugin_socket(&driver));
        let node = Node::start(&self.polly.admin, &dirs, &[]);
        (node, driver)
    }

    fn create(&self, name: &str, opts: &[&str]) {
        let mut args = vec!["volume", "create", "--driver", &self.driver];
        for o in opts {
            args.extend(["--opt", o]);
        }
        args.extend(["--name", name]);
        assert_eq!(self.docker.ok(&args), format!("{name}\n"));
    }

    /// A container left running on `volume` at /mystore.
    fn run_detached(&self, name: &str, volume: &str) {
        let image = self.docker.image().to_string();
        let mount = format!("{volume}:/mystore");
        self.docker.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "none",
            "-v",
            &mount,
            &image,
            "sleep",
            "3600",
        ]);
    }

    fn holders(&self, name: &str) -> Vec<String> {
        let v = self.polly.cli_json(&["volume", "inspect", name]);
        v["attachments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["instance_id"].as_str().unwrap().to_string())
            .collect()
    }

    fn mounts(&self) -> Vec<PathBuf> {
        mounts_under(&self.node.dirs.mount_root)
    }

    fn polly_volumes(&self) -> Vec<Value> {
        self.polly.cli_json(&["volume", "ls"])["volumes"]
            .as_array()
            .unwrap()
            .clone()
    }
}

/// The file `rel` inside a loop volume's image, read through a mount of its own.
fn read_in_image(image: &Path, rel: &str) -> String {
    let mnt = tempfile::tempdir().unwrap();
    let st = std::process::Command::new("mount")
        .args(["-o", "loop,ro"])
        .arg(image)
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(st.success(), "mount {}", image.display());
    let text = std::fs::read_to_string(mnt.path().join(rel));
    let st = std::process::Command::new("umount")
        .arg(mnt.path())
        .status()
        .unwrap();
    assert!(st.success());
    text.unwrap_or_else(|e| panic!("{rel} in {}: {e}", image.display()))
}

/// The seed's showcase: create through Docker, write from one container, read from the
/// next; the data is in Polly's own volume, Polly shows the attachment while a container
/// runs, and `docker volume rm` deletes the volume in Polly.
fn hello_polly(service: &str) {
    let Some(c) = Cluster::start() else {
        return;
    };
    let service_opt = format!("service={service}");
    c.create("hellopersistence", &["size=1", &service_opt]);
    let image = c.docker.image().to_string();
    c.docker.ok(&[
        "run",
        "--name",
        "writer",
        "--network",
        "none",
        "-v",
        "hellopersistence:/mystore",
        &image,
        "sh",
        "-c",
        "echo hi > /mystore/myfile",
    ]);
    c.docker.ok(&["rm", "writer"]);
    assert!(c.mounts().is_empty(), "unmounted once the writer is gone");
    assert_eq!(
        c.docker
            .run_sh("hellopersistence:/mystore", "cat /mystore/myfile"),
        "hi\n"
    );
    // In Polly's own volume.
    let vols = c.polly_volumes();
    assert_eq!(vols.len(), 1, "{vols:?}");
    assert_eq!(vols[0]["size_bytes"], 1u64 << 30);
    let driver_id = vols[0]["driver_id"].as_str().unwrap();
    let root = c
        .polly
        .data_dir
        .join("vfs")
        .join(service)
        .join("volumes")
        .join(driver_id);
    match service {
        "vfs" => assert_eq!(
            std::fs::read_to_string(root.join("data/myfile")).unwrap(),
            "hi\n"
        ),
        _ => assert_eq!(read_in_image(&root.join("disk.img"), "myfile"), "hi\n"),
    }
    // Attached while a container runs, detached after.
    c.run_detached("runner", "hellopersistence");
    assert_eq!(c.holders("hellopersistence"), ["node-a"]);
    let ls = c.polly.cli(&["volume", "ls"]).1;
    assert!(ls.contains("attached") && ls.contains("node-a"), "{ls}");
    c.docker.ok(&["rm", "-f", "runner"]);
    wait_until("the volume detached", || {
        c.holders("hellopersistence").is_empty()
    });
    assert!(c.mounts().is_empty());
    // docker volume rm deletes it in Polly.
    c.docker.ok(&["volume", "rm", "hellopersistence"]);
    assert!(c.polly_volumes().is_empty());
}

#[test]
fn hello_polly_vfs_keeps_its_data() {
    hello_polly("vfs");
}

#[test]
fn hello_polly_loop_keeps_its_data() {
    hello_polly("loop");
}

#[test]
fn two_containers_share_one_mount_until_both_stop() {
    let Some(c) = Cluster::start() else {
        return;
    };
    c.create("shared", &["service=loop", "size=64m"]);
    c.run_detached("one", "shared");
    c.run_detached("two", "shared");
    let target = c.node.dirs.mount_root.join("shared");
    assert_eq!(c.mounts(), vec![target.clone()]);
    c.docker
        .ok(&["exec", "one", "sh", "-c", "echo from-one > /mystore/f"]);
    assert_eq!(
        c.docker.ok(&["exec", "two", "cat", "/mystore/f"]),
        "from-one\n"
    );
    c.docker.ok(&["rm", "-f", "one"]);
    assert_eq!(c.mounts(), vec![target], "still mounted for the other");
    assert_eq!(c.holders("shared"), ["node-a"]);
    assert_eq!(
        c.docker.ok(&["exec", "two", "cat", "/mystore/f"]),
        "from-one\n"
    );
    c.docker.ok(&["rm", "-f", "two"]);
    wait_until("unmounted and detached", || {
        c.mounts().is_empty() && c.holders("shared").is_empty()
    });
}

#[test]
fn a_sigkilled_node_agent_comes_back_and_still_unmounts() {
    let Some(mut c) = Cluster::start() else {
        return;
    };
    c.create("durable", &["service=loop", "size=64m"]);
    c.run_detached("holder", "durable");
    c.docker
        .ok(&["exec", "holder", "sh", "-c", "echo before > /mystore/f"]);
    c.node.kill9_and_restart();
    // The container keeps its data, and writes on.
    assert_eq!(
        c.docker.ok(&["exec", "holder", "cat", "/mystore/f"]),
        "before\n"
    );
    c.docker
        .ok(&["exec", "holder", "sh", "-c", "echo after >> /mystore/f"]);
    c.docker.ok(&["rm", "-f", "holder"]);
    wait_until("unmounted and detached after the restart", || {
        c.mounts().is_empty() && c.holders("durable").is_empty()
    });
    assert_eq!(
        c.docker.run_sh("durable:/mystore", "cat /mystore/f"),
        "before\nafter\n"
    );
}

#[test]
fn a_second_node_is_refused_the_volume_the_first_holds() {
    let Some(c) = Cluster::start() else {
        return;
    };
    c.create("single", &["service=vfs"]);
    c.run_detached("holder", "single");
    // "node-b": its own agent and its own Docker daemon, which learns of the volume through
    // its plugin (a Docker daemon keeps one driver per volume name).
    let (other, other_driver) = c.second_node("node-b");
    let docker_b = Dockerd::start().expect("a second daemon");
    let image = docker_b.image().to_string();
    let err = docker_b.fails(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--volume-driver",
        &other_driver,
        "-v",
        "single:/mystore",
        &image,
        "true",
    ]);
    assert!(
        err.contains("in use on node \"node-a\"") && err.contains("single-writer"),
        "{err}"
    );
    assert!(mounts_under(&other.dirs.mount_root).is_empty());
    assert_eq!(c.holders("single"), ["node-a"]);
    c.docker.ok(&["rm", "-f", "holder"]);
    wait_until("detached", || c.holders("single").is_empty());
    // Now node-b gets it.
    assert_eq!(
        docker_b.run_sh("single:/mystore", "echo b > /mystore/f; cat /mystore/f"),
        "b\n"
    );
    drop(docker_b);
    drop(other);
}

#[test]
fn docker_users_see_pollys_errors() {
    let Some(c) = Cluster::start() else {
        return;
    };
    let d = c.driver.as_str();
    for (opts, want) in [
        (vec!["sise=1"], "unknown option \"sise\""),
        (vec!["size=lots", "service=vfs"], "invalid size \"lots\""),
        (
            vec!["service=vfs", "fs=ext4"],
            "-o fs applies to loop volumes only",
        ),
    ] {
        let mut args = vec!["volume", "create", "--driver", d];
        for o in &opts {
            args.extend(["--opt", o]);
        }
        args.push("v1");
        let err = c.docker.fails(&args);
        assert!(err.contains(want), "{opts:?}: {err}");
    }
    assert!(c.polly_volumes().is_empty(), "nothing created");
}

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
