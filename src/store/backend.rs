//! The storage backend interface under [`super::Store`]: named trees of byte keys and values,
//! read one key or one tree at a time, and written only in whole batches of [`Op`]s that
//! commit atomically and durably. The typed API, the key encoding and what a batch does
//! ([`write_ops`]: the name index, the `(service, name)` check) live once in `store/`; each
//! backend only provides a transaction view ([`TxView`]) and its commit.

use super::{decode, encode, instance_key, name_key, Error, Op, OperationRecord, Result, Volume};

/// The trees (key spaces) of the store. Their names are the sled tree names, and in etcd
/// the middle part of every key (`<prefix><tree>/<key>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Tree {
    Meta,
    Volumes,
    Names,
    Intents,
    Instances,
    Reservations,
    Operations,
    Nodes,
    BrokerInstances,
    BrokerBindings,
}

impl Tree {
    /// Every tree, in the order sled's transaction takes them.
    pub(crate) const ALL: [Tree; 10] = [
        Tree::Volumes,
        Tree::Names,
        Tree::Intents,
        Tree::Instances,
        Tree::Meta,
        Tree::Reservations,
        Tree::Operations,
        Tree::Nodes,
        Tree::BrokerInstances,
        Tree::BrokerBindings,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Volumes => "volumes",
            Tree::Names => "volume_names",
            Tree::Intents => "intents",
            Tree::Instances => "instances",
            Tree::Reservations => "reservations",
            Tree::Operations => "offer_operations",
            Tree::Nodes => "nodes",
            Tree::BrokerInstances => "broker_instances",
            Tree::BrokerBindings => "broker_bindings",
        }
    }

    /// Position in [`Tree::ALL`].
    pub(crate) fn index(self) -> usize {
        match self {
            Tree::Volumes => 0,
            Tree::Names => 1,
            Tree::Intents => 2,
            Tree::Instances => 3,
            Tree::Meta => 4,
            Tree::Reservations => 5,
            Tree::Operations => 6,
            Tree::Nodes => 7,
            Tree::BrokerInstances => 8,
            Tree::BrokerBindings => 9,
        }
    }
}

/// What [`Backend::scan`] calls for each entry (key within the tree, value).
pub(crate) type Visit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// A storage backend. Reads see every batch whose `apply` returned; `apply` is all or
/// nothing and returns only once the batch is durable. All calls block the calling thread.
pub(crate) trait Backend: Send + Sync {
    /// `sled` or `etcd`, for logs and errors.
    fn kind(&self) -> &'static str;

    fn get(&self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// The values of `keys` in `tree`, in the order of `keys`; each at least as new as the
    /// last batch whose `apply` returned before the call.
    fn get_many(&self, tree: Tree, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>> {
        keys.iter().map(|k| self.get(tree, k)).collect()
    }

    /// Visit every entry of `tree` whose key starts with `prefix`, in key order.
    fn scan(&self, tree: Tree, prefix: &[u8], visit: &mut Visit<'_>) -> Result<()>;

    /// Number of entries in `tree`.
    fn len(&self, tree: Tree) -> Result<usize>;

    /// Commit `ops` ([`write_ops`] over the backend's transaction view) atomically and
    /// durably; on error nothing of the batch is written.
    fn apply(&self, ops: &[Op]) -> Result<()>;

    /// A new id: unique and increasing for the life of the store, across restarts.
    fn next_id(&self) -> Result<u64>;

    /// Remove every record of every tree except the schema version, durably.
    fn erase(&self) -> Result<()>;

    /// Writes that waited for durability so far (see [`super::Store::durable_writes`]).
    fn durable_writes(&self) -> u64;

    /// Durability points (flushes, or consensus commits) so far.
    fn durable_syncs(&self) -> u64;
}

/// What a batch sees while it runs: reads include the batch's own earlier writes. `Error`
/// is the backend's transaction error; [`TxView::abort`] turns a store error (a name clash,
/// a corrupt record) into one that ends the batch with nothing written.
pub(crate) trait TxView {
    type Error;
    fn get(&mut self, tree: Tree, key: &[u8]) -> Result<Option<Vec<u8>>, Self::Error>;
    fn put(&mut self, tree: Tree, key: Vec<u8>, value: Vec<u8>) -> Result<(), Self::Error>;
    fn delete(&mut self, tree: Tree, key: Vec<u8>) -> Result<(), Self::Error>;
    fn abort(e: Error) -> Self::Error;
}

/// The keys [`write_ops`] reads for `ops`, so a backend with slow reads can fetch them all
/// in one round trip first.
#[cfg_attr(not(feature = "etcd"), allow(dead_code))]
pub(crate) fn read_set(ops: &[Op]) -> Vec<(Tree, Vec<u8>)> {
    let mut keys = Vec::new();
    for op in ops {
        match op {
            Op::PutVolume(v) => {
                keys.push((Tree::Names, name_key(&v.service, &v.name)));
                keys.push((Tree::Volumes, v.id.as_bytes().to_vec()));
            }
            Op::DeleteVolume(id) => keys.push((Tree::Volumes, id.as_bytes().to_vec())),
            Op::DeleteOperation {
                framework_id,
                operation_id,
                if_status: Some(_),
            } => keys.push((Tree::Operations, name_key(framework_id, operation_id))),
            _ => {}
        }
    }
    keys
}

/// What a batch does, the same for every backend: each op in order, keeping the name index
/// (`volume_names`: `service\0name` → id) in step with the volumes and refusing a volume
/// whose `(service, name)` another volume holds.
pub(crate) fn write_ops<T: TxView>(tx: &mut T, ops: &[Op]) -> Result<(), T::Error> {
    for op in ops {
        match op {
            Op::PutVolume(v) => {
                let nk = name_key(&v.service, &v.name);
                if let Some(holder) = tx.get(Tree::Names, &nk)? {
                    if holder != v.id.as_bytes() {
                        return Err(T::abort(Error::NameTaken {
                            service: v.service.clone(),
                            name: v.name.clone(),
                            holder: String::from_utf8_lossy(&holder).into_owned(),
                        }));
                    }
                }
                if let Some(old) = tx.get(Tree::Volumes, v.id.as_bytes())? {
                    let old: Volume =
                        decode(Tree::Volumes.name(), v.id.as_bytes(), &old).map_err(T::abort)?;
                    let ok = name_key(&old.service, &old.name);
                    if ok != nk {
                        tx.delete(Tree::Names, ok)?;
                    }
                }
                tx.put(Tree::Volumes, v.id.as_bytes().to_vec(), encode(v))?;
                tx.put(Tree::Names, nk, v.id.as_bytes().to_vec())?;
            }
            Op::DeleteVolume(id) => {
                if let Some(old) = tx.get(Tree::Volumes, id.as_bytes())? {
                    let old: Volume =
                        decode(Tree::Volumes.name(), id.as_bytes(), &old).map_err(T::abort)?;
                    tx.delete(Tree::Volumes, id.as_bytes().to_vec())?;
                    tx.delete(Tree::Names, name_key(&old.service, &old.name))?;
                }
            }
            Op::PutIntent(i) => tx.put(Tree::Intents, i.id.to_be_bytes().to_vec(), encode(i))?,
            Op::DeleteIntent(id) => tx.delete(Tree::Intents, id.to_be_bytes().to_vec())?,
            Op::PutInstance(i) => tx.put(
                Tree::Instances,
                instance_key(&i.driver, &i.instance_id),
                encode(i),
            )?,
            Op::PutMeta(k, v) => {
                tx.put(Tree::Meta, k.as_bytes().to_vec(), v.as_bytes().to_vec())?
            }
            Op::DeleteMeta(k) => tx.delete(Tree::Meta, k.as_bytes().to_vec())?,
            Op::PutReservation(r) => tx.put(
                Tree::Reservations,
                name_key(&r.framework_id, &r.volume_id),
                encode(r),
            )?,
            Op::DeleteReservation {
                framework_id,
                volume_id,
            } => tx.delete(Tree::Reservations, name_key(framework_id, volume_id))?,
            Op::PutOperation(o) => tx.put(
                Tree::Operations,
                name_key(&o.framework_id, &o.operation_id),
                encode(o),
            )?,
            Op::DeleteOperation {
                framework_id,
                operation_id,
                if_status,
            } => {
                let key = name_key(framework_id, operation_id);
                if let Some(want) = if_status {
                    let Some(raw) = tx.get(Tree::Operations, &key)? else {
                        continue;
                    };
                    let rec: OperationRecord =
                        decode(Tree::Operations.name(), &key, &raw).map_err(T::abort)?;
                    if &rec.uuid != want {
                        continue;
                    }
                }
                tx.delete(Tree::Operations, key)?
            }
            Op::PutNode(n) => tx.put(Tree::Nodes, n.id.as_bytes().to_vec(), encode(n))?,
            Op::DeleteNode(id) => tx.delete(Tree::Nodes, id.as_bytes().to_vec())?,
            Op::PutBrokerInstance(i) => {
                tx.put(Tree::BrokerInstances, i.id.as_bytes().to_vec(), encode(i))?
            }
            Op::DeleteBrokerInstance(id) => {
                tx.delete(Tree::BrokerInstances, id.as_bytes().to_vec())?
            }
            Op::PutBrokerBinding(b) => tx.put(
                Tree::BrokerBindings,
                name_key(&b.instance_id, &b.id),
                encode(b),
            )?,
            Op::DeleteBrokerBinding {
                instance_id,
                binding_id,
            } => tx.delete(Tree::BrokerBindings, name_key(instance_id, binding_id))?,
        }
    }
    Ok(())
}
