//! The etcd backend (cargo feature `etcd`): Polly's state in an etcd v3 cluster, every key
//! under one prefix (`<prefix><tree>/<key>`, plus `<prefix>schema_version` and
//! `<prefix>next_id`), so several Polly clusters can share one etcd.
//!
//! A batch is one etcd transaction (Txn). It is built optimistically: the keys the batch reads
//! (the name index entry and the old record of a volume it puts or deletes) are fetched in one
//! read, [`write_ops`] runs against them, and the Txn commits the writes only if every key
//! read still has the mod revision it was read at, so the `(service, name)` check is a compare
//! in the same Txn as the write. A lost race is retried from the reads. When a [`Fence`] is
//! set, every Txn also compares the fence key's create revision, and a mismatch fails the
//! write with [`Error::Fenced`]: the hook leader election uses to keep a deposed leader from
//! writing. etcd answers a Txn only after the cluster committed it to its log (fsynced on a
//! quorum), so a batch is durable when `apply` returns.
//!
//! The etcd client is async; the store API is blocking (sled's is). The backend runs the
//! client on its own small tokio runtime and the calling thread waits for each request, so
//! it works the same from `spawn_blocking`, plain threads and async tasks, and a request
//! never waits on the caller's runtime.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    KvClient, TlsOptions, Txn, TxnOp, TxnOpResponse,
};

use super::backend::{read_set, write_ops, Backend, Tree, TxView, Visit};
use super::config::EtcdConfig;
use super::{Error, Fence, Op, Result, SCHEMA_VERSION};

/// Ids handed out per write of the `next_id` counter.
const ID_BLOCK: u64 = 1024;
/// Records per read when scanning a tree (keeps each answer far below gRPC's 4 MiB).
const PAGE: i64 = 500;
/// Keys per Txn in `get_many`: etcd refuses a Txn of more than `--max-txn-ops` (128 by
/// default) operations.
const GET_MANY_CHUNK: usize = 100;
/// Attempts of a batch that keeps losing races before it gives up.
const MAX_ATTEMPTS: u32 = 64;

/// The client's runtime; shut down without blocking, since the last store handle may be
/// dropped on an async worker thread.
struct ClientRuntime(Option<tokio::runtime::Runtime>);

impl Drop for ClientRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

pub(super) struct EtcdBackend {
    runtime: ClientRuntime,
    kv: KvClient,
    /// Ends in `/`.
    prefix: Vec<u8>,
    /// For error messages.
    endpoints: String,
    /// Compared on every write when set.
    fence: RwLock<Option<Fence>>,
    /// Ids leased from `<prefix>next_id`: the next one to hand out and the block's end.
    ids: Mutex<(u64, u64)>,
    /// Bound on one request, on top of the client's own timeout.
    timeout: Duration,
    /// Committed write transactions.
    commits: AtomicU64,
}

/// What a batch read: mod revision (0: absent) and value of each full key.
type Reads = HashMap<Vec<u8>, (i64, Option<Vec<u8>>)>;
/// What a batch writes: full key → new value (`None`: delete).
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

fn read_file(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Cluster(format!(
            "cannot read store.etcd.{what} {}: {e}",
            path.display()
        ))
    })
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdBackend {
    pub(super) fn open(config: &EtcdConfig, fence: Option<Fence>) -> Result<EtcdBackend> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("polly-etcd")
            .enable_all()
            .build()
            .map_err(|e| Error::Cluster(format!("cannot start the etcd client runtime: {e}")))?;
        let request = Duration::from_secs_f64(config.request_timeout_secs);
        let opts = connect_options(config)?;
        let endpoints = config.endpoints.join(",");
        let timeout = request + Duration::from_secs(1);
        let eps = config.endpoints.clone();
        let client = run(&runtime, timeout, &endpoints, "connect", async move {
            Client::connect(eps, Some(opts)).await
        })?;
        let backend = EtcdBackend {
            runtime: ClientRuntime(Some(runtime)),
            kv: client.kv_client(),
            prefix: config.key_prefix().into_bytes(),
            endpoints,
            fence: RwLock::new(fence),
            ids: Mutex::new((0, 0)),
            timeout,
            commits: AtomicU64::new(0),
        };
        backend.check_schema()?;
        Ok(backend)
    }

    pub(super) fn set_fence(&self, fence: Option<Fence>) {
        *self.fence.write().unwrap_or_else(|p| p.into_inner()) = fence;
    }

    fn current_fence(&self) -> Option<Fence> {
        self.fence.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Run one request on the client's runtime and wait for it.
    fn block<T: Send + 'static>(
        &self,
        what: &str,
        fut: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    ) -> Result<T> {
        let rt = self
            .runtime
            .0
            .as_ref()
            .ok_or_else(|| Error::Cluster("the etcd client is shut down".into()))?;
        run(rt, self.timeout, &self.endpoints, what, fut)
    }

    fn special_key(&self, name: &str) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(name.as_bytes());
        k
    }

    fn tree_prefix(&self, tree: Tree) -> Vec<u8> {
        let mut k = self.prefix.clone();
        k.extend_from_slice(tree.name().as_bytes());
        k.push(b'/');
        k
    }

    fn key(&self, tree: Tree, key: &[u8]) -> Vec<u8> {
        let mut k = self.tree_prefix(tree);
        k.extend_from_slice(key);
        k
    }

    /// Read full keys at one revision: (mod revision or 0, value) each.
    fn read(&self, keys: Vec<Vec<u8>>) -> Result<Vec<(i64, Option<Vec<u8>>)>> {
        let mut kv = self.kv.clone();
        if keys.len() == 1 {
            let key = keys.into_iter().next().unwrap_or_default();
            return self.block("get", async move {
                let mut r = kv.get(key, None).await?;
                Ok(vec![match r.take_kvs().into_iter().next() {
                    Some(kv) => (kv.mod_revision(), Some(kv.into_key_value().1)),
                    None => (0, None),
                }])
            });
        }
        self.block("get", async move {
            let gets: Vec<TxnOp> = keys.into_iter().map(|k| TxnOp::get(k, None)).collect();
            let r = kv.txn(Txn::new().and_then(gets)).await?;
            Ok(r.op_responses()
                .into_iter()
                .map(|op| match op {
                    TxnOpResponse::Get(mut g) => match g.take_kvs().into_iter().next() {
                        Some(kv) => (kv.mod_revision(), Some(kv.into_key_value().1)),
                        None => (0, None),
                    },
                    _ => (0, None),
                })
                .collect())
        })
    }

    /// Commit `writes` if every key in `reads` still has its mod revision and the fence (if
    /// any) holds. `Ok(false)`: a read key changed; the caller re-reads and retries.
    fn commit(&self, reads: &Reads, writes: Vec<TxnOp>) -> Result<bool> {
        let fence = self.current_fence();
        let mut compares: Vec<Compare> = reads
            .iter()
            .map(|(k, (rev, _))| Compare::mod_revision(k.clone(), CompareOp::Equal, *rev))
            .collect();
        let mut otherwise = Vec::new();
        if let Some(f) = &fence {
            compares.push(Compare::create_revision(
                f.key.clone(),
                CompareOp::Equal,
                f.create_revision,
            ));
            otherwise.push(TxnOp::get(f.key.clone(), None));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then(writes)
            .or_else(otherwise);
        let mut kv = self.kv.clone();
        let r = self.block("transaction", async move { kv.txn(txn).await })?;
        if r.succeeded() {
            self.commits.fetch_add(1, Ordering::AcqRel);
            return Ok(true);
        }
        if let Some(f) = fence {
            let found = r
                .op_responses()
                .into_iter()
                .find_map(|op| match op {
                    TxnOpResponse::Get(g) => {
                        Some(g.kvs().first().map_or(0, |kv| kv.create_revision()))
                    }
                    _ => None,
                })
                .unwrap_or(0);
            if found != f.create_revision {
                return Err(Error::Fenced {
                    key: String::from_utf8_lossy(&f.key).into_owned(),
                    expected: f.create_revision,
                    found,
                });
            }
        }
        Ok(false)
    }

    /// Read-check-write of one counter-like key: `next` maps its current value (`None`:
    /// absent) to the new one and what to return; retried while others change the key.
    fn update<T>(
        &self,
        key: Vec<u8>,
        mut next: impl FnMut(Option<&[u8]>) -> Result<(Option<Vec<u8>>, T)>,
    ) -> Result<T> {
        for attempt in 0..MAX_ATTEMPTS {
            let (rev, value) = self
                .read(vec![key.clone()])?
                .into_iter()
                .next()
                .unwrap_or((0, None));
            let (new, out) = next(value.as_deref())?;
            let writes = match new {
                Some(v) => vec![TxnOp::put(key.clone(), v, None)],
                None => vec![],
            };
            let reads = Reads::from([(key.clone(), (rev, value))]);
            if self.commit(&reads, writes)? {
                return Ok(out);
            }
            backoff(attempt);
        }
        Err(self.contention(&key))
    }

    fn contention(&self, key: &[u8]) -> Error {
        Error::Cluster(format!(
            "gave up after {MAX_ATTEMPTS} attempts: other writers kept changing {:?} (is another polly writing under prefix {:?}?)",
            String::from_utf8_lossy(key),
            String::from_utf8_lossy(&self.prefix)
        ))
    }

    /// Write the schema version if absent; refuse a newer one.
    fn check_schema(&self) -> Result<()> {
        let key = self.special_key("schema_version");
        let found = self.update(key, |v| match v {
            None => Ok((
                Some(SCHEMA_VERSION.to_string().into_bytes()),
                SCHEMA_VERSION,
            )),
            Some(v) => {
                let found = std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse::<u32>().ok())
                    .ok_or_else(|| Error::Corrupt {
                        tree: "meta",
                        key: "schema_version".into(),
                        detail: format!("{:?} is not a version number", String::from_utf8_lossy(v)),
                    })?;
                Ok((None, found))
            }
        })?;
        if found > SCHEMA_VERSION {
            return Err(Error::SchemaTooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }
}

/// The client options `config` asks for: timeouts, credentials, TLS files.
pub(super) fn connect_options(config: &EtcdConfig) -> Result<ConnectOptions> {
    let request = Duration::from_secs_f64(config.request_timeout_secs);
    let mut opts = ConnectOptions::new()
        .with_timeout(request)
        .with_connect_timeout(Duration::from_secs_f64(config.connect_timeout_secs))
        .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
    if let (Some(user), Some(password)) = (&config.user, &config.password) {
        opts = opts.with_user(user, password);
    }
    if config.tls() {
        let mut tls = TlsOptions::new();
        if let Some(ca) = &config.ca_file {
            tls = tls.ca_certificate(Certificate::from_pem(read_file("ca_file", ca)?));
        }
        if let (Some(cert), Some(key)) = (&config.cert_file, &config.key_file) {
            tls = tls.identity(Identity::from_pem(
                read_file("cert_file", cert)?,
                read_file("key_file", key)?,
            ));
        }
        opts = opts.with_tls(tls);
    }
    Ok(opts)
}

/// Run `fut` on `rt`, waiting on this thread (which may belong to another runtime).
fn run<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    timeout: Duration,
    endpoints: &str,
    what: &str,
    fut: impl Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(tokio::time::timeout(timeout, fut).await);
    });
    match rx.recv() {
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Ok(Err(e))) => Err(Error::Cluster(format!("{what} at {endpoints}: {e}"))),
        Ok(Err(_)) => Err(Error::Cluster(format!(
            "{what} at {endpoints}: no answer within {timeout:?}"
        ))),
        Err(_) => Err(Error::Cluster(format!(
            "{what} at {endpoints}: the client stopped"
        ))),
    }
}

/// Wait a little (more with each attempt, randomised) before retrying a lost race.
fn backoff(attempt: u32) {
    let ms = rand::random_range(0..=u64::from(attempt.min(20)));
    std::thread::sleep(Duration::from_millis(ms));
}

/// A batch in the making: reads go to etcd once per key (their revisions become the Txn's
/// compares), writes are buffered and seen by later reads of the same batch.
struct EtcdTx<'a> {
    b: &'a EtcdBackend,
    reads: Reads,
    writes: Writes,
}

impl TxView for EtcdTx<'_> {
    type Error = Error;

    fn get(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let full = self.b.key(tree, key);
        if let Some(w) = self.writes.get(&full) {
            return Ok(w.clone());
        }
        if let Some((_, v)) = self.reads.get(&full) {
            return Ok(v.clone());
        }
        let got = self
            .b
            .read(vec![full.clone()])?
            .into_iter()
            .next()
            .unwrap_or((0, None));
        let v = got.1.clone();
        self.reads.insert(full, got);
        Ok(v)
    }

    fn put(&mut self, tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.writes.insert(self.b.key(tree, &key), Some(value));
        Ok(())
    }

    fn delete(&mut self, tree: Tree, key: Vec<u8>) -> Result<()> {
        self.writes.insert(self.b.key(tree, &key), None);
        Ok(())
    }

    fn abort(e: Error) -> Error {
        e
    }
}

impl Backend for EtcdBackend {
    fn kind(&self) -> &'static str {
        "etcd"
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self
            .read(vec![self.key(tree, key)])?
            .into_iter()
            .next()
            .and_then(|(_, v)| v))
    }

    /// One Txn of gets per [`GET_MANY_CHUNK`] keys (etcd limits the operations in a Txn).
    fn get_many(&self, tree: Tree, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(GET_MANY_CHUNK) {
            let full = chunk.iter().map(|k| self.key(tree, k)).collect();
            out.extend(self.read(full)?.into_iter().map(|(_, v)| v));
        }
        Ok(out)
    }

    /// Page by page, every page at the revision of the first, so the scan is one snapshot.
    fn scan(&self, tree: Tree, prefix: &[u8], visit: &mut Visit<'_>) -> Result<()> {
        let skip = self.tree_prefix(tree).len();
        let start = self.key(tree, prefix);
        let end = prefix_end(&start);
        let (mut from, mut revision) = (start, 0);
        loop {
            let mut kv = self.kv.clone();
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            let mut r = self.block("range read", async move { kv.get(from, Some(opts)).await })?;
            if revision == 0 {
                revision = r.header().map_or(0, |h| h.revision());
            }
            let more = r.more();
            let kvs = r.take_kvs();
            for kv in &kvs {
                visit(&kv.key()[skip..], kv.value())?;
            }
            match kvs.last() {
                Some(last) if more => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(()),
            }
        }
    }

    fn len(&self, tree: Tree) -> Result<usize> {
        let start = self.tree_prefix(tree);
        let opts = GetOptions::new()
            .with_range(prefix_end(&start))
            .with_count_only();
        let mut kv = self.kv.clone();
        let r = self.block("count", async move { kv.get(start, Some(opts)).await })?;
        Ok(usize::try_from(r.count()).unwrap_or(0))
    }

    fn apply(&self, ops: &[Op]) -> Result<()> {
        let keys: Vec<Vec<u8>> = read_set(ops)
            .into_iter()
            .map(|(t, k)| self.key(t, &k))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for attempt in 0..MAX_ATTEMPTS {
            let mut tx = EtcdTx {
                b: self,
                reads: Reads::new(),
                writes: Writes::new(),
            };
            if !keys.is_empty() {
                let got = self.read(keys.clone())?;
                tx.reads = keys.iter().cloned().zip(got).collect();
            }
            write_ops(&mut tx, ops)?;
            let writes = tx
                .writes
                .into_iter()
                .map(|(k, v)| match v {
                    Some(v) => TxnOp::put(k, v, None),
                    None => TxnOp::delete(k, None),
                })
                .collect();
            if self.commit(&tx.reads, writes)? {
                return Ok(());
            }
            backoff(attempt);
        }
        Err(self.contention(&self.tree_prefix(Tree::Volumes)))
    }

    /// Blocks of [`ID_BLOCK`] ids from the `next_id` counter; a restart skips the rest of
    /// the block it had.
    fn next_id(&self) -> Result<u64> {
        let mut ids = self.ids.lock().unwrap_or_else(|p| p.into_inner());
        if ids.0 >= ids.1 {
            let start = self.update(self.special_key("next_id"), |v| {
                let next = match v {
                    None => 1,
                    Some(v) => std::str::from_utf8(v)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| Error::Corrupt {
                            tree: "meta",
                            key: "next_id".into(),
                            detail: format!("{:?} is not a number", String::from_utf8_lossy(v)),
                        })?,
                };
                Ok((Some((next + ID_BLOCK).to_string().into_bytes()), next))
            })?;
            *ids = (start, start + ID_BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// One Txn deleting every tree's range (the schema version and id counter stay).
    fn erase(&self) -> Result<()> {
        let deletes: Vec<TxnOp> = Tree::ALL
            .iter()
            .map(|t| {
                let p = self.tree_prefix(*t);
                let end = prefix_end(&p);
                TxnOp::delete(p, Some(DeleteOptions::new().with_range(end)))
            })
            .collect();
        if self.commit(&Reads::new(), deletes)? {
            return Ok(());
        }
        // Without compares only the fence can fail a Txn, and `commit` reported that.
        Err(Error::Cluster("erase was refused".into()))
    }

    fn durable_writes(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }

    fn durable_syncs(&self) -> u64 {
        self.commits.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"/polly/volumes/"), b"/polly/volumes0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        // A tree's range never reaches a longer tree name sharing its start.
        assert!(b"/polly/volume_names/x".as_slice() < b"/polly/volumes/".as_slice());
    }
}
