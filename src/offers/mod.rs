//! The offer/allocation core: a pure function from a snapshot of pools, agents, frameworks,
//! reservations, existing volumes and outstanding offers to the offers to send and the offers
//! to rescind. No I/O, no clock (time is `Snapshot::now_ms`), no async; "nothing to offer" is
//! an empty [`Allocation`], never an error.
//!
//! # Model
//!
//! * A [`Pool`] is a storage pool of one service (back-end) in one zone, with a profile. It is
//!   offered as a RAW disk with that profile and an MB scalar, like a Mesos SLRP storage pool.
//! * Pools are network storage, so a pool is not *on* an agent: it is *reachable* from an
//!   agent. A pool with zone `Some(z)` is reachable from agents in zone `z`; a pool with zone
//!   `None` is reachable from every agent. An agent with zone `None` reaches only zone-less
//!   pools (we cannot tell where it is, so we do not promise it zonal storage). Existing
//!   volumes follow the same rule, and a volume attached to an agent is offered only there.
//! * Capacity is shared out per (framework, pool): a framework's *share* of a pool is one
//!   amount of MB, shown in its offers on every agent it is offered that reaches the pool. The
//!   share is counted **once** per framework and pool (the maximum over its offers), not once
//!   per agent; [`apply_accept`] rescinds the framework's other offers that carry a pool or
//!   volume it just used, so the share is never spent twice.
//! * Each round, the agents of each zone are dealt round-robin to the frameworks that could
//!   still receive something there, lowest dominant share first; so one round makes at most
//!   one offer per agent, whatever the number of frameworks. The budget of each pool is then
//!   divided by weighted water-filling (DRF on one resource, disk MB): first between roles by
//!   role weight, then between the frameworks of a role by framework weight, so that
//!   `(held + offered) / weight` is as even as the budget and quotas allow.
//! * `held` is what a framework already owns: its [`Reservation`]s (operations in flight)
//!   plus the existing volumes `reserved_by` it (which `free_mb` already reflects, so they do
//!   not count against the pool). A reservation counts against its pool until it is
//!   `provisioned` (then `free_mb` reflects it), so each MB is counted once: first by the
//!   reservation, then by `free_mb`. A caller must not list a volume both ways: a volume whose
//!   creation is in flight is left out of [`Snapshot::volumes`] (it is not offered before its
//!   operation has ended) and held through its reservation.
//!
//! # Invariants (checked by the property test in `tests.rs`)
//!
//! 1. **Never overcommitted**: for every pool, the sum over frameworks of their share plus the
//!    pool's reservations is at most `free_mb - headroom_mb`; an unavailable pool has no share.
//!    Hence no MB is in the outstanding offers of two frameworks.
//! 2. A volume is in the outstanding offers of at most one framework, never offered on an
//!    agent other than the one it is attached to, never offered to a framework it is not
//!    restricted to or reserved by.
//! 3. **Quotas**: `held_mb + shares + unreserved volumes offered <= max_mb`, and
//!    `held volumes + pools with a share + unreserved volumes offered <= max_volumes` (a RAW
//!    share takes one volume slot: accepting it creates one volume), per framework and, summed
//!    over the frameworks of a role, per role ([`Snapshot::role_quotas`]).
//! 4. Suppressed frameworks get no new offers; a DECLINE filter `(agent, pool)` keeps that pool
//!    out of new offers on that agent to that framework until `until_ms`.
//! 5. Offers past `expires_ms`, offers on a pool that became unavailable, offers of unknown
//!    frameworks or agents, offers showing a volume at a size it no longer has or while a
//!    growth of it is in flight, and (newest first) enough offers to fit a pool whose free
//!    capacity shrank are rescinded.

mod accept;
mod ledger;
mod round;
#[cfg(test)]
mod tests;
mod waterfill;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

pub use accept::{apply_accept, apply_accept_offers};
pub use round::allocate;

/// Offer ids are a counter carried by the caller ([`Snapshot::next_offer_id`]); a larger id is
/// a newer offer. The Mesos endpoint turns it into an `OfferID` string.
pub type OfferId = u64;

/// One storage pool as the capacity poller last saw it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pool {
    /// Unique, e.g. `<service>/<pool>/<zone>`.
    pub id: String,
    /// The configured back-end the pool belongs to.
    pub service: String,
    /// The back-end's pool name (`driver::PoolCapacity::pool`).
    pub pool: String,
    /// Offered as the RAW disk's `profile`.
    pub profile: String,
    pub zone: Option<String>,
    pub total_mb: u64,
    pub free_mb: u64,
    /// `false` when the back-end cannot be reached or the pool is disabled.
    pub available: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    pub id: String,
    pub hostname: String,
    pub zone: Option<String>,
}

/// Per-framework limits; `None` means unlimited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quota {
    pub max_mb: Option<u64>,
    pub max_volumes: Option<u32>,
}

/// A DECLINE with `refuse_seconds`: no offer of `pool_id` (every pool when `None`) on
/// `agent_id` to this framework before `until_ms`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Filter {
    pub agent_id: String,
    pub pool_id: Option<String>,
    pub until_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Framework {
    pub id: String,
    pub role: String,
    /// Must be positive and finite; a framework with any other weight is offered nothing.
    pub weight: f64,
    pub quota: Quota,
    /// SUPPRESS: no new offers. Outstanding offers stay, as in Mesos.
    pub suppressed: bool,
    pub filters: Vec<Filter>,
}

/// Capacity of a pool held by a framework for an operation in flight (an accepted RAW share
/// whose volume is being created or grown). `mb` counts against the framework's quota and
/// share until the operation has ended; a new volume (`volume_id: None`) also counts as one
/// volume, while growing `volume_id` adds only MB to a volume already counted. Against the
/// pool it counts only while `provisioned` is false: once the back-end has provisioned the MB,
/// the pool's `free_mb` reflects them, and counting them again would offer less than is free.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub framework_id: String,
    pub pool_id: String,
    /// The volume being grown; `None` for a volume being created.
    pub volume_id: Option<String>,
    pub mb: u64,
    /// The pool's `free_mb` already reflects these MB (the volume exists, or has grown, but
    /// its operation has not ended yet).
    #[serde(default)]
    pub provisioned: bool,
}

/// How an existing volume is handed to a task (Mesos `DiskInfo.Source.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeKind {
    Mount,
    Block,
}

/// A volume that exists on the back-end and may be offered whole (MOUNT or BLOCK).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExistingVolume {
    pub volume_id: String,
    pub pool_id: String,
    pub zone: Option<String>,
    pub mb: u64,
    /// `store::Volume::restrict_frameworks`: when non-empty, only these frameworks are
    /// offered the volume; when empty, any framework may be.
    pub frameworks: Vec<String>,
    /// The framework that owns the volume; only it is offered the volume.
    pub reserved_by: Option<String>,
    /// Where the volume is attached, if anywhere; it is offered only on that agent.
    pub attached_to_agent: Option<String>,
    pub kind: VolumeKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Kept free in every pool, never offered.
    pub headroom_mb: u64,
    /// Lifetime of a new offer; it is rescinded when `now_ms >= expires_ms`.
    pub offer_timeout_ms: u64,
    /// Smaller RAW shares are not offered (a volume that small is not worth an offer).
    pub min_offer_mb: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            headroom_mb: 0,
            offer_timeout_ms: 60_000,
            min_offer_mb: 1,
        }
    }
}

/// One disk in an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskOffer {
    /// A share of a storage pool (Mesos RAW disk with a profile and no id).
    Raw {
        pool_id: String,
        profile: String,
        mb: u64,
    },
    /// An existing volume, used whole (Mesos MOUNT/BLOCK disk with an id).
    Volume {
        volume_id: String,
        pool_id: String,
        kind: VolumeKind,
        mb: u64,
    },
}

/// An offer to one framework on one agent. The caller keeps the outstanding ones and passes
/// them back in [`Snapshot::outstanding`] until they are accepted, declined or rescinded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub id: OfferId,
    pub framework_id: String,
    pub agent_id: String,
    pub hostname: String,
    pub expires_ms: u64,
    pub disks: Vec<DiskOffer>,
}

/// Everything one allocation round looks at.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub now_ms: u64,
    /// Id of the first new offer; the round returns the next unused one.
    pub next_offer_id: OfferId,
    pub config: Config,
    pub pools: Vec<Pool>,
    pub agents: Vec<Agent>,
    pub frameworks: Vec<Framework>,
    /// Weight of each role; a role not listed weighs 1.
    pub role_weights: BTreeMap<String, f64>,
    /// Quota of each role, over all its frameworks together; a role not listed is unlimited.
    #[serde(default)]
    pub role_quotas: BTreeMap<String, Quota>,
    pub reservations: Vec<Reservation>,
    pub volumes: Vec<ExistingVolume>,
    pub outstanding: Vec<Offer>,
}

/// Why an outstanding offer is withdrawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RescindReason {
    /// `now_ms >= expires_ms`.
    Expired,
    /// The framework or the agent is no longer in the snapshot.
    Gone,
    /// A pool in the offer is unavailable or unknown.
    PoolUnavailable,
    /// A pool's free capacity no longer covers the outstanding shares.
    CapacityLoss,
    /// A volume in the offer is gone, attached elsewhere, owned by another framework, also
    /// offered to another framework, resized, or being grown.
    VolumeUnavailable,
    /// The framework accepted another offer that used the same share or volume.
    Accepted,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rescind {
    pub offer_id: OfferId,
    pub reason: RescindReason,
}

/// The result of one round. Empty when there is nothing to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub new_offers: Vec<Offer>,
    /// Sorted by offer id.
    pub rescinds: Vec<Rescind>,
    /// Pass this as `Snapshot::next_offer_id` next round.
    pub next_offer_id: OfferId,
}

impl Allocation {
    pub fn is_empty(&self) -> bool {
        self.new_offers.is_empty() && self.rescinds.is_empty()
    }
}

/// What a framework used from an accepted offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Use {
    /// Create one volume of `mb` from the pool's RAW share (CREATE_DISK).
    Raw { pool_id: String, mb: u64 },
    /// Take the offered volume.
    Volume { volume_id: String },
    /// Grow `volume_id` by `mb` taken from the pool's RAW share (GROW_VOLUME's `addition`).
    Grow {
        pool_id: String,
        volume_id: String,
        mb: u64,
    },
}

/// What the caller must record after an accept.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accepted {
    /// One per [`Use::Raw`] and [`Use::Grow`]: store them and pass them in [`Snapshot::reservations`] until the
    /// volume exists and the pool's `free_mb` reflects it.
    pub reservations: Vec<Reservation>,
    /// Volumes now owned by the framework: set their `reserved_by`.
    pub reserved_volumes: Vec<String>,
    /// The accepted offer itself is consumed (its unused part is declined, as in Mesos), and
    /// these other offers of the framework must be rescinded because they carry a share or a
    /// volume that was just used.
    pub rescinds: Vec<Rescind>,
}

/// An ACCEPT the engine refuses; nothing is to be recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AcceptError {
    UnknownOffer(OfferId),
    WrongFramework {
        offer_id: OfferId,
        framework_id: String,
    },
    PoolNotOffered {
        offer_id: OfferId,
        pool_id: String,
    },
    VolumeNotOffered {
        offer_id: OfferId,
        volume_id: String,
    },
    MoreThanOffered {
        pool_id: String,
        offered_mb: u64,
        used_mb: u64,
    },
    VolumeQuota {
        framework_id: String,
        max_volumes: u32,
    },
    RoleVolumeQuota {
        role: String,
        max_volumes: u32,
    },
    /// GROW_VOLUME's addition comes from another pool than the one the volume lives in.
    GrowFromOtherPool {
        volume_id: String,
        volume_pool: String,
        pool_id: String,
    },
}

impl fmt::Display for AcceptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AcceptError::UnknownOffer(id) => {
                write!(
                    f,
                    "offer {id} is not outstanding; it was used, declined or rescinded"
                )
            }
            AcceptError::WrongFramework {
                offer_id,
                framework_id,
            } => write!(
                f,
                "offer {offer_id} was not made to framework {framework_id}"
            ),
            AcceptError::PoolNotOffered { offer_id, pool_id } => {
                write!(f, "offer {offer_id} has no share of pool {pool_id}")
            }
            AcceptError::VolumeNotOffered {
                offer_id,
                volume_id,
            } => {
                write!(f, "offer {offer_id} does not offer volume {volume_id}")
            }
            AcceptError::MoreThanOffered {
                pool_id,
                offered_mb,
                used_mb,
            } => write!(
                f,
                "{used_mb} MB used from pool {pool_id} but only {offered_mb} MB were offered"
            ),
            AcceptError::VolumeQuota {
                framework_id,
                max_volumes,
            } => write!(
                f,
                "framework {framework_id} would hold more than its quota of {max_volumes} volumes"
            ),
            AcceptError::RoleVolumeQuota { role, max_volumes } => write!(
                f,
                "role {role} would hold more than its quota of {max_volumes} volumes"
            ),
            AcceptError::GrowFromOtherPool {
                volume_id,
                volume_pool,
                pool_id,
            } => write!(
                f,
                "volume {volume_id} lives in pool {volume_pool}; it can only grow from that pool's share, not from {pool_id}"
            ),
        }
    }
}

impl std::error::Error for AcceptError {}

/// Whether an agent in `agent_zone` reaches storage in `zone` (see the module doc).
pub fn reachable(agent_zone: Option<&str>, zone: Option<&str>) -> bool {
    match zone {
        None => true,
        Some(z) => agent_zone == Some(z),
    }
}
