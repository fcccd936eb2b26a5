//! Decode throughput of an OFFERS event with 1,000 disk offers, as the scheduler client
//! reads it: RecordIO deframing plus JSON or protobuf decoding. Reported as bytes/s and as
//! events/s.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use polly::mesos::client::decode_event;
use polly::mesos::client::MesosContentType;
use polly::mesos::recordio::{self, Decoder};
use polly::mesos::v1::scheduler::Event;
use prost::Message;
use serde_json::json;

fn offers_event(n: usize) -> serde_json::Value {
    let offers: Vec<_> = (0..n)
        .map(|i| {
            json!({
              "id": {"value": format!("3d0c-O{i}")}, "framework_id": {"value": "3d0c-0001"},
              "agent_id": {"value": format!("3d0c-S{}", i % 50)},
              "hostname": format!("storage-node-{}", i % 50),
              "allocation_info": {"role": "storage"},
              "domain": {"fault_domain": {"region": {"name": "eu-1"},
                         "zone": {"name": if i % 2 == 0 { "eu-1a" } else { "eu-1b" }}}},
              "attributes": [{"name": "rack", "type": "TEXT", "text": {"value": "r12"}}],
              "resources": [
                {"name": "disk", "type": "SCALAR", "scalar": {"value": 102400},
                 "provider_id": {"value": "rp-7f2e"}, "allocation_info": {"role": "storage"},
                 "reservations": [{"type": "DYNAMIC", "role": "storage", "principal": "storage-svc"}],
                 "disk": {"source": {"type": "RAW", "vendor": "org.example.csi", "profile": "fast"}}},
                {"name": "disk", "type": "SCALAR", "scalar": {"value": 20480},
                 "provider_id": {"value": "rp-7f2e"}, "allocation_info": {"role": "storage"},
                 "reservations": [{"type": "DYNAMIC", "role": "storage", "principal": "storage-svc"}],
                 "disk": {"source": {"type": "MOUNT", "vendor": "org.example.csi",
                          "id": format!("vol-{i:04}"), "profile": "fast",
                          "mount": {"root": format!("/mnt/vol-{i:04}")},
                          "metadata": {"labels": [{"key": "fs", "value": "xfs"}]}}}}]
            })
        })
        .collect();
    json!({"type": "OFFERS", "offers": {"offers": offers}})
}

fn decode_framed(ct: MesosContentType, framed: &[u8]) -> Event {
    let mut d = Decoder::new(1 << 30);
    d.push(framed);
    let rec = d.next_record().unwrap().unwrap();
    decode_event(ct, &rec).unwrap()
}

fn bench(c: &mut Criterion) {
    let event: Event = polly::mesos::json::from_value(&offers_event(1000)).unwrap();
    let json_record = polly::mesos::json::to_json(&event).unwrap();
    let json_wire = recordio::encode(&json_record);
    let proto_wire = recordio::encode(&event.encode_to_vec());
    // One group, so the figures sit side by side; each entry's throughput is its own wire size.
    let mut g = c.benchmark_group("mesos_decode");
    for (name, ct, wire) in [
        ("json", MesosContentType::Json, &json_wire),
        ("protobuf", MesosContentType::Protobuf, &proto_wire),
    ] {
        assert_eq!(decode_framed(ct, wire).offers.unwrap().offers.len(), 1000);
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(name, |b| b.iter(|| decode_framed(ct, black_box(wire))));
    }
    // Baseline: parsing the same JSON record into an untyped serde_json::Value, the least any
    // JSON decoder must do.
    g.throughput(Throughput::Bytes(json_record.len() as u64));
    g.bench_function("baseline_json_value_parse", |b| {
        b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&json_record)).unwrap())
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench
}
criterion_main!(benches);
