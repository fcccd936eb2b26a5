//! Polly's Open Service Broker on the real `polly serve`, spoken to as Cloud Foundry's cloud
//! controller speaks it, and followed onto a cell as the cell's volume manager (volman) goes
//! on with it: the catalog (every field the specification requires, ids that never change),
//! the whole life of a volume service (provision, fetch, bind, the Docker-plugin calls on
//! real `polly node`s with real mounts, data written on one cell and read on another,
//! unbind, grow, deprovision, nothing left in the store or the back-end), asynchronous
//! provisioning, updating and deprovisioning followed by `last_operation`, idempotency and
//! conflicts on every endpoint, credentials and API versions, the bad-input matrix with the
//! store unchanged after each refusal, the volume as operators see it, a kill -9 during an
//! asynchronous provision, and the Cloud Foundry example. Written from the OSB specification
//! (2.17; Polly serves 2.13 to 2.17) and Polly's broker contract; where they disagree, these
//! tests follow the specification.

mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use harness::broker::{cf_identity, query, Body, Broker, OsbReply, PASSWORD, USER};
use harness::node::{can_mount, mounts_under, Node, NodeDirs};
use harness::{wait_until, Polly};
use reqwest::Method;
use serde_json::{json, Value};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const ORG: &str = "6e1a5b2c-94a7-4f0e-8d3b-1c2d3e4f5a61";
const SPACE: &str = "0b9c8d7e-6f5a-4b3c-9d2e-1f0a9b8c7d62";
const APP: &str = "3f2e1d0c-b9a8-4765-8432-10fedcba9863";

/// The plans most tests configure. Sizes are small: vfs only records them, but its capacity
/// is the disk's free space.
const PLANS: &str = r#"
[[broker.plans]]
name = "small"
description = "64 MiB, shared by every app instance"
size = "64MiB"

[[broker.plans]]
name = "large"
size = "256MiB"

[[broker.plans]]
name = "readers"
size = "64MiB"
access = "multi_reader"

[[broker.plans]]
name = "solo"
size = "64MiB"
access = "single_writer"
"#;

/// (plan, size_bytes, access) of [`PLANS`].
const PLAN_TABLE: [(&str, u64, &str); 4] = [
    ("small", 64 * MIB, "multi_writer"),
    ("large", 256 * MIB, "multi_writer"),
    ("readers", 64 * MIB, "multi_reader"),
    ("solo", 64 * MIB, "single_writer"),
];

/// `polly serve`'s config: `top` (top-level keys), one vfs service per name (the first with
/// `[services.fault]` = `fault` when that is not empty), the broker on 127.0.0.1:0 with the
/// tests' credentials and the `[broker]` keys in `broker`, then `plans`.
fn config_full(top: &str, services: &[&str], fault: &str, broker: &str, plans: &str) -> String {
    let mut c = top.to_string();
    for (i, s) in services.iter().enumerate() {
        c.push_str(&format!(
            "\n[[services]]\nname = \"{s}\"\ndriver = \"vfs\"\n"
        ));
        if i == 0 && !fault.is_empty() {
            c.push_str("[services.fault]\n");
            c.push_str(fault);
        }
    }
    c.push_str(&format!(
        "\n[broker]\nlisten = \"127.0.0.1:0\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n{broker}\n{plans}"
    ));
    c
}

/// One vfs service `vfs`, the broker with [`PLANS`].
fn config() -> String {
    config_full("", &["vfs"], "", "", PLANS)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An offering of the catalog: its id and its plans' ids by name.
struct Offering {
    service_id: String,
    plans: BTreeMap<String, String>,
}

impl Offering {
    fn of(b: &Broker, name: &str) -> Offering {
        let r = b.catalog();
        expect(&r, 200, "catalog");
        let s = r.body["services"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["name"] == name))
            .unwrap_or_else(|| panic!("no offering {name} in the catalog: {r}"));
        Offering {
            service_id: s["id"].as_str().unwrap().to_string(),
            plans: s["plans"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p["name"].as_str().unwrap().to_string(),
                        p["id"].as_str().unwrap().to_string(),
                    )
                })
                .collect(),
        }
    }

    fn plan(&self, name: &str) -> &str {
        self.plans
            .get(name)
            .unwrap_or_else(|| panic!("no plan {name}: {:?}", self.plans))
    }

    fn sid(&self) -> &str {
        &self.service_id
    }
}

/// A provision request as the cloud controller sends it (`parameters` left out when null).
fn instance_body(o: &Offering, plan: &str, parameters: Value) -> Value {
    let mut v = json!({
        "service_id": o.service_id,
        "plan_id": o.plan(plan),
        "organization_guid": ORG,
        "space_guid": SPACE,
        "context": {
            "platform": "cloudfoundry",
            "organization_guid": ORG,
            "space_guid": SPACE,
            "instance_name": "myvol",
        },
    });
    if !parameters.is_null() {
        v["parameters"] = parameters;
    }
    v
}

/// A bind request as the cloud controller sends it for an app (`parameters` left out when
/// null).
fn binding_body(o: &Offering, plan: &str, parameters: Value) -> Value {
    let mut v = json!({
        "service_id": o.service_id,
        "plan_id": o.plan(plan),
        "app_guid": APP,
        "bind_resource": {"app_guid": APP},
        "context": {"platform": "cloudfoundry", "organization_guid": ORG, "space_guid": SPACE},
    });
    if !parameters.is_null() {
        v["parameters"] = parameters;
    }
    v
}

/// The answer has this status and a JSON object for body, sent as JSON.
#[track_caller]
fn expect<'a>(r: &'a OsbReply, status: u16, what: &str) -> &'a Value {
    assert_eq!(r.status, status, "{what}: {r}");
    assert!(
        r.body.is_object(),
        "{what}: the body is not a JSON object: {r}"
    );
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{what}: content type {:?}, not JSON",
        r.header("content-type")
    );
    &r.body
}

/// A refusal: this status and a non-empty `description`, which is returned.
#[track_caller]
fn refused(r: &OsbReply, status: u16, what: &str) -> String {
    expect(r, status, what);
    assert!(!r.description().is_empty(), "{what}: no description: {r}");
    r.description().to_string()
}

/// A refusal with the specification's error code.
#[track_caller]
fn refused_with(r: &OsbReply, status: u16, code: &str, what: &str) -> String {
    let d = refused(r, status, what);
    assert_eq!(r.error(), Some(code), "{what}: {r}");
    d
}

/// Poll `last_operation` until the operation is no longer "in progress" (30 s at most); the
/// last answer (200 with state "succeeded" or "failed").
fn wait_done(b: &Broker, iid: &str, op: Option<&str>) -> OsbReply {
    let mut last = None;
    wait_until(&format!("the operation on instance {iid} to end"), || {
        let r = b.last_operation(iid, op);
        expect(&r, 200, "last_operation");
        let state = r.body["state"].as_str().unwrap_or("").to_string();
        assert!(
            ["in progress", "succeeded", "failed"].contains(&state.as_str()),
            "last_operation: state {state:?} is not one the specification names: {r}"
        );
        last = Some(r);
        state != "in progress"
    });
    last.unwrap()
}

/// The store's volumes, as the admin API shows them.
fn volumes(p: &Polly, b: &Broker) -> Vec<Value> {
    b.block_on(p.volumes())
}

/// The volume named `name`, if the store has it.
fn volume(p: &Polly, b: &Broker, name: &str) -> Option<Value> {
    volumes(p, b).into_iter().find(|v| v["name"] == name)
}

/// The instances the volume is attached to.
fn holders(p: &Polly, b: &Broker, name: &str) -> BTreeSet<String> {
    let v = volume(p, b, name).unwrap_or_else(|| panic!("no volume {name}"));
    v["attachments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["instance_id"].as_str().unwrap().to_string())
        .collect()
}

fn dump(p: &Polly, b: &Broker) -> Value {
    b.block_on(p.admin_get("/admin/store/dump"))
}

/// An id the broker must print as a UUID v5 (derived from names: the same on every machine
/// and after every restart).
#[track_caller]
fn uuid_v5(v: &Value, what: &str) -> String {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("{what}: id {v} is not a string"));
    let u =
        uuid::Uuid::parse_str(s).unwrap_or_else(|e| panic!("{what}: id {s:?} is not a UUID: {e}"));
    assert_eq!(
        u.get_version_num(),
        5,
        "{what}: id {s} is not a UUID v5, derived from the names"
    );
    s.to_string()
}

/// The specification's "CLI-friendly" name: alphanumerics, periods and hyphens.
fn cli_friendly(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
}

/// Offering name → id, and (offering, plan) → plan id.
fn catalog_ids(catalog: &Value) -> BTreeMap<String, String> {
    let mut ids = BTreeMap::new();
    for s in catalog["services"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        ids.insert(name.to_string(), s["id"].as_str().unwrap().to_string());
        for p in s["plans"].as_array().unwrap() {
            ids.insert(
                format!("{name}/{}", p["name"].as_str().unwrap()),
                p["id"].as_str().unwrap().to_string(),
            );
        }
    }
    ids
}

// ---- The cell side: `polly node` on its plugin socket, as volman calls it. ----

fn start_cell(p: &Polly, dir: &Path, instance: &str) -> Node {
    let dirs = NodeDirs::new(dir, instance, &dir.join(format!("{instance}.sock")));
    Node::start(&p.admin, &dirs, &["--report-interval-secs", "1"])
}

/// A plugin call that succeeds (200, no `Err`); its body.
#[track_caller]
fn plugin_ok(cell: &Node, call: &str, body: Value) -> Value {
    let (status, v) = cell.call(call, &body.to_string());
    assert_eq!(status, 200, "{call} {body}: {v}");
    assert_eq!(v["Err"].as_str().unwrap_or(""), "", "{call} {body}: {v}");
    v
}

/// `/Plugin.Activate` answers as a volume driver.
#[track_caller]
fn activate(cell: &Node) {
    let (status, v) = cell.call("Plugin.Activate", "");
    assert_eq!((status, v), (200, json!({"Implements": ["VolumeDriver"]})));
}

#[test]
fn the_catalog_has_what_the_specification_requires_and_its_ids_never_change() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_full("", &["vfs", "fast"], "", "", PLANS);
    let p = Polly::start_with(&dir.path().join("data"), Some(&cfg), None);
    let request_id = new_id();
    let b = p
        .broker()
        .with_header("X-Broker-API-Request-Identity", &request_id);
    let r = b.catalog();
    let catalog = expect(&r, 200, "catalog").clone();
    assert_eq!(
        r.header("x-broker-api-request-identity"),
        Some(request_id.as_str()),
        "the request identity is echoed"
    );

    let services = catalog["services"]
        .as_array()
        .expect("services is an array");
    let names: BTreeSet<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["polly-fast", "polly-vfs"]),
        "one offering per Polly service, names unique: {catalog}"
    );
    // Every id, offering or plan, is unique across the catalog.
    let mut ids = BTreeSet::new();
    for s in services {
        let name = s["name"].as_str().unwrap();
        assert!(cli_friendly(name), "offering name {name:?}");
        assert!(ids.insert(uuid_v5(&s["id"], name)), "{name}: id reused");
        assert!(
            s["description"].as_str().is_some_and(|d| !d.is_empty()),
            "{name}: description required: {s}"
        );
        assert_eq!(s["bindable"], true, "{name}");
        assert_eq!(s["requires"], json!(["volume_mount"]), "{name}");
        assert_eq!(s["plan_updateable"], true, "{name}");
        assert_eq!(s["instances_retrievable"], true, "{name}");
        assert_eq!(s["bindings_retrievable"], true, "{name}");
        assert_eq!(s["tags"], json!(["polly", "volume", "vfs"]), "{name}");
        let plans = s["plans"].as_array().expect("plans is an array");
        let mut plan_names = BTreeSet::new();
        for plan in plans {
            let pname = plan["name"].as_str().unwrap();
            let what = format!("{name}/{pname}");
            assert!(cli_friendly(pname), "{what}");
            assert!(plan_names.insert(pname), "{what}: plan name not unique");
            assert!(ids.insert(uuid_v5(&plan["id"], &what)), "{what}: id reused");
            assert!(
                plan["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{what}: description required (also for a plan configured without one): {plan}"
            );
            assert_eq!(plan["free"], true, "{what}");
            assert!(
                plan.get("bindable").is_none_or(|v| v == true),
                "{what}: {plan}"
            );
            let (_, size, access) = PLAN_TABLE
                .iter()
                .find(|(n, _, _)| *n == pname)
                .unwrap_or_else(|| panic!("{what}: not a configured plan"));
            assert_eq!(plan["metadata"]["size_bytes"], *size, "{what}: {plan}");
            assert_eq!(plan["metadata"]["access"], *access, "{what}: {plan}");
        }
        assert_eq!(
            plan_names,
            PLAN_TABLE.iter().map(|(n, _, _)| *n).collect(),
            "{name}"
        );
    }

    // The same ids after a restart on the same data dir, and from another server with the
    // same config (another machine): they are derived from names, not stored.
    let want = catalog_ids(&catalog);
    let p = p.restart(&cfg);
    let r = p.broker().catalog();
    assert_eq!(catalog_ids(expect(&r, 200, "after a restart")), want);
    let other = Polly::start_config(&cfg);
    let r = other.broker().catalog();
    assert_eq!(catalog_ids(expect(&r, 200, "another server")), want);

    // No plans configured: one plan, "standard", 1 GiB, multi_writer. `services` limits the
    // offerings.
    let p = Polly::start_config(&config_full(
        "",
        &["vfs", "fast"],
        "",
        "services = [\"vfs\"]\n",
        "",
    ));
    let r = p.broker().catalog();
    let c = expect(&r, 200, "default plan").clone();
    let services = c["services"].as_array().unwrap();
    assert_eq!(services.len(), 1, "[broker] services = [\"vfs\"]: {c}");
    assert_eq!(services[0]["name"], "polly-vfs");
    let plans = services[0]["plans"].as_array().unwrap();
    assert_eq!(plans.len(), 1, "{c}");
    assert_eq!(plans[0]["name"], "standard");
    assert_eq!(plans[0]["metadata"]["size_bytes"], GIB);
    assert_eq!(plans[0]["metadata"]["access"], "multi_writer");
    uuid_v5(&plans[0]["id"], "standard");

    // Without [broker] credentials nothing listens.
    let p = Polly::start_services(&["vfs"], "");
    assert_eq!(p.broker, None, "the broker is off without credentials");
}

#[test]
fn a_volume_service_lives_from_provision_to_deprovision_with_two_cells_sharing_it() {
    if !can_mount("a_volume_service_lives_from_provision_to_deprovision_with_two_cells_sharing_it")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = Polly::start_with(&dir.path().join("data"), Some(&config()), None);
    let identity = cf_identity("683ea748-3092-4ff4-b656-39cacc4d5360");
    let b = p.broker().with_identity(Some(&identity));
    let o = Offering::of(&b, "polly-vfs");
    let (iid, bid) = (new_id(), new_id());
    let name = format!("osb-{iid}");

    // `cf create-service polly-vfs small myvol`: synchronous, 201.
    let params = json!({"labels": {"team": "web"}});
    let r = b.provision(&iid, &instance_body(&o, "small", params.clone()), false);
    expect(&r, 201, "provision");
    let v = volume(&p, &b, &name).expect("the volume exists once the 201 is sent");
    assert_eq!(v["status"], "available", "{v}");
    assert_eq!(v["size_bytes"], 64 * MIB);
    let r = b.fetch(&iid);
    let got = expect(&r, 200, "fetch");
    assert_eq!(got["service_id"], o.sid());
    assert_eq!(got["plan_id"], o.plan("small"));
    assert_eq!(got["parameters"], params);

    // `cf bind-service myapp myvol -c '{"mount":"/data"}'`: 201 with the volume mount.
    let r = b.bind(
        &iid,
        &bid,
        &binding_body(&o, "small", json!({"mount": "/data"})),
    );
    let bound = expect(&r, 201, "bind").clone();
    assert_eq!(
        bound["volume_mounts"],
        json!([{
            "driver": "polly",
            "container_dir": "/data",
            "mode": "rw",
            "device_type": "shared",
            "device": {"volume_id": name, "mount_config": {"service": "vfs"}},
        }]),
        "{bound}"
    );
    let device = &bound["volume_mounts"][0]["device"];
    let volume_id = device["volume_id"].as_str().unwrap().to_string();
    let mount_config = device["mount_config"].clone();

    // Two app instances on two cells: each cell's volume manager activates the driver,
    // creates the volume with the binding's mount_config and mounts it for its container.
    let cells = [
        start_cell(&p, dir.path(), "cell-a"),
        start_cell(&p, dir.path(), "cell-b"),
    ];
    let mut points = Vec::new();
    for (cell, container) in cells.iter().zip(["app-instance-0", "app-instance-1"]) {
        activate(cell);
        plugin_ok(
            cell,
            "VolumeDriver.Create",
            json!({"Name": volume_id, "Opts": mount_config}),
        );
        let m = plugin_ok(
            cell,
            "VolumeDriver.Mount",
            json!({"Name": volume_id, "ID": container}),
        );
        let point = PathBuf::from(m["Mountpoint"].as_str().unwrap());
        assert_eq!(point, cell.dirs.mount_root.join(&volume_id));
        assert_eq!(mounts_under(&cell.dirs.mount_root), vec![point.clone()]);
        points.push(point);
    }
    // The plan is multi_writer: both cells hold it at once.
    assert_eq!(
        holders(&p, &b, &name),
        BTreeSet::from(["cell-a".to_string(), "cell-b".to_string()])
    );
    // What one instance writes, the other reads, and it is in Polly's one volume.
    std::fs::write(points[0].join("hello.txt"), "Hello Polly from cell-a").unwrap();
    assert_eq!(
        std::fs::read_to_string(points[1].join("hello.txt")).unwrap(),
        "Hello Polly from cell-a"
    );
    std::fs::write(points[1].join("reply.txt"), "and from cell-b").unwrap();
    assert_eq!(
        std::fs::read_to_string(points[0].join("reply.txt")).unwrap(),
        "and from cell-b"
    );
    let backend = harness::vfs_volume_dirs(&p.data_dir, "vfs");
    assert_eq!(backend.len(), 1, "{backend:?}");
    assert_eq!(
        std::fs::read_to_string(backend[0].join("data/hello.txt")).unwrap(),
        "Hello Polly from cell-a"
    );

    // The app stops: each cell unmounts, and detaches.
    for (cell, container) in cells.iter().zip(["app-instance-0", "app-instance-1"]) {
        plugin_ok(
            cell,
            "VolumeDriver.Unmount",
            json!({"Name": volume_id, "ID": container}),
        );
        assert!(mounts_under(&cell.dirs.mount_root).is_empty());
    }
    assert!(holders(&p, &b, &name).is_empty());

    // `cf unbind-service`: 200, and the binding is gone.
    let r = b.unbind(&iid, &bid, o.sid(), o.plan("small"));
    expect(&r, 200, "unbind");
    expect(&b.fetch_binding(&iid, &bid), 404, "fetch after unbind");

    // `cf update-service -p large`, then `-c '{"size":"300MiB"}'`: the volume grows.
    let r = b.update(
        &iid,
        &json!({
            "service_id": o.sid(),
            "plan_id": o.plan("large"),
            "previous_values": {"plan_id": o.plan("small"), "service_id": o.sid()},
            "context": {"platform": "cloudfoundry"},
        }),
        false,
    );
    expect(&r, 200, "update to the large plan");
    assert_eq!(volume(&p, &b, &name).unwrap()["size_bytes"], 256 * MIB);
    let r = b.update(
        &iid,
        &json!({"service_id": o.sid(), "parameters": {"size": "300MiB"}}),
        false,
    );
    expect(&r, 200, "update to 300MiB");
    assert_eq!(volume(&p, &b, &name).unwrap()["size_bytes"], 300 * MIB);
    let r = b.fetch(&iid);
    assert_eq!(
        expect(&r, 200, "fetch after updates")["plan_id"],
        o.plan("large")
    );

    // `cf delete-service`: 200, and nothing is left in the store or the back-end.
    let r = b.deprovision(&iid, o.sid(), o.plan("large"), false);
    expect(&r, 200, "deprovision");
    assert!(volume(&p, &b, &name).is_none(), "{:?}", volumes(&p, &b));
    assert!(harness::vfs_volume_dirs(&p.data_dir, "vfs").is_empty());
    expect(&b.fetch(&iid), 404, "fetch after deprovision");
    expect(
        &b.deprovision(&iid, o.sid(), o.plan("large"), false),
        410,
        "again",
    );
    assert!(b.block_on(p.client().operations()).unwrap().is_empty());
}

/// Volman mounts without a mount id: `Create {Name, Opts}` then `Mount {Name}` per container
/// (without `UniqueVolumeIds` in the driver's spec every container names the volume alike),
/// `Unmount {Name}` when each stops. The cell counts them: the last Unmount unmounts.
#[test]
fn a_cell_mounts_as_volman_does_without_mount_ids() {
    if !can_mount("a_cell_mounts_as_volman_does_without_mount_ids") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = Polly::start_with(&dir.path().join("data"), Some(&config()), None);
    let b = p.broker();
    let o = Offering::of(&b, "polly-vfs");
    let (iid, bid) = (new_id(), new_id());
    expect(
        &b.provision(&iid, &instance_body(&o, "small", Value::Null), false),
        201,
        "provision",
    );
    let r = b.bind(&iid, &bid, &binding_body(&o, "small", Value::Null));
    let bound = expect(&r, 201, "bind").clone();
    let device = &bound["volume_mounts"][0]["device"];
    let name = device["volume_id"].as_str().unwrap().to_string();
    assert_eq!(name, format!("osb-{iid}"));

    let cell = start_cell(&p, dir.path(), "cell-a");
    activate(&cell);
    let mut points = BTreeSet::new();
    for _container in 0..2 {
        plugin_ok(
            &cell,
            "VolumeDriver.Create",
            json!({"Name": name, "Opts": device["mount_config"]}),
        );
        let m = plugin_ok(&cell, "VolumeDriver.Mount", json!({"Name": name}));
        points.insert(m["Mountpoint"].as_str().unwrap().to_string());
    }
    assert_eq!(points.len(), 1, "one mount, shared: {points:?}");
    assert_eq!(mounts_under(&cell.dirs.mount_root).len(), 1);
    assert_eq!(
        holders(&p, &b, &name),
        BTreeSet::from(["cell-a".to_string()])
    );
    // The first container stops: the other still has it.
    plugin_ok(&cell, "VolumeDriver.Unmount", json!({"Name": name}));
    assert_eq!(mounts_under(&cell.dirs.mount_root).len(), 1);
    assert_eq!(
        holders(&p, &b, &name),
        BTreeSet::from(["cell-a".to_string()])
    );
    // The last one stops: unmounted and detached.
    plugin_ok(&cell, "VolumeDriver.Unmount", json!({"Name": name}));
    assert!(mounts_under(&cell.dirs.mount_root).is_empty());
    assert!(holders(&p, &b, &name).is_empty());

    expect(
        &b.unbind(&iid, &bid, o.sid(), o.plan("small")),
        200,
        "unbind",
    );
    expect(
        &b.deprovision(&iid, o.sid(), o.plan("small"), false),
        200,
        "deprovision",
    );
    assert!(volume(&p, &b, &name).is_none());
}

#[test]
fn slow_operations_answer_202_and_last_operation_follows_them_to_the_end() {
    let stuck = new_id();
    // Every back-end call takes 1.5 s; the create of `stuck` never returns.
    let fault = format!("latency_ms = 1500\nhang = [\"create\"]\nhang_only = [\"{stuck}\"]\n");
    let p = Polly::start_config(&config_full(
        "driver_timeout_secs = 600\n",
        &["vfs"],
        &fault,
        "async_after_ms = 100\n",
        PLANS,
    ));
    let b = p.broker();
    let o = Offering::of(&b, "polly-vfs");

    // A provision that cannot finish: 202 with an operation, the same on every re-sent PUT.
    let body = instance_body(&o, "small", Value::Null);
    let r = b.provision(&stuck, &body, true);
    expect(&r, 202, "slow provision");
    let op = r.operation().expect("202 carries an operation").to_string();
    assert!(!op.is_empty() && op.len() <= 10_000, "{op:?}");
    for _ in 0..3 {
        let r = b.provision(&stuck, &body, true);
        expect(&r, 202, "re-sent PUT while provisioning");
        assert_eq!(r.operation(), Some(op.as_str()), "the same operation");
    }
    // Same id, other attributes, while being provisioned: 409.
    refused(
        &b.provision(&stuck, &instance_body(&o, "large", Value::Null), true),
        409,
        "other plan while provisioning",
    );
    // Not fetchable until provisioned.
    expect(&b.fetch(&stuck), 404, "fetch while provisioning");
    let r = b.last_operation(&stuck, Some(&op));
    assert_eq!(expect(&r, 200, "last_operation")["state"], "in progress");
    let r = b.get(&format!(
        "/v2/service_instances/{stuck}/last_operation?{}",
        query(&[
            ("operation", &op),
            ("service_id", o.sid()),
            ("plan_id", o.plan("small")),
        ])
    ));
    assert_eq!(
        expect(&r, 200, "last_operation with hints")["state"],
        "in progress"
    );
    // Anything else on it meanwhile is a ConcurrencyError.
    refused_with(
        &b.bind(&stuck, &new_id(), &binding_body(&o, "small", Value::Null)),
        422,
        "ConcurrencyError",
        "bind while provisioning",
    );
    refused_with(
        &b.update(
            &stuck,
            &json!({"service_id": o.sid(), "plan_id": o.plan("large")}),
            true,
        ),
        422,
        "ConcurrencyError",
        "update while provisioning",
    );
    refused_with(
        &b.deprovision(&stuck, o.sid(), o.plan("small"), true),
        422,
        "ConcurrencyError",
        "deprovision while provisioning",
    );

    // A provision that takes a while: 202, in progress, then succeeded.
    let iid = new_id();
    let body = instance_body(&o, "small", json!({"size": "32MiB"}));
    let r = b.provision(&iid, &body, true);
    expect(&r, 202, "slow provision");
    let op = r.operation().expect("operation").to_string();
    let r = b.last_operation(&iid, Some(&op));
    assert_eq!(expect(&r, 200, "last_operation")["state"], "in progress");
    let done = wait_done(&b, &iid, Some(&op));
    assert_eq!(done.body["state"], "succeeded", "{done}");
    // The specification: fetchable at once; a re-sent PUT of a finished instance is 200.
    expect(&b.fetch(&iid), 200, "fetch after succeeded");
    expect(
        &b.provision(&iid, &body, true),
        200,
        "re-sent PUT once done",
    );
    let name = format!("osb-{iid}");
    let v = volume(&p, &b, &name).expect("provisioned volume");
    assert_eq!(
        (&v["status"], &v["size_bytes"]),
        (&json!("available"), &json!(32 * MIB))
    );
    // It stays known as succeeded.
    let r = b.last_operation(&iid, Some(&op));
    assert_eq!(
        expect(&r, 200, "last_operation later")["state"],
        "succeeded"
    );

    // Without accepts_incomplete the broker waits: 201, the volume there.
    let sync_iid = new_id();
    let r = b.provision(&sync_iid, &instance_body(&o, "small", Value::Null), false);
    expect(&r, 201, "synchronous provision of a slow back-end");
    assert!(r.operation().is_none(), "{r}");
    let v = volume(&p, &b, &format!("osb-{sync_iid}")).expect("volume");
    assert_eq!(v["status"], "available");

    // An update that takes a while: 202; meanwhile the instance cannot be fetched (422
    // ConcurrencyError, as the specification says); then succeeded, grown.
    let r = b.update(
        &iid,
        &json!({
            "service_id": o.sid(),
            "plan_id": o.plan("large"),
            "previous_values": {"plan_id": o.plan("small")},
        }),
        true,
    );
    expect(&r, 202, "slow update");
    let op = r.operation().expect("operation").to_string();
    refused_with(
        &b.fetch(&iid),
        422,
        "ConcurrencyError",
        "fetch while updating",
    );
    let done = wait_done(&b, &iid, Some(&op));
    assert_eq!(done.body["state"], "succeeded", "{done}");
    assert_eq!(volume(&p, &b, &name).unwrap()["size_bytes"], 256 * MIB);
    assert_eq!(
        expect(&b.fetch(&iid), 200, "fetch")["plan_id"],
        o.plan("large")
    );

    // A deprovision that takes a while: 202, the same operation when re-sent, in progress,
    // then 410 from last_operation, which the platform takes as success.
    let r = b.deprovision(&iid, o.sid(), o.plan("large"), true);
    expect(&r, 202, "slow deprovision");
    let op = r.operation().expect("operation").to_string();
    let again = b.deprovision(&iid, o.sid(), o.plan("large"), true);
    expect(&again, 202, "re-sent DELETE while deprovisioning");
    assert_eq!(again.operation(), Some(op.as_str()));
    let r = b.last_operation(&iid, Some(&op));
    assert_eq!(expect(&r, 200, "last_operation")["state"], "in progress");
    wait_until("last_operation to answer 410 after the deprovision", || {
        let r = b.last_operation(&iid, Some(&op));
        if r.status == 200 {
            assert_eq!(r.body["state"], "in progress", "{r}");
            return false;
        }
        expect(&r, 410, "last_operation once deleted");
        true
    });
    assert!(volume(&p, &b, &name).is_none());
    expect(
        &b.deprovision(&iid, o.sid(), o.plan("large"), true),
        410,
        "gone",
    );

    // A synchronous deprovision of a slow back-end: 200 once done. Polling afterwards is not
    // what platforms do; the specification asks 404 for an instance that does not exist and
    // calls 410 the answer for asynchronous deletes, so either is right here.
    let r = b.deprovision(&sync_iid, o.sid(), o.plan("small"), false);
    expect(&r, 200, "synchronous deprovision");
    let r = b.last_operation(&sync_iid, None);
    assert!(
        r.status == 404 || r.status == 410,
        "last_operation after a synchronous deprovision: {r}"
    );
}

#[test]
fn every_endpoint_is_idempotent_and_refuses_conflicts_as_the_specification_lists() {
    let p = Polly::start_config(&config());
    let b = p.broker();
    let o = Offering::of(&b, "polly-vfs");
    let (iid, bid) = (new_id(), new_id());
    let params = json!({"size": "48MiB", "labels": {"team": "db"}});
    let body = instance_body(&o, "small", params.clone());

    // Provision: 201, then 200 for the identical request, 409 for any other attribute.
    expect(&b.provision(&iid, &body, false), 201, "provision");
    let r = b.provision(&iid, &body, false);
    expect(&r, 200, "identical provision");
    assert!(r.operation().is_none(), "{r}");
    expect(
        &b.provision(&iid, &body, true),
        200,
        "identical, accepts_incomplete",
    );
    let mut other_org = body.clone();
    other_org["organization_guid"] = json!(new_id());
    let mut other_space = body.clone();
    other_space["space_guid"] = json!(new_id());
    for (what, other) in [
        ("other plan", instance_body(&o, "large", params.clone())),
        (
            "other parameters",
            instance_body(
                &o,
                "small",
                json!({"size": "50MiB", "labels": {"team": "db"}}),
            ),
        ),
        ("no parameters", instance_body(&o, "small", Value::Null)),
        ("other organization", other_org),
        ("other space", other_space),
    ] {
        refused(&b.provision(&iid, &other, false), 409, what);
    }
    let name = format!("osb-{iid}");
    assert_eq!(volume(&p, &b, &name).unwrap()["size_bytes"], 48 * MIB);
    assert_eq!(volumes(&p, &b).len(), 1);
    let r = b.fetch(&iid);
    let got = expect(&r, 200, "fetch");
    assert_eq!(
        (&got["service_id"], &got["plan_id"], &got["parameters"]),
        (&json!(o.sid()), &json!(o.plan("small")), &params)
    );

    // Bind: 201, then 200 with the same body, 409 for other parameters.
    let bbody = binding_body(&o, "small", json!({"mount": "/data"}));
    let first = b.bind(&iid, &bid, &bbody);
    expect(&first, 201, "bind");
    let again = b.bind(&iid, &bid, &bbody);
    expect(&again, 200, "identical bind");
    assert_eq!(again.body, first.body, "the same binding");
    for (what, p2) in [
        ("other mount", json!({"mount": "/other"})),
        ("read-only", json!({"mount": "/data", "readonly": true})),
    ] {
        refused(
            &b.bind(&iid, &bid, &binding_body(&o, "small", p2)),
            409,
            what,
        );
    }
    let r = b.fetch_binding(&iid, &bid);
    let got = expect(&r, 200, "fetch binding");
    assert_eq!(got["volume_mounts"], first.body["volume_mounts"]);
    assert_eq!(got["parameters"], json!({"mount": "/data"}));
    let r = b.binding_last_operation(&iid, &bid);
    assert_eq!(
        expect(&r, 200, "binding last_operation")["state"],
        "succeeded"
    );
    // Unknown bindings and instances.
    expect(
        &b.fetch_binding(&iid, &new_id()),
        404,
        "fetch unknown binding",
    );
    expect(
        &b.binding_last_operation(&iid, &new_id()),
        404,
        "unknown binding's operation",
    );
    expect(
        &b.unbind(&iid, &new_id(), o.sid(), o.plan("small")),
        410,
        "unbind unknown binding",
    );
    refused(
        &b.bind(&new_id(), &new_id(), &bbody),
        404,
        "bind to an unknown instance",
    );

    // Deprovision while bound: 422, nothing deleted (the platform unbinds first).
    let d = refused(
        &b.deprovision(&iid, o.sid(), o.plan("small"), false),
        422,
        "deprovision while bound",
    );
    assert!(
        d.contains(&bid) || d.contains("bind"),
        "names the binding: {d}"
    );
    assert!(volume(&p, &b, &name).is_some());

    // Unbind: 200, then 410; the binding is gone.
    expect(
        &b.unbind(&iid, &bid, o.sid(), o.plan("small")),
        200,
        "unbind",
    );
    expect(
        &b.unbind(&iid, &bid, o.sid(), o.plan("small")),
        410,
        "unbind again",
    );
    expect(&b.fetch_binding(&iid, &bid), 404, "fetch after unbind");

    // Deprovision: 200, then 410; fetch 404; last_operation knows it is gone.
    expect(
        &b.deprovision(&iid, o.sid(), o.plan("small"), false),
        200,
        "deprovision",
    );
    expect(
        &b.deprovision(&iid, o.sid(), o.plan("small"), false),
        410,
        "again",
    );
    expect(&b.fetch(&iid), 404, "fetch after deprovision");
    let r = b.last_operation(&iid, None);
    assert!(
        r.status == 404 || r.status == 410,
        "last_operation after it: {r}"
    );
    assert!(volume(&p, &b, &name).is_none());

    // Never known: fetch 404, deprovision 410, last_operation 404, update 404.
    let ghost = new_id();
    expect(&b.fetch(&ghost), 404, "fetch unknown");
    expect(
        &b.deprovision(&ghost, o.sid(), o.plan("small"), false),
        410,
        "unknown",
    );
    expect(
        &b.last_operation(&ghost, None),
        404,
        "last_operation of unknown",
    );
    refused(
        &b.update(
            &ghost,
            &json!({"service_id": o.sid(), "plan_id": o.plan("large")}),
            false,
        ),
        404,
        "update unknown",
    );
    assert!(volumes(&p, &b).is_empty());
}

/// The endpoints, each with a request that would succeed or change something if the
/// credentials and version were right.
fn endpoints(o: &Offering, iid: &str, bid: &str) -> Vec<(Method, String, Option<Value>)> {
    let inst = format!("/v2/service_instances/{iid}");
    let bind = format!("{inst}/service_bindings/{bid}");
    let q = query(&[("service_id", o.sid()), ("plan_id", o.plan("large"))]);
    vec![
        (Method::GET, "/v2/catalog".into(), None),
        (
            Method::PUT,
            format!("/v2/service_instances/{}", new_id()),
            Some(instance_body(o, "small", Value::Null)),
        ),
        (Method::GET, inst.clone(), None),
        (
            Method::PATCH,
            inst.clone(),
            Some(json!({"service_id": o.sid(), "parameters": {"size": "1GiB"}})),
        ),
        (Method::DELETE, format!("{inst}?{q}"), None),
        (Method::GET, format!("{inst}/last_operation"), None),
        (
            Method::PUT,
            format!("{inst}/service_bindings/{}", new_id()),
            Some(binding_body(o, "large", Value::Null)),
        ),
        (Method::GET, bind.clone(), None),
        (Method::DELETE, format!("{bind}?{q}"), None),
        (Method::GET, format!("{bind}/last_operation"), None),
    ]
}

fn send(b: &Broker, method: &Method, path: &str, body: &Option<Value>) -> OsbReply {
    match body {
        Some(v) => b.call(method.clone(), path, Body::Json(v)),
        None => b.call(method.clone(), path, Body::None),
    }
}

#[test]
fn credentials_and_api_versions_are_checked_on_every_endpoint_and_change_nothing() {
    let p = Polly::start_config(&config());
    let b = p.broker();
    let o = Offering::of(&b, "polly-vfs");
    let (iid, bid) = (new_id(), new_id());
    expect(
        &b.provision(&iid, &instance_body(&o, "large", Value::Null), false),
        201,
        "provision",
    );
    expect(
        &b.bind(&iid, &bid, &binding_body(&o, "large", Value::Null)),
        201,
        "bind",
    );
    let before = dump(&p, &b);

    let clients = [
        ("no credentials", b.clone().with_auth(None)),
        (
            "a wrong password",
            b.clone().with_auth(Some((USER, "wrong"))),
        ),
        (
            "a wrong user",
            b.clone().with_auth(Some(("admin", PASSWORD))),
        ),
        (
            "no credentials and no version (401 wins)",
            b.clone().with_auth(None).with_version(None),
        ),
        (
            "a wrong password and an old version (401 wins)",
            b.clone()
                .with_auth(Some((USER, "wrong")))
                .with_version(Some("2.12")),
        ),
    ];
    for (method, path, body) in endpoints(&o, &iid, &bid) {
        for (what, client) in &clients {
            let r = send(client, &method, &path, &body);
            let what = format!("{method} {path} with {what}");
            refused(&r, 401, &what);
            assert_eq!(
                r.header("www-authenticate"),
                Some("Basic realm=\"polly broker\""),
                "{what}"
            );
        }
        // The version: a missing header, like an old, unknown or unparsable one, is 412
        // naming the header and the oldest version served (the specification allows 400
        // or 412 for a missing one; Polly's contract is 412 for both).
        let r = send(&b.clone().with_version(None), &method, &path, &body);
        let d = refused(&r, 412, &format!("{method} {path} without a version"));
        assert!(d.to_lowercase().contains("x-broker-api-version"), "{d}");
        for v in ["2.12", "2.0", "1.0", "3.0", "two", "2"] {
            let r = send(&b.clone().with_version(Some(v)), &method, &path, &body);
            let d = refused(&r, 412, &format!("{method} {path} with version {v:?}"));
            assert!(d.contains("2.13"), "names the oldest version served: {d}");
        }
    }
    assert_eq!(dump(&p, &b), before, "refused requests changed the store");
    expect(&b.catalog(), 200, "still serving");

    // Every version from 2.13 on is served.
    for v in ["2.13", "2.14", "2.15", "2.16", "2.17"] {
        let bv = b.clone().with_version(Some(v));
        expect(&bv.catalog(), 200, &format!("catalog at {v}"));
        expect(&bv.fetch(&iid), 200, &format!("fetch at {v}"));
        expect(
            &bv.provision(&new_id(), &instance_body(&o, "small", Value::Null), false),
            201,
            &format!("provision at {v}"),
        );
    }
    assert_eq!(volumes(&p, &b).len(), 6);
}

#[test]
fn bad_requests_are_refused_and_leave_the_store_as_it_was() {
    let p = Polly::start_config(&config());
    let b = p.broker();
    let o = Offering::of(&b, "polly-vfs");
    let (iid, bid) = (new_id(), new_id());
    expect(
        &b.provision(&iid, &instance_body(&o, "large", Value::Null), false),
        201,
        "provision",
    );
    expect(
        &b.bind(&iid, &bid, &binding_body(&o, "large", Value::Null)),
        201,
        "bind",
    );
    let before = dump(&p, &b);
    let fresh = new_id();
    let new_instance = format!("/v2/service_instances/{fresh}");
    let inst = format!("/v2/service_instances/{iid}");
    let new_binding = format!("{inst}/service_bindings/{}", new_id());
    let good = instance_body(&o, "small", Value::Null);
    let without = |body: &Value, key: &str| {
        let mut v = body.clone();
        v.as_object_mut().unwrap().remove(key);
        v
    };
    let with = |body: &Value, key: &str, value: Value| {
        let mut v = body.clone();
        v[key] = value;
        v
    };
    let json_ct = Some("application/json");

    // (what, answer, status, words the description must hold one of, `|` between them, in
    // any case)
    let mut cases: Vec<(String, OsbReply, u16, String)> = Vec::new();
    // Provision.
    for (what, raw) in [
        ("not JSON", "this is not JSON"),
        ("cut JSON", "{\"service_id\": "),
        ("an array", "[]"),
        ("a string", "\"x\""),
        ("empty", ""),
    ] {
        cases.push((
            format!("provision with a body {what}"),
            b.call(
                Method::PUT,
                &new_instance,
                Body::Raw(raw.as_bytes(), json_ct),
            ),
            400,
            String::new(),
        ));
    }
    for key in ["service_id", "plan_id", "organization_guid", "space_guid"] {
        cases.push((
            format!("provision without {key}"),
            b.put(&new_instance, &without(&good, key)),
            400,
            key.to_string(),
        ));
    }
    let (ghost_service, ghost_plan) = (new_id(), new_id());
    for (what, body, words) in [
        (
            "an unknown service_id",
            with(&good, "service_id", json!(ghost_service)),
            format!("{ghost_service}|service_id"),
        ),
        (
            "an unknown plan_id",
            with(&good, "plan_id", json!(ghost_plan)),
            format!("{ghost_plan}|plan_id"),
        ),
        (
            "an empty space_guid",
            with(&good, "space_guid", json!("")),
            "space_guid".to_string(),
        ),
        (
            "a numeric plan_id",
            with(&good, "plan_id", json!(7)),
            "plan_id|string".to_string(),
        ),
        (
            "an unknown parameter",
            with(&good, "parameters", json!({"sise": "1GiB"})),
            "sise".to_string(),
        ),
        (
            "a bad size",
            with(&good, "parameters", json!({"size": "lots"})),
            "lots".to_string(),
        ),
        (
            "a zero size",
            with(&good, "parameters", json!({"size": "0"})),
            "size".to_string(),
        ),
        (
            "parameters not an object",
            with(&good, "parameters", json!("size=1")),
            "parameters|map|object".to_string(),
        ),
        (
            "a label that is not a string",
            with(&good, "parameters", json!({"labels": {"team": 7}})),
            "team|string".to_string(),
        ),
    ] {
        cases.push((
            format!("provision with {what}"),
            b.put(&new_instance, &body),
            400,
            words,
        ));
    }
    // Originating identity that is not `platform base64(JSON object)`.
    for (what, id) in [
        ("no value", "cloudfoundry".to_string()),
        ("no base64", "cloudfoundry %%%not-base64%%%".to_string()),
        (
            "base64 of not JSON",
            format!(
                "cloudfoundry {}",
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "user=me")
            ),
        ),
    ] {
        cases.push((
            format!("provision with an originating identity with {what}"),
            b.clone().with_identity(Some(&id)).put(&new_instance, &good),
            400,
            "originating".to_string(),
        ));
    }
    // Update.
    cases.push((
        "update with a body not JSON".into(),
        b.call(Method::PATCH, &inst, Body::Raw(b"{{", json_ct)),
        400,
        "".to_string(),
    ));
    cases.push((
        "update without service_id".into(),
        b.patch(&inst, &json!({"plan_id": o.plan("large")})),
        400,
        "service_id".to_string(),
    ));
    cases.push((
        "update to an unknown plan".into(),
        b.patch(&inst, &json!({"service_id": o.sid(), "plan_id": new_id()})),
        400,
        "plan_id|string|plan".to_string(),
    ));
    cases.push((
        "update with an unknown parameter".into(),
        b.patch(
            &inst,
            &json!({"service_id": o.sid(), "parameters": {"iops": 3}}),
        ),
        400,
        "iops".to_string(),
    ));
    cases.push((
        "update shrinking to a smaller plan".into(),
        b.patch(
            &inst,
            &json!({"service_id": o.sid(), "plan_id": o.plan("small")}),
        ),
        422,
        "".to_string(),
    ));
    cases.push((
        "update shrinking by size".into(),
        b.patch(
            &inst,
            &json!({"service_id": o.sid(), "parameters": {"size": "1MiB"}}),
        ),
        422,
        "".to_string(),
    ));
    cases.push((
        "update to a plan of another access mode".into(),
        b.patch(
            &inst,
            &json!({"service_id": o.sid(), "plan_id": o.plan("solo")}),
        ),
        422,
        "".to_string(),
    ));
    // Bind.
    let good_bind = binding_body(&o, "large", Value::Null);
    cases.push((
        "bind with a body not JSON".into(),
        b.call(
            Method::PUT,
            &new_binding,
            Body::Raw(b"mount=/data", json_ct),
        ),
        400,
        "".to_string(),
    ));
    for key in ["service_id", "plan_id"] {
        cases.push((
            format!("bind without {key}"),
            b.put(&new_binding, &without(&good_bind, key)),
            400,
            key.to_string(),
        ));
    }
    for (what, params, words) in [
        ("an unknown parameter", json!({"mnt": "/data"}), "mnt"),
        ("a relative mount", json!({"mount": "data"}), "data"),
        (
            "readonly not a boolean",
            json!({"readonly": "yes"}),
            "readonly|bool",
        ),
    ] {
        cases.push((
            format!("bind with {what}"),
            b.put(&new_binding, &with(&good_bind, "parameters", params)),
            400,
            words.to_string(),
        ));
    }
    cases.push((
        "bind with an originating identity that is not base64".into(),
        b.clone()
            .with_identity(Some("cloudfoundry ***"))
            .put(&new_binding, &good_bind),
        400,
        "".to_string(),
    ));
    // Deletes without their required query parameters.
    for (what, path) in [
        (
            "deprovision without plan_id",
            format!("{inst}?service_id={}", o.sid()),
        ),
        (
            "deprovision without service_id",
            format!("{inst}?plan_id={}", o.plan("large")),
        ),
        ("deprovision without parameters", inst.clone()),
        (
            "unbind without plan_id",
            format!("{inst}/service_bindings/{bid}?service_id={}", o.sid()),
        ),
        (
            "unbind without parameters",
            format!("{inst}/service_bindings/{bid}"),
        ),
    ] {
        cases.push((what.to_string(), b.delete(&path), 400, String::new()));
    }
    // Deprovision while bound.
    cases.push((
        "deprovision while bound".into(),
        b.deprovision(&iid, o.sid(), o.plan("large"), false),
        422,
        "".to_string(),
    ));

    for (what, r, status, words) in &cases {
        let d = refused(r, *status, what);
        let lower = d.to_lowercase();
        assert!(
            words.split('|').any(|w| lower.contains(&w.to_lowercase())),
            "{what}: the description should name one of {words:?}: {d}"
        );
        assert!(
            r.error().is_none(),
            "{what}: no error code outside the specification's cases: {r}"
        );
    }
    assert_eq!(dump(&p, &b), before, "refused requests changed the store");
    expect(&b.catalog(), 200, "still serving");
    assert_eq!(
        volume(&p, &b, &format!("osb-{iid}")).unwrap()["size_bytes"],
        256 * MIB
    );
    expect(&b.fetch(&fresh), 404, "nothing was provisioned");
}

#[test]
fn operators_see_the_volume_as_osb_iid_with_the_platforms_labels() {
    let p = Polly::start_config(&config());
    let b = p.broker();
    let o = Offering::of(&b, "polly-vfs");
    let iid = new_id();
    let params = json!({"size": "100MiB", "labels": {"team": "db", "tier": "gold"}});
    expect(
        &b.provision(&iid, &instance_body(&o, "small", params), false),
        201,
        "provision",
    );
    let name = format!("osb-{iid}");
    let v = volume(&p, &b, &name).unwrap_or_else(|| panic!("no {name}: {:?}", volumes(&p, &b)));
    assert_eq!(v["service"], "vfs");
    assert_eq!(
        v["size_bytes"],
        100 * MIB,
        "parameters.size overrides the plan"
    );
    assert_eq!(v["access_mode"], "multi_writer");
    assert_eq!(v["status"], "available");
    assert_eq!(
        v["restrict_services"],
        json!(["vfs"]),
        "restricted by default"
    );
    let labels = &v["labels"];
    for (k, want) in [
        ("osb.instance_id", iid.as_str()),
        ("osb.organization_guid", ORG),
        ("osb.space_guid", SPACE),
        ("osb.plan", "small"),
        ("team", "db"),
        ("tier", "gold"),
    ] {
        assert_eq!(labels[k], want, "label {k}: {v}");
    }
    let listed = p.cli_json(&["volume", "ls"]);
    assert!(
        listed["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["name"] == name),
        "polly volume ls lists {name}: {listed}"
    );

    // A bare number is GiB; a multi_reader plan makes a multi_reader volume mounted "r".
    let (iid2, iid3) = (new_id(), new_id());
    expect(
        &b.provision(
            &iid2,
            &instance_body(&o, "small", json!({"size": 1})),
            false,
        ),
        201,
        "size 1",
    );
    assert_eq!(
        volume(&p, &b, &format!("osb-{iid2}")).unwrap()["size_bytes"],
        GIB
    );
    expect(
        &b.provision(&iid3, &instance_body(&o, "readers", Value::Null), false),
        201,
        "readers",
    );
    let v = volume(&p, &b, &format!("osb-{iid3}")).unwrap();
    assert_eq!(v["access_mode"], "multi_reader");
    let r = b.bind(&iid3, &new_id(), &binding_body(&o, "readers", Value::Null));
    let m = &expect(&r, 201, "bind readers")["volume_mounts"][0];
    assert_eq!(m["mode"], "r", "{m}");
    assert_eq!(
        m["container_dir"],
        format!("/var/vcap/data/{iid3}"),
        "the default container_dir"
    );
    // readonly: true on a writable plan: "r" too.
    let r = b.bind(
        &iid2,
        &new_id(),
        &binding_body(&o, "small", json!({"readonly": true, "mount": "/ro"})),
    );
    let m = &expect(&r, 201, "read-only bind")["volume_mounts"][0];
    assert_eq!(
        (&m["mode"], &m["container_dir"]),
        (&json!("r"), &json!("/ro"))
    );

    // restrict = false leaves the volume open to every service; container_dir and driver
    // are the operator's.
    let p = Polly::start_config(&config_full(
        "",
        &["vfs"],
        "",
        "restrict = false\ncontainer_dir = \"/mnt/cf\"\ndriver = \"pollydriver\"\n",
        PLANS,
    ));
    let b = p.broker();
    let o = Offering::of(&b, "polly-vfs");
    let iid = new_id();
    expect(
        &b.provision(&iid, &instance_body(&o, "small", Value::Null), false),
        201,
        "provision",
    );
    let v = volume(&p, &b, &format!("osb-{iid}")).unwrap();
    assert_eq!(v["restrict_services"], json!([]), "{v}");
    let r = b.bind(&iid, &new_id(), &binding_body(&o, "small", Value::Null));
    let m = &expect(&r, 201, "bind")["volume_mounts"][0];
    assert_eq!(m["container_dir"], format!("/mnt/cf/{iid}"));
    assert_eq!(m["driver"], "pollydriver");
}

/// kill -9 of `polly serve` while an asynchronous provision's create hangs in the back-end,
/// then a restart without the fault: the operation ends (succeeded or failed) on its own,
/// with no intent, no orphan and at most the one volume left, and the instance can be
/// deprovisioned.
#[test]
fn a_provision_cut_by_sigkill_ends_after_the_restart_with_nothing_left_over() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let iid = new_id();
    let hung = config_full(
        "",
        &["vfs"],
        &format!("hang = [\"create\"]\nhang_only = [\"{iid}\"]\n"),
        "async_after_ms = 100\n",
        PLANS,
    );
    let p = Polly::start_with(&data, Some(&hung), None);
    let b = p.broker();
    let o = Offering::of(&b, "polly-vfs");
    let r = b.provision(&iid, &instance_body(&o, "small", Value::Null), true);
    expect(&r, 202, "provision that hangs");
    let op = r.operation().expect("operation").to_string();
    let r = b.last_operation(&iid, Some(&op));
    assert_eq!(expect(&r, 200, "last_operation")["state"], "in progress");
    wait_until("the create to reach the back-end's hang", || {
        !b.block_on(p.client().operations()).unwrap().is_empty()
    });

    let p = p.restart(&config());
    let b = p.broker();
    let done = wait_done(&b, &iid, Some(&op));
    let state = done.body["state"].as_str().unwrap().to_string();
    let admin = p.client();
    assert!(
        b.block_on(admin.operations()).unwrap().is_empty(),
        "an intent is left"
    );
    let report = b.block_on(admin.orphans()).unwrap();
    assert!(
        report.orphans.is_empty() && report.missing.is_empty(),
        "{:?} {:?}",
        report.orphans,
        report.missing
    );
    let name = format!("osb-{iid}");
    let mine: Vec<Value> = volumes(&p, &b)
        .into_iter()
        .filter(|v| v["name"] == name)
        .collect();
    match state.as_str() {
        "succeeded" => {
            assert_eq!(mine.len(), 1, "{mine:?}");
            assert_eq!(mine[0]["status"], "available");
            assert_eq!(harness::vfs_volume_dirs(&data, "vfs").len(), 1);
            expect(&b.fetch(&iid), 200, "fetch the provisioned instance");
            expect(
                &b.deprovision(&iid, o.sid(), o.plan("small"), false),
                200,
                "deprovision",
            );
        }
        "failed" => {
            assert!(mine.is_empty(), "a failed provision left {mine:?}");
            assert!(harness::vfs_volume_dirs(&data, "vfs").is_empty());
            // The platform's orphan mitigation: a DELETE, which finds nothing or the record.
            let r = b.deprovision(&iid, o.sid(), o.plan("small"), false);
            assert!(r.status == 200 || r.status == 410, "deprovision: {r}");
        }
        other => panic!("state {other}"),
    }
    assert!(volume(&p, &b, &name).is_none());
    assert!(harness::vfs_volume_dirs(&data, "vfs").is_empty());
    assert!(b.block_on(admin.operations()).unwrap().is_empty());
    expect(
        &b.deprovision(&iid, o.sid(), o.plan("small"), false),
        410,
        "gone",
    );
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `examples/cloudfoundry/`: every file is explained by its README, the configs are valid
/// Polly configs, and `polly serve` on the example config serves the offering and plan the
/// README's `cf` commands name, with the README's credentials.
#[test]
fn the_cloud_foundry_example_serves_what_its_readme_uses() {
    let dir = root().join("examples/cloudfoundry");
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let mut seen = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name == "README.md" {
            continue;
        }
        assert!(
            readme.contains(&format!("`{name}`")),
            "examples/cloudfoundry/README.md does not explain {name}"
        );
        seen += 1;
    }
    assert!(seen >= 3, "polly.toml, cell.toml and manifest.yml: {seen}");
    let text = std::fs::read_to_string(dir.join("polly.toml")).unwrap();
    toml::from_str::<polly::config::Config>(&text)
        .unwrap_or_else(|e| panic!("examples/cloudfoundry/polly.toml is not a Polly config: {e}"));
    let node = polly::node::NodeSection::load(&dir.join("cell.toml"))
        .unwrap_or_else(|e| panic!("examples/cloudfoundry/cell.toml: {e}"));
    let socket = node.socket.expect("cell.toml names the plugin socket");
    assert_eq!(
        socket.extension().and_then(|e| e.to_str()),
        Some("sock"),
        "volman finds <name>.sock"
    );
    assert_eq!(
        socket.file_stem().and_then(|e| e.to_str()),
        Some("polly"),
        "the driver name the broker's volume mounts carry"
    );
    let manifest = std::fs::read_to_string(dir.join("manifest.yml")).unwrap();
    assert!(
        manifest.contains("myvol"),
        "the manifest binds the README's instance"
    );
    for line in [
        "cf create-service-broker polly cf s3cret http://",
        "cf enable-service-access polly-vfs",
        "cf create-service polly-vfs standard myvol",
        "cf bind-service myapp myvol",
    ] {
        assert!(readme.contains(line), "the README runs `{line}`");
    }

    // The example config with its listeners on loopback ports of the test's own and its vfs
    // root under a temp dir.
    let tmp = tempfile::tempdir().unwrap();
    let listen = regex::Regex::new(r#"(?m)^(\s*listen\s*=\s*)"[^"]*""#).unwrap();
    let cfg = listen.replace_all(&text, r#"${1}"127.0.0.1:0""#);
    let vfs_root = regex::Regex::new(r#"(?m)^(\s*root\s*=\s*)"[^"]*""#).unwrap();
    let cfg_local = vfs_root
        .replace_all(
            &cfg,
            format!("${{1}}\"{}\"", tmp.path().join("vfs").display()),
        )
        .into_owned();
    let p = Polly::start_with(&tmp.path().join("data"), Some(&cfg_local), None);
    let b = p.broker();
    let o = Offering::of(&b, "polly-vfs");
    o.plan("standard");
}

/// `X-Broker-API-Originating-Identity` is recorded with each operation and binding, as
/// sent: the store says which platform user asked for what.
#[test]
fn each_operation_records_who_asked_for_it() {
    let p = Polly::start_config(&config());
    let b = p.broker();
    let o = Offering::of(&b, "polly-vfs");
    let iid = new_id();
    let alice = harness::broker::cf_identity("alice");
    let bob = harness::broker::cf_identity("bob");
    let as_alice = b.clone().with_identity(Some(&alice));
    let as_bob = b.clone().with_identity(Some(&bob));
    expect(
        &as_alice.provision(&iid, &instance_body(&o, "small", Value::Null), false),
        201,
        "provision",
    );
    let recorded = |p: &Polly| {
        let d = dump(p, &b);
        let inst = d["broker_instances"]
            .as_array()
            .and_then(|a| a.iter().find(|i| i["id"] == iid.as_str()).cloned())
            .unwrap_or_else(|| panic!("no instance record: {d}"));
        inst["last_operation"]["originating_identity"].clone()
    };
    assert_eq!(recorded(&p), json!(alice));
    let bid = new_id();
    expect(
        &as_bob.bind(&iid, &bid, &binding_body(&o, "small", Value::Null)),
        201,
        "bind",
    );
    let d = dump(&p, &b);
    assert_eq!(
        d["broker_bindings"][0]["originating_identity"],
        json!(bob),
        "{d}"
    );
    expect(
        &as_bob.update(
            &iid,
            &json!({"service_id": o.sid(), "plan_id": o.plan("large")}),
            false,
        ),
        200,
        "update",
    );
    assert_eq!(recorded(&p), json!(bob), "the update's asker");
    // A request without the header records none.
    expect(
        &b.update(
            &iid,
            &json!({"service_id": o.sid(), "parameters": {"size": "3GiB"}}),
            false,
        ),
        200,
        "update without an identity",
    );
    assert_eq!(recorded(&p), Value::Null);
}

/// A synchronous provision whose back-end call timed out (the volume made after all) is a
/// 5xx that keeps the failed record, so the platform's orphan mitigation (DELETE) removes
/// the volume too: nothing is left behind.
#[test]
fn a_timed_out_provision_leaves_nothing_after_orphan_mitigation() {
    // The back-end is down (creates hang after making the volume, and nothing can check
    // what they did) while the flag file exists.
    let flag_dir = tempfile::tempdir().unwrap();
    let down = flag_dir.path().join("down");
    let cfg = config_full(
        "driver_timeout_secs = 1\n[reconciler]\ninterval_secs = 1\n",
        &["vfs"],
        &format!(
            "hang = [\"create\", \"list\", \"inspect\"]\nhang_phase = \"after\"\nactive_while_exists = \"{}\"\n",
            down.display()
        ),
        "",
        PLANS,
    );
    let p = Polly::start_config(&cfg);
    let b = p.broker();
    let o = Offering::of(&b, "polly-vfs");
    let iid = new_id();
    std::fs::write(&down, "").unwrap();
    let r = b.provision(&iid, &instance_body(&o, "small", Value::Null), false);
    assert!(r.status >= 500, "{r}");
    std::fs::remove_file(&down).unwrap();
    // The failed record stays: the last operation says so.
    let last = b.last_operation(&iid, None);
    assert_eq!(last.status, 200, "{last}");
    assert_eq!(last.body["state"], "failed", "{last}");
    // Orphan mitigation: DELETE until the broker says the instance is gone.
    let mut done = false;
    for _ in 0..300 {
        let r = b.deprovision(&iid, o.sid(), o.plan("small"), false);
        if r.status == 200 || r.status == 410 {
            done = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(done, "orphan mitigation never finished");
    let name = format!("osb-{iid}");
    wait_until("the timed-out volume to be gone", || {
        volume(&p, &b, &name).is_none() && harness::vfs_volume_dirs(&p.data_dir, "vfs").is_empty()
    });
    assert_eq!(b.fetch(&iid).status, 404);
}
