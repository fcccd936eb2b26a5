//! The store: Polly's durable state in an embedded sled database. This is the only module
//! that imports `sled`; it owns tree names, key encoding, the schema version and the flush
//! policy. Every write goes through [`Store::apply`], which commits a batch atomically across
//! trees and flushes it to disk before returning, so anything a caller acknowledges is durable.
//! Concurrent writers share flushes (group commit, see [`Durability`]): each commits its own
//! transaction, and one flush + `fdatasync` that started after those commits covers them all.

mod types;

use std::collections::BTreeMap;
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};
use sled::Tree;

pub use types::{
    Attachment, Instance, Intent, IntentOp, NodeRecord, NodeState, OperationRecord, Reservation,
    Volume, VolumeStatus,
};

/// The on-disk layout version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

const TREE_META: &str = "meta";
const TREE_VOLUMES: &str = "volumes";
const TREE_NAMES: &str = "volume_names";
const TREE_INTENTS: &str = "intents";
const TREE_INSTANCES: &str = "instances";
const TREE_RESERVATIONS: &str = "reservations";
const TREE_OPERATIONS: &str = "offer_operations";
const TREE_NODES: &str = "nodes";
const KEY_SCHEMA: &[u8] = b"schema_version";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("store i/o error: {0}")]
    Sled(String),
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
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Sled(e.to_string())
    }
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
    DeleteOperation {
        framework_id: String,
        operation_id: String,
    },
    /// Insert or replace a lost or fenced node's record (keyed by its id).
    PutNode(NodeRecord),
    DeleteNode(String),
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
}

/// The decoded volume list and the store generation it was read at.
type CachedVolumes = (u64, std::sync::Arc<Vec<Volume>>);

/// Handle to the store; cheap to clone (all clones share one database).
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// sled's log file. sled's own flush only issues `sync_file_range`, which neither commits
    /// file metadata nor flushes the disk's write cache; `fdatasync` on this handle after each
    /// flush makes an acknowledged batch survive power loss, not just a process crash.
    log: std::sync::Arc<std::fs::File>,
    /// Group commit: which committed writes are durable, and who is flushing.
    durability: std::sync::Arc<Durability>,
    /// Bumped by every committed write; tags the cached volume list.
    generation: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The decoded volumes tree as of some generation, shared by readers (list calls decode
    /// every record otherwise, once per request).
    volume_cache: std::sync::Arc<std::sync::Mutex<Option<CachedVolumes>>>,
    meta: Tree,
    volumes: Tree,
    names: Tree,
    intents: Tree,
    instances: Tree,
    reservations: Tree,
    operations: Tree,
    nodes: Tree,
}

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
    /// Open (or create) the store in `dir`, checking the schema version.
    pub fn open(dir: &Path) -> Result<Store> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(|e| match &e {
                sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => {
                    Error::Locked {
                        path: dir.display().to_string(),
                    }
                }
                sled::Error::Io(io) if io.to_string().contains("lock") => Error::Locked {
                    path: dir.display().to_string(),
                },
                _ => Error::from(e),
            })?;
        let log = std::fs::File::open(dir.join("db"))
            .map_err(|e| Error::Sled(format!("cannot open {}: {e}", dir.join("db").display())))?;
        let store = Store {
            log: std::sync::Arc::new(log),
            durability: Default::default(),
            generation: Default::default(),
            volume_cache: Default::default(),
            meta: db.open_tree(TREE_META)?,
            volumes: db.open_tree(TREE_VOLUMES)?,
            names: db.open_tree(TREE_NAMES)?,
            intents: db.open_tree(TREE_INTENTS)?,
            instances: db.open_tree(TREE_INSTANCES)?,
            reservations: db.open_tree(TREE_RESERVATIONS)?,
            operations: db.open_tree(TREE_OPERATIONS)?,
            nodes: db.open_tree(TREE_NODES)?,
            db,
        };
        match store.meta.get(KEY_SCHEMA)? {
            None => {
                store
                    .meta
                    .insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                store.sync_committed()?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| Error::Corrupt {
                        tree: TREE_META,
                        key: "schema_version".into(),
                        detail: format!("{} bytes, expected 4", v.len()),
                    })?;
                if found > SCHEMA_VERSION {
                    return Err(Error::SchemaTooNew {
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
        }
        Ok(store)
    }

    pub fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }

    /// Apply a batch atomically across all trees, then flush to disk. Returns only once the
    /// batch is durable; on error nothing of the batch is written, and if the flush covering
    /// it fails that error is returned (the batch may then survive a crash or not, as before
    /// group commit). Blocks the calling thread (call it from `spawn_blocking` in async code);
    /// concurrent callers share one flush instead of queueing for one each.
    pub fn apply(&self, ops: &[Op]) -> Result<()> {
        let trees = (
            &self.volumes,
            &self.names,
            &self.intents,
            &self.instances,
            &self.meta,
            &self.reservations,
            &self.operations,
            &self.nodes,
        );
        let res = trees.transaction(
            |(volumes, names, intents, instances, meta, reservations, operations, nodes)| {
                for op in ops {
                    match op {
                        Op::PutVolume(v) => {
                            let nk = name_key(&v.service, &v.name);
                            if let Some(holder) = names.get(&nk)? {
                                if holder.as_ref() != v.id.as_bytes() {
                                    return Err(ConflictableTransactionError::Abort(
                                        Error::NameTaken {
                                            service: v.service.clone(),
                                            name: v.name.clone(),
                                            holder: String::from_utf8_lossy(&holder).into_owned(),
                                        },
                                    ));
                                }
                            }
                            if let Some(old) = volumes.insert(v.id.as_bytes(), encode(v))? {
                                let old: Volume = decode(TREE_VOLUMES, v.id.as_bytes(), &old)
                                    .map_err(ConflictableTransactionError::Abort)?;
                                let ok = name_key(&old.service, &old.name);
                                if ok != nk {
                                    names.remove(ok)?;
                                }
                            }
                            names.insert(nk, v.id.as_bytes())?;
                        }
                        Op::DeleteVolume(id) => {
                            if let Some(old) = volumes.remove(id.as_bytes())? {
                                let old: Volume = decode(TREE_VOLUMES, id.as_bytes(), &old)
                                    .map_err(ConflictableTransactionError::Abort)?;
                                names.remove(name_key(&old.service, &old.name))?;
                            }
                        }
                        Op::PutIntent(i) => {
                            intents.insert(&i.id.to_be_bytes(), encode(i))?;
                        }
                        Op::DeleteIntent(id) => {
                            intents.remove(&id.to_be_bytes())?;
                        }
                        Op::PutInstance(i) => {
                            instances.insert(instance_key(&i.driver, &i.instance_id), encode(i))?;
                        }
                        Op::PutMeta(k, v) => {
                            meta.insert(k.as_bytes(), v.as_bytes())?;
                        }
                        Op::DeleteMeta(k) => {
                            meta.remove(k.as_bytes())?;
                        }
                        Op::PutReservation(r) => {
                            reservations
                                .insert(name_key(&r.framework_id, &r.volume_id), encode(r))?;
                        }
                        Op::DeleteReservation {
                            framework_id,
                            volume_id,
                        } => {
                            reservations.remove(name_key(framework_id, volume_id))?;
                        }
                        Op::PutOperation(o) => {
                            operations
                                .insert(name_key(&o.framework_id, &o.operation_id), encode(o))?;
                        }
                        Op::DeleteOperation {
                            framework_id,
                            operation_id,
                        } => {
                            operations.remove(name_key(framework_id, operation_id))?;
                        }
                        Op::PutNode(n) => {
                            nodes.insert(n.id.as_bytes(), encode(n))?;
                        }
                        Op::DeleteNode(id) => {
                            nodes.remove(id.as_bytes())?;
                        }
                    }
                }
                Ok(())
            },
        );
        match res {
            Ok(()) => self.bump(),
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        }
        self.sync_committed()
    }

    /// Wait until everything committed before this call is durable: take a ticket, then
    /// either lead a flush that covers it or wait for one. A flush covers exactly the tickets
    /// handed out before it started, so no caller returns on a flush that began before its
    /// own write was committed; a failed flush's error goes to every caller it covered.
    fn sync_committed(&self) -> Result<()> {
        let d = &*self.durability;
        let mut st = d.lock();
        st.committed += 1;
        let ticket = st.committed;
        loop {
            if st.resolved >= ticket {
                return match st.claim_failure(ticket) {
                    Some(msg) => Err(Error::Sled(msg)),
                    None => Ok(()),
                };
            }
            if st.flushing {
                st = d.flushed.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // Lead: this flush covers every ticket handed out so far (all committed).
            st.flushing = true;
            let from = st.resolved;
            let upto = st.committed;
            drop(st);
            let mut guard = FlushGuard {
                d,
                from,
                upto,
                ticket,
                done: false,
            };
            let res = self.flush_now();
            d.syncs.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            guard.done = true;
            st = d.lock();
            st.flushing = false;
            match res {
                Ok(()) => st.resolved = upto,
                Err(e) => st.fail(from, upto, e.to_string()),
            }
            d.flushed.notify_all();
            // Our own ticket is now durable or failed: the next iteration returns.
        }
    }

    /// One flush of everything written so far: sled's flush, then `fdatasync` of its log.
    fn flush_now(&self) -> Result<()> {
        #[cfg(test)]
        if let Some(hook) = self.durability.test_hook() {
            hook(self, SyncPoint::Start)?;
        }
        self.db.flush()?;
        self.log
            .sync_data()
            .map_err(|e| Error::Sled(format!("fdatasync of the store log: {e}")))?;
        #[cfg(test)]
        if let Some(hook) = self.durability.test_hook() {
            hook(self, SyncPoint::End)?;
        }
        Ok(())
    }

    /// How many writes (`apply` batches, plus the erase and schema writes) have waited for
    /// a flush so far; with [`Store::durable_syncs`] it shows how many writes shared a flush.
    pub fn durable_writes(&self) -> u64 {
        self.durability.lock().committed
    }

    /// How many flushes (sled flush + `fdatasync`) this store has run, for tests and
    /// benchmarks: fewer than the number of `apply` calls when concurrent writers shared them.
    pub fn durable_syncs(&self) -> u64 {
        self.durability
            .syncs
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn volume(&self, id: &str) -> Result<Option<Volume>> {
        self.volumes
            .get(id.as_bytes())?
            .map(|v| decode(TREE_VOLUMES, id.as_bytes(), &v))
            .transpose()
    }

    pub fn volume_by_name(&self, service: &str, name: &str) -> Result<Option<Volume>> {
        match self.names.get(name_key(service, name))? {
            Some(id) => self.volume(&String::from_utf8_lossy(&id)),
            None => Ok(None),
        }
    }

    /// All volumes, sorted by Polly id.
    pub fn volumes(&self) -> Result<Vec<Volume>> {
        scan(&self.volumes, TREE_VOLUMES)
    }

    /// All volumes, sorted by Polly id, shared: decoded once per store change rather than
    /// once per call. Never older than the last write that returned before the call.
    pub fn volumes_shared(&self) -> Result<std::sync::Arc<Vec<Volume>>> {
        use std::sync::atomic::Ordering;
        let generation = self.generation.load(Ordering::Acquire);
        let lock = || self.volume_cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((g, v)) = lock().as_ref() {
            if *g == generation {
                return Ok(v.clone());
            }
        }
        // Read after loading the generation: the list is at least as new as `generation`.
        let vols = std::sync::Arc::new(self.volumes()?);
        let mut cache = lock();
        if cache.as_ref().is_none_or(|(g, _)| *g <= generation) {
            *cache = Some((generation, vols.clone()));
        }
        Ok(vols)
    }

    /// A counter bumped by every committed write: equal values mean nothing changed between
    /// two reads, so derived views (rendered lists) can be reused.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Unfinished operation intents, oldest first.
    pub fn intents(&self) -> Result<Vec<Intent>> {
        scan(&self.intents, TREE_INTENTS)
    }

    pub fn intent(&self, id: u64) -> Result<Option<Intent>> {
        let k = id.to_be_bytes();
        self.intents
            .get(k)?
            .map(|v| decode(TREE_INTENTS, &k, &v))
            .transpose()
    }

    pub fn instances(&self) -> Result<Vec<Instance>> {
        scan(&self.instances, TREE_INSTANCES)
    }

    pub fn instance(&self, driver: &str, instance_id: &str) -> Result<Option<Instance>> {
        let k = instance_key(driver, instance_id);
        self.instances
            .get(&k)?
            .map(|v| decode(TREE_INSTANCES, &k, &v))
            .transpose()
    }

    /// A new id for an intent: unique and increasing for the life of the store, also across
    /// restarts (sled persists the counter and skips ahead after a crash).
    pub fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    /// Every framework's reservations, sorted by framework id then volume id.
    pub fn reservations(&self) -> Result<Vec<Reservation>> {
        scan(&self.reservations, TREE_RESERVATIONS)
    }

    /// Every recorded offer operation, sorted by framework id then operation id.
    pub fn operations(&self) -> Result<Vec<OperationRecord>> {
        scan(&self.operations, TREE_OPERATIONS)
    }

    pub fn operation(
        &self,
        framework_id: &str,
        operation_id: &str,
    ) -> Result<Option<OperationRecord>> {
        let k = name_key(framework_id, operation_id);
        self.operations
            .get(&k)?
            .map(|v| decode(TREE_OPERATIONS, &k, &v))
            .transpose()
    }

    /// Lost and fenced nodes, sorted by id.
    pub fn nodes(&self) -> Result<Vec<NodeRecord>> {
        scan(&self.nodes, TREE_NODES)
    }

    pub fn node(&self, id: &str) -> Result<Option<NodeRecord>> {
        self.nodes
            .get(id.as_bytes())?
            .map(|v| decode(TREE_NODES, id.as_bytes(), &v))
            .transpose()
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .meta
            .get(key.as_bytes())?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every setting whose key starts with `prefix`, in key order.
    pub fn meta_prefixed(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        self.meta
            .scan_prefix(prefix.as_bytes())
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                ))
            })
            .collect()
    }

    /// Everything in the store.
    pub fn dump(&self) -> Result<Dump> {
        let mut meta = BTreeMap::new();
        for kv in self.meta.iter() {
            let (k, v) = kv?;
            if k.as_ref() == KEY_SCHEMA {
                continue;
            }
            meta.insert(
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            );
        }
        Ok(Dump {
            schema_version: SCHEMA_VERSION,
            meta,
            volumes: self.volumes()?,
            intents: self.intents()?,
            instances: self.instances()?,
            reservations: self.reservations()?,
            operations: self.operations()?,
            nodes: self.nodes()?,
        })
    }

    /// Remove every record (the schema version stays). Back-end volumes are untouched: after
    /// an erase they show up as orphans.
    pub fn erase(&self) -> Result<()> {
        for t in [
            &self.volumes,
            &self.names,
            &self.intents,
            &self.instances,
            &self.reservations,
            &self.operations,
            &self.nodes,
        ] {
            t.clear()?;
        }
        self.bump();
        let keys: Vec<_> = self
            .meta
            .iter()
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.as_ref() != KEY_SCHEMA)
            .collect();
        for k in keys {
            self.meta.remove(k)?;
        }
        self.sync_committed()
    }

    /// Check the name index against the volumes tree; returns human-readable problems.
    pub fn check(&self) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let vols = self.volumes()?;
        for v in &vols {
            match self.names.get(name_key(&v.service, &v.name))? {
                Some(id) if id.as_ref() == v.id.as_bytes() => {}
                other => problems.push(format!(
                    "volume {} ({}/{}) has name index entry {:?}",
                    v.id,
                    v.service,
                    v.name,
                    other.map(|i| String::from_utf8_lossy(&i).into_owned())
                )),
            }
        }
        if self.names.len() != vols.len() {
            problems.push(format!(
                "name index has {} entries for {} volumes",
                self.names.len(),
                vols.len()
            ));
        }
        Ok(problems)
    }
}

/// Group-commit bookkeeping shared by all clones of a [`Store`]. Every write that needs to be
/// durable takes a ticket (1, 2, ...) after its transaction committed; `resolved` is the
/// highest ticket covered by a completed (or failed) flush. At most one thread flushes at a time; the
/// others wait on `flushed` and either find their ticket covered or lead the next flush.
#[derive(Default)]
struct Durability {
    state: std::sync::Mutex<SyncState>,
    flushed: std::sync::Condvar,
    /// Flushes run so far (see [`Store::durable_syncs`]).
    syncs: std::sync::atomic::AtomicU64,
    #[cfg(test)]
    hook: std::sync::Mutex<Option<TestHook>>,
}

#[derive(Default)]
struct SyncState {
    /// The last ticket handed out.
    committed: u64,
    /// Every ticket up to this one is decided: durable, or covered by a failed flush (then
    /// it is in `failures` until its caller collected the error). Flushes cover disjoint
    /// ranges `resolved + 1 ..= committed`, one at a time.
    resolved: u64,
    /// A thread is running a flush.
    flushing: bool,
    /// Failed flushes whose callers have not all collected the error yet.
    failures: Vec<Failure>,
}

/// A flush that failed, covering tickets `from + 1 ..= upto`.
struct Failure {
    from: u64,
    upto: u64,
    message: String,
    /// Callers in the range that have not returned the error yet; dropped at zero.
    unclaimed: u64,
}

impl Failure {
    fn covers(&self, ticket: u64) -> bool {
        ticket > self.from && ticket <= self.upto
    }
}

impl SyncState {
    /// The error of the failed flush that covered `ticket`, if any; each ticket claims it once.
    fn claim_failure(&mut self, ticket: u64) -> Option<String> {
        let i = self.failures.iter().position(|f| f.covers(ticket))?;
        let f = &mut self.failures[i];
        f.unclaimed -= 1;
        let message = f.message.clone();
        if f.unclaimed == 0 {
            self.failures.swap_remove(i);
        }
        Some(message)
    }

    /// Record that the flush covering `from + 1 ..= upto` failed.
    fn fail(&mut self, from: u64, upto: u64, message: String) {
        if upto > from {
            self.failures.push(Failure {
                from,
                upto,
                message,
                unclaimed: upto - from,
            });
        }
        self.resolved = upto;
    }
}

impl Durability {
    fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn test_hook(&self) -> Option<TestHook> {
        self.hook.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Clears `flushing` if the leading thread unwinds mid-flush, failing the tickets it covered,
/// so waiters never hang on a flush that will not complete.
struct FlushGuard<'a> {
    d: &'a Durability,
    from: u64,
    upto: u64,
    /// The leader's own ticket: it unwinds instead of collecting its error.
    ticket: u64,
    done: bool,
}

impl Drop for FlushGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            let mut st = self.d.lock();
            st.flushing = false;
            st.fail(self.from, self.upto, "store flush panicked".into());
            st.claim_failure(self.ticket);
            self.d.flushed.notify_all();
        }
    }
}

/// Where a test hook runs: just before a flush starts, or just after it completed.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq)]
enum SyncPoint {
    Start,
    End,
}

#[cfg(test)]
type TestHook = std::sync::Arc<dyn Fn(&Store, SyncPoint) -> Result<()> + Send + Sync>;

#[cfg(test)]
impl Store {
    /// Run `hook` around every flush; an error from it at `Start` fails that flush.
    fn set_sync_hook(&self, hook: TestHook) {
        *self.durability.hook.lock().unwrap() = Some(hook);
    }
}

fn scan<T: serde::de::DeserializeOwned>(tree: &Tree, name: &'static str) -> Result<Vec<T>> {
    tree.iter()
        .map(|kv| {
            let (k, v) = kv?;
            decode(name, &k, &v)
        })
        .collect()
}

#[cfg(test)]
mod tests;
