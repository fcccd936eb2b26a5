//! The in-memory index of the volumes under a root (id, name, size): loaded once on a thread
//! of its own, then kept up to date by the driver's own writes, so a create finds a name, a
//! quota check sums sizes and the inventory lists every volume without reading every
//! `volume.json`.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::durable::{parse_json, read_dir};
use super::{check_id, Dirs, Error, Result, VOLUME_META};

/// The index and whether it is loaded. Loading reads every `volume.json` (100,000 files
/// for 100,000 volumes), so [`Dirs::open`] starts it on a thread of its own and returns:
/// Polly binds and serves from its store meanwhile, and the calls that need the index (a
/// create, remove or metadata write, a quota check, the inventory) wait for it.
#[derive(Default)]
pub(super) struct IndexCell {
    state: std::sync::Mutex<Loading>,
    loaded: std::sync::Condvar,
}

#[derive(Default)]
enum Loading {
    #[default]
    Pending,
    Ready(Index),
    /// Reading the volumes failed (an unreadable or corrupt `volume.json`): every call that
    /// needs the index fails with this until a reload succeeds.
    Failed(String),
}

impl IndexCell {
    pub(super) fn set(&self, index: Result<Index>) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = match index {
            Ok(index) => Loading::Ready(index),
            Err(e) => Loading::Failed(e.to_string()),
        };
        self.loaded.notify_all();
    }

    /// The index, once loaded.
    fn get(&self) -> Result<IndexGuard<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        while matches!(*state, Loading::Pending) {
            state = self.loaded.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        match &*state {
            Loading::Failed(e) => Err(Error::Io(format!("volume index: {e}"))),
            _ => Ok(IndexGuard(state)),
        }
    }
}

/// A locked, loaded index.
pub(super) struct IndexGuard<'a>(std::sync::MutexGuard<'a, Loading>);

impl std::ops::Deref for IndexGuard<'_> {
    type Target = Index;
    fn deref(&self) -> &Index {
        match &*self.0 {
            Loading::Ready(index) => index,
            // `IndexCell::get` hands out guards of a loaded index only.
            _ => unreachable!("index guard of an index not loaded"),
        }
    }
}

impl std::ops::DerefMut for IndexGuard<'_> {
    fn deref_mut(&mut self) -> &mut Index {
        match &mut *self.0 {
            Loading::Ready(index) => index,
            _ => unreachable!("index guard of an index not loaded"),
        }
    }
}

/// The fields of a `volume.json` the index keeps.
#[derive(Deserialize)]
struct IndexedMeta {
    id: String,
    name: String,
    size_bytes: u64,
}

/// Reads the index from every volume's metadata under `volumes` (ids `<prefix><n>`).
pub(super) fn read_index(volumes: &Path, prefix: &str) -> Result<Index> {
    let mut index = Index::default();
    for entry in read_dir(volumes)? {
        let name = entry.file_name();
        let Some(id) = name.to_str() else { continue };
        if check_id(id, prefix, "volume").is_err() {
            continue;
        }
        let path = entry.path().join(VOLUME_META);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            // Removed since the listing.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let meta: IndexedMeta = parse_json(&path, &bytes)?;
        index.put(&meta.id, &meta.name, meta.size_bytes);
    }
    Ok(index)
}

/// What [`Dirs`] keeps in memory about the volumes in `volumes/`, so that a create finds an
/// existing name, a quota check sums the sizes and the reconciler's inventory names every
/// volume without reading 100,000 `volume.json` files each time.
#[derive(Default)]
pub(super) struct Index {
    /// Volume id → its name and size, as last written or read.
    pub(super) by_id: HashMap<Arc<str>, Indexed>,
    /// Volume name → id. Keys and values are the same allocations as in `by_id`: with
    /// 100,000 volumes, four strings per volume instead of two would be megabytes.
    pub(super) by_name: HashMap<Arc<str>, Arc<str>>,
    /// The sum of the sizes.
    pub(super) used: u64,
}

pub(super) struct Indexed {
    pub(super) name: Arc<str>,
    pub(super) size_bytes: u64,
}

impl Index {
    /// Volume `id` is in `volumes/` under `name` with `size_bytes`.
    pub(super) fn put(&mut self, id: &str, name: &str, size_bytes: u64) {
        // A known id keeps its one allocation.
        let id: Arc<str> = match self.by_id.get_key_value(id) {
            Some((key, _)) => key.clone(),
            None => id.into(),
        };
        let name: Arc<str> = name.into();
        let old = self.by_id.insert(
            id.clone(),
            Indexed {
                name: name.clone(),
                size_bytes,
            },
        );
        if let Some(old) = &old {
            if old.name != name {
                self.forget_name(&old.name, &id);
            }
        }
        if old.as_ref().is_none_or(|o| o.name != name) {
            self.by_name.insert(name, id);
        }
        self.used = self
            .used
            .saturating_sub(old.map_or(0, |o| o.size_bytes))
            .saturating_add(size_bytes);
    }

    /// Volume `id` left `volumes/`.
    pub(super) fn remove(&mut self, id: &str) {
        if let Some(old) = self.by_id.remove(id) {
            self.forget_name(&old.name, id);
            self.used = self.used.saturating_sub(old.size_bytes);
        }
    }

    fn forget_name(&mut self, name: &str, id: &str) {
        if self.by_name.get(name).is_some_and(|held| &**held == id) {
            self.by_name.remove(name);
        }
    }
}

impl Dirs {
    pub(super) fn index(&self) -> Result<IndexGuard<'_>> {
        self.index.get()
    }
}
