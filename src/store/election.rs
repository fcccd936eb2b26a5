//! Leader election on etcd (cargo feature `etcd`, `[ha]`): the instances of one Polly cluster
//! race to create one key, `<prefix>leader`, tied to a lease of `ha.lease_ttl_secs`. Whoever
//! creates it leads until its lease ends (it stops keeping it alive, or etcd revokes it); the
//! key then disappears with the lease and the others race again.
//!
//! The key's create revision identifies one term of leadership: a key created anew always has
//! a higher one. The leader hands it to the store as its [`Fence`], so every store write it
//! makes is a Txn that also compares that create revision, and etcd itself refuses the write
//! once the term is over, however late the old leader notices.

use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseClient, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use tokio_util::sync::CancellationToken;

use super::config::EtcdConfig;
use super::{Error, Fence, Result};

/// The election key's name under the store's key prefix.
pub const LEADER_KEY: &str = "leader";

fn etcd_err(what: &str, e: etcd_client::Error) -> Error {
    Error::Cluster(format!("leader election: {what}: {e}"))
}

/// One instance's handle on the election.
pub struct Election {
    client: Client,
    key: Vec<u8>,
    ttl: Duration,
}

/// The outcome of one [`Election::campaign`].
pub enum Campaign {
    /// This instance leads.
    Won(Box<Leadership>),
    /// Another instance leads: the value it wrote, and the revision it was read at (watch
    /// from the next one for its end).
    Lost { leader: Vec<u8>, revision: i64 },
}

/// A term of leadership: the fence to set on the store, and a token cancelled as soon as
/// this instance can no longer be sure it leads.
pub struct Leadership {
    pub fence: Fence,
    pub lease_id: i64,
    lost: CancellationToken,
    /// Ends the keep-alive task without reporting a loss (resigning).
    stop: CancellationToken,
    leases: LeaseClient,
}

impl Leadership {
    /// Give leadership up (a clean shutdown): stop the keep-alives and revoke the lease, which
    /// deletes the key, so a follower takes over at once instead of after the TTL.
    pub async fn resign(&self) -> Result<()> {
        self.stop.cancel();
        let mut c = self.leases.clone();
        c.revoke(self.lease_id)
            .await
            .map_err(|e| etcd_err("revoke the leader's lease", e))?;
        Ok(())
    }

    /// Cancelled when the lease could not be kept alive for most of its TTL, etcd reports it
    /// expired, or the election key was deleted or replaced.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }
}

impl Election {
    /// Connect to the cluster `config` names; the election key is `<prefix>leader`.
    pub async fn connect(config: &EtcdConfig, ttl: Duration) -> Result<Election> {
        let opts = super::etcd_backend::connect_options(config)?;
        let client = tokio::time::timeout(
            Duration::from_secs_f64(config.connect_timeout_secs + config.request_timeout_secs),
            Client::connect(config.endpoints.clone(), Some(opts)),
        )
        .await
        .map_err(|_| {
            Error::Cluster(format!(
                "leader election: no connection to {} in time",
                config.endpoints.join(",")
            ))
        })?
        .map_err(|e| etcd_err("connect", e))?;
        Ok(Election {
            client,
            key: format!("{}{LEADER_KEY}", config.key_prefix()).into_bytes(),
            ttl,
        })
    }

    /// The whole election key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX).max(1)
    }

    /// One attempt to lead, announcing `value`: a Txn creating the key (with a new lease) only
    /// if it does not exist. Winning starts the lease's keep-alive.
    pub async fn campaign(&self, value: Vec<u8>) -> Result<Campaign> {
        let mut c = self.client.clone();
        let granted = Instant::now();
        let lease = c
            .lease_grant(self.ttl_secs(), None)
            .await
            .map_err(|e| etcd_err("grant a lease", e))?
            .id();
        let txn = Txn::new()
            .when([Compare::create_revision(
                self.key.clone(),
                CompareOp::Equal,
                0,
            )])
            .and_then([
                TxnOp::put(
                    self.key.clone(),
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::get(self.key.clone(), None),
            ])
            .or_else([TxnOp::get(self.key.clone(), None)]);
        let r = match c.txn(txn).await {
            Ok(r) => r,
            Err(e) => {
                let _ = c.lease_revoke(lease).await;
                return Err(etcd_err("campaign", e));
            }
        };
        let revision = r.header().map_or(0, |h| h.revision());
        let won = r.succeeded();
        let found = r.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g
                .kvs()
                .first()
                .map(|kv| (kv.create_revision(), kv.value().to_vec())),
            _ => None,
        });
        if !won {
            let _ = c.lease_revoke(lease).await;
            return Ok(Campaign::Lost {
                // Deleted between the compare and the read cannot happen within one Txn.
                leader: found.map(|f| f.1).unwrap_or_default(),
                revision,
            });
        }
        let create_revision = found.map_or(revision, |f| f.0);
        let lost = CancellationToken::new();
        let stop = CancellationToken::new();
        let fence = Fence {
            key: self.key.clone(),
            create_revision,
        };
        tokio::spawn(keep_leading(
            self.client.clone(),
            lease,
            fence.clone(),
            self.ttl,
            granted,
            lost.clone(),
            stop.clone(),
        ));
        Ok(Campaign::Won(Box::new(Leadership {
            fence,
            lease_id: lease,
            lost,
            stop,
            leases: self.client.lease_client(),
        })))
    }

    /// Wait until the election key is gone (its lease expired or it was deleted) at some
    /// revision after `revision`. Returns early (`Ok`) when the watch breaks off, so the
    /// caller simply campaigns again.
    pub async fn wait_vacant(&self, revision: i64) -> Result<()> {
        let mut c = self.client.clone();
        let mut stream = c
            .watch(
                self.key.clone(),
                Some(WatchOptions::new().with_start_revision(revision + 1)),
            )
            .await
            .map_err(|e| etcd_err("watch the leader key", e))?;
        loop {
            // A periodic re-check covers a watch that silently stalls.
            match tokio::time::timeout(self.ttl * 2, stream.message()).await {
                Err(_) => {
                    let r = c
                        .get(self.key.clone(), Some(GetOptions::new().with_count_only()))
                        .await
                        .map_err(|e| etcd_err("read the leader key", e))?;
                    if r.count() == 0 {
                        return Ok(());
                    }
                }
                Ok(Ok(Some(m))) => {
                    if m.canceled()
                        || m.events()
                            .iter()
                            .any(|e| e.event_type() == EventType::Delete)
                    {
                        return Ok(());
                    }
                }
                Ok(Ok(None)) => return Ok(()),
                Ok(Err(e)) => return Err(etcd_err("watch the leader key", e)),
            }
        }
    }

    /// The current leader's announced value, if any.
    pub async fn leader(&self) -> Result<Option<Vec<u8>>> {
        let mut c = self.client.clone();
        let r = c
            .get(self.key.clone(), None)
            .await
            .map_err(|e| etcd_err("read the leader key", e))?;
        Ok(r.kvs().first().map(|kv| kv.value().to_vec()))
    }
}

/// Keep `lease` alive (every third of the TTL) and watch the election key; cancel `lost` the
/// moment leadership is in doubt: etcd says the lease is gone, no keep-alive was acknowledged
/// for three quarters of the TTL (measured from when the last acknowledged one was sent, so
/// before etcd can expire the lease), or the key was deleted or re-created.
async fn keep_leading(
    mut client: Client,
    lease: i64,
    fence: Fence,
    ttl: Duration,
    granted: Instant,
    lost: CancellationToken,
    stop: CancellationToken,
) {
    tokio::select! {
        why = term(&mut client, lease, &fence, ttl, granted) => {
            // After a resignation the key's deletion is expected, not a loss.
            if stop.is_cancelled() {
                return;
            }
            tracing::error!(lease, reason = %why, "lost leadership");
        }
        _ = lost.cancelled() => {}
        _ = stop.cancelled() => return,
    }
    lost.cancel();
}

/// Keep the term going; returns why it ended.
async fn term(
    client: &mut Client,
    lease: i64,
    fence: &Fence,
    ttl: Duration,
    granted: Instant,
) -> String {
    match term_inner(client, lease, fence, ttl, granted).await {
        Err(why) => why,
    }
}

async fn term_inner(
    client: &mut Client,
    lease: i64,
    fence: &Fence,
    ttl: Duration,
    granted: Instant,
) -> Result<std::convert::Infallible, String> {
    // The keep-alive and watch streams are reopened when they break (an etcd member
    // restarting, a connection reset): only the lease's end, the key's end or the grace
    // running out end the term.
    let mut keep: Option<(LeaseKeeper, LeaseKeepAliveStream)> = None;
    let mut watch: Option<WatchStream> = None;
    // Counted from before the lease was granted: etcd's clock for it starts later.
    let mut acked_at = granted;
    let every = ttl / 3;
    let grace = ttl * 3 / 4;
    loop {
        let deadline = acked_at + grace;
        if Instant::now() >= deadline {
            return Err(format!(
                "no keep-alive acknowledged for {:?} of a {ttl:?} lease",
                acked_at.elapsed()
            ));
        }
        let until = tokio::time::Instant::from(deadline);
        if keep.is_none() {
            match tokio::time::timeout_at(until, client.lease_keep_alive(lease)).await {
                Ok(Ok(k)) => keep = Some(k),
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot open lease keep-alives"),
                Err(_) => continue,
            }
        }
        if watch.is_none() {
            match tokio::time::timeout_at(until, rewatch(client, fence)).await {
                Ok(Ok(w)) => watch = Some(w),
                Ok(Err(Gone(why))) => return Err(why),
                Ok(Err(Retry(e))) => tracing::warn!(error = %e, "cannot watch the leader key"),
                Err(_) => continue,
            }
        }
        let sent = Instant::now();
        let ack = async {
            match &mut keep {
                Some((keeper, acks)) => {
                    keeper.keep_alive().await?;
                    acks.message().await
                }
                None => std::future::pending().await,
            }
        };
        let seen = async {
            match &mut watch {
                Some(w) => w.message().await,
                None => std::future::pending().await,
            }
        };
        let ev = tokio::select! {
            r = tokio::time::timeout_at(deadline.min(sent + every).into(), ack) => Ev::Ack(r.ok()),
            m = seen => Ev::Watch(m),
        };
        match ev {
            Ev::Ack(Some(Ok(Some(a)))) if a.ttl() > 0 => acked_at = sent,
            Ev::Ack(Some(Ok(Some(_)))) => return Err("etcd says the lease expired".into()),
            Ev::Ack(Some(Ok(None) | Err(_))) => {
                tracing::warn!("lease keep-alive stream broke; reopening");
                keep = None;
            }
            Ev::Ack(None) => tracing::warn!("lease keep-alive not acknowledged in time"),
            Ev::Watch(m) => match still_ours(m, fence) {
                Ok(true) => {}
                Ok(false) => watch = None,
                Err(why) => return Err(why),
            },
        }
        let next = (sent + every).min(acked_at + grace);
        let seen = async {
            match &mut watch {
                Some(w) => w.message().await,
                None => std::future::pending().await,
            }
        };
        let ev = tokio::select! {
            _ = tokio::time::sleep_until(next.into()) => None,
            m = seen => Some(m),
        };
        if let Some(m) = ev {
            match still_ours(m, fence) {
                Ok(true) => {}
                Ok(false) => watch = None,
                Err(why) => return Err(why),
            }
        }
    }
}

type KeepAliveAck = Result<Option<etcd_client::LeaseKeepAliveResponse>, etcd_client::Error>;
type WatchMessage = Result<Option<etcd_client::WatchResponse>, etcd_client::Error>;

/// What one round of [`term_inner`] saw first.
enum Ev {
    /// The keep-alive's answer (`None`: none in time).
    Ack(Option<KeepAliveAck>),
    Watch(WatchMessage),
}

/// Why a watch could not be (re)opened.
enum Rewatch {
    /// The key is gone or was re-created: the term is over.
    Gone(String),
    /// etcd did not answer; try again.
    Retry(etcd_client::Error),
}
use Rewatch::{Gone, Retry};

/// Check the key is still this term's, then watch it from the revision of that read.
async fn rewatch(client: &mut Client, fence: &Fence) -> Result<WatchStream, Rewatch> {
    let r = client.get(fence.key.clone(), None).await.map_err(Retry)?;
    let current = r.kvs().first().map_or(0, |kv| kv.create_revision());
    if current != fence.create_revision {
        return Err(Gone("the leader key was deleted".into()));
    }
    let from = r.header().map_or(fence.create_revision, |h| h.revision()) + 1;
    client
        .watch(
            fence.key.clone(),
            Some(WatchOptions::new().with_start_revision(from)),
        )
        .await
        .map_err(Retry)
}

/// A watch message on the leader key: `Err` when the key is gone or was re-created (the term
/// is over), `Ok(false)` when the watch ended or was cancelled (reopen it), else `Ok(true)`.
fn still_ours(m: WatchMessage, fence: &Fence) -> Result<bool, String> {
    match m {
        Ok(Some(m)) => {
            let gone = m.events().iter().any(|e| {
                e.event_type() == EventType::Delete
                    || e.kv()
                        .is_some_and(|kv| kv.create_revision() != fence.create_revision)
            });
            if gone {
                return Err("the leader key was deleted".into());
            }
            Ok(!m.canceled())
        }
        Ok(None) | Err(_) => Ok(false),
    }
}
