//! The admin API's own records: what it answers about volumes, instances, pending operations,
//! reservations and fenced nodes, built from the store's records with `From`. The store may
//! rename or add a field without changing the API: each conversion names every field of the
//! store record (adding one is a compile error here, a decision to expose it or not), and the
//! tests below pin each record's JSON (`openapi.json` documents it). `GET /admin/store/dump` is
//! the exception: it is the store's own backup format and serializes the store's records.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::driver::{self, AccessMode};
use crate::mount;
use crate::store;

/// Lifecycle of a volume, as the admin API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeStatusView {
    /// Being created: the back-end may or may not have the volume yet.
    Creating,
    /// Exists on the back-end; may have attachments.
    Available,
    /// Being deleted: the back-end may still have the volume.
    Deleting,
}

/// One instance (host) a volume is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentView {
    pub instance_id: String,
    /// Device path or attach token the instance uses.
    pub device: String,
    /// Unix seconds.
    pub attached_at: u64,
}

/// A volume, `GET /admin/volumes/{id}` and every call that changes one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeView {
    /// Polly's id.
    pub id: String,
    /// The service (configured back-end) the volume lives in.
    pub service: String,
    /// The back-end's id; `None` until the create has reached the back-end.
    pub driver_id: Option<String>,
    /// Unique within the service.
    pub name: String,
    pub size_bytes: u64,
    pub pool: Option<String>,
    pub zone: Option<String>,
    pub access_mode: AccessMode,
    pub labels: BTreeMap<String, String>,
    /// When non-empty, only these services may see and use the volume.
    pub restrict_services: BTreeSet<String>,
    /// When non-empty, only these Mesos frameworks are offered the volume.
    pub restrict_frameworks: BTreeSet<String>,
    pub status: VolumeStatusView,
    pub attachments: Vec<AttachmentView>,
    /// Unix seconds.
    pub created_at: u64,
    /// Where the data lives on the Polly host, when the back-end exposes a path.
    #[serde(default)]
    pub path: Option<String>,
}

/// A host that reported itself through libStorage or the admin API, `GET /admin/instances`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceView {
    pub driver: String,
    pub instance_id: String,
    pub hostname: Option<String>,
    /// Unix seconds.
    pub last_seen: u64,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
}

/// What a pending create asked the back-end for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateRequestView {
    pub name: String,
    pub size_bytes: u64,
    pub pool: Option<String>,
    pub zone: Option<String>,
    pub access_mode: AccessMode,
    pub fields: BTreeMap<String, String>,
}

/// What a pending operation is about to do to the back-end, in its `op` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum IntentOpView {
    Create {
        request: CreateRequestView,
    },
    Attach {
        instance_id: String,
    },
    /// `instance_id: None` is a force-detach of every attachment.
    Detach {
        instance_id: Option<String>,
    },
    Delete,
    Grow {
        size_bytes: u64,
    },
}

/// An unfinished operation, `GET /admin/operations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentView {
    pub id: u64,
    pub volume_id: String,
    pub service: String,
    #[serde(flatten)]
    pub op: IntentOpView,
    /// Unix seconds.
    pub created_at: u64,
}

/// A volume a Mesos framework holds through the storage-offer endpoint,
/// `GET /admin/reservations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationView {
    pub framework_id: String,
    pub role: String,
    pub principal: Option<String>,
    pub volume_id: String,
    pub bytes: u64,
    /// Unix seconds.
    pub created_at: u64,
}

/// Where a node is in fencing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStateView {
    /// Reported gone; its attachments stay and its volumes are not offered.
    Lost,
    /// Fenced (asserted off); the listed volumes are being released.
    Fencing,
    /// Every attachment it held was released.
    Fenced,
}

/// A lost or fenced node, `POST /admin/agents/{id}/fence`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    /// The agent id, or the instance id of a host known only from REX-Ray reports.
    pub id: String,
    pub hostname: Option<String>,
    pub zone: Option<String>,
    /// Instance ids whose attachments this node holds.
    pub instance_ids: BTreeSet<String>,
    pub state: NodeStateView,
    /// Why it counts as lost (or `fenced by operator` when fenced while active).
    pub reason: String,
    /// Unix seconds.
    pub lost_at: u64,
    /// `operator` or `auto_release`, once fenced.
    pub fenced_by: Option<String>,
    /// Unix seconds the fence was asked for.
    pub fence_requested_at: Option<u64>,
    /// Volumes still to release (state `fencing`).
    pub pending: Vec<String>,
    /// Volumes released by the fence.
    pub released: Vec<String>,
    /// Unix seconds the last volume was released.
    pub fenced_at: Option<u64>,
}

impl From<store::VolumeStatus> for VolumeStatusView {
    fn from(s: store::VolumeStatus) -> Self {
        match s {
            store::VolumeStatus::Creating => VolumeStatusView::Creating,
            store::VolumeStatus::Available => VolumeStatusView::Available,
            store::VolumeStatus::Deleting => VolumeStatusView::Deleting,
        }
    }
}

impl From<store::Attachment> for AttachmentView {
    fn from(a: store::Attachment) -> Self {
        let store::Attachment {
            instance_id,
            device,
            attached_at,
        } = a;
        AttachmentView {
            instance_id,
            device,
            attached_at,
        }
    }
}

impl From<store::Volume> for VolumeView {
    fn from(v: store::Volume) -> Self {
        let store::Volume {
            id,
            service,
            driver_id,
            name,
            size_bytes,
            pool,
            zone,
            access_mode,
            labels,
            restrict_services,
            restrict_frameworks,
            status,
            attachments,
            created_at,
            path,
        } = v;
        VolumeView {
            id,
            service,
            driver_id,
            name,
            size_bytes,
            pool,
            zone,
            access_mode,
            labels,
            restrict_services,
            restrict_frameworks,
            status: status.into(),
            attachments: attachments.into_iter().map(Into::into).collect(),
            created_at,
            path,
        }
    }
}

impl From<store::Instance> for InstanceView {
    fn from(i: store::Instance) -> Self {
        let store::Instance {
            driver,
            instance_id,
            hostname,
            last_seen,
            fields,
        } = i;
        InstanceView {
            driver,
            instance_id,
            hostname,
            last_seen,
            fields,
        }
    }
}

impl From<driver::CreateRequest> for CreateRequestView {
    fn from(r: driver::CreateRequest) -> Self {
        let driver::CreateRequest {
            name,
            size_bytes,
            pool,
            zone,
            access_mode,
            fields,
        } = r;
        CreateRequestView {
            name,
            size_bytes,
            pool,
            zone,
            access_mode,
            fields,
        }
    }
}

impl From<store::IntentOp> for IntentOpView {
    fn from(op: store::IntentOp) -> Self {
        match op {
            store::IntentOp::Create { request } => IntentOpView::Create {
                request: request.into(),
            },
            store::IntentOp::Attach { instance_id } => IntentOpView::Attach { instance_id },
            store::IntentOp::Detach { instance_id } => IntentOpView::Detach { instance_id },
            store::IntentOp::Delete => IntentOpView::Delete,
            store::IntentOp::Grow { size_bytes } => IntentOpView::Grow { size_bytes },
        }
    }
}

impl From<store::Intent> for IntentView {
    fn from(i: store::Intent) -> Self {
        let store::Intent {
            id,
            volume_id,
            service,
            op,
            created_at,
        } = i;
        IntentView {
            id,
            volume_id,
            service,
            op: op.into(),
            created_at,
        }
    }
}

impl From<store::Reservation> for ReservationView {
    fn from(r: store::Reservation) -> Self {
        let store::Reservation {
            framework_id,
            role,
            principal,
            volume_id,
            bytes,
            created_at,
        } = r;
        ReservationView {
            framework_id,
            role,
            principal,
            volume_id,
            bytes,
            created_at,
        }
    }
}

impl From<store::NodeState> for NodeStateView {
    fn from(s: store::NodeState) -> Self {
        match s {
            store::NodeState::Lost => NodeStateView::Lost,
            store::NodeState::Fencing => NodeStateView::Fencing,
            store::NodeState::Fenced => NodeStateView::Fenced,
        }
    }
}

impl From<store::NodeRecord> for NodeView {
    fn from(n: store::NodeRecord) -> Self {
        let store::NodeRecord {
            id,
            hostname,
            zone,
            instance_ids,
            state,
            reason,
            lost_at,
            fenced_by,
            fence_requested_at,
            pending,
            released,
            fenced_at,
        } = n;
        NodeView {
            id,
            hostname,
            zone,
            instance_ids,
            state: state.into(),
            reason,
            lost_at,
            fenced_by,
            fence_requested_at,
            pending,
            released,
            fenced_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Debug;

    use serde::de::DeserializeOwned;
    use serde::Serialize;

    use super::*;

    /// `view` serializes to exactly `json` (field names, order, spellings, nulls), and
    /// `json` decodes back to `view` (what the admin client does).
    fn pinned<V: Serialize + DeserializeOwned + PartialEq + Debug>(view: &V, json: &str) {
        assert_eq!(serde_json::to_string_pretty(view).unwrap(), json);
        assert_eq!(&serde_json::from_str::<V>(json).unwrap(), view);
    }

    fn volume() -> store::Volume {
        store::Volume {
            id: "pv-1".into(),
            service: "vfs".into(),
            driver_id: Some("d-1".into()),
            name: "data".into(),
            size_bytes: 1024,
            pool: Some("default".into()),
            zone: None,
            access_mode: AccessMode::MultiReader,
            labels: BTreeMap::from([("app".into(), "db".into())]),
            restrict_services: BTreeSet::from(["vfs".into()]),
            restrict_frameworks: BTreeSet::new(),
            status: store::VolumeStatus::Available,
            attachments: vec![store::Attachment {
                instance_id: "i-1".into(),
                device: "/dev/xvdb".into(),
                attached_at: 7,
            }],
            created_at: 5,
            path: None,
        }
    }

    /// The JSON the admin API has answered since it served store records directly. A test
    /// failing here means the API changed: update `openapi.json` and the clients, or fix
    /// the conversion.
    #[test]
    fn a_volume_serializes_as_the_admin_api_always_has() {
        pinned(
            &VolumeView::from(volume()),
            r#"{
  "id": "pv-1",
  "service": "vfs",
  "driver_id": "d-1",
  "name": "data",
  "size_bytes": 1024,
  "pool": "default",
  "zone": null,
  "access_mode": "multi_reader",
  "labels": {
    "app": "db"
  },
  "restrict_services": [
    "vfs"
  ],
  "restrict_frameworks": [],
  "status": "available",
  "attachments": [
    {
      "instance_id": "i-1",
      "device": "/dev/xvdb",
      "attached_at": 7
    }
  ],
  "created_at": 5,
  "path": null
}"#,
        );
        for (status, json) in [
            (store::VolumeStatus::Creating, "\"creating\""),
            (store::VolumeStatus::Available, "\"available\""),
            (store::VolumeStatus::Deleting, "\"deleting\""),
        ] {
            pinned(&VolumeStatusView::from(status), json);
        }
    }

    #[test]
    fn an_instance_serializes_as_the_admin_api_always_has() {
        let i = store::Instance {
            driver: "vfs".into(),
            instance_id: "i-1".into(),
            hostname: None,
            last_seen: 11,
            fields: BTreeMap::from([("zone".into(), "a".into())]),
        };
        pinned(
            &InstanceView::from(i),
            r#"{
  "driver": "vfs",
  "instance_id": "i-1",
  "hostname": null,
  "last_seen": 11,
  "fields": {
    "zone": "a"
  }
}"#,
        );
    }

    #[test]
    fn every_pending_operation_serializes_as_the_admin_api_always_has() {
        let intent = |op| {
            IntentView::from(store::Intent {
                id: 3,
                volume_id: "pv-1".into(),
                service: "vfs".into(),
                op,
                created_at: 9,
            })
        };
        let create = store::IntentOp::Create {
            request: driver::CreateRequest {
                name: "data".into(),
                size_bytes: 1024,
                pool: None,
                zone: Some("a".into()),
                access_mode: AccessMode::SingleWriter,
                fields: BTreeMap::from([("type".into(), "gp3".into())]),
            },
        };
        pinned(
            &intent(create),
            r#"{
  "id": 3,
  "volume_id": "pv-1",
  "service": "vfs",
  "op": "create",
  "request": {
    "name": "data",
    "size_bytes": 1024,
    "pool": null,
    "zone": "a",
    "access_mode": "single_writer",
    "fields": {
      "type": "gp3"
    }
  },
  "created_at": 9
}"#,
        );
        let head = "{\n  \"id\": 3,\n  \"volume_id\": \"pv-1\",\n  \"service\": \"vfs\",\n";
        let tail = "  \"created_at\": 9\n}";
        for (op, middle) in [
            (
                store::IntentOp::Attach {
                    instance_id: "i-1".into(),
                },
                "  \"op\": \"attach\",\n  \"instance_id\": \"i-1\",\n",
            ),
            (
                store::IntentOp::Detach { instance_id: None },
                "  \"op\": \"detach\",\n  \"instance_id\": null,\n",
            ),
            (store::IntentOp::Delete, "  \"op\": \"delete\",\n"),
            (
                store::IntentOp::Grow { size_bytes: 2048 },
                "  \"op\": \"grow\",\n  \"size_bytes\": 2048,\n",
            ),
        ] {
            pinned(&intent(op), &format!("{head}{middle}{tail}"));
        }
    }

    #[test]
    fn a_reservation_serializes_as_the_admin_api_always_has() {
        let r = store::Reservation {
            framework_id: "fw-1".into(),
            role: "db".into(),
            principal: None,
            volume_id: "pv-1".into(),
            bytes: 1024,
            created_at: 13,
        };
        pinned(
            &ReservationView::from(r),
            r#"{
  "framework_id": "fw-1",
  "role": "db",
  "principal": null,
  "volume_id": "pv-1",
  "bytes": 1024,
  "created_at": 13
}"#,
        );
    }

    #[test]
    fn a_fenced_node_serializes_as_the_admin_api_always_has() {
        let n = store::NodeRecord {
            id: "agent-1".into(),
            hostname: Some("h1".into()),
            zone: None,
            instance_ids: BTreeSet::from(["i-1".into()]),
            state: store::NodeState::Fencing,
            reason: "fenced by operator".into(),
            lost_at: 20,
            fenced_by: Some("operator".into()),
            fence_requested_at: Some(21),
            pending: vec!["pv-1".into()],
            released: vec![],
            fenced_at: None,
        };
        pinned(
            &NodeView::from(n),
            r#"{
  "id": "agent-1",
  "hostname": "h1",
  "zone": null,
  "instance_ids": [
    "i-1"
  ],
  "state": "fencing",
  "reason": "fenced by operator",
  "lost_at": 20,
  "fenced_by": "operator",
  "fence_requested_at": 21,
  "pending": [
    "pv-1"
  ],
  "released": [],
  "fenced_at": null
}"#,
        );
        for (state, json) in [
            (store::NodeState::Lost, "\"lost\""),
            (store::NodeState::Fencing, "\"fencing\""),
            (store::NodeState::Fenced, "\"fenced\""),
        ] {
            pinned(&NodeStateView::from(state), json);
        }
    }

    /// JSON without the fields the store added later (`path`, `fields`) still decodes, as it
    /// did when the client decoded store records.
    #[test]
    fn fields_added_later_default_when_absent() {
        let mut json = serde_json::to_value(VolumeView::from(volume())).unwrap();
        json.as_object_mut().unwrap().remove("path");
        let v: VolumeView = serde_json::from_value(json).unwrap();
        assert_eq!(v.path, None);
        let i: InstanceView = serde_json::from_str(
            r#"{"driver": "vfs", "instance_id": "i-1", "hostname": null, "last_seen": 1}"#,
        )
        .unwrap();
        assert!(i.fields.is_empty());
    }
}

/// Where a node finds an attached volume's data, `GET /admin/volumes/{id}/source`: what
/// `polly node` mounts. Tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceView {
    /// A directory on central's file system (a vfs volume's data): bind-mounted.
    Directory { path: PathBuf },
    /// An image file holding a file system (a loop volume), with the loop device central
    /// attached for the node.
    Image {
        path: PathBuf,
        filesystem: String,
        device: Option<PathBuf>,
    },
    /// A Ceph RBD image, mapped on the node.
    Rbd {
        pool: String,
        image: String,
        user: Option<String>,
        conf: Option<PathBuf>,
        filesystem: String,
    },
    /// An EBS volume attached to the node's EC2 instance.
    Ebs {
        volume_id: String,
        device_hint: Option<String>,
        filesystem: String,
    },
}

impl From<mount::Source> for SourceView {
    fn from(s: mount::Source) -> Self {
        match s {
            mount::Source::Directory { path } => SourceView::Directory { path },
            mount::Source::Image {
                path,
                filesystem,
                device,
            } => SourceView::Image {
                path,
                filesystem,
                device,
            },
            mount::Source::Rbd {
                pool,
                image,
                user,
                conf,
                filesystem,
            } => SourceView::Rbd {
                pool,
                image,
                user,
                conf,
                filesystem,
            },
            mount::Source::Ebs {
                volume_id,
                device_hint,
                filesystem,
            } => SourceView::Ebs {
                volume_id,
                device_hint,
                filesystem,
            },
        }
    }
}

impl From<SourceView> for mount::Source {
    fn from(s: SourceView) -> Self {
        match s {
            SourceView::Directory { path } => mount::Source::Directory { path },
            SourceView::Image {
                path,
                filesystem,
                device,
            } => mount::Source::Image {
                path,
                filesystem,
                device,
            },
            SourceView::Rbd {
                pool,
                image,
                user,
                conf,
                filesystem,
            } => mount::Source::Rbd {
                pool,
                image,
                user,
                conf,
                filesystem,
            },
            SourceView::Ebs {
                volume_id,
                device_hint,
                filesystem,
            } => mount::Source::Ebs {
                volume_id,
                device_hint,
                filesystem,
            },
        }
    }
}
