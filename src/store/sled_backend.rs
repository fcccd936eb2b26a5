//! The sled backend (the default): one sled database on local disk, one sled tree per
//! [`Tree`]. A batch is one sled transaction across all trees; it is durable once a sled
//! flush plus an `fdatasync` of sled's log that started after its commit has completed.
//! Concurrent writers share flushes (group commit): each commits its own transaction, and one
//! flush + `fdatasync` that started after those commits covers them all.

use std::path::Path;

use sled::transaction::{
    ConflictableTransactionError, TransactionError, Transactional, TransactionalTree,
};

use super::backend::{write_ops, Backend, Tree, TxView, Visit};
use super::{Error, Op, Result, SCHEMA_VERSION};

const KEY_SCHEMA: &[u8] = b"schema_version";

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Error::Io(e.to_string())
    }
}

pub(super) struct SledBackend {
    db: sled::Db,
    /// sled's log file. sled's own flush only issues `sync_file_range`, which neither commits
    /// file metadata nor flushes the disk's write cache; `fdatasync` on this handle after each
    /// flush makes an acknowledged batch survive power loss, not just a process crash.
    log: std::fs::File,
    /// Group commit: which committed writes are durable, and who is flushing.
    pub(super) durability: Durability,
    /// The trees, in [`Tree::ALL`] order.
    trees: [sled::Tree; 10],
}

/// The bound on sled's page cache (see [`SledBackend::open`]).
const SLED_CACHE_BYTES: u64 = 32 << 20;

impl SledBackend {
    /// Open (or create) the database in `dir`, checking the schema version.
    pub(super) fn open(dir: &Path) -> Result<SledBackend> {
        let db = sled::Config::new()
            .path(dir)
            // sled's page cache defaults to 1 GiB and, under steady writes, grows towards it:
            // Polly's resident memory would creep up for as long as it runs. Every record
            // Polly keeps fits in far less, and reads that miss it go to the OS page cache.
            .cache_capacity(SLED_CACHE_BYTES)
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
            .map_err(|e| Error::Io(format!("cannot open {}: {e}", dir.join("db").display())))?;
        let open = |t: Tree| db.open_tree(t.name());
        let trees = [
            open(Tree::ALL[0])?,
            open(Tree::ALL[1])?,
            open(Tree::ALL[2])?,
            open(Tree::ALL[3])?,
            open(Tree::ALL[4])?,
            open(Tree::ALL[5])?,
            open(Tree::ALL[6])?,
            open(Tree::ALL[7])?,
            open(Tree::ALL[8])?,
            open(Tree::ALL[9])?,
        ];
        let store = SledBackend {
            log,
            durability: Default::default(),
            trees,
            db,
        };
        let meta = store.tree(Tree::Meta);
        match meta.get(KEY_SCHEMA)? {
            None => {
                meta.insert(KEY_SCHEMA, &SCHEMA_VERSION.to_be_bytes())?;
                store.sync_committed()?;
            }
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref())
                    .map(u32::from_be_bytes)
                    .map_err(|_| Error::Corrupt {
                        tree: Tree::Meta.name(),
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

    fn tree(&self, t: Tree) -> &sled::Tree {
        &self.trees[t.index()]
    }

    /// Overwrite the stored schema version (tests of the version check).
    #[cfg(test)]
    pub(super) fn force_schema(&self, v: u32) -> Result<()> {
        self.tree(Tree::Meta).insert(KEY_SCHEMA, &v.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    /// Wait until everything committed before this call is durable: take a ticket, then
    /// either lead a flush that covers it or wait for one. A flush covers exactly the tickets
    /// handed out before it started, so no caller returns on a flush that began before its
    /// own write was committed; a failed flush's error goes to every caller it covered.
    fn sync_committed(&self) -> Result<()> {
        let d = &self.durability;
        let mut st = d.lock();
        st.committed += 1;
        let ticket = st.committed;
        loop {
            if st.resolved >= ticket {
                return match st.claim_failure(ticket) {
                    Some(msg) => Err(Error::Io(msg)),
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
            .map_err(|e| Error::Io(format!("fdatasync of the store log: {e}")))?;
        #[cfg(test)]
        if let Some(hook) = self.durability.test_hook() {
            hook(self, SyncPoint::End)?;
        }
        Ok(())
    }
}

/// The trees of one sled transaction, as the batch sees them.
struct SledTx<'a>(&'a [TransactionalTree]);

impl TxView for SledTx<'_> {
    type Error = ConflictableTransactionError<Error>;

    fn get(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error> {
        Ok(self.0[tree.index()].get(key)?.map(|v| v.to_vec()))
    }

    fn put(&mut self, tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Result<(), Self::Error> {
        self.0[tree.index()].insert(key, value)?;
        Ok(())
    }

    fn delete(&mut self, tree: Tree, key: Vec<u8>) -> Result<(), Self::Error> {
        self.0[tree.index()].remove(key)?;
        Ok(())
    }

    fn abort(e: Error) -> Self::Error {
        ConflictableTransactionError::Abort(e)
    }
}

impl Backend for SledBackend {
    fn kind(&self) -> &'static str {
        "sled"
    }

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(tree).get(key)?.map(|v| v.to_vec()))
    }

    fn scan(&self, tree: Tree, prefix: &[u8], visit: &mut Visit<'_>) -> Result<()> {
        for kv in self.tree(tree).scan_prefix(prefix) {
            let (k, v) = kv?;
            visit(&k, &v)?;
        }
        Ok(())
    }

    fn len(&self, tree: Tree) -> Result<usize> {
        Ok(self.tree(tree).len())
    }

    /// One sled transaction across all trees, then a flush shared with concurrent callers.
    /// On error nothing of the batch is written; if the flush covering it fails that error is
    /// returned (the batch may then survive a crash or not).
    fn apply(&self, ops: &[Op]) -> Result<()> {
        let res = self
            .trees
            .as_slice()
            .transaction(|trees| write_ops(&mut SledTx(trees), ops));
        match res {
            Ok(()) => {}
            Err(TransactionError::Abort(e)) => return Err(e),
            Err(TransactionError::Storage(e)) => return Err(e.into()),
        }
        self.sync_committed()
    }

    /// sled persists the counter and skips ahead after a crash.
    fn next_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    fn erase(&self) -> Result<()> {
        for t in Tree::ALL {
            if t != Tree::Meta {
                self.tree(t).clear()?;
            }
        }
        let meta = self.tree(Tree::Meta);
        let keys: Vec<_> = meta
            .iter()
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| k.as_ref() != KEY_SCHEMA)
            .collect();
        for k in keys {
            meta.remove(k)?;
        }
        self.sync_committed()
    }

    fn durable_writes(&self) -> u64 {
        self.durability.lock().committed
    }

    fn durable_syncs(&self) -> u64 {
        self.durability
            .syncs
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Group-commit bookkeeping shared by all clones of a [`super::Store`]. Every write that needs to be
/// durable takes a ticket (1, 2, ...) after its transaction committed; `resolved` is the
/// highest ticket covered by a completed (or failed) flush. At most one thread flushes at a time; the
/// others wait on `flushed` and either find their ticket covered or lead the next flush.
#[derive(Default)]
pub(super) struct Durability {
    state: std::sync::Mutex<SyncState>,
    flushed: std::sync::Condvar,
    /// Flushes run so far (see [`super::Store::durable_syncs`]).
    syncs: std::sync::atomic::AtomicU64,
    #[cfg(test)]
    hook: std::sync::Mutex<Option<TestHook>>,
}

#[derive(Default)]
pub(super) struct SyncState {
    /// The last ticket handed out.
    committed: u64,
    /// Every ticket up to this one is decided: durable, or covered by a failed flush (then
    /// it is in `failures` until its caller collected the error). Flushes cover disjoint
    /// ranges `resolved + 1 ..= committed`, one at a time.
    resolved: u64,
    /// A thread is running a flush.
    flushing: bool,
    /// Failed flushes whose callers have not all collected the error yet.
    pub(super) failures: Vec<Failure>,
}

/// A flush that failed, covering tickets `from + 1 ..= upto`.
pub(super) struct Failure {
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
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, SyncState> {
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
pub(super) enum SyncPoint {
    Start,
    End,
}

#[cfg(test)]
pub(super) type TestHook =
    std::sync::Arc<dyn Fn(&SledBackend, SyncPoint) -> Result<()> + Send + Sync>;

#[cfg(test)]
impl SledBackend {
    /// Run `hook` around every flush; an error from it at `Start` fails that flush.
    pub(super) fn set_sync_hook(&self, hook: TestHook) {
        *self.durability.hook.lock().unwrap() = Some(hook);
    }
}
