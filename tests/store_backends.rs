//! The store suite, run against every backend: sled always, etcd with the cargo feature
//! `etcd` against a real etcd on loopback (`tests/harness/etcd.rs`; each test under its own
//! key prefix of one shared server, restarts on a server of their own). A model test (random
//! batches against `BTreeMap`s, then a reopen), durability across a restart of the backend,
//! all-or-nothing batches, concurrent writers, and, on etcd, the write fence.

mod harness;

#[cfg(feature = "etcd")]
use harness::etcd;
use std::collections::BTreeMap;
use std::path::PathBuf;

use polly::driver::AccessMode;
use polly::store::*;
use proptest::prelude::*;

/// One backend under test: how to open (and reopen) the same store, and how to restart
/// the thing that holds it.
enum Backend {
    Sled(tempfile::TempDir),
    #[cfg(feature = "etcd")]
    Etcd {
        /// A server of the test's own (restart tests), else the shared one.
        own: Option<etcd::Etcd>,
        prefix: String,
    },
}

impl Backend {
    fn sled() -> Option<Backend> {
        Some(Backend::Sled(tempfile::tempdir().unwrap()))
    }

    /// On the shared etcd under a fresh prefix; `None` (after a loud message) without etcd.
    #[cfg(feature = "etcd")]
    fn etcd(test: &str) -> Option<Backend> {
        if etcd::skip().is_some() {
            return None;
        }
        etcd::Etcd::shared();
        Some(Backend::Etcd {
            own: None,
            prefix: etcd::unique_prefix(test),
        })
    }

    /// On an etcd of its own, which [`Backend::restart`] kills and starts again.
    #[cfg(feature = "etcd")]
    fn etcd_own(test: &str) -> Option<Backend> {
        if etcd::skip().is_some() {
            return None;
        }
        Some(Backend::Etcd {
            own: Some(etcd::Etcd::start()),
            prefix: etcd::unique_prefix(test),
        })
    }

    #[cfg(feature = "etcd")]
    fn etcd_config(&self) -> polly::store::EtcdConfig {
        match self {
            Backend::Etcd { own, prefix } => polly::store::EtcdConfig {
                endpoints: vec![own.as_ref().unwrap_or_else(|| etcd::Etcd::shared()).url()],
                prefix: prefix.clone(),
                ..Default::default()
            },
            Backend::Sled(_) => unreachable!(),
        }
    }

    fn open(&self) -> Store {
        match self {
            // A handle dropped just before may still hold sled's file lock for a moment (its
            // flusher thread ends after the drop); a reopen in the same process waits for it.
            Backend::Sled(dir) => {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                loop {
                    match Store::open(dir.path()) {
                        Err(polly::store::Error::Locked { .. })
                            if std::time::Instant::now() < deadline =>
                        {
                            std::thread::sleep(std::time::Duration::from_millis(10))
                        }
                        res => break res.unwrap(),
                    }
                }
            }
            #[cfg(feature = "etcd")]
            Backend::Etcd { .. } => Store::open_etcd(&self.etcd_config(), None).unwrap(),
        }
    }

    /// A second handle writing the same store at the same time: a clone on sled (its file
    /// lock admits one process), a second client connection on etcd (as a second polly).
    fn second(&self, store: &Store) -> Store {
        match self {
            Backend::Sled(_) => store.clone(),
            #[cfg(feature = "etcd")]
            Backend::Etcd { .. } => self.open(),
        }
    }

    /// Crash what holds the data and bring it back: sled's process state goes with the
    /// dropped handles (the caller drops them first); etcd is SIGKILLed and started again.
    fn restart(&mut self) {
        match self {
            Backend::Sled(_) => {}
            #[cfg(feature = "etcd")]
            Backend::Etcd { own, .. } => {
                let e = own.as_mut().expect("restart needs etcd_own");
                e.kill9();
                e.restart();
            }
        }
    }

    fn data_dir(&self) -> Option<PathBuf> {
        match self {
            Backend::Sled(d) => Some(d.path().to_path_buf()),
            #[cfg(feature = "etcd")]
            Backend::Etcd { .. } => None,
        }
    }
}

/// Generate `#[test] fn <name>` per backend from `fn <name>(backend: Backend)`: in module
/// `sled`, and in module `etcd_store` with the feature (`$open`: `etcd` or `etcd_own`).
macro_rules! suite {
    ($($name:ident: $open:ident),* $(,)?) => {
        mod sled {
            $(#[test]
            fn $name() {
                super::$name(super::Backend::sled().unwrap())
            })*
        }
        #[cfg(feature = "etcd")]
        mod etcd_store {
            $(#[test]
            fn $name() {
                if let Some(b) = super::Backend::$open(stringify!($name)) {
                    super::$name(b)
                }
            })*
        }
    };
}

suite! {
    store_matches_model: etcd,
    rename_frees_the_old_name: etcd,
    erase_keeps_schema_and_clears_records: etcd,
    acknowledged_writes_survive_a_restart: etcd_own,
    a_failed_name_check_writes_nothing: etcd,
    concurrent_applies_all_land: etcd,
    racing_creates_of_one_name_admit_one: etcd,
}

fn vol(id: u8, service: u8, name: u8, size: u64) -> Volume {
    Volume {
        id: format!("pv-{id}"),
        service: format!("svc{service}"),
        driver_id: Some(format!("d-{id}")),
        name: format!("n{name}"),
        size_bytes: size,
        pool: None,
        zone: None,
        access_mode: AccessMode::SingleWriter,
        labels: BTreeMap::from([("k".to_string(), size.to_string())]),
        restrict_services: Default::default(),
        restrict_frameworks: Default::default(),
        status: VolumeStatus::Available,
        attachments: vec![],
        created_at: 1,
        path: None,
    }
}

fn broker_instance(i: u8, st: u8, size: u64) -> BrokerInstance {
    BrokerInstance {
        id: format!("inst{i}"),
        service_id: "s".into(),
        plan_id: "p".into(),
        service: "svc0".into(),
        volume_name: format!("osb-inst{i}"),
        volume_id: (st == 1).then(|| format!("pv-{i}")),
        size_bytes: size,
        access_mode: AccessMode::MultiWriter,
        pool: None,
        organization_guid: "org".into(),
        space_guid: "space".into(),
        context: serde_json::Value::Null,
        parameters: serde_json::json!({ "size": size }),
        last_operation: BrokerOperation {
            id: format!("provision-{i}{st}"),
            kind: BrokerOpKind::Provision,
            state: [
                BrokerOpState::InProgress,
                BrokerOpState::Succeeded,
                BrokerOpState::Failed,
            ][st as usize],
            description: None,
            failure_status: (st == 2).then_some(500),
            originating_identity: None,
            plan_id: None,
            size_bytes: None,
            parameters: None,
            started_at: 1,
            finished_at: None,
        },
        created_at: 1,
    }
}

fn intent(id: u64) -> Intent {
    Intent {
        id,
        volume_id: format!("pv-{id}"),
        service: "svc0".into(),
        op: IntentOp::Attach {
            instance_id: format!("i-{id}"),
        },
        created_at: id,
    }
}

/// The reference the store is checked against.
#[derive(Default, Clone, Debug)]
struct Model {
    volumes: BTreeMap<String, Volume>,
    intents: BTreeMap<u64, Intent>,
    instances: BTreeMap<(String, String), Instance>,
    meta: BTreeMap<String, String>,
    reservations: BTreeMap<(String, String), Reservation>,
    operations: BTreeMap<(String, String), OperationRecord>,
    nodes: BTreeMap<String, NodeRecord>,
    broker_instances: BTreeMap<String, BrokerInstance>,
    broker_bindings: BTreeMap<(String, String), BrokerBinding>,
}

impl Model {
    /// All-or-nothing, like the store: returns false (and changes nothing) on a name clash.
    fn apply(&mut self, ops: &[Op]) -> bool {
        let mut next = self.clone();
        for op in ops {
            match op {
                Op::PutVolume(v) => {
                    let clash = next
                        .volumes
                        .values()
                        .any(|o| o.id != v.id && o.service == v.service && o.name == v.name);
                    if clash {
                        return false;
                    }
                    next.volumes.insert(v.id.clone(), v.clone());
                }
                Op::DeleteVolume(id) => {
                    next.volumes.remove(id);
                }
                Op::PutIntent(i) => {
                    next.intents.insert(i.id, i.clone());
                }
                Op::DeleteIntent(id) => {
                    next.intents.remove(id);
                }
                Op::PutInstance(i) => {
                    next.instances
                        .insert((i.driver.clone(), i.instance_id.clone()), i.clone());
                }
                Op::PutMeta(k, v) => {
                    next.meta.insert(k.clone(), v.clone());
                }
                Op::DeleteMeta(k) => {
                    next.meta.remove(k);
                }
                Op::PutReservation(r) => {
                    next.reservations
                        .insert((r.framework_id.clone(), r.volume_id.clone()), r.clone());
                }
                Op::DeleteReservation {
                    framework_id,
                    volume_id,
                } => {
                    next.reservations
                        .remove(&(framework_id.clone(), volume_id.clone()));
                }
                Op::PutOperation(o) => {
                    next.operations
                        .insert((o.framework_id.clone(), o.operation_id.clone()), o.clone());
                }
                Op::DeleteOperation {
                    framework_id,
                    operation_id,
                    if_status,
                } => {
                    let key = (framework_id.clone(), operation_id.clone());
                    let holds = next
                        .operations
                        .get(&key)
                        .is_some_and(|o| if_status.as_ref().is_none_or(|u| &o.uuid == u));
                    if holds {
                        next.operations.remove(&key);
                    }
                }
                Op::PutNode(n) => {
                    next.nodes.insert(n.id.clone(), n.clone());
                }
                Op::DeleteNode(id) => {
                    next.nodes.remove(id);
                }
                Op::PutBrokerInstance(i) => {
                    next.broker_instances.insert(i.id.clone(), i.clone());
                }
                Op::DeleteBrokerInstance(id) => {
                    next.broker_instances.remove(id);
                }
                Op::PutBrokerBinding(b) => {
                    next.broker_bindings
                        .insert((b.instance_id.clone(), b.id.clone()), b.clone());
                }
                Op::DeleteBrokerBinding {
                    instance_id,
                    binding_id,
                } => {
                    next.broker_bindings
                        .remove(&(instance_id.clone(), binding_id.clone()));
                }
            }
        }
        *self = next;
        true
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..6, 0u8..2, 0u8..4, 1u64..1000).prop_map(|(i, s, n, z)| Op::PutVolume(vol(i, s, n, z))),
        2 => (0u8..6).prop_map(|i| Op::DeleteVolume(format!("pv-{i}"))),
        1 => (0u64..5).prop_map(|i| Op::PutIntent(intent(i))),
        1 => (0u64..5).prop_map(Op::DeleteIntent),
        1 => (0u8..3, 0u64..100).prop_map(|(i, t)| Op::PutInstance(Instance {
            driver: "vfs".into(),
            instance_id: format!("host{i}"),
            hostname: Some(format!("h{i}")),
            last_seen: t,
            fields: Default::default(),
        })),
        1 => (0u8..2, 0u8..9).prop_map(|(k, v)| Op::PutMeta(format!("k{k}"), format!("v{v}"))),
        1 => (0u8..2).prop_map(|k| Op::DeleteMeta(format!("k{k}"))),
        1 => (0u8..3, 0u8..4, 1u64..1000).prop_map(|(f, v, b)| Op::PutReservation(Reservation {
            framework_id: format!("fw{f}"),
            role: "r".into(),
            principal: (b % 2 == 0).then(|| "p".into()),
            volume_id: format!("pv-{v}"),
            bytes: b,
            created_at: b,
        })),
        1 => (0u8..3, 0u8..4).prop_map(|(f, v)| Op::DeleteReservation {
            framework_id: format!("fw{f}"),
            volume_id: format!("pv-{v}"),
        }),
        1 => (0u8..3, 0u8..4, any::<bool>(), 0u8..3).prop_map(|(f, o, ack, st)| Op::PutOperation(OperationRecord {
            operation_id: format!("op{o}"),
            framework_id: format!("fw{f}"),
            agent_id: "a1".into(),
            kind: "CREATE_DISK".into(),
            state: ["OPERATION_PENDING", "OPERATION_FINISHED", "OPERATION_FAILED"][st as usize].into(),
            message: None,
            converted_resources: (st == 1).then(|| "[]".into()),
            acknowledged: ack,
            uuid: format!("u{o}{st}"),
            request: "{}".into(),
            volume_id: None,
            target_bytes: None,
            role: "*".into(),
            principal: None,
            updated_at: 1,
        })),
        // With a status uuid: the one a record of that id may hold (`u{o}{st}`) or not.
        1 => (0u8..3, 0u8..4, proptest::option::of(0u8..4)).prop_map(|(f, o, st)| Op::DeleteOperation {
            framework_id: format!("fw{f}"),
            operation_id: format!("op{o}"),
            if_status: st.map(|st| format!("u{o}{st}")),
        }),
        1 => (0u8..3, 0u8..3, 0u64..100).prop_map(|(n, st, t)| Op::PutNode(NodeRecord {
            id: format!("agent{n}"),
            hostname: Some(format!("h{n}")),
            zone: None,
            instance_ids: [format!("i-{n}")].into(),
            state: [NodeState::Lost, NodeState::Fencing, NodeState::Fenced][st as usize],
            reason: "lost".into(),
            lost_at: t,
            fenced_by: (st > 0).then(|| "operator".into()),
            fence_requested_at: (st > 0).then_some(t),
            pending: if st == 1 { vec![format!("pv-{t}")] } else { vec![] },
            released: vec![],
            fenced_at: (st == 2).then_some(t),
        })),
        1 => (0u8..3).prop_map(|n| Op::DeleteNode(format!("agent{n}"))),
        1 => (0u8..3, 0u8..3, 1u64..100).prop_map(|(i, st, size)| Op::PutBrokerInstance(broker_instance(i, st, size))),
        1 => (0u8..3).prop_map(|i| Op::DeleteBrokerInstance(format!("inst{i}"))),
        // Instance ids that prefix one another ("inst1", "inst10") keep per-instance scans honest.
        1 => (prop_oneof![Just("inst1"), Just("inst10"), Just("inst2")], 0u8..3, any::<bool>())
            .prop_map(|(i, b, ro)| Op::PutBrokerBinding(BrokerBinding {
                id: format!("bind{b}"),
                instance_id: i.to_string(),
                service_id: "s".into(),
                plan_id: "p".into(),
                app_guid: Some("app".into()),
                bind_resource: serde_json::Value::Null,
                parameters: serde_json::json!({ "readonly": ro }),
                container_dir: "/data".into(),
                read_only: ro,
                originating_identity: None,
                created_at: 1,
            })),
        1 => (prop_oneof![Just("inst1"), Just("inst10"), Just("inst2")], 0u8..3).prop_map(|(i, b)| Op::DeleteBrokerBinding {
            instance_id: i.to_string(),
            binding_id: format!("bind{b}"),
        }),
    ]
}

fn assert_matches(store: &Store, model: &Model) {
    let vols: Vec<Volume> = model.volumes.values().cloned().collect();
    assert_eq!(store.volumes().unwrap(), vols);
    assert_eq!(
        store
            .volumes_shared()
            .unwrap()
            .iter()
            .map(|v| (**v).clone())
            .collect::<Vec<_>>(),
        vols,
        "cached list is stale"
    );
    for v in &vols {
        assert_eq!(
            store.volume_by_name(&v.service, &v.name).unwrap().as_ref(),
            Some(v)
        );
    }
    assert_eq!(
        store.intents().unwrap(),
        model.intents.values().cloned().collect::<Vec<_>>()
    );
    for i in model.intents.values() {
        assert_eq!(store.intent(i.id).unwrap().as_ref(), Some(i));
    }
    assert_eq!(
        store.instances().unwrap(),
        model.instances.values().cloned().collect::<Vec<_>>()
    );
    assert_eq!(store.dump().unwrap().meta, model.meta);
    assert_eq!(
        store.reservations().unwrap(),
        model.reservations.values().cloned().collect::<Vec<_>>()
    );
    assert_eq!(
        store.operations().unwrap(),
        model.operations.values().cloned().collect::<Vec<_>>()
    );
    for ((f, o), r) in &model.operations {
        assert_eq!(store.operation(f, o).unwrap().as_ref(), Some(r));
    }
    assert_eq!(
        store.nodes().unwrap(),
        model.nodes.values().cloned().collect::<Vec<_>>()
    );
    for n in model.nodes.values() {
        assert_eq!(store.node(&n.id).unwrap().as_ref(), Some(n));
    }
    assert_eq!(
        store.broker_instances().unwrap(),
        model.broker_instances.values().cloned().collect::<Vec<_>>()
    );
    for i in model.broker_instances.values() {
        assert_eq!(store.broker_instance(&i.id).unwrap().as_ref(), Some(i));
    }
    assert_eq!(
        store.broker_bindings(None).unwrap(),
        model.broker_bindings.values().cloned().collect::<Vec<_>>()
    );
    for iid in ["inst1", "inst10", "inst2"] {
        let want: Vec<BrokerBinding> = model
            .broker_bindings
            .iter()
            .filter(|((i, _), _)| i == iid)
            .map(|(_, b)| b.clone())
            .collect();
        assert_eq!(store.broker_bindings(Some(iid)).unwrap(), want, "{iid}");
        for b in &want {
            assert_eq!(store.broker_binding(iid, &b.id).unwrap().as_ref(), Some(b));
        }
    }
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

/// Random batches against the model, every read checked after each batch, then a reopen.
fn store_matches_model(backend: Backend) {
    // Each etcd case makes dozens of round trips per batch; fewer cases keep it in seconds.
    let cases = if backend.data_dir().is_some() { 48 } else { 12 };
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(cases));
    let strategy = prop::collection::vec(prop::collection::vec(op_strategy(), 1..4), 1..40);
    runner
        .run(&strategy, |batches| {
            #[cfg(feature = "etcd")]
            let backend = match &backend {
                Backend::Etcd { .. } => Backend::etcd("model").unwrap(),
                Backend::Sled(_) => Backend::sled().unwrap(),
            };
            #[cfg(not(feature = "etcd"))]
            let backend = Backend::sled().unwrap();
            let mut model = Model::default();
            {
                let store = backend.open();
                for batch in &batches {
                    let accepted = model.apply(batch);
                    let res = store.apply(batch);
                    prop_assert_eq!(res.is_ok(), accepted, "batch {:?} gave {:?}", batch, res);
                    if let Err(e) = res {
                        prop_assert!(matches!(e, Error::NameTaken { .. }), "{e}");
                    }
                    assert_matches(&store, &model);
                }
            }
            let store = backend.open();
            assert_matches(&store, &model);
            Ok(())
        })
        .unwrap();
}

fn rename_frees_the_old_name(backend: Backend) {
    let store = backend.open();
    store.apply(&[Op::PutVolume(vol(1, 0, 1, 5))]).unwrap();
    store.apply(&[Op::PutVolume(vol(1, 0, 2, 5))]).unwrap();
    assert!(store.volume_by_name("svc0", "n1").unwrap().is_none());
    store.apply(&[Op::PutVolume(vol(2, 0, 1, 5))]).unwrap();
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

fn erase_keeps_schema_and_clears_records(backend: Backend) {
    let store = backend.open();
    store
        .apply(&[
            Op::PutVolume(vol(1, 0, 1, 5)),
            Op::PutIntent(intent(3)),
            Op::PutMeta("framework_id".into(), "f1".into()),
        ])
        .unwrap();
    store.erase().unwrap();
    drop(store);
    let store = backend.open();
    let d = store.dump().unwrap();
    assert!(d.volumes.is_empty() && d.intents.is_empty() && d.meta.is_empty());
    assert_eq!(d.schema_version, SCHEMA_VERSION);
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
}

/// Everything `apply` acknowledged is there after the backend is killed and restarted, and
/// intent ids keep increasing across the restart.
fn acknowledged_writes_survive_a_restart(mut backend: Backend) {
    let store = backend.open();
    let mut model = Model::default();
    let mut ids = vec![];
    for i in 0..30u8 {
        let batch = vec![
            Op::PutVolume(vol(i, i % 2, i, u64::from(i) + 1)),
            Op::PutIntent(intent(u64::from(i))),
            Op::PutMeta(format!("k{i}"), format!("v{i}")),
        ];
        store.apply(&batch).unwrap();
        assert!(model.apply(&batch));
        ids.push(store.next_id().unwrap());
    }
    let batch = vec![Op::DeleteVolume("pv-3".into()), Op::DeleteIntent(4)];
    store.apply(&batch).unwrap();
    assert!(model.apply(&batch));
    let dump = store.dump().unwrap();
    drop(store);
    backend.restart();
    let store = backend.open();
    assert_matches(&store, &model);
    assert_eq!(store.dump().unwrap(), dump);
    let after = store.next_id().unwrap();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
    assert!(after > *ids.last().unwrap(), "{after} after {ids:?}");
}

/// A batch whose volume name is taken writes none of its ops, not even those before it.
fn a_failed_name_check_writes_nothing(backend: Backend) {
    let store = backend.open();
    store.apply(&[Op::PutVolume(vol(1, 0, 1, 5))]).unwrap();
    let before = store.dump().unwrap();
    let batch = [
        Op::PutMeta("half".into(), "written".into()),
        Op::PutIntent(intent(9)),
        Op::DeleteVolume("pv-1".into()),
        Op::PutVolume(vol(2, 1, 2, 5)),
        Op::PutVolume(vol(1, 0, 1, 6)),
        // pv-3 takes svc0/n1, which pv-1 (put again above) holds.
        Op::PutVolume(vol(3, 0, 1, 5)),
    ];
    match store.apply(&batch) {
        Err(Error::NameTaken {
            service,
            name,
            holder,
        }) => assert_eq!(
            (service.as_str(), name.as_str(), holder.as_str()),
            ("svc0", "n1", "pv-1")
        ),
        other => panic!("expected NameTaken, got {other:?}"),
    }
    assert_eq!(store.dump().unwrap(), before);
    assert_eq!(store.check().unwrap(), Vec::<String>::new());
    drop(store);
    assert_eq!(backend.open().dump().unwrap(), before);
}

/// Writers on two handles at once: every batch lands, none is lost or half-applied.
fn concurrent_applies_all_land(backend: Backend) {
    let a = backend.open();
    let b = backend.second(&a);
    let n = 16;
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        for i in 0..n {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let barrier = &barrier;
            s.spawn(move || {
                barrier.wait();
                for round in 0..5u8 {
                    let id = (i as u8) * 5 + round;
                    store
                        .apply(&[
                            Op::PutVolume(vol(id, 0, id, 1)),
                            Op::PutMeta(format!("w/{id:03}"), i.to_string()),
                        ])
                        .unwrap();
                }
            });
        }
    });
    for store in [&a, &b] {
        assert_eq!(store.volumes().unwrap().len(), n * 5);
        assert_eq!(store.meta_prefixed("w/").unwrap().len(), n * 5);
        assert_eq!(store.check().unwrap(), Vec::<String>::new());
    }
}

/// Many writers create different volumes with one `(service, name)` at the same moment,
/// from two handles: exactly one wins, the others get `NameTaken` naming the winner.
fn racing_creates_of_one_name_admit_one(backend: Backend) {
    let a = backend.open();
    let b = backend.second(&a);
    for round in 0..3u8 {
        let n = 8u8;
        let barrier = std::sync::Barrier::new(n as usize);
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..n)
                .map(|i| {
                    let store = if i % 2 == 0 { a.clone() } else { b.clone() };
                    let barrier = &barrier;
                    s.spawn(move || {
                        barrier.wait();
                        let id = round * 100 + i;
                        (
                            id,
                            store.apply(&[Op::PutVolume(vol(id, 0, 200 + round, 1))]),
                        )
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<u8> = results
            .iter()
            .filter(|(_, r)| r.is_ok())
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(winners.len(), 1, "{results:?}");
        let holder = format!("pv-{}", winners[0]);
        for (_, r) in &results {
            if let Err(e) = r {
                assert!(
                    matches!(e, Error::NameTaken { holder: h, .. } if *h == holder),
                    "{e}"
                );
            }
        }
        let v = a
            .volume_by_name("svc0", &format!("n{}", 200 + round))
            .unwrap()
            .unwrap();
        assert_eq!(v.id, holder);
    }
    assert_eq!(a.volumes().unwrap().len(), 3);
    assert_eq!(a.check().unwrap(), Vec::<String>::new());
}

/// What only etcd has: the write fence, key prefixes, and the schema check on etcd.
#[cfg(feature = "etcd")]
mod etcd_only {
    use super::*;

    fn shared_config(prefix: &str) -> polly::store::EtcdConfig {
        polly::store::EtcdConfig {
            endpoints: vec![etcd::Etcd::shared().url()],
            prefix: prefix.into(),
            ..Default::default()
        }
    }

    /// Put `key` with etcdctl; returns its create revision.
    fn put_key(key: &str) -> i64 {
        let e = etcd::Etcd::shared();
        e.ctl(&["put", key, "holder"]);
        let out: serde_json::Value =
            serde_json::from_str(&e.ctl(&["get", key, "-w", "json"])).expect("etcdctl get -w json");
        out["kvs"][0]["create_revision"].as_i64().unwrap()
    }

    /// A write passes while the fence key has the expected create revision and is refused,
    /// with nothing of it written, once the key is gone or was created anew (a new leader).
    #[test]
    fn a_stale_fence_rejects_every_write() {
        if etcd::skip().is_some() {
            return;
        }
        let prefix = etcd::unique_prefix("fence");
        let fence_key = format!("{prefix}leader");
        let rev = put_key(&fence_key);
        let fence = Fence {
            key: fence_key.clone().into_bytes(),
            create_revision: rev,
        };
        let store = Store::open_etcd(&shared_config(&prefix), Some(fence.clone())).unwrap();
        store.apply(&[Op::PutVolume(vol(1, 0, 1, 5))]).unwrap();
        store.next_id().unwrap();
        let before = store.dump().unwrap();

        // Another instance takes over: the key is deleted and created again.
        etcd::Etcd::shared().ctl(&["del", &fence_key]);
        let gone = store.apply(&[Op::PutMeta("late".into(), "1".into())]);
        match gone {
            Err(Error::Fenced {
                ref key,
                expected,
                found: 0,
            }) if *key == fence_key && expected == rev => {}
            other => panic!("expected Fenced with the key gone, got {other:?}"),
        }
        let newer = put_key(&fence_key);
        assert!(newer > rev);
        let batch = [
            Op::PutMeta("late".into(), "1".into()),
            Op::PutVolume(vol(2, 0, 2, 5)),
            Op::DeleteVolume("pv-1".into()),
        ];
        let err = store.apply(&batch).unwrap_err();
        match &err {
            Error::Fenced {
                expected, found, ..
            } => assert_eq!((*expected, *found), (rev, newer)),
            other => panic!("expected Fenced, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&fence_key) && msg.contains("no longer"),
            "unclear error: {msg}"
        );
        assert!(matches!(store.erase(), Err(Error::Fenced { .. })));
        assert_eq!(
            store.dump().unwrap(),
            before,
            "a fenced write changed the store"
        );

        // The instance holding the new key writes.
        store
            .set_fence(Some(Fence {
                key: fence_key.into_bytes(),
                create_revision: newer,
            }))
            .unwrap();
        store.apply(&batch).unwrap();
        assert_eq!(store.meta("late").unwrap().as_deref(), Some("1"));
        assert!(store.volume("pv-1").unwrap().is_none());
    }

    /// Two Polly clusters on one etcd, each under its own prefix, see only their own state.
    #[test]
    fn prefixes_keep_clusters_apart() {
        if etcd::skip().is_some() {
            return;
        }
        let (p1, p2) = (etcd::unique_prefix("a"), etcd::unique_prefix("b"));
        let a = Store::open_etcd(&shared_config(&p1), None).unwrap();
        // Without the trailing slash: the same prefix once one is added.
        let b = Store::open_etcd(&shared_config(p2.trim_end_matches('/')), None).unwrap();
        a.apply(&[
            Op::PutVolume(vol(1, 0, 1, 5)),
            Op::PutMeta("m".into(), "a".into()),
        ])
        .unwrap();
        b.apply(&[Op::PutVolume(vol(2, 0, 1, 5))]).unwrap();
        assert_eq!(a.volumes().unwrap().len(), 1);
        assert_eq!(b.volumes().unwrap()[0].id, "pv-2");
        assert_eq!(b.meta("m").unwrap(), None);
        b.erase().unwrap();
        assert_eq!(a.volumes().unwrap().len(), 1);
        let keys = etcd::Etcd::shared().ctl(&["get", "--prefix", "--keys-only", &p2]);
        assert!(
            keys.lines().all(|k| k.is_empty() || k.starts_with(&p2)),
            "{keys}"
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        if etcd::skip().is_some() {
            return;
        }
        let prefix = etcd::unique_prefix("schema");
        drop(Store::open_etcd(&shared_config(&prefix), None).unwrap());
        let next = (SCHEMA_VERSION + 1).to_string();
        etcd::Etcd::shared().ctl(&["put", &format!("{prefix}schema_version"), &next]);
        match Store::open_etcd(&shared_config(&prefix), None) {
            Err(Error::SchemaTooNew { found, .. }) => assert_eq!(found, SCHEMA_VERSION + 1),
            other => panic!("expected SchemaTooNew, got {:?}", other.map(|_| ())),
        }
    }

    /// No etcd listening: open fails within the timeouts with an error naming the endpoint.
    #[test]
    fn an_unreachable_etcd_is_a_clear_error() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cfg = polly::store::EtcdConfig {
            endpoints: vec![format!("http://127.0.0.1:{port}")],
            request_timeout_secs: 2.0,
            connect_timeout_secs: 1.0,
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let err = Store::open_etcd(&cfg, None).map(|_| ()).unwrap_err();
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(matches!(err, Error::Cluster(_)), "{err:?}");
        assert!(err.to_string().contains(&port.to_string()), "{err}");
    }

    /// Certificates for a TLS etcd with client-certificate auth: (ca, server cert, server
    /// key, client cert, client key) as files in `dir`.
    fn certificates(dir: &std::path::Path) -> [PathBuf; 5] {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "polly test CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca, &ca_key);
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, cn: &str| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![usage];
            (
                p.signed_by(&key, &issuer).unwrap().pem(),
                key.serialize_pem(),
            )
        };
        let (server, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
            "etcd",
        );
        let (client, client_key) = leaf(
            vec!["polly".into()],
            ExtendedKeyUsagePurpose::ClientAuth,
            "polly",
        );
        let files = [
            ("ca.pem", ca_cert.pem()),
            ("server.pem", server),
            ("server-key.pem", server_key),
            ("client.pem", client),
            ("client-key.pem", client_key),
        ];
        files.map(|(name, pem)| {
            let path = dir.join(name);
            std::fs::write(&path, pem).unwrap();
            path
        })
    }

    /// etcd serving TLS and requiring client certificates: the store works with the CA and
    /// a client certificate configured, and without the client certificate it cannot open.
    #[test]
    fn tls_with_a_client_certificate() {
        if etcd::skip().is_some() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let [ca, cert, key, client, client_key] = certificates(dir.path());
        let s = |p: &PathBuf| p.to_str().unwrap().to_string();
        let server = etcd::Etcd::start_with(
            &[
                "--cert-file",
                &s(&cert),
                "--key-file",
                &s(&key),
                "--client-cert-auth",
                "--trusted-ca-file",
                &s(&ca),
            ],
            "https",
        );
        let cfg = polly::store::EtcdConfig {
            endpoints: vec![server.url()],
            prefix: "/tls/".into(),
            ca_file: Some(ca.clone()),
            cert_file: Some(client),
            key_file: Some(client_key),
            request_timeout_secs: 5.0,
            ..Default::default()
        };
        cfg.validate().unwrap();
        let store = Store::open_etcd(&cfg, None).unwrap();
        store.apply(&[Op::PutVolume(vol(1, 0, 1, 5))]).unwrap();
        drop(store);
        assert_eq!(
            Store::open_etcd(&cfg, None).unwrap().volumes().unwrap(),
            vec![vol(1, 0, 1, 5)]
        );
        let no_client_cert = polly::store::EtcdConfig {
            cert_file: None,
            key_file: None,
            request_timeout_secs: 3.0,
            ..cfg
        };
        let err = Store::open_etcd(&no_client_cert, None)
            .map(|_| ())
            .unwrap_err();
        assert!(matches!(err, Error::Cluster(_)), "{err}");
    }

    /// etcd with auth on: the store works as a user with read-write on its prefix, and a
    /// wrong password or a prefix the user may not write is a clear error.
    #[test]
    fn user_and_password() {
        if etcd::skip().is_some() {
            return;
        }
        let server = etcd::Etcd::start();
        for args in [
            &["user", "add", "root:rootpw"][..],
            &["role", "add", "root"],
            &["user", "grant-role", "root", "root"],
            &["user", "add", "polly:secret"],
            &["role", "add", "polly-rw"],
            &[
                "role",
                "grant-permission",
                "polly-rw",
                "readwrite",
                "--prefix=true",
                "/mine/",
            ],
            &["user", "grant-role", "polly", "polly-rw"],
            &["auth", "enable"],
        ] {
            server.ctl(args);
        }
        let cfg = |prefix: &str, password: &str| polly::store::EtcdConfig {
            endpoints: vec![server.url()],
            prefix: prefix.into(),
            user: Some("polly".into()),
            password: Some(password.into()),
            request_timeout_secs: 5.0,
            ..Default::default()
        };
        let store = Store::open_etcd(&cfg("/mine/", "secret"), None).unwrap();
        store.apply(&[Op::PutVolume(vol(1, 0, 1, 5))]).unwrap();
        assert_eq!(store.volumes().unwrap().len(), 1);
        let err = Store::open_etcd(&cfg("/mine/", "wrong"), None)
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("authentication failed"), "{err}");
        let err = Store::open_etcd(&cfg("/theirs/", "secret"), None)
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("permission denied"), "{err}");
    }
}
