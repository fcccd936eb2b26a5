//! Entry points of the fuzz targets (`fuzz/`, cargo fuzz) and of the corpus replay test
//! (`tests/fuzz_corpus.rs`): one function per target that takes arbitrary bytes, runs them
//! through the same parsers the servers use, and panics when a property breaks (a round trip
//! that changes the value, chunking that changes RecordIO records, a bound that is exceeded).
//! Rejecting input is fine; panicking, or accepting it inconsistently, is the bug.
//!
//! Not a public API: hidden from the docs and used only by the fuzz crate and the tests.

use prost::Message;

use crate::config::Config;
use crate::libstorage::headers::{attachment_mask, instance_for, InstanceId, LocalDevices, Tx};
use crate::libstorage::types::{
    SnapshotCopyRequest, VolumeAttachRequest, VolumeCopyRequest, VolumeCreateRequest,
    VolumeDetachRequest, VolumeSnapshotRequest,
};
use crate::libstorage::{create_request, parse_body_bytes};
use crate::mesos::json;
use crate::mesos::recordio::{self, Decoder};
use crate::mesos::Error as MesosError;
use crate::offer_endpoint::{decode_call, Ct};

/// A target's entry point.
pub type Entry = fn(&[u8]);

/// Every target: its name (the directory under `fuzz/corpus/` and `fuzz/regressions/`) and
/// its entry point.
pub const TARGETS: &[(&str, Entry)] = &[
    ("recordio", recordio),
    ("mesos_call_json", mesos_call_json),
    ("mesos_call_protobuf", mesos_call_protobuf),
    ("mesos_event", mesos_event),
    ("libstorage_headers", libstorage_headers),
    ("libstorage_bodies", libstorage_bodies),
    ("config", config),
    ("marathon", marathon),
];

/// The entry point of target `name`.
pub fn target(name: &str) -> Option<Entry> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// Records and the final outcome of decoding `chunks` one after another.
#[derive(Debug, PartialEq)]
struct Decoded {
    records: Vec<Vec<u8>>,
    /// The error kind that stopped the stream, or the result of `finish` at its end.
    end: Result<(), String>,
}

fn error_kind(e: &MesosError) -> String {
    match e {
        MesosError::RecordTooLarge { len, max } => format!("too large {len} > {max}"),
        MesosError::ZeroLength => "zero".into(),
        MesosError::BadPrefix { .. } => "bad prefix".into(),
        MesosError::Truncated { buffered } => format!("truncated {buffered}"),
        other => format!("unexpected error {other}"),
    }
}

fn decode_chunks<'a>(max: u64, chunks: impl IntoIterator<Item = &'a [u8]>) -> Decoded {
    let mut d = Decoder::new(max);
    let mut records = Vec::new();
    for chunk in chunks {
        d.push(chunk);
        loop {
            match d.next_record() {
                Ok(Some(r)) => {
                    assert!(!r.is_empty(), "empty record");
                    assert!(r.len() as u64 <= max, "record of {} > max {max}", r.len());
                    records.push(r.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(d.buffered(), 0, "a failed decoder keeps bytes");
                    assert!(d.next_record().is_err(), "a failed decoder recovered");
                    return Decoded {
                        records,
                        end: Err(error_kind(&e)),
                    };
                }
            }
        }
        // Waiting for more: at most an unterminated prefix (20 digits) or a partial body.
        let bound = max.saturating_sub(1).max(20);
        assert!(
            d.buffered() as u64 <= bound,
            "{} bytes buffered, bound {bound}",
            d.buffered()
        );
    }
    Decoded {
        records,
        end: d.finish().map_err(|e| error_kind(&e)),
    }
}

/// RecordIO: byte 0 picks the record limit, byte 1 how many chunk sizes follow; the rest is
/// the stream. Properties: the same records and outcome however the stream is chunked
/// (one push, the given sizes, byte by byte); records are non-empty and within the limit; a
/// failed decoder holds nothing and stays failed; memory stays bounded while waiting;
/// encoding the records and decoding them again gives them back.
pub fn recordio(data: &[u8]) {
    let [limit, ncuts, rest @ ..] = data else {
        return;
    };
    let max = 1 + u64::from(*limit) * 4;
    let ncuts = usize::from(ncuts % 8).min(rest.len());
    let (cuts, wire) = rest.split_at(ncuts);

    let whole = decode_chunks(max, [wire]);

    let mut chunks = Vec::new();
    let mut at = 0;
    // Sizes cycle (0 pushes an empty chunk); the count is bounded, so all-zero sizes end.
    for size in cuts.iter().map(|c| usize::from(c % 17)).cycle() {
        if at >= wire.len() || cuts.is_empty() || chunks.len() > 2 * wire.len() + 16 {
            break;
        }
        let end = (at + size).min(wire.len());
        chunks.push(&wire[at..end]);
        at = end;
    }
    if at < wire.len() {
        chunks.push(&wire[at..]);
    }
    assert_eq!(
        decode_chunks(max, chunks.iter().copied()),
        whole,
        "chunks {chunks:?}"
    );
    if wire.len() <= 4096 {
        assert_eq!(decode_chunks(max, wire.chunks(1)), whole, "byte by byte");
    }

    let reencoded: Vec<u8> = whole
        .records
        .iter()
        .flat_map(|r| recordio::encode(r))
        .collect();
    assert!(reencoded.len() <= wire.len() || whole.end.is_err() || wire.is_empty());
    let again = decode_chunks(max, [&reencoded[..]]);
    assert_eq!(again.records, whole.records, "encode then decode");
    assert_eq!(again.end, Ok(()));
}

/// The checks every decoded call or event passes: protobuf and Mesos JSON round trips give
/// it back.
fn round_trips<M>(msg: &M)
where
    M: Message + prost::Name + Default + PartialEq + std::fmt::Debug,
{
    // Equal values, or equal bytes, or equal JSON: a NaN field never equals itself (its
    // encoding does), and map entries (hash maps) are encoded in no fixed order.
    let bytes = msg.encode_to_vec();
    let back: M = json::from_protobuf(&bytes).expect("an encoded message decodes");
    assert!(
        back == *msg || back.encode_to_vec() == bytes || same_value(&back, msg),
        "protobuf round trip of {msg:?} gave {back:?}"
    );
    let text = json::to_json(msg).expect("a decoded message serializes as Mesos JSON");
    match json::from_json::<M>(&text) {
        // Output prints unset fields that have a default (as stout does), so the value read
        // back may have them set: the JSON is a fixed point, and the value equal but for them.
        Ok(back) => {
            let again = json::to_json(&back).expect("serializes");
            assert!(
                same_json(&again, &text),
                "JSON round trip: {} became {}",
                show(&text),
                show(&again)
            );
        }
        // Protobuf decoding does not check proto2 `required` fields; the JSON reader does.
        Err(e) => assert!(
            e.to_string().contains("missing required fields"),
            "own JSON {} refused: {e}",
            show(&text)
        ),
    }
}

/// Equal as Mesos JSON values (NaN prints as a string, map entries in any order): for a
/// message with both a NaN and a map, where neither `==` nor the encodings agree.
fn same_value<M: Message + prost::Name>(a: &M, b: &M) -> bool {
    match (json::to_json(a), json::to_json(b)) {
        (Ok(x), Ok(y)) => same_json(&x, &y),
        _ => false,
    }
}

/// Equal as JSON values: map fields are hash maps, so their keys come out in no fixed order.
fn same_json(a: &[u8], b: &[u8]) -> bool {
    let value = |x: &[u8]| serde_json::from_slice::<serde_json::Value>(x).expect("own JSON parses");
    a == b || value(a) == value(b)
}

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).chars().take(2000).collect()
}

/// A scheduler call as the storage-offer endpoint reads a JSON body (pymesos' acknowledgement
/// shape included). Accepted calls survive protobuf and JSON round trips, and the JSON the
/// endpoint writes for it is read back the same way.
pub fn mesos_call_json(data: &[u8]) {
    match decode_call(Ct::Json, data) {
        Ok(call) => {
            round_trips(&call);
            let text = json::to_json(&call).expect("serializes");
            if let Ok(back) = decode_call(Ct::Json, &text) {
                let again = json::to_json(&back).expect("serializes");
                assert!(
                    same_json(&again, &text),
                    "endpoint reads {} back as {}",
                    show(&text),
                    show(&again)
                );
            }
        }
        Err(e) => assert!(!e.to_string().is_empty(), "empty error message"),
    }
}

/// A scheduler call as the endpoint reads a protobuf body: the same round trips.
pub fn mesos_call_protobuf(data: &[u8]) {
    match decode_call(Ct::Proto, data) {
        Ok(call) => round_trips(&call),
        Err(e) => assert!(!e.to_string().is_empty(), "empty error message"),
    }
}

/// A scheduler event as Polly's Mesos client decodes a record (byte 0 even: JSON, odd:
/// protobuf). Decoded events survive protobuf and JSON round trips.
pub fn mesos_event(data: &[u8]) {
    let [sel, body @ ..] = data else {
        return;
    };
    let ct = if sel % 2 == 0 {
        crate::mesos::client::MesosContentType::Json
    } else {
        crate::mesos::client::MesosContentType::Protobuf
    };
    let Ok(event) = crate::mesos::client::decode_event(ct, body) else {
        return;
    };
    round_trips(&event);
}

/// Write an instance id header the way a REX-Ray client does.
fn render_instance_id(i: &InstanceId) -> String {
    use base64::Engine;
    let mut s = i.driver.clone();
    if let Some(svc) = &i.service {
        s.push(':');
        s.push_str(svc);
    }
    s.push('=');
    s.push_str(&i.id);
    let fields = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(&i.fields)
        .finish();
    if !fields.is_empty() || i.metadata.is_some() {
        s.push(',');
        s.push_str(&fields);
    }
    if let Some(m) = &i.metadata {
        s.push(',');
        let raw = serde_json::to_vec(m).expect("a JSON value serializes");
        s.push_str(&base64::engine::general_purpose::STANDARD.encode(raw));
    }
    s
}

/// The `Libstorage-*` header parsers (byte 0 picks `Instanceid`, `Localdevices`, `Tx` or the
/// `attachments` query flag; the rest is the value). Properties: a parsed header written back
/// in the client's format parses to the same value; the resolved id is the id or the
/// metadata's hostname; device keys are non-empty and the driver is lower case; a `Tx` id is a
/// UUID; the attachment mask stays within 0-31.
pub fn libstorage_headers(data: &[u8]) {
    let [sel, rest @ ..] = data else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    match sel % 4 {
        0 => {
            let Ok(i) = InstanceId::parse(s) else {
                return;
            };
            assert!(!i.driver.trim().is_empty());
            assert!(!i.driver.contains('=') && !i.driver.contains(':'));
            assert!(!i.id.contains(','));
            match i.resolved_id() {
                Some(id) if !i.id.is_empty() => assert_eq!(id, i.id),
                Some(id) => assert_eq!(Some(id), i.hostname()),
                None => assert!(i.id.is_empty() && i.hostname().is_none()),
            }
            let text = render_instance_id(&i);
            let back = InstanceId::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(back, i, "rewritten as {text:?}");
            let list = [i.clone()];
            if let Some(found) = instance_for(&list, i.service.as_deref().unwrap_or("x"), &i.driver)
            {
                assert_eq!(found, &i);
            }
        }
        1 => {
            let Ok(d) = LocalDevices::parse(s) else {
                return;
            };
            assert!(d
                .devices
                .iter()
                .all(|(k, v)| !k.is_empty() && !k.contains(',') && !v.contains(',')));
            let text = format!(
                "{}={}",
                d.driver,
                d.devices
                    .iter()
                    .map(|(k, v)| format!("{k}::{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let back = LocalDevices::parse(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(back, d, "rewritten as {text:?}");
        }
        2 => {
            let Ok(t) = Tx::parse(s) else {
                return;
            };
            assert_eq!(t.id.len(), 36);
            let text = format!("txID={}, txCR={}", t.id, t.created);
            assert_eq!(Tx::parse(&text).as_ref(), Ok(&t), "rewritten as {text:?}");
        }
        _ => {
            let m = attachment_mask(Some(s));
            assert!(m <= 31, "mask {m} for {s:?}");
        }
    }
}

/// The libStorage request bodies, read by the façade's own body rule (byte 0 picks the
/// request type). Properties: a refusal is a 400 with a message; blank is `{}`; an accepted
/// create becomes a manager request of a positive whole number of GiB with the body's name
/// and one label per `opts` key.
pub fn libstorage_bodies(data: &[u8]) {
    let [sel, body @ ..] = data else {
        return;
    };
    fn check<T: serde::de::DeserializeOwned>(body: &[u8]) -> Option<T> {
        match parse_body_bytes::<T>(body) {
            Ok(t) => Some(t),
            Err(e) => {
                assert_eq!(
                    e.status,
                    axum::http::StatusCode::BAD_REQUEST,
                    "{}",
                    e.message
                );
                assert!(!e.message.is_empty());
                serde_json::to_vec(&e.body()).expect("error body serializes");
                assert!(
                    !body.iter().all(u8::is_ascii_whitespace)
                        || parse_body_bytes::<T>(b"{}").is_err(),
                    "blank body refused although {{}} is accepted"
                );
                None
            }
        }
    }
    match sel % 6 {
        0 => {
            let Some(req) = check::<VolumeCreateRequest>(body) else {
                return;
            };
            match create_request("svc", &req) {
                Ok(cv) => {
                    let gib = crate::libstorage::types::gib_ceil(cv.size_bytes);
                    assert!(cv.size_bytes > 0 && cv.size_bytes == gib << 30);
                    assert_eq!(gib, req.size.filter(|n| *n > 0).unwrap_or(1) as u64);
                    assert_eq!(cv.name, req.name);
                    assert_eq!(cv.service, "svc");
                    assert!(cv
                        .labels
                        .keys()
                        .eq(req.opts.iter().flatten().map(|(k, _)| k)));
                }
                Err(e) => {
                    assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
                    assert!(req
                        .size
                        .is_some_and(|n| n < 0 || (n as u64) > u64::MAX >> 30));
                }
            }
        }
        1 => drop(check::<VolumeAttachRequest>(body)),
        2 => drop(check::<VolumeDetachRequest>(body)),
        3 => drop(check::<VolumeCopyRequest>(body)),
        4 => drop(check::<VolumeSnapshotRequest>(body)),
        _ => drop(check::<SnapshotCopyRequest>(body)),
    }
}

/// Whether validating `cfg` could read files (TLS certificates, JWT key files): skipped, so
/// the fuzzer never reads `/dev/zero` or the like.
fn reads_files(cfg: &Config) -> bool {
    let path_like = |k: &str| ["/", "./", "../", "~"].iter().any(|p| k.starts_with(p));
    let auths = cfg.libstorage.auth.iter().chain(
        cfg.libstorage
            .services
            .values()
            .filter_map(|s| s.auth.as_ref()),
    );
    cfg.libstorage.tls.is_some()
        || auths.into_iter().any(|a| {
            a.key
                .as_deref()
                .is_some_and(|k| path_like(k) || std::path::Path::new(k).exists())
        })
}

/// The config file: TOML, then validation. Properties: errors are one line (Polly prints
/// them as the one line it exits with); a parsed config written back as TOML parses to the
/// same TOML (a fixed point), and validates the same way.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::from_toml(text) {
        Ok(c) => c,
        Err(e) => {
            assert!(!e.message.contains('\n'), "multi-line parse error {e:?}");
            return;
        }
    };
    let out = toml::to_string(&cfg).expect("a parsed config serializes as TOML");
    let back = Config::from_toml(&out).unwrap_or_else(|e| panic!("own TOML refused: {e}\n{out}"));
    assert_eq!(
        toml::to_string(&back).expect("serializes"),
        out,
        "TOML round trip"
    );
    if reads_files(&cfg) {
        return;
    }
    let first = cfg.validate().map_err(|e| e.to_string());
    if let Err(e) = &first {
        assert!(!e.contains('\n'), "multi-line config error {e:?}");
    }
    let second = back.validate().map_err(|e| e.to_string());
    assert_eq!(first.is_ok(), second.is_ok(), "{first:?} vs {second:?}");
}

/// A Marathon app or group definition, as `polly marathon check` reads it. Properties: every
/// resolved app id is absolute and normalized (no empty, `.` or `..` segment) and resolving it
/// again changes nothing; the definition written back as JSON parses to the same definition;
/// the check against an empty Polly runs (it is pure) and names only the definition's apps.
pub fn marathon(data: &[u8]) {
    use crate::marathon::{check, parse, Cluster, Definition, Options};
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(def) = parse(text) else {
        return;
    };
    let apps = def.apps();
    for a in &apps {
        assert!(a.id.starts_with('/'), "{:?}", a.id);
        if a.id != "/" {
            assert!(
                a.id[1..]
                    .split('/')
                    .all(|p| !p.is_empty() && p != "." && p != ".."),
                "{:?}",
                a.id
            );
        }
        let mut again = a.clone();
        again.id = a.id.clone();
        assert_eq!(
            Definition::App(again).apps()[0].id,
            a.id,
            "resolve is idempotent"
        );
    }
    let json = match &def {
        Definition::App(a) => serde_json::to_string(a),
        Definition::Group(g) => serde_json::to_string(g),
    }
    .expect("serializes");
    let back = parse(&json).unwrap_or_else(|e| panic!("own JSON refused: {e}\n{json}"));
    assert_eq!(back, def, "JSON round trip of {json}");
    let cluster = Cluster {
        services: vec![],
        volumes: vec![],
    };
    let report = check(&def, &cluster, &Options::default());
    let ids: std::collections::BTreeSet<&str> = apps.iter().map(|a| a.id.as_str()).collect();
    assert!(report.apps.iter().all(|a| ids.contains(a.as_str())));
}
