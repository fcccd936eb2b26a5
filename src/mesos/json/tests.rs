//! Golden tests: the reference's JSON examples parse field for field into the prost types,
//! print back to the same JSON, and survive protobuf round trips.

use prost::Message;
use serde_json::{json, Value};

use super::*;
use crate::mesos::v1::scheduler::{call, event, Call, Event};
use crate::mesos::v1::{self, resource, value, FrameworkInfo};

/// JSON equality with every number compared as f64 (serde_json keeps `5` and `5.0` apart;
/// Mesos does not).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

fn round_trip<M: Message + Name + Default + PartialEq + std::fmt::Debug>(j: &Value) -> M {
    let m: M = from_value(j).unwrap();
    let back = to_value(&m).unwrap();
    assert!(same(j, &back), "JSON round trip changed it:\n{j}\n{back}");
    let from_bytes: M = from_json(&to_json(&m).unwrap()).unwrap();
    assert_eq!(from_bytes, m);
    let decoded = M::decode(m.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, m);
    m
}

fn disk_offer_event() -> Value {
    json!({"type":"OFFERS","offers":{"offers":[{
      "id":{"value":"3d0c-O17"}, "framework_id":{"value":"3d0c-0001"},
      "agent_id":{"value":"3d0c-S0"}, "hostname":"storage-node-1",
      "allocation_info":{"role":"storage"},
      "domain":{"fault_domain":{"region":{"name":"eu-1"},"zone":{"name":"eu-1a"}}},
      "attributes":[{"name":"rack","type":"TEXT","text":{"value":"r12"}}],
      "resources":[
        {"name":"disk","type":"SCALAR","scalar":{"value":102400},
         "provider_id":{"value":"rp-7f2e"}, "allocation_info":{"role":"storage"},
         "reservations":[{"type":"DYNAMIC","role":"storage","principal":"storage-svc"}],
         "disk":{"source":{"type":"RAW","vendor":"org.example.csi","profile":"fast"}}},
        {"name":"disk","type":"SCALAR","scalar":{"value":20480},
         "provider_id":{"value":"rp-7f2e"}, "allocation_info":{"role":"storage"},
         "reservations":[{"type":"DYNAMIC","role":"storage","principal":"storage-svc"}],
         "disk":{"source":{"type":"MOUNT","vendor":"org.example.csi","id":"vol-0042",
                 "profile":"fast","mount":{"root":"/mnt/vol-0042"},
                 "metadata":{"labels":[{"key":"fs","value":"xfs"}]}}}}]}]}})
}

#[test]
fn disk_offer_event_matches_the_reference_field_for_field() {
    let e: Event = round_trip(&disk_offer_event());
    assert_eq!(e.r#type(), event::Type::Offers);
    let o = &e.offers.as_ref().unwrap().offers[0];
    assert_eq!(o.id.value, "3d0c-O17");
    assert_eq!(o.framework_id.value, "3d0c-0001");
    assert_eq!(o.agent_id.value, "3d0c-S0");
    assert_eq!(o.hostname, "storage-node-1");
    assert_eq!(o.allocation_info.as_ref().unwrap().role(), "storage");
    let fd = o.domain.as_ref().unwrap().fault_domain.as_ref().unwrap();
    assert_eq!(fd.region.name, "eu-1");
    assert_eq!(fd.zone.name, "eu-1a");
    assert_eq!(o.attributes[0].name, "rack");
    assert_eq!(o.attributes[0].r#type(), value::Type::Text);
    assert_eq!(o.attributes[0].text.as_ref().unwrap().value, "r12");
    let raw = &o.resources[0];
    assert_eq!(raw.name, "disk");
    assert_eq!(raw.r#type(), value::Type::Scalar);
    assert_eq!(raw.scalar.as_ref().unwrap().value, 102400.0);
    assert_eq!(raw.provider_id.as_ref().unwrap().value, "rp-7f2e");
    assert_eq!(raw.reservations.len(), 1);
    let r = &raw.reservations[0];
    assert_eq!(r.r#type(), resource::reservation_info::Type::Dynamic);
    assert_eq!((r.role(), r.principal()), ("storage", "storage-svc"));
    let src = raw.disk.as_ref().unwrap().source.as_ref().unwrap();
    assert_eq!(src.r#type(), resource::disk_info::source::Type::Raw);
    assert_eq!((src.vendor(), src.profile()), ("org.example.csi", "fast"));
    assert!(src.id.is_none() && src.mount.is_none());
    // Deprecated `role` is unset (and so not printed), though its default is "*".
    assert!(to_value(raw).unwrap().get("role").is_none());
    let mount = &o.resources[1];
    let src = mount.disk.as_ref().unwrap().source.as_ref().unwrap();
    assert_eq!(src.r#type(), resource::disk_info::source::Type::Mount);
    assert_eq!(src.id(), "vol-0042");
    assert_eq!(src.mount.as_ref().unwrap().root(), "/mnt/vol-0042");
    let md = &src.metadata.as_ref().unwrap().labels[0];
    assert_eq!((md.key.as_str(), md.value()), ("fs", "xfs"));
}

#[test]
fn accept_with_create_disk_matches_the_reference() {
    let source = disk_offer_event()["offers"]["offers"][0]["resources"][0].clone();
    let j = json!({"type":"ACCEPT","framework_id":{"value":"3d0c-0001"},
     "accept":{"offer_ids":[{"value":"3d0c-O17"}],
      "operations":[{"type":"CREATE_DISK","id":{"value":"op-1"},
        "create_disk":{"source": source,"target_type":"MOUNT"}}],
      "filters":{"refuse_seconds":5}}});
    let c: Call = round_trip(&j);
    assert_eq!(c.r#type(), call::Type::Accept);
    assert_eq!(c.framework_id.as_ref().unwrap().value, "3d0c-0001");
    let a = c.accept.as_ref().unwrap();
    assert_eq!(a.offer_ids[0].value, "3d0c-O17");
    assert_eq!(a.filters.as_ref().unwrap().refuse_seconds(), 5.0);
    let op = &a.operations[0];
    assert_eq!(op.r#type(), v1::offer::operation::Type::CreateDisk);
    assert_eq!(op.id.as_ref().unwrap().value, "op-1");
    let cd = op.create_disk.as_ref().unwrap();
    assert_eq!(cd.target_type(), resource::disk_info::source::Type::Mount);
    assert_eq!(cd.source.scalar.as_ref().unwrap().value, 102400.0);
}

#[test]
fn operation_status_uuid_is_base64_bytes() {
    let uuid: Vec<u8> = (0u8..16).collect();
    let j = json!({"type":"UPDATE_OPERATION_STATUS","update_operation_status":{"status":{
      "operation_id":{"value":"op-1"},"state":"OPERATION_FINISHED",
      "uuid":{"value":"AAECAwQFBgcICQoLDA0ODw=="},"agent_id":{"value":"3d0c-S0"},
      "resource_provider_id":{"value":"rp-7f2e"},
      "converted_resources":[{"name":"disk","type":"SCALAR","scalar":{"value":102400},
        "disk":{"source":{"type":"MOUNT","id":"vol-1","profile":"fast"}}}]}}});
    let e: Event = round_trip(&j);
    let s = &e.update_operation_status.as_ref().unwrap().status;
    assert_eq!(s.state(), v1::OperationState::OperationFinished);
    assert_eq!(s.uuid.as_ref().unwrap().value, uuid);
    assert_eq!(s.operation_id.as_ref().unwrap().value, "op-1");
    assert_eq!(s.converted_resources.len(), 1);
}

#[test]
fn subscribe_call_and_subscribed_event() {
    let j = json!({"type":"SUBSCRIBE","framework_id":{"value":"fw-1"},
      "subscribe":{"framework_info":{"user":"root","name":"polly","id":{"value":"fw-1"},
        "failover_timeout":604800,"checkpoint":true,"roles":["storage"],"principal":"polly",
        "capabilities":[{"type":"MULTI_ROLE"},{"type":"RESERVATION_REFINEMENT"},{"type":"REGION_AWARE"}]}}});
    let c: Call = round_trip(&j);
    let fi: &FrameworkInfo = &c.subscribe.as_ref().unwrap().framework_info;
    assert_eq!(fi.failover_timeout(), 604800.0);
    assert!(fi.checkpoint());
    assert_eq!(fi.roles, ["storage"]);
    assert_eq!(fi.capabilities.len(), 3);
    assert_eq!(
        fi.capabilities[0].r#type(),
        v1::framework_info::capability::Type::MultiRole
    );

    let j = json!({"type":"SUBSCRIBED","subscribed":{"framework_id":{"value":"fw-1"},
      "heartbeat_interval_seconds":15,
      "master_info":{"id":"m1","ip":16777343,"port":5050,"hostname":"master-1","version":"1.11.0"}}});
    let e: Event = round_trip(&j);
    let s = e.subscribed.as_ref().unwrap();
    assert_eq!(s.heartbeat_interval_seconds(), 15.0);
    assert_eq!(s.master_info.as_ref().unwrap().port, 5050);
}

#[test]
fn error_failure_and_heartbeat_events() {
    let e: Event =
        round_trip(&json!({"type":"ERROR","error":{"message":"Framework has been removed"}}));
    assert_eq!(e.error.unwrap().message, "Framework has been removed");
    let e: Event = round_trip(&json!({"type":"FAILURE","failure":{"agent_id":{"value":"S1"}}}));
    assert_eq!(e.failure.unwrap().agent_id.unwrap().value, "S1");
    let e: Event = round_trip(&json!({"type":"HEARTBEAT"}));
    assert_eq!(e.r#type(), event::Type::Heartbeat);
}

#[test]
fn acknowledge_uuid_is_a_plain_base64_string() {
    let j = json!({"type":"ACKNOWLEDGE","framework_id":{"value":"fw"},
      "acknowledge":{"agent_id":{"value":"S0"},"task_id":{"value":"t1"},
        "uuid":"AAECAwQFBgcICQoLDA0ODw=="}});
    let c: Call = round_trip(&j);
    assert_eq!(c.acknowledge.unwrap().uuid, (0u8..16).collect::<Vec<_>>());
}

#[test]
fn sixty_four_bit_integers_are_numbers_and_strings_are_accepted() {
    let j = json!({"start":{"nanoseconds":1470820171393027072_i64}});
    let u: v1::Unavailability = round_trip(&j);
    assert_eq!(u.start.nanoseconds, 1470820171393027072);
    let out = String::from_utf8(to_json(&u).unwrap()).unwrap();
    assert_eq!(out, r#"{"start":{"nanoseconds":1470820171393027072}}"#);
    let s: v1::Unavailability =
        from_json(br#"{"start":{"nanoseconds":"1470820171393027072"}}"#).unwrap();
    assert_eq!(s, u);
}

#[test]
fn unknown_keys_and_unknown_enum_names_are_ignored() {
    let a: v1::Attribute = from_json(
        br#"{"name":"rack","type":"TEXT","text":{"value":"r1","extra":1},"future":{"x":[1]}}"#,
    )
    .unwrap();
    assert_eq!(a.text.unwrap().value, "r1");
    let c: v1::framework_info::Capability = from_json(br#"{"type":"TIME_TRAVEL"}"#).unwrap();
    assert!(c.r#type.is_none());
}

#[test]
fn invalid_json_is_a_clear_error() {
    let e = from_json::<Event>(b"{\"type\":").unwrap_err().to_string();
    assert!(e.contains("mesos.v1.scheduler.Event"), "{e}");
    let e = from_json::<Event>(b"{\"type\":\"HEARTBEAT\"} trailing").unwrap_err();
    assert!(matches!(e, Error::Json { .. }));
    assert!(from_protobuf::<Event>(&[0xff, 0xff, 0xff]).is_err());
}

#[test]
fn explicit_defaults_are_printed_deprecated_ones_are_not() {
    let fi = FrameworkInfo {
        user: "u".into(),
        name: "n".into(),
        ..Default::default()
    };
    assert_eq!(
        to_value(&fi).unwrap(),
        json!({"user":"u","name":"n","failover_timeout":0.0,"checkpoint":false})
    );
    let d = call::Decline::default();
    let v = to_value(&Call {
        r#type: Some(call::Type::Decline as i32),
        decline: Some(call::Decline {
            filters: Some(v1::Filters::default()),
            ..d
        }),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(
        v,
        json!({"type":"DECLINE","decline":{"filters":{"refuse_seconds":5.0}}})
    );
    let a = v1::AgentInfo {
        hostname: "h".into(),
        ..Default::default()
    };
    assert_eq!(to_value(&a).unwrap(), json!({"hostname":"h","port":5051}));
    let r = v1::Resource {
        name: "disk".into(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: 1.0 }),
        ..Default::default()
    };
    assert_eq!(
        to_value(&r).unwrap(),
        json!({"name":"disk","type":"SCALAR","scalar":{"value":1.0}})
    );
}

#[test]
fn maps_are_objects() {
    let j = json!({"user":"u","name":"n","failover_timeout":0,"checkpoint":false,"offer_filters":{"storage":{"min_allocatable_resources":
      {"quantities":[{"quantities":{"disk":{"value":1024}}}]}}}});
    let fi: FrameworkInfo = round_trip(&j);
    let q = &fi.offer_filters["storage"]
        .min_allocatable_resources
        .as_ref()
        .unwrap()
        .quantities[0];
    assert_eq!(q.quantities["disk"].value, 1024.0);
}

#[test]
fn missing_required_fields_are_rejected_by_name() {
    let e = from_json::<Event>(
        br#"{"type":"OFFERS","offers":{"offers":[{"id":{"value":"o"},
        "framework_id":{"value":"f"},"agent_id":{"value":"a"},
        "resources":[{"name":"disk","type":"SCALAR","scalar":{}}]}]}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("offers.offers[0].hostname"), "{e}");
    assert!(
        e.contains("offers.offers[0].resources[0].scalar.value"),
        "{e}"
    );
    // An unknown name in a required enum leaves it unset, which is an error.
    let e = from_json::<v1::Attribute>(br#"{"name":"rack","type":"COLOUR"}"#).unwrap_err();
    assert!(
        e.to_string().contains("missing required fields: type"),
        "{e}"
    );
}
