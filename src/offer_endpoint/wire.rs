//! The wire: the routes, the scheduler-call handler (status codes as in the reference),
//! content types, decoding calls, and encoding events as RecordIO records.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use prost::Message;

use super::error::DecodeError;
use super::Endpoint;
use crate::mesos::json;
use crate::mesos::v1::scheduler::{call, event, Call, Event};
use crate::mesos::v1::{self, resource, value};

/// The version `GET /version` reports: purely numeric (pymesos parses it as integers).
pub const MESOS_VERSION: &str = "1.11.0";
/// `Resource.DiskInfo.Source.vendor` of every disk Polly offers.
pub const VENDOR: &str = "polly";

pub(super) const STREAM_ID: &str = "mesos-stream-id";

/// The largest scheduler call body taken (an ACCEPT of many operations is tens of KiB); a
/// larger one is refused (413) before it is read whole.
pub const BODY_LIMIT: usize = 1 << 20;
pub(super) const CT_JSON: &str = "application/json";
pub(super) const CT_PROTO: &str = "application/x-protobuf";

/// Wire encoding of a subscription or call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ct {
    Json,
    Proto,
}

impl Ct {
    pub(super) fn mime(self) -> &'static str {
        match self {
            Ct::Json => CT_JSON,
            Ct::Proto => CT_PROTO,
        }
    }
}

/// Whether an `Accept` header value admits `mime` (RFC 9110 §12.5.1): the most specific
/// media range that matches (`type/subtype`, then `type/*`, then `*/*`; names compared
/// without case) decides, through its `q` (default 1; `q=0` refuses). A missing header
/// admits everything.
pub(super) fn acceptable(accept: Option<&str>, mime: &str) -> bool {
    let Some(accept) = accept else {
        return true;
    };
    let (want_type, want_sub) = mime.split_once('/').unwrap_or((mime, ""));
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or("").trim();
        let Some((t, st)) = media.split_once('/') else {
            continue;
        };
        let (t, st) = (t.trim(), st.trim());
        let specificity = if t == "*" && st == "*" {
            1
        } else if t.eq_ignore_ascii_case(want_type) && st == "*" {
            2
        } else if t.eq_ignore_ascii_case(want_type) && st.eq_ignore_ascii_case(want_sub) {
            3
        } else {
            continue;
        };
        let mut q = Some(1.0f32);
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("q") {
                    q = v
                        .trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q));
                }
            }
        }
        let Some(q) = q else {
            continue;
        };
        if best.is_none_or(|(s, _)| specificity > s) {
            best = Some((specificity, q));
        }
    }
    best.is_some_and(|(_, q)| q > 0.0)
}

pub(super) fn bad(status: StatusCode, msg: impl Into<String>) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        msg.into(),
    )
        .into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::CONNECTION, "close"), (header::CONTENT_LENGTH, "0")],
    )
        .into_response()
}

/// Room left before an event's body for its RecordIO prefix (`<decimal length>\n`).
const PREFIX_ROOM: usize = 21;

/// One event as a RecordIO record, written into a single buffer (no second copy of the
/// body for the prefix). A JSON OFFERS event is written one offer at a time
/// ([`offers_json`]).
pub(super) fn encode_event(ct: Ct, e: &Event) -> Bytes {
    let mut out = vec![0u8; PREFIX_ROOM];
    match ct {
        Ct::Proto => {
            out.reserve_exact(e.encoded_len());
            // Encoding into a Vec only fails for want of room, and a Vec grows.
            let _ = e.encode(&mut out);
        }
        Ct::Json => {
            let written = match offers_json(e, &mut out) {
                Some(r) => r,
                None => json::write_json(e, &mut out),
            };
            if let Err(err) = written {
                tracing::error!(error = %err, "cannot encode an event as JSON");
                out.truncate(PREFIX_ROOM);
            }
        }
    }
    let prefix = format!("{}\n", out.len() - PREFIX_ROOM);
    let start = PREFIX_ROOM - prefix.len();
    out[start..PREFIX_ROOM].copy_from_slice(prefix.as_bytes());
    Bytes::from(out).slice(start..)
}

/// A JSON OFFERS event (type and offers, nothing else set) written as Mesos JSON one offer
/// at a time, the same bytes as [`json::write_json`] of the whole event: converting the
/// whole event at once builds one dynamic message tree of every offer, several times the
/// size of the text with an offer per agent of a large cluster. `None` for any other event.
fn offers_json(e: &Event, out: &mut Vec<u8>) -> Option<Result<(), crate::mesos::Error>> {
    let Event {
        r#type,
        subscribed: None,
        offers: Some(event::Offers { offers }),
        inverse_offers: None,
        rescind: None,
        rescind_inverse_offer: None,
        update: None,
        update_operation_status: None,
        message: None,
        failure: None,
        error: None,
    } = e
    else {
        return None;
    };
    if *r#type != event_type(event::Type::Offers) || offers.is_empty() {
        return None;
    }
    out.extend_from_slice(br#"{"type":"OFFERS","offers":{"offers":["#);
    for (i, o) in offers.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if let Err(err) = json::write_json(o, out) {
            return Some(Err(err));
        }
    }
    out.extend_from_slice(b"]}}");
    Some(Ok(()))
}

pub(super) fn event_type(t: event::Type) -> Option<i32> {
    Some(t as i32)
}

/// The reservation of a volume a framework holds, as a master shows a dynamic reservation
/// (the refined `reservations` form).
pub(super) fn reserved_to(role: &str, principal: Option<&str>) -> Vec<resource::ReservationInfo> {
    vec![resource::ReservationInfo {
        r#type: Some(resource::reservation_info::Type::Dynamic as i32),
        role: Some(role.to_string()),
        principal: principal.map(str::to_string),
        labels: None,
    }]
}

/// A disk as Polly offers it: a RAW slice of a pool, or (with `volume_id`) a MOUNT volume,
/// with its reservation when the framework holds it.
pub(super) fn disk_resource(
    pool_id: &str,
    profile: &str,
    volume_id: Option<&str>,
    mb: u64,
    alloc: Option<resource::AllocationInfo>,
    reservations: Vec<resource::ReservationInfo>,
) -> v1::Resource {
    use resource::disk_info::source::Type as T;
    v1::Resource {
        name: "disk".into(),
        r#type: value::Type::Scalar as i32,
        scalar: Some(value::Scalar { value: mb as f64 }),
        provider_id: Some(v1::ResourceProviderId {
            value: pool_id.to_string(),
        }),
        allocation_info: alloc,
        reservations,
        disk: Some(resource::DiskInfo {
            source: Some(resource::disk_info::Source {
                r#type: if volume_id.is_some() {
                    T::Mount
                } else {
                    T::Raw
                } as i32,
                vendor: Some(VENDOR.into()),
                id: volume_id.map(String::from),
                profile: Some(profile.to_string()),
                mount: volume_id.map(|_| resource::disk_info::source::Mount { root: None }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn version() -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "version": MESOS_VERSION,
        "build_user": "polly",
        "build_date": "",
        "build_time": 0,
        "git_tag": format!("polly-{}", env!("CARGO_PKG_VERSION")),
    }))
}

/// Decode a call; JSON acknowledgements are accepted in pymesos' shape too (the whole
/// status object, with `uuid` as `{"value": …}`).
pub(crate) fn decode_call(ct: Ct, body: &[u8]) -> Result<Call, DecodeError> {
    match ct {
        Ct::Proto => Ok(json::from_protobuf_checked::<Call>(body)?),
        Ct::Json => {
            let mut v: serde_json::Value =
                serde_json::from_slice(body).map_err(DecodeError::Json)?;
            if !v.is_object() {
                return Err(DecodeError::NotAnObject);
            }
            if let Some(ack) = v.get_mut("acknowledge_operation_status") {
                if let Some(u) = ack.get("uuid").and_then(|u| u.get("value")).cloned() {
                    ack["uuid"] = u;
                }
            }
            Ok(json::from_value::<Call>(&v)?)
        }
    }
}

impl Endpoint {
    /// The HTTP routes of the endpoint.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/scheduler", post(scheduler))
            .route("/master/api/v1/scheduler", post(scheduler))
            .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT))
            .route("/version", get(version))
            .with_state(self.clone())
    }
}

async fn scheduler(
    State(ep): State<Endpoint>,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // Authentication comes first, as a master's HTTP authenticator runs before the handler.
    let principal = match &ep.inner.auth {
        Some(a) => match a.check(&headers) {
            Ok(p) => Some(p),
            Err(why) => return super::auth::unauthorized(why),
        },
        None => None,
    };
    // A body over the limit is a bad request, as any other call the endpoint cannot take.
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("Failed to read the body (at most {BODY_LIMIT} bytes are taken): {e}"),
            )
        }
    };
    let ct = match headers.get(header::CONTENT_TYPE).map(|v| v.to_str()) {
        None => {
            return bad(
                StatusCode::BAD_REQUEST,
                "Expecting 'Content-Type' to be present",
            )
        }
        Some(Ok(CT_JSON)) => Ct::Json,
        Some(Ok(CT_PROTO)) => Ct::Proto,
        Some(_) => {
            return bad(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Expecting 'Content-Type' of {CT_JSON} or {CT_PROTO}"),
            )
        }
    };
    let call = match decode_call(ct, &body) {
        Ok(c) => c,
        Err(e) => {
            return bad(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse body: {e}"),
            )
        }
    };
    let Some(t) = call.r#type else {
        return bad(StatusCode::BAD_REQUEST, "Expecting 'type' to be present");
    };
    let t = call::Type::try_from(t).unwrap_or(call::Type::Unknown);
    if t == call::Type::Unknown {
        return bad(StatusCode::NOT_IMPLEMENTED, "Received 'UNKNOWN' call");
    }
    if t == call::Type::Subscribe {
        return ep.subscribe(&headers, call, principal).await;
    }
    let Some(fw) = call.framework_id.as_ref().map(|f| f.value.clone()) else {
        return bad(
            StatusCode::BAD_REQUEST,
            "Expecting 'framework_id' to be present",
        );
    };
    {
        let st = ep.state();
        let Some(f) = st.frameworks.get(&fw) else {
            return bad(StatusCode::BAD_REQUEST, "Framework cannot be found");
        };
        if f.tx.is_none() {
            return bad(StatusCode::FORBIDDEN, "Framework is not subscribed");
        }
        if let Some(p) = &principal {
            if f.principal.as_deref() != Some(p.as_str()) {
                return bad(
                    StatusCode::FORBIDDEN,
                    format!(
                        "Framework {fw} is not registered to the authenticated principal '{p}'"
                    ),
                );
            }
        }
        let given = headers.get(STREAM_ID).and_then(|v| v.to_str().ok());
        match given {
            None => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
                )
            }
            Some(s) if Some(s) != f.stream_id.as_deref() => {
                return bad(
                    StatusCode::BAD_REQUEST,
                    format!("The stream ID '{s}' included in this request didn't match the stream ID currently associated with framework ID {fw}"),
                )
            }
            Some(_) => {}
        }
    }
    match t {
        call::Type::Teardown => {
            if let Err(e) = ep.teardown(&fw) {
                return bad(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot record the teardown: {e}"),
                );
            }
        }
        call::Type::Accept => {
            let Some(a) = call.accept else {
                return bad(StatusCode::BAD_REQUEST, "Expecting 'accept' to be present");
            };
            ep.accept(&fw, a).await;
        }
        call::Type::Decline => {
            let Some(d) = call.decline else {
                return bad(StatusCode::BAD_REQUEST, "Expecting 'decline' to be present");
            };
            ep.decline(&fw, &d.offer_ids, d.filters.as_ref());
        }
        call::Type::Revive => ep.revive(&fw),
        call::Type::Suppress => ep.suppress(&fw),
        call::Type::AcknowledgeOperationStatus => {
            let Some(a) = call.acknowledge_operation_status else {
                return bad(
                    StatusCode::BAD_REQUEST,
                    "Expecting 'acknowledge_operation_status' to be present",
                );
            };
            if let Err(e) = ep.acknowledge(&fw, &a).await {
                return bad(StatusCode::BAD_REQUEST, e.to_string());
            }
        }
        call::Type::ReconcileOperations => {
            let ids: Vec<(String, Option<String>)> = call
                .reconcile_operations
                .map(|r| {
                    r.operations
                        .into_iter()
                        .map(|o| (o.operation_id.value, o.agent_id.map(|a| a.value)))
                        .collect()
                })
                .unwrap_or_default();
            ep.reconcile(&fw, &ids);
        }
        // Task calls and the rest have nothing to act on here (Polly runs no tasks).
        _ => {}
    }
    accepted()
}

#[cfg(test)]
mod accept_tests {
    use super::{acceptable, CT_JSON, CT_PROTO};

    #[test]
    fn accept_follows_rfc_9110() {
        let both = |h: &str| (acceptable(Some(h), CT_JSON), acceptable(Some(h), CT_PROTO));
        assert!(acceptable(None, CT_JSON));
        assert_eq!(both("*/*"), (true, true));
        assert_eq!(both("application/*"), (true, true));
        assert_eq!(both("Application/JSON"), (true, false));
        assert_eq!(both("application/x-protobuf"), (false, true));
        assert_eq!(both("application/json;q=0, */*"), (false, true));
        assert_eq!(
            both("application/json; q=0.5, application/x-protobuf;q=0"),
            (true, false)
        );
        assert_eq!(both("application/*;q=0, application/json"), (true, false));
        assert_eq!(both("text/plain"), (false, false));
        assert_eq!(both("*/*;q=0"), (false, false));
        assert_eq!(both("application/jsonx"), (false, false));
        assert_eq!(
            both("application/json;q=2"),
            (false, false),
            "an invalid q ignores the range"
        );
        assert_eq!(both(""), (false, false));
    }
}

#[cfg(test)]
mod encode_tests {
    use super::*;
    use crate::mesos::recordio;

    fn offer(i: u32, volumes: u32) -> v1::Offer {
        let alloc = (i % 2 == 0).then(|| resource::AllocationInfo {
            role: Some("storage".into()),
        });
        let mut resources = vec![disk_resource(
            "vfs",
            "fast",
            None,
            1024,
            alloc.clone(),
            vec![],
        )];
        for v in 0..volumes {
            let id = format!("vol-{i}-{v}");
            resources.push(disk_resource(
                "vfs",
                "fast",
                Some(&id),
                64,
                alloc.clone(),
                vec![],
            ));
        }
        v1::Offer {
            id: v1::OfferId {
                value: format!("polly-O{i}"),
            },
            framework_id: v1::FrameworkId {
                value: "fw-1".into(),
            },
            agent_id: v1::AgentId {
                value: format!("agent-S{i}"),
            },
            hostname: format!("node-{i}.example"),
            resources,
            allocation_info: alloc,
            ..Default::default()
        }
    }

    fn offers_event(offers: Vec<v1::Offer>) -> Event {
        Event {
            r#type: event_type(event::Type::Offers),
            offers: Some(event::Offers { offers }),
            ..Default::default()
        }
    }

    /// The record as it was built before OFFERS were written offer by offer: the whole
    /// event converted at once, then framed.
    fn whole(ct: Ct, e: &Event) -> Vec<u8> {
        let body = match ct {
            Ct::Json => json::to_json(e).unwrap(),
            Ct::Proto => e.encode_to_vec(),
        };
        recordio::encode(&body)
    }

    #[test]
    fn offers_written_offer_by_offer_are_the_bytes_of_the_whole_event() {
        for n in [1, 2, 7] {
            let e = offers_event((0..n).map(|i| offer(i, i % 3)).collect());
            let mut direct = Vec::new();
            assert!(offers_json(&e, &mut direct).unwrap().is_ok());
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(json::to_json(&e).unwrap()).unwrap(),
                "{n} offers"
            );
            for ct in [Ct::Json, Ct::Proto] {
                assert_eq!(encode_event(ct, &e).as_ref(), whole(ct, &e), "{ct:?}");
            }
            // The framework reads it back as the same event.
            let mut dec = recordio::Decoder::new(1 << 20);
            dec.push(&encode_event(Ct::Json, &e));
            let rec = dec.next_record().unwrap().unwrap();
            assert_eq!(json::from_json::<Event>(&rec).unwrap(), e);
        }
    }

    #[test]
    fn other_events_are_framed_as_before() {
        let heartbeat = Event {
            r#type: event_type(event::Type::Heartbeat),
            ..Default::default()
        };
        let empty_offers = offers_event(Vec::new());
        let error = Event {
            r#type: event_type(event::Type::Error),
            error: Some(event::Error {
                message: "x".repeat(300),
            }),
            ..Default::default()
        };
        // An OFFERS event with something else set is not written by the shortcut.
        let mut mixed = offers_event(vec![offer(1, 1)]);
        mixed.error = error.error.clone();
        assert!(offers_json(&mixed, &mut Vec::new()).is_none());
        assert!(offers_json(&empty_offers, &mut Vec::new()).is_none());
        for e in [heartbeat, empty_offers, error, mixed] {
            for ct in [Ct::Json, Ct::Proto] {
                assert_eq!(encode_event(ct, &e).as_ref(), whole(ct, &e), "{ct:?} {e:?}");
            }
        }
    }
}
