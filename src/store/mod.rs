//! The store: Polly's durable state, behind one typed API ([`Store`]) over a storage backend
//! ([`backend::Backend`]): sled on local disk (the default, `sled_backend.rs`) or etcd
//! (`etcd_backend.rs`, cargo feature `etcd`). This is the only module that imports `sled` or
//! the etcd client; it owns tree names, key encoding, the schema version and the durability
//! policy. Every write goes through [`Store::apply`], which commits a batch atomically across
//! trees (one sled transaction, or one etcd Txn) and returns only once it is durable, so
//! anything a caller acknowledges is durable. On sled concurrent writers share flushes (group
//! commit): each commits its own transaction, and one flush + `fdatasync` that started after
//! those commits covers them all.

mod backend;
pub mod config;
#[cfg(feature = "etcd")]
pub mod election;
#[cfg(feature = "etcd")]
mod etcd_backend;
mod sled_backend;
mod types;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use backend::{Backend, Tree};

pub use config::{EtcdConfig, StoreBackend, StoreConfig, StoreConfigError, ETCD_FEATURE_MISSING};
pub use types::{
    Attachment, BrokerBinding, BrokerInstance, BrokerOpKind, BrokerOpState, BrokerOperation,
    Instance, Intent, IntentOp, NodeRecord, NodeState, OperationRecord, Reservation, Volume,
    VolumeStatus,
};

/// The on-disk layout version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

/// The schema version's key in the sled `meta` tree (never listed or erased).
const KEY_SCHEMA: &[u8] = b"schema_version";

/// The guard a write must pass on etcd: `key` still has `create_revision`. Polly's leader
/// holds a key tied to its lease; the key is created anew (a new create revision) whenever
/// leadership changes hands, so a write fenced by the old one is refused by etcd itself,
/// in the same Txn as the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The whole etcd key (the store's key prefix is not added).
    pub key: Vec<u8>,
    /// The key's create revision when this instance took it.
    pub create_revision: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage engine failed (disk, flush, a panicked writer).
    #[error("store i/o error: {0}")]
    Io(String),
    #[error("store at {path} is locked by another polly process; stop it or use another data dir")]
    Locked { path: String },
    #[error("corrupt record in tree {tree} at key {key:?}: {detail}")]
    Corrupt {
        tree: &'static str,
        key: String,
        detail: String,
    },
    #[error("volume name {name:?} is already used in service {service:?} by volume {holder}")]
    NameTaken {
        service: String,
        name: String,
        holder: String,
    },
    #[error(
        "store has schema version {found}; this polly supports up to {supported}: upgrade polly"
    )]
    SchemaTooNew { found: u32, supported: u32 },
    /// The replicated store's cluster failed or could not be reached.
    #[error("etcd store error: {0}")]
    Cluster(String),
    /// A write on etcd whose [`Fence`] no longer holds: nothing of it was written.
    #[error(
        "store write refused: fence key {key:?} has create revision {found} (0: gone), not {expected}; this polly is no longer the instance allowed to write"
    )]
    Fenced {
        key: String,
        expected: i64,
        found: i64,
    },
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One write in a batch given to [`Store::apply`].
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Insert or replace a volume; its `(service, name)` must not belong to another volume.
    PutVolume(Volume),
    DeleteVolume(String),
    PutIntent(Intent),
    DeleteIntent(u64),
    PutInstance(Instance),
    /// Small string settings (e.g. the Mesos framework id).
    PutMeta(String, String),
    DeleteMeta(String),
    /// Insert or replace a framework's reservation of a volume.
    PutReservation(Reservation),
    DeleteReservation {
        framework_id: String,
        volume_id: String,
    },
    /// Insert or replace an offer operation's record (keyed by framework and operation id).
    PutOperation(OperationRecord),
    /// Remove an offer operation's record; with `if_status`, only while the record still
    /// has that status uuid (each status gets a new one), checked in the batch itself: a
    /// record written again since it was read (the same operation id in a new ACCEPT) is
    /// kept.
    DeleteOperation {
        framework_id: String,
        operation_id: String,
        if_status: Option<String>,
    },
    /// Insert or replace a lost or fenced node's record (keyed by its id).
    PutNode(NodeRecord),
    DeleteNode(String),
    /// Insert or replace an Open Service Broker instance's record (keyed by its id).
    PutBrokerInstance(BrokerInstance),
    DeleteBrokerInstance(String),
    /// Insert or replace a broker binding's record (keyed by instance id, binding id).
    PutBrokerBinding(BrokerBinding),
    DeleteBrokerBinding {
        instance_id: String,
        binding_id: String,
    },
}

/// Everything in the store, for `polly store dump` and backups.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Dump {
    pub schema_version: u32,
    pub meta: BTreeMap<String, String>,
    pub volumes: Vec<Volume>,
    pub intents: Vec<Intent>,
    pub instances: Vec<Instance>,
    #[serde(default)]
    pub reservations: Vec<Reservation>,
    #[serde(default)]
    pub operations: Vec<OperationRecord>,
    #[serde(default)]
    pub nodes: Vec<NodeRecord>,
    #[serde(default)]
    pub broker_instances: Vec<BrokerInstance>,
    #[serde(default)]
    pub broker_bindings: Vec<BrokerBinding>,
}

/// The decoded volume list readers share ([`Store::volumes_shared`]): every volume sorted by
/// Polly id, each behind its own `Arc`, so a list brought up to date after a write shares
/// every volume the write did not touch with the list before it.
pub type VolumeList = Arc<Vec<Arc<Volume>>>;

/// Above this many volume ids written since the shared list was read, the list is dropped
/// (and read whole again when next asked for) rather than the ids kept: a store nobody lists
/// would otherwise remember every volume id it ever wrote.
const DIRTY_MAX: usize = 65_536;

/// The volume list readers share, and which volumes were written since it was read.
#[derive(Default)]
struct VolumeView {
    /// The list as last read or brought up to date; `None` before the first read and after a
    /// change to unknown volumes (another writer, an erase).
    list: Option<VolumeList>,
    /// Ids of the volumes written since `list` was read, each with the `version` of its
    /// last write. Only these are read again before the list is handed out again, and an id
    /// leaves only once a list that read it after that write is stored.
    dirty: BTreeMap<String, u64>,
    /// Bumped whenever `list` is dropped, so that a read that started before does not store
    /// what it read.
    resets: u64,
    /// Bumped by every write that may have changed a volume (see [`Store::volumes_version`]).
    version: u64,
}

impl VolumeView {
    /// The list, if no volume was written since it was read.
    fn current(&self) -> Option<VolumeList> {
        self.list.clone().filter(|_| self.dirty.is_empty())
    }

    /// Forget the list: volumes changed that this view cannot name.
    fn reset(&mut self) {
        self.list = None;
        self.dirty.clear();
        self.resets += 1;
        self.version += 1;
    }
}

/// The volume ids a batch writes.
fn volume_ids(ops: &[Op]) -> impl Iterator<Item = &str> {
    ops.iter().filter_map(|op| match op {
        Op::PutVolume(v) => Some(v.id.as_str()),
        Op::DeleteVolume(id) => Some(id.as_str()),
        _ => None,
    })
}

/// `base` (sorted by id) with the volumes in `fresh` (sorted by id; `None`: deleted) put in
/// place of, or beside, those of the same id.
fn merged(base: &[Arc<Volume>], fresh: Vec<(String, Option<Volume>)>) -> Vec<Arc<Volume>> {
    let mut out = Vec::with_capacity(base.len() + fresh.len());
    let mut fresh = fresh.into_iter().peekable();
    for v in base {
        while let Some((_, new)) = fresh.next_if(|(id, _)| id.as_str() < v.id.as_str()) {
            out.extend(new.map(Arc::new));
        }
        match fresh.next_if(|(id, _)| *id == v.id) {
            Some((_, new)) => out.extend(new.map(Arc::new)),
            None => out.push(v.clone()),
        }
    }
    out.extend(fresh.filter_map(|(_, new)| new.map(Arc::new)));
    out.shrink_to_fit();
    out
}

/// The backend behind a [`Store`].
#[derive(Clone)]
enum Engine {
    Sled(Arc<sled_backend::SledBackend>),
    #[cfg(feature = "etcd")]
    Etcd(Arc<etcd_backend::EtcdBackend>),
}

/// Handle to the store; cheap to clone (all clones share one backend).
#[derive(Clone)]
pub struct Store {
    engine: Engine,
    /// Bumped by every committed write.
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// The decoded volume list shared by readers (list calls and offer rounds would decode
    /// every record otherwise, once each), and the volumes written since it was read.
    volume_view: Arc<std::sync::Mutex<VolumeView>>,
    /// Held while the shared list is read or brought up to date: readers that find it out
    /// of date at the same time (the façade's lists, offer rounds, start-up reconciliation)
    /// wait for one update instead of each building a copy (with 100,000 volumes, tens of
    /// megabytes each).
    volume_update: Arc<std::sync::Mutex<()>>,
    /// Called whenever a write is refused by the fence (the leader stops acting on it).
    on_fenced: Arc<std::sync::Mutex<Option<FencedHook>>>,
}

/// What [`Store::on_fenced`] registers.
pub type FencedHook = Arc<dyn Fn(&Error) + Send + Sync>;

fn name_key(service: &str, name: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(service.len() + name.len() + 1);
    k.extend_from_slice(service.as_bytes());
    k.push(0);
    k.extend_from_slice(name.as_bytes());
    k
}

fn instance_key(driver: &str, id: &str) -> Vec<u8> {
    name_key(driver, id)
}

fn decode<T: serde::de::DeserializeOwned>(tree: &'static str, key: &[u8], v: &[u8]) -> Result<T> {
    serde_json::from_slice(v).map_err(|e| Error::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        detail: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Serializing plain structs with string keys cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

impl Store {
    /// Open (or create) the sled store in `dir`, checking the schema version.
    pub fn open(dir: &Path) -> Result<Store> {
        let b = sled_backend::SledBackend::open(dir)?;
        Ok(Store::with(Engine::Sled(Arc::new(b))))
    }

    /// Open the store `config` (the `[store]` section) names: sled in `sled_dir`
    /// (`<data_dir>/store`), or etcd.
    pub fn open_config(config: &StoreConfig, sled_dir: &Path) -> Result<Store> {
        match config.backend {
            StoreBackend::Sled => Store::open(sled_dir),
            #[cfg(feature = "etcd")]
            StoreBackend::Etcd => Store::open_etcd(&config.etcd, None),
            #[cfg(not(feature = "etcd"))]
            StoreBackend::Etcd => Err(Error::Unsupported(ETCD_FEATURE_MISSING.into())),
        }
    }

    /// Connect to etcd (see [`EtcdConfig`]) and check the schema version
    /// under its key prefix; every write is fenced by `fence` when given (and by whatever
    /// [`Store::set_fence`] sets later).
    #[cfg(feature = "etcd")]
    pub fn open_etcd(config: &EtcdConfig, fence: Option<Fence>) -> Result<Store> {
        let b = etcd_backend::EtcdBackend::open(config, fence)?;
        Ok(Store::with(Engine::Etcd(Arc::new(b))))
    }

    fn with(engine: Engine) -> Store {
        Store {
            engine,
            generation: Default::default(),
            volume_view: Default::default(),
            volume_update: Default::default(),
            on_fenced: Default::default(),
        }
    }

    /// Call `hook` with the error each time a write is refused by the fence
    /// ([`Error::Fenced`]): a leader learns it was deposed on its first refused write.
    pub fn on_fenced(&self, hook: FencedHook) {
        *self.on_fenced.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
    }

    fn backend(&self) -> &dyn Backend {
        match &self.engine {
            Engine::Sled(b) => &**b,
            #[cfg(feature = "etcd")]
            Engine::Etcd(b) => &**b,
        }
    }

    /// `sled` or `etcd`.
    pub fn backend_kind(&self) -> &'static str {
        self.backend().kind()
    }

    /// Fence every later write (etcd only): it succeeds only while `fence.key` still has
    /// `fence.create_revision`, checked by etcd in the write's own transaction. `None` lifts
    /// the fence. sled has no fence (its file lock already keeps a second process out).
    pub fn set_fence(&self, fence: Option<Fence>) -> Result<()> {
        match &self.engine {
            Engine::Sled(_) => Err(Error::Unsupported(format!(
                "the sled store cannot be fenced (by {:?}): its file lock already admits one polly",
                fence.map(|f| String::from_utf8_lossy(&f.key).into_owned())
            ))),
            #[cfg(feature = "etcd")]
            Engine::Etcd(b) => {
                b.set_fence(fence);
                Ok(())
            }
        }
    }

    pub fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

    /// [`Store::apply`] from async code: the batch is committed on the blocking pool (a flush
    /// and an fdatasync are long enough to stall every request sharing an async worker) and
    /// the call returns once it is durable.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<()> {
        self.blocking(move |store| store.apply(&ops)).await
    }

    /// Run `f` (reads and writes of this store) on the blocking pool and wait for it.
    pub async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| Error::Io(format!("store writer panicked: {e}")))?
    }

    /// Apply a batch atomically across all trees. Returns only once the batch is durable
    /// (sled: flushed; etcd: committed by the cluster); on error nothing of the batch is
    /// written, except that if the sled flush covering it fails that error is returned (the
    /// batch may then survive a crash or not). Blocks the calling thread (call it from
    /// `spawn_blocking` in async code); on sled concurrent callers share one flush instead of
    /// queueing for one each.
    pub fn apply(&self, ops: &[Op]) -> Result<()> {
        let res = self.backend().apply(ops);
        if let Err(e @ Error::Fenced { .. }) = &res {
            let hook = self
                .on_fenced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(hook) = hook {
                hook(e);
            }
        }
        // Also after a failed sled flush: the batch is committed and visible.
        if !matches!(
            res,
            Err(Error::NameTaken { .. } | Error::Fenced { .. } | Error::Corrupt { .. })
        ) {
            // Volumes first: a reader that sees the new generation must find them marked.
            self.volumes_written(volume_ids(ops));
            self.bump();
        }
        res
    }

    /// How many writes (`apply` batches, plus the erase and schema writes) have waited for
    /// durability so far; with [`Store::durable_syncs`] it shows how many writes shared a
    /// flush (sled). On etcd every batch is its own commit.
    pub fn durable_writes(&self) -> u64 {
        self.backend().durable_writes()
    }

    /// How many durability points this store has run (sled: flush + `fdatasync`; etcd:
    /// committed transactions), for tests and benchmarks: on sled fewer than the number of
    /// `apply` calls when concurrent writers shared them.
    pub fn durable_syncs(&self) -> u64 {
        self.backend().durable_syncs()
    }

    /// Read and decode one record.
    fn record<T: serde::de::DeserializeOwned>(&self, tree: Tree, key: &[u8]) -> Result<Option<T>> {
        self.backend()
            .get(tree, key)?
            .map(|v| decode(tree.name(), key, &v))
            .transpose()
    }

    /// Decode every record of a tree, in key order.
    fn scan<T: serde::de::DeserializeOwned>(&self, tree: Tree) -> Result<Vec<T>> {
        let mut out = Vec::new();
        self.backend().scan(tree, b"", &mut |k, v| {
            out.push(decode(tree.name(), k, v)?);
            Ok(())
        })?;
        Ok(out)
    }

    pub fn volume(&self, id: &str) -> Result<Option<Volume>> {
        self.record(Tree::Volumes, id.as_bytes())
    }

    pub fn volume_by_name(&self, service: &str, name: &str) -> Result<Option<Volume>> {
        match self.backend().get(Tree::Names, &name_key(service, name))? {
            Some(id) => self.volume(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// All volumes, sorted by Polly id.
    pub fn volumes(&self) -> Result<Vec<Volume>> {
        self.scan(Tree::Volumes)
    }

    /// All volumes, sorted by Polly id, shared: the whole tree is decoded once, and after
    /// that only the volumes written since the list was last handed out are read again
    /// (writes to other trees leave it as it is). Never older than the last write that
    /// returned before the call.
    pub fn volumes_shared(&self) -> Result<VolumeList> {
        if let Some(list) = self.view().current() {
            return Ok(list);
        }
        let _updating = self.volume_update.lock().unwrap_or_else(|p| p.into_inner());
        let (base, dirty, resets, version) = {
            let v = self.view();
            // Another reader may have brought it up to date while this one waited.
            if let Some(list) = v.current() {
                return Ok(list);
            }
            let base = v.list.clone().filter(|l| v.dirty.len() <= l.len() / 2 + 8);
            let dirty: BTreeSet<String> = match base {
                Some(_) => v.dirty.keys().cloned().collect(),
                None => BTreeSet::new(),
            };
            (base, dirty, v.resets, v.version)
        };
        // Read after noting the ids and the version: every write up to `version` is in what
        // is read; a volume written later stays marked, for the next reader.
        let read = match base {
            Some(base) => self.volume_list_patched(&base, &dirty),
            None => self.volume_list(),
        };
        // On an error the view is left as it was: the ids stay marked.
        let list = Arc::new(read?);
        let mut v = self.view();
        if v.resets == resets {
            v.list = Some(list.clone());
            v.dirty.retain(|_, written| *written > version);
        }
        Ok(list)
    }

    /// Every volume, decoded, in key (= id) order, without spare room (the list is kept
    /// until the store changes).
    fn volume_list(&self) -> Result<Vec<Arc<Volume>>> {
        let mut out = Vec::new();
        self.backend().scan(Tree::Volumes, b"", &mut |k, v| {
            out.push(Arc::new(decode(Tree::Volumes.name(), k, v)?));
            Ok(())
        })?;
        out.shrink_to_fit();
        Ok(out)
    }

    /// `base` with the volumes `ids` read again from the store.
    fn volume_list_patched(
        &self,
        base: &[Arc<Volume>],
        ids: &BTreeSet<String>,
    ) -> Result<Vec<Arc<Volume>>> {
        let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes()).collect();
        let values = self.backend().get_many(Tree::Volumes, &keys)?;
        let fresh = ids
            .iter()
            .zip(values)
            .map(|(id, v)| {
                let v = v
                    .map(|v| decode(Tree::Volumes.name(), id.as_bytes(), &v))
                    .transpose()?;
                Ok((id.clone(), v))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(merged(base, fresh))
    }

    /// The shared volume list's state (held only for a few field updates, never across I/O).
    fn view(&self) -> std::sync::MutexGuard<'_, VolumeView> {
        self.volume_view.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Mark the volumes a committed batch wrote, for the next reader of the shared list.
    fn volumes_written<'a>(&self, ids: impl Iterator<Item = &'a str>) {
        let mut ids = ids.peekable();
        if ids.peek().is_none() {
            return;
        }
        let mut v = self.view();
        v.version += 1;
        let version = v.version;
        v.dirty.extend(ids.map(|id| (id.to_string(), version)));
        if v.dirty.len() > DIRTY_MAX {
            v.reset();
        }
    }

    /// A counter bumped by every write that may have changed a volume (and by
    /// [`Store::forget_cache`]): equal values mean the volume list is the same, so a view
    /// derived from it alone (a rendered list) can be reused. Read it before the list.
    pub fn volumes_version(&self) -> u64 {
        self.view().version
    }

    /// A counter bumped by every committed write through this handle (and its clones):
    /// equal values mean nothing changed between two reads (for views of the volumes alone,
    /// [`Store::volumes_version`] changes less often). On etcd only this instance writes
    /// (its writes are fenced), so the counter sees every change.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Forget cached reads: another process (a previous leader) may have written since.
    pub fn forget_cache(&self) {
        self.view().reset();
        self.bump();
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Unfinished operation intents, oldest first.
    pub fn intents(&self) -> Result<Vec<Intent>> {
        self.scan(Tree::Intents)
    }

    pub fn intent(&self, id: u64) -> Result<Option<Intent>> {
        self.record(Tree::Intents, &id.to_be_bytes())
    }

    pub fn instances(&self) -> Result<Vec<Instance>> {
        self.scan(Tree::Instances)
    }

    pub fn instance(&self, driver: &str, instance_id: &str) -> Result<Option<Instance>> {
        self.record(Tree::Instances, &instance_key(driver, instance_id))
    }

    /// A new id for an intent: unique and increasing for the life of the store, also across
    /// restarts (sled persists the counter and skips ahead after a crash; etcd hands out
    /// blocks of ids from a counter key, and a restart skips the rest of a block).
    pub fn next_id(&self) -> Result<u64> {
        self.backend().next_id()
    }

    /// Every framework's reservations, sorted by framework id then volume id.
    pub fn reservations(&self) -> Result<Vec<Reservation>> {
        self.scan(Tree::Reservations)
    }

    /// Every recorded offer operation, sorted by framework id then operation id.
    pub fn operations(&self) -> Result<Vec<OperationRecord>> {
        self.scan(Tree::Operations)
    }

    pub fn operation(
        &self,
        framework_id: &str,
        operation_id: &str,
    ) -> Result<Option<OperationRecord>> {
        self.record(Tree::Operations, &name_key(framework_id, operation_id))
    }

    /// Lost and fenced nodes, sorted by id.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>> {
        self.scan(Tree::Nodes)
    }

    pub fn node(&self, id: &str) -> Result<Option<NodeRecord>> {
        self.record(Tree::Nodes, id.as_bytes())
    }

    /// The Open Service Broker's instances, sorted by id.
    pub fn broker_instances(&self) -> Result<Vec<BrokerInstance>> {
        self.scan(Tree::BrokerInstances)
    }

    pub fn broker_instance(&self, id: &str) -> Result<Option<BrokerInstance>> {
        self.record(Tree::BrokerInstances, id.as_bytes())
    }

    /// The broker's bindings (of one instance, when given), sorted by instance then id.
    pub fn broker_bindings(&self, instance_id: Option<&str>) -> Result<Vec<BrokerBinding>> {
        let Some(iid) = instance_id else {
            return self.scan(Tree::BrokerBindings);
        };
        let prefix = name_key(iid, "");
        let mut out = Vec::new();
        let tree = Tree::BrokerBindings;
        self.backend().scan(tree, &prefix, &mut |k, v| {
            out.push(decode(tree.name(), k, v)?);
            Ok(())
        })?;
        Ok(out)
    }

    pub fn broker_binding(
        &self,
        instance_id: &str,
        binding_id: &str,
    ) -> Result<Option<BrokerBinding>> {
        self.record(Tree::BrokerBindings, &name_key(instance_id, binding_id))
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .backend()
            .get(Tree::Meta, key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every setting whose key starts with `prefix`, in key order.
    pub fn meta_prefixed(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        self.backend()
            .scan(Tree::Meta, prefix.as_bytes(), &mut |k, v| {
                out.push((
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                ));
                Ok(())
            })?;
        Ok(out)
    }

    /// Everything in the store.
    pub fn dump(&self) -> Result<Dump> {
        let mut meta = BTreeMap::new();
        self.backend().scan(Tree::Meta, b"", &mut |k, v| {
            if k != KEY_SCHEMA {
                meta.insert(
                    String::from_utf8_lossy(k).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                );
            }
            Ok(())
        })?;
        Ok(Dump {
            schema_version: SCHEMA_VERSION,
            meta,
            volumes: self.volumes()?,
            intents: self.intents()?,
            instances: self.instances()?,
            reservations: self.reservations()?,
            operations: self.operations()?,
            nodes: self.nodes()?,
            broker_instances: self.broker_instances()?,
            broker_bindings: self.broker_bindings(None)?,
        })
    }

    /// Remove every record (the schema version stays). Back-end volumes are untouched: after
    /// an erase they show up as orphans.
    pub fn erase(&self) -> Result<()> {
        let res = self.backend().erase();
        self.forget_cache();
        res
    }

    /// Check the name index against the volumes tree; returns human-readable problems.
    pub fn check(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let vols = self.volumes()?;
        for v in &vols {
            match self
                .backend()
                .get(Tree::Names, &name_key(&v.service, &v.name))?
            {
                Some(id) if id == v.id.as_bytes() => {}
                other => problems.push(format!(
                    "volume {} ({}/{}) has name index entry {:?}",
                    v.id,
                    v.service,
                    v.name,
                    other.map(|i| String::from_utf8_lossy(&i).into_owned())
                )),
            }
        }
        let names = self.backend().len(Tree::Names)?;
        if names != vols.len() {
            problems.push(format!(
                "name index has {} entries for {} volumes",
                names,
                vols.len()
            ));
        }
        Ok(problems)
    }
}

#[cfg(test)]
impl Store {
    /// The sled backend (tests of its flush scheduling).
    fn sled(&self) -> &sled_backend::SledBackend {
        match &self.engine {
            Engine::Sled(b) => b,
            #[cfg(feature = "etcd")]
            Engine::Etcd(_) => panic!("not a sled store"),
        }
    }
}

#[cfg(test)]
mod tests;
