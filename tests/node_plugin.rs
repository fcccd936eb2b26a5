//! `polly node` as a Docker volume plugin, spoken to on its socket as Docker speaks: the
//! protocol (activation, capabilities, content type), the bad-input matrix (malformed JSON,
//! unknown volume, bad options, central polly down: a clear `Err`, nothing half done),
//! single-writer refusal across two node agents, reference counting by mount id, and a
//! SIGKILLed agent that comes back to unmount and detach. Real mounts (root) against the
//! real `polly serve`; `tests/docker_plugin.rs` drives the same agent through a real Docker.

mod harness;

use std::path::Path;

use harness::node::{can_mount, mounts_under, Node, NodeDirs};
use harness::{wait_until, Polly};
use serde_json::{json, Value};

const SERVICES: &str = "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n[[services]]\nname = \"loop\"\ndriver = \"loop\"\n";

fn start_node(polly: &Polly, dir: &Path, instance: &str) -> Node {
    let dirs = NodeDirs::new(dir, instance, &dir.join(format!("{instance}.sock")));
    Node::start(&polly.admin, &dirs, &["--report-interval-secs", "1"])
}

fn err_of(v: &Value) -> &str {
    v["Err"].as_str().unwrap_or("")
}

fn ok(node: &Node, call: &str, body: Value) -> Value {
    let (status, v) = node.call(call, &body.to_string());
    assert_eq!(status, 200, "{call} {body}: {v}");
    assert_eq!(err_of(&v), "", "{call} {body}: {v}");
    v
}

fn refused(node: &Node, call: &str, body: Value) -> String {
    let (status, v) = node.call(call, &body.to_string());
    assert_eq!(status, 200, "{call} {body}: {v}");
    let e = err_of(&v).to_string();
    assert!(!e.is_empty(), "{call} {body} should have failed: {v}");
    e
}

/// The volume's attachments at central, as instance ids.
fn holders(polly: &Polly, name: &str) -> Vec<String> {
    let v = polly.cli_json(&["volume", "inspect", name]);
    v["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["instance_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn activation_and_capabilities_speak_the_plugin_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_config(SERVICES);
    let node = start_node(&polly, dir.path(), "node-a");
    let (status, v) = node.call("Plugin.Activate", "");
    assert_eq!((status, v), (200, json!({"Implements": ["VolumeDriver"]})));
    let (status, v) = node.call("VolumeDriver.Capabilities", "{}");
    assert_eq!(
        (status, v),
        (200, json!({"Capabilities": {"Scope": "global"}}))
    );
    let (status, v) = node.call("VolumeDriver.Snapshot", "{}");
    assert_eq!(status, 404, "{v}");
    assert!(err_of(&v).contains("VolumeDriver.Snapshot"), "{v}");
    // It reported itself to central as an instance.
    wait_until("node-a listed as an instance", || {
        polly
            .cli_json(&["instance", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["instance_id"] == "node-a")
    });
    let health: Value = serde_json::from_str(&node.health_get("/health")).unwrap();
    assert_eq!(health["instance_id"], "node-a");
    assert_eq!(health["status"], "ok");
}

#[test]
fn create_mount_share_unmount_and_remove() {
    if !can_mount("create_mount_share_unmount_and_remove") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_config(SERVICES);
    let node = start_node(&polly, dir.path(), "node-a");
    ok(
        &node,
        "VolumeDriver.Create",
        json!({"Name": "data", "Opts": {"size": "1", "service": "vfs", "label.team": "db"}}),
    );
    let v = polly.cli_json(&["volume", "inspect", "data"]);
    assert_eq!(v["size_bytes"], 1u64 << 30, "bare size is GiB: {v}");
    assert_eq!(v["labels"]["team"], "db");
    // Create again without options: the same volume, fine; with another size: refused.
    ok(&node, "VolumeDriver.Create", json!({"Name": "data"}));
    let e = refused(
        &node,
        "VolumeDriver.Create",
        json!({"Name": "data", "Opts": {"size": "2"}}),
    );
    assert!(e.contains("already exists with size 1 GiB"), "{e}");

    let m1 = ok(
        &node,
        "VolumeDriver.Mount",
        json!({"Name": "data", "ID": "c1"}),
    );
    let target = node.dirs.mount_root.join("data");
    assert_eq!(m1["Mountpoint"], target.to_str().unwrap());
    let m2 = ok(
        &node,
        "VolumeDriver.Mount",
        json!({"Name": "data", "ID": "c2"}),
    );
    assert_eq!(m2["Mountpoint"], m1["Mountpoint"]);
    assert_eq!(mounts_under(&node.dirs.mount_root), vec![target.clone()]);
    assert_eq!(holders(&polly, "data"), ["node-a"]);
    // Written through the mount, it is in Polly's own volume.
    std::fs::write(target.join("f"), "hi").unwrap();
    let data = harness::vfs_volume_dirs(&polly.data_dir, "vfs")[0].join("data/f");
    assert_eq!(std::fs::read_to_string(data).unwrap(), "hi");
    let p = ok(&node, "VolumeDriver.Path", json!({"Name": "data"}));
    assert_eq!(p["Mountpoint"], m1["Mountpoint"]);
    let g = ok(&node, "VolumeDriver.Get", json!({"Name": "data"}));
    assert_eq!(g["Volume"]["Name"], "data");
    assert_eq!(g["Volume"]["Mountpoint"], m1["Mountpoint"]);
    assert_eq!(g["Volume"]["Status"]["attached_to"], json!(["node-a"]));
    let l = ok(&node, "VolumeDriver.List", json!({}));
    assert_eq!(
        l["Volumes"],
        json!([{"Name": "data", "Mountpoint": m1["Mountpoint"]}])
    );

    // Removing a volume in use here is refused.
    let e = refused(&node, "VolumeDriver.Remove", json!({"Name": "data"}));
    assert!(e.contains("mounted on this node by 2 container(s)"), "{e}");
    // One user leaves: still mounted and attached. The last leaves: unmounted, detached.
    ok(
        &node,
        "VolumeDriver.Unmount",
        json!({"Name": "data", "ID": "c1"}),
    );
    assert_eq!(mounts_under(&node.dirs.mount_root), vec![target.clone()]);
    assert_eq!(holders(&polly, "data"), ["node-a"]);
    ok(
        &node,
        "VolumeDriver.Unmount",
        json!({"Name": "data", "ID": "c2"}),
    );
    assert!(mounts_under(&node.dirs.mount_root).is_empty());
    assert!(holders(&polly, "data").is_empty());
    assert!(!target.exists(), "the mount point directory is removed");
    // A repeated Unmount is fine.
    ok(
        &node,
        "VolumeDriver.Unmount",
        json!({"Name": "data", "ID": "c2"}),
    );
    let p = ok(&node, "VolumeDriver.Path", json!({"Name": "data"}));
    assert_eq!(p["Mountpoint"], "");
    ok(&node, "VolumeDriver.Remove", json!({"Name": "data"}));
    let e = refused(&node, "VolumeDriver.Get", json!({"Name": "data"}));
    assert!(e.contains("no polly volume named \"data\""), "{e}");
    assert!(polly.cli_json(&["volume", "ls"])["volumes"]
        .as_array()
        .unwrap()
        .is_empty());
}

#[test]
fn concurrent_mounts_of_one_volume_share_one_mount() {
    if !can_mount("concurrent_mounts_of_one_volume_share_one_mount") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_config(SERVICES);
    let node = start_node(&polly, dir.path(), "node-a");
    ok(
        &node,
        "VolumeDriver.Create",
        json!({"Name": "shared", "Opts": {"service": "vfs"}}),
    );
    let socket = node.dirs.socket.clone();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                harness::node::plugin_call(
                    &socket,
                    "VolumeDriver.Mount",
                    &json!({"Name": "shared", "ID": format!("c{i}")}).to_string(),
                )
            })
        })
        .collect();
    let points: Vec<Value> = threads
        .into_iter()
        .map(|t| {
            let (status, v) = t.join().unwrap();
            assert_eq!((status, err_of(&v)), (200, ""), "{v}");
            v["Mountpoint"].clone()
        })
        .collect();
    assert!(points.iter().all(|p| *p == points[0]), "{points:?}");
    assert_eq!(mounts_under(&node.dirs.mount_root).len(), 1);
    for i in 0..8 {
        ok(
            &node,
            "VolumeDriver.Unmount",
            json!({"Name": "shared", "ID": format!("c{i}")}),
        );
    }
    assert!(mounts_under(&node.dirs.mount_root).is_empty());
    assert!(holders(&polly, "shared").is_empty());
}

#[test]
fn a_second_node_is_refused_a_single_writer_volume_naming_the_holder() {
    if !can_mount("a_second_node_is_refused_a_single_writer_volume_naming_the_holder") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_config(SERVICES);
    let a = start_node(&polly, dir.path(), "node-a");
    let b = start_node(&polly, dir.path(), "node-b");
    ok(
        &a,
        "VolumeDriver.Create",
        json!({"Name": "db", "Opts": {"service": "vfs"}}),
    );
    ok(&a, "VolumeDriver.Mount", json!({"Name": "db", "ID": "c1"}));
    let e = refused(&b, "VolumeDriver.Mount", json!({"Name": "db", "ID": "c2"}));
    assert!(
        e.contains("in use on node \"node-a\"") && e.contains("single-writer"),
        "{e}"
    );
    // Nothing half done on node-b, and node-a still holds it alone.
    assert!(mounts_under(&b.dirs.mount_root).is_empty());
    assert_eq!(holders(&polly, "db"), ["node-a"]);
    let p = ok(&b, "VolumeDriver.Path", json!({"Name": "db"}));
    assert_eq!(p["Mountpoint"], "");
    // Once node-a lets go, node-b gets it.
    ok(
        &a,
        "VolumeDriver.Unmount",
        json!({"Name": "db", "ID": "c1"}),
    );
    ok(&b, "VolumeDriver.Mount", json!({"Name": "db", "ID": "c2"}));
    assert_eq!(holders(&polly, "db"), ["node-b"]);
    ok(
        &b,
        "VolumeDriver.Unmount",
        json!({"Name": "db", "ID": "c2"}),
    );
}

#[test]
fn bad_input_gets_a_clear_err_and_changes_nothing() {
    if !can_mount("bad_input_gets_a_clear_err_and_changes_nothing") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let polly = Polly::start_with(&data_dir, Some(SERVICES), None);
    let node = start_node(&polly, dir.path(), "node-a");
    // Malformed JSON, for every call that takes a body: 400 with Err naming the call.
    for call in [
        "VolumeDriver.Create",
        "VolumeDriver.Remove",
        "VolumeDriver.Mount",
        "VolumeDriver.Unmount",
        "VolumeDriver.Path",
        "VolumeDriver.Get",
    ] {
        for body in ["{\"Name\":", "[]", "{\"Name\": 7}", "{}"] {
            let (status, v) = node.call(call, body);
            assert_eq!(status, 400, "{call} {body}: {v}");
            assert!(
                err_of(&v).contains(&format!("malformed {call} request")),
                "{v}"
            );
        }
    }
    // A Mount without ID is how Cloud Foundry's volume manager mounts (tests/broker.rs):
    // well-formed, so an unknown name is refused as unknown.
    let e = refused(&node, "VolumeDriver.Mount", json!({"Name": "x"}));
    assert!(e.contains("no polly volume named \"x\""), "{e}");
    // Unknown volume.
    for call in [
        "VolumeDriver.Mount",
        "VolumeDriver.Get",
        "VolumeDriver.Remove",
    ] {
        let e = refused(&node, call, json!({"Name": "ghost", "ID": "c1"}));
        assert!(e.contains("no polly volume named \"ghost\""), "{call}: {e}");
    }
    // Bad names and options, each refused by name.
    for (opts, want) in [
        (json!({"sise": "1"}), "unknown option \"sise\""),
        (json!({"size": "lots"}), "invalid size \"lots\""),
        (json!({"size": "0"}), "invalid size \"0\""),
        (json!({"fs": "ntfs"}), "option fs=\"ntfs\""),
        (
            json!({"fs": "ext4", "service": "vfs"}),
            "-o fs applies to loop volumes only",
        ),
        (json!({"service": "nfs"}), "no polly service named \"nfs\""),
        (json!({}), "several services"),
    ] {
        let e = refused(
            &node,
            "VolumeDriver.Create",
            json!({"Name": "v1", "Opts": opts}),
        );
        assert!(e.contains(want), "{opts}: {e}");
    }
    let e = refused(&node, "VolumeDriver.Create", json!({"Name": "../etc"}));
    assert!(e.contains("is not valid"), "{e}");
    let e = refused(
        &node,
        "VolumeDriver.Mount",
        json!({"Name": "../etc", "ID": "c"}),
    );
    assert!(e.contains("is not valid"), "{e}");
    assert!(polly.cli_json(&["volume", "ls"])["volumes"]
        .as_array()
        .unwrap()
        .is_empty());

    // Central down: every call that needs it says so, and nothing is half done.
    ok(
        &node,
        "VolumeDriver.Create",
        json!({"Name": "kept", "Opts": {"service": "vfs"}}),
    );
    let admin = polly.admin.clone();
    polly.kill9();
    for (call, body) in [
        (
            "VolumeDriver.Create",
            json!({"Name": "new", "Opts": {"service": "vfs"}}),
        ),
        ("VolumeDriver.Mount", json!({"Name": "kept", "ID": "c1"})),
        ("VolumeDriver.Get", json!({"Name": "kept"})),
        ("VolumeDriver.List", json!({})),
        ("VolumeDriver.Remove", json!({"Name": "kept"})),
    ] {
        let e = refused(&node, call, body);
        assert!(
            e.contains("cannot reach central polly at") && e.contains(&admin),
            "{call}: {e}"
        );
    }
    assert!(mounts_under(&node.dirs.mount_root).is_empty());
    // No state entry left behind (no file at all: nothing was ever recorded).
    if let Ok(state) = std::fs::read_to_string(node.dirs.state_dir.join("mounts.json")) {
        let state: Value = serde_json::from_str(&state).unwrap();
        assert_eq!(state["volumes"], json!({}), "no entry left behind: {state}");
    }
    // Central back on the same data: the one volume, unattached.
    let polly = Polly::start_with(&data_dir, Some(SERVICES), None);
    let vols = polly.cli_json(&["volume", "ls"])["volumes"].clone();
    assert_eq!(vols.as_array().unwrap().len(), 1, "{vols}");
    assert_eq!(vols[0]["name"], "kept");
    assert!(holders(&polly, "kept").is_empty());
    drop(node);
}

#[test]
fn an_unmount_while_central_is_down_detaches_once_it_is_back() {
    if !can_mount("an_unmount_while_central_is_down_detaches_once_it_is_back") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let polly = Polly::start_with(&data_dir, Some(SERVICES), None);
    let node = start_node(&polly, dir.path(), "node-a");
    ok(
        &node,
        "VolumeDriver.Create",
        json!({"Name": "v", "Opts": {"service": "vfs"}}),
    );
    ok(
        &node,
        "VolumeDriver.Mount",
        json!({"Name": "v", "ID": "c1"}),
    );
    let admin_addr = polly.admin.trim_start_matches("http://").to_string();
    polly.kill9();
    let e = refused(
        &node,
        "VolumeDriver.Unmount",
        json!({"Name": "v", "ID": "c1"}),
    );
    assert!(e.contains("retries the detach in the background"), "{e}");
    // Unmounted here already.
    assert!(mounts_under(&node.dirs.mount_root).is_empty());
    let health: Value = serde_json::from_str(&node.health_get("/health")).unwrap();
    assert_eq!(health["pending_detaches"], 1, "{health}");
    // Central comes back on the same port (the node knows it by address).
    let polly = Polly::start_admin_on(&data_dir, SERVICES, &admin_addr);
    wait_until("the pending detach to reach central", || {
        holders(&polly, "v").is_empty()
    });
    wait_until("the node to forget the volume", || {
        let h: Value = serde_json::from_str(&node.health_get("/health")).unwrap();
        h["pending_detaches"] == 0
    });
}

#[test]
fn a_node_killed_with_sigkill_still_unmounts_and_detaches_after_restart() {
    if !can_mount("a_node_killed_with_sigkill_still_unmounts_and_detaches_after_restart") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_config(SERVICES);
    let mut node = start_node(&polly, dir.path(), "node-a");
    ok(
        &node,
        "VolumeDriver.Create",
        json!({"Name": "v", "Opts": {"service": "loop", "size": "64m"}}),
    );
    ok(
        &node,
        "VolumeDriver.Mount",
        json!({"Name": "v", "ID": "c1"}),
    );
    ok(
        &node,
        "VolumeDriver.Mount",
        json!({"Name": "v", "ID": "c2"}),
    );
    let target = node.dirs.mount_root.join("v");
    std::fs::write(target.join("f"), "kept").unwrap();
    node.kill9_and_restart();
    // The mount survived and the restarted agent knows its two users.
    assert_eq!(mounts_under(&node.dirs.mount_root), vec![target.clone()]);
    assert_eq!(std::fs::read_to_string(target.join("f")).unwrap(), "kept");
    ok(
        &node,
        "VolumeDriver.Unmount",
        json!({"Name": "v", "ID": "c1"}),
    );
    assert_eq!(mounts_under(&node.dirs.mount_root), vec![target.clone()]);
    assert_eq!(holders(&polly, "v"), ["node-a"]);
    ok(
        &node,
        "VolumeDriver.Unmount",
        json!({"Name": "v", "ID": "c2"}),
    );
    assert!(mounts_under(&node.dirs.mount_root).is_empty());
    assert!(holders(&polly, "v").is_empty());
}

#[test]
fn a_mount_gone_at_restart_is_released() {
    if !can_mount("a_mount_gone_at_restart_is_released") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_config(SERVICES);
    let mut node = start_node(&polly, dir.path(), "node-a");
    ok(
        &node,
        "VolumeDriver.Create",
        json!({"Name": "v", "Opts": {"service": "vfs"}}),
    );
    ok(
        &node,
        "VolumeDriver.Mount",
        json!({"Name": "v", "ID": "c1"}),
    );
    node.kill9();
    // As after a reboot: the mount is gone, the state file still lists it.
    let target = node.dirs.mount_root.join("v");
    let st = std::process::Command::new("umount")
        .arg(&target)
        .status()
        .unwrap();
    assert!(st.success());
    node.kill9_and_restart();
    assert!(holders(&polly, "v").is_empty(), "released at start");
    let p = ok(&node, "VolumeDriver.Path", json!({"Name": "v"}));
    assert_eq!(p["Mountpoint"], "");
}

/// A crash in the middle of a Mount (state `mounting`: attached at central, maybe mounted)
/// or of the last Unmount (state `unmounting`) is put right at the next start: unmounted,
/// detached, forgotten. The state file is set to what such a crash leaves on disk.
#[test]
fn a_crash_mid_mount_or_mid_unmount_is_undone_at_restart() {
    if !can_mount("a_crash_mid_mount_or_mid_unmount_is_undone_at_restart") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_config(SERVICES);
    let mut node = start_node(&polly, dir.path(), "node-a");
    for phase in ["mounting", "unmounting"] {
        let name = format!("v-{phase}");
        ok(
            &node,
            "VolumeDriver.Create",
            json!({"Name": name, "Opts": {"service": "loop", "size": "64m"}}),
        );
        ok(
            &node,
            "VolumeDriver.Mount",
            json!({"Name": name, "ID": "c1"}),
        );
        node.kill9();
        let file = node.dirs.state_dir.join("mounts.json");
        let mut state: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let entry = &mut state["volumes"][&name];
        entry["phase"] = json!(phase);
        if phase == "mounting" {
            // Before the mount was recorded.
            entry["published"] = Value::Null;
        } else {
            entry["mount_ids"] = json!([]);
        }
        std::fs::write(&file, serde_json::to_vec(&state).unwrap()).unwrap();
        assert_eq!(holders(&polly, &name), ["node-a"]);
        node.kill9_and_restart();
        assert!(mounts_under(&node.dirs.mount_root).is_empty(), "{phase}");
        assert!(holders(&polly, &name).is_empty(), "{phase}: detached");
        let state: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(state["volumes"], json!({}), "{phase}: forgotten");
        // And it mounts again normally.
        ok(
            &node,
            "VolumeDriver.Mount",
            json!({"Name": name, "ID": "c2"}),
        );
        ok(
            &node,
            "VolumeDriver.Unmount",
            json!({"Name": name, "ID": "c2"}),
        );
    }
    // The loop devices central attached were released with the detaches.
    let loops = std::process::Command::new("losetup")
        .arg("-a")
        .output()
        .unwrap();
    let loops = String::from_utf8_lossy(&loops.stdout);
    assert!(
        !loops.contains(polly.data_dir.to_str().unwrap()),
        "loop devices left: {loops}"
    );
}

/// `-o access=multi_reader`: several nodes mount it at once, read-only; `multi_writer`:
/// several nodes, read-write.
#[test]
fn shared_access_modes_mount_on_several_nodes() {
    if !can_mount("shared_access_modes_mount_on_several_nodes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_config(SERVICES);
    let a = start_node(&polly, dir.path(), "node-a");
    let b = start_node(&polly, dir.path(), "node-b");
    ok(
        &a,
        "VolumeDriver.Create",
        json!({"Name": "ro", "Opts": {"service": "vfs", "access": "multi_reader"}}),
    );
    ok(
        &a,
        "VolumeDriver.Create",
        json!({"Name": "rw", "Opts": {"service": "vfs", "access": "multi_writer"}}),
    );
    let e = refused(
        &a,
        "VolumeDriver.Create",
        json!({"Name": "x", "Opts": {"service": "vfs", "access": "shared"}}),
    );
    assert!(e.contains("access=\"shared\""), "{e}");
    for (node, id) in [(&a, "ca"), (&b, "cb")] {
        for name in ["ro", "rw"] {
            ok(node, "VolumeDriver.Mount", json!({"Name": name, "ID": id}));
        }
    }
    let mut held = holders(&polly, "ro");
    held.sort();
    assert_eq!(held, ["node-a", "node-b"]);
    for node in [&a, &b] {
        let ro = node.dirs.mount_root.join("ro");
        let err = std::fs::write(ro.join("f"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }
    std::fs::write(a.dirs.mount_root.join("rw/f"), "from a").unwrap();
    assert_eq!(
        std::fs::read_to_string(b.dirs.mount_root.join("rw/f")).unwrap(),
        "from a"
    );
    for (node, id) in [(&a, "ca"), (&b, "cb")] {
        for name in ["ro", "rw"] {
            ok(
                node,
                "VolumeDriver.Unmount",
                json!({"Name": name, "ID": id}),
            );
        }
    }
    assert!(holders(&polly, "ro").is_empty() && holders(&polly, "rw").is_empty());
}

/// A node reports its zone like a REX-Ray agent, so central's zone check applies to it:
/// a volume in another zone is refused, one in its own zone mounts, and volumes it creates
/// land in its zone.
#[test]
fn zones_reported_by_a_node_are_enforced_by_central() {
    if !can_mount("zones_reported_by_a_node_are_enforced_by_central") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let polly = Polly::start_config(
        "[[services]]\nname = \"east\"\ndriver = \"vfs\"\nzone = \"z-east\"\n[[services]]\nname = \"west\"\ndriver = \"vfs\"\nzone = \"z-west\"\n",
    );
    let dirs = NodeDirs::new(dir.path(), "node-e", &dir.path().join("e.sock"));
    let node = Node::start(&polly.admin, &dirs, &["--zone", "z-east"]);
    wait_until("node-e's zone reported", || {
        polly
            .cli_json(&["instance", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["instance_id"] == "node-e" && i["fields"]["zone"] == "z-east")
    });
    ok(
        &node,
        "VolumeDriver.Create",
        json!({"Name": "here", "Opts": {"service": "east"}}),
    );
    ok(
        &node,
        "VolumeDriver.Create",
        json!({"Name": "there", "Opts": {"service": "west"}}),
    );
    assert_eq!(
        polly.cli_json(&["volume", "inspect", "here"])["zone"],
        "z-east"
    );
    let e = refused(
        &node,
        "VolumeDriver.Mount",
        json!({"Name": "there", "ID": "c1"}),
    );
    assert!(e.contains("z-west") && e.contains("z-east"), "{e}");
    assert!(mounts_under(&node.dirs.mount_root).is_empty());
    assert!(holders(&polly, "there").is_empty());
    ok(
        &node,
        "VolumeDriver.Mount",
        json!({"Name": "here", "ID": "c1"}),
    );
    ok(
        &node,
        "VolumeDriver.Unmount",
        json!({"Name": "here", "ID": "c1"}),
    );
}
