//! libStorage wire JSON (reference §5), field names exactly as REX-Ray clients read them.
//! Core types convert into these with `From`; nothing here leaks inward.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::headers::InstanceId;
use crate::store;

const GIB: u64 = 1 << 30;

/// Bytes to whole GiB, rounded up (libStorage sizes are GiB integers).
pub fn gib_ceil(bytes: u64) -> u64 {
    bytes.div_ceil(GIB)
}

/// `attachmentState` values.
pub mod state {
    pub const ATTACHED: u8 = 2;
    pub const AVAILABLE: u8 = 3;
    pub const UNAVAILABLE: u8 = 4;
}

/// InstanceID in its JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireInstanceId {
    pub id: String,
    pub driver: String,
    pub service: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

impl From<&InstanceId> for WireInstanceId {
    fn from(i: &InstanceId) -> Self {
        WireInstanceId {
            id: i.id.clone(),
            driver: i.driver.clone(),
            service: i.service.clone().unwrap_or_default(),
            fields: i.fields.clone(),
            metadata: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireAttachment {
    pub device_name: String,
    #[serde(rename = "instanceID")]
    pub instance_id: WireInstanceId,
    pub status: String,
    #[serde(rename = "volumeID")]
    pub volume_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireVolume {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<WireAttachment>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attachment_state: u8,
    pub name: String,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub size: u64,
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub availability_zone: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, String>,
}

fn is_zero(n: &u8) -> bool {
    *n == 0
}
fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// The prefix of the labels the storage-offer endpoint writes, never shown to façade clients.
pub const MESOS_LABELS: &str = "mesos.";

/// A volume with all its attachments; the router applies the mask afterwards.
/// `driver` is the driver kind of the service the client talks to.
pub struct VolumeView<'a> {
    pub volume: &'a store::Volume,
    pub service: &'a str,
    pub driver: &'a str,
}

impl From<VolumeView<'_>> for WireVolume {
    fn from(v: VolumeView<'_>) -> Self {
        let vol = v.volume;
        WireVolume {
            attachments: vol
                .attachments
                .iter()
                .map(|a| WireAttachment {
                    device_name: a.device.clone(),
                    instance_id: WireInstanceId {
                        id: a.instance_id.clone(),
                        driver: v.driver.to_string(),
                        service: v.service.to_string(),
                        fields: BTreeMap::new(),
                        metadata: None,
                    },
                    status: "attached".into(),
                    volume_id: vol.id.clone(),
                })
                .collect(),
            attachment_state: 0,
            name: vol.name.clone(),
            size: gib_ceil(vol.size_bytes),
            id: vol.id.clone(),
            kind: String::new(),
            availability_zone: vol.zone.clone().unwrap_or_default(),
            // The storage-offer endpoint's own labels (`mesos.framework_id`, …) name a
            // framework, which only that framework and the operator may know.
            fields: vol
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with(MESOS_LABELS))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextDeviceInfo {
    pub ignore: bool,
    pub prefix: String,
    pub pattern: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriverInfo {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub next_device: NextDeviceInfo,
}

impl DriverInfo {
    /// What clients need to pick their compiled-in executor: the driver kind (`vfs`).
    pub fn for_kind(kind: &str) -> Self {
        DriverInfo {
            name: kind.to_string(),
            kind: "object".into(),
            next_device: NextDeviceInfo {
                ignore: true,
                prefix: String::new(),
                pattern: String::new(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireInstance {
    #[serde(rename = "instanceID")]
    pub instance_id: WireInstanceId,
    pub name: String,
    pub provider_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireServiceInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<WireInstance>,
    pub driver: DriverInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachResponse {
    pub volume: WireVolume,
    pub attach_token: String,
}

/// `POST /volumes/{svc}` body. Only `name` is required.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeCreateRequest {
    pub name: String,
    #[serde(default)]
    pub availability_zone: Option<String>,
    #[serde(default)]
    pub encrypted: Option<bool>,
    #[serde(default)]
    pub encryption_key: Option<String>,
    #[serde(default)]
    pub iops: Option<i64>,
    #[serde(default)]
    pub size: Option<i64>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    #[serde(default)]
    pub opts: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeAttachRequest {
    #[serde(default)]
    pub next_device_name: Option<String>,
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub opts: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeDetachRequest {
    #[serde(default)]
    pub force: bool,
    #[serde(default)]
    pub opts: Option<BTreeMap<String, serde_json::Value>>,
}

/// A JSON value as libStorage stringifies `opts` into `fields`.
pub fn stringify(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_up_to_gib() {
        assert_eq!(gib_ceil(0), 0);
        assert_eq!(gib_ceil(1), 1);
        assert_eq!(gib_ceil(GIB), 1);
        assert_eq!(gib_ceil(GIB + 1), 2);
    }

    #[test]
    fn volume_json_matches_the_capture() {
        let w = WireVolume {
            attachments: vec![],
            attachment_state: 3,
            name: "demo1".into(),
            size: 2,
            id: "pv-1".into(),
            kind: String::new(),
            availability_zone: String::new(),
            fields: BTreeMap::new(),
        };
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            serde_json::json!({"attachmentState": 3, "name": "demo1", "size": 2, "id": "pv-1", "type": ""})
        );
    }

    #[test]
    fn create_request_refuses_unknown_keys() {
        assert!(serde_json::from_str::<VolumeCreateRequest>(r#"{"name":"a","bogus":1}"#).is_err());
        let r: VolumeCreateRequest = serde_json::from_str(
            r#"{"name":"demo1","availabilityZone":"","encrypted":false,"iops":0,"size":2,"type":""}"#,
        )
        .unwrap();
        assert_eq!(r.size, Some(2));
    }
}

/// Snapshot (reference §4.5). `volumeID` is the Polly id of the source volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireSnapshot {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub start_time: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub status: String,
    #[serde(rename = "volumeID", default, skip_serializing_if = "String::is_empty")]
    pub volume_id: String,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub volume_size: u64,
}

impl From<&crate::volumes::SnapshotInfo> for WireSnapshot {
    fn from(s: &crate::volumes::SnapshotInfo) -> Self {
        WireSnapshot {
            id: s.snapshot.id.clone(),
            name: s.snapshot.name.clone(),
            start_time: s.snapshot.created_at,
            status: "online".into(),
            volume_id: s.volume_id.clone().unwrap_or_default(),
            volume_size: gib_ceil(s.snapshot.size_bytes),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeCopyRequest {
    pub volume_name: String,
    #[serde(default)]
    pub opts: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeSnapshotRequest {
    pub snapshot_name: String,
    #[serde(default)]
    pub opts: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SnapshotCopyRequest {
    pub snapshot_name: String,
    #[serde(rename = "destinationID")]
    pub destination_id: String,
    #[serde(default)]
    pub opts: Option<BTreeMap<String, serde_json::Value>>,
}

/// A task (reference §4.6): what `?async` answers with 202, and `/tasks` lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WireTask {
    pub id: u64,
    pub queue_time: u64,
    pub state: String,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub start_time: u64,
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub complete_time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}
