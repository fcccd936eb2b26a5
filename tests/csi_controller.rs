//! CSI Identity and Controller on the real `polly serve`, driven through the generated tonic
//! client on its unix socket: every call repeated 10 times gives the same answer, each
//! error code the CSI specification names, paging, snapshots, clones, expansion, zones as
//! topology, capacity from the poller, CSI and the libStorage façade on one store, the
//! socket's life (stale and live sockets, not ready yet) and the bad-input matrix.

mod harness;

use std::collections::HashMap;
use std::time::Duration;

use harness::csi::{create_req, mount, rwo, CsiClients};
use harness::{ls_headers, refs, Polly};
use polly::admin::ReportBody;
use polly::csi::v1::controller_service_capability::rpc::Type as Rpc;
use polly::csi::v1::volume_capability::access_mode::Mode;
use polly::csi::v1::volume_content_source::{SnapshotSource, Type as Src, VolumeSource};
use polly::csi::v1::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Code, Status};

const MIB: i64 = 1 << 20;

/// Ten calls of `client.method(request)` (the request expression is evaluated for each):
/// each succeeds with the same answer, which is the macro's value.
macro_rules! ten {
    ($client:expr, $method:ident, $req:expr) => {{
        let mut first = None;
        for i in 0..10 {
            let got = $client.clone().$method($req).await.unwrap().into_inner();
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(&got, f, "call {i} answered differently"),
            }
        }
        first.unwrap()
    }};
}

/// The code of a call's failure (panics on success).
fn code<T: std::fmt::Debug>(r: Result<tonic::Response<T>, tonic::Status>) -> (Code, String) {
    match r {
        Ok(ok) => panic!("expected a failure, got {:?}", ok.into_inner()),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

fn assert_code<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    want: Code,
) -> String {
    let (c, m) = code(r);
    assert_eq!(c, want, "message: {m}");
    m
}

async fn report(p: &Polly, node: &str, zone: Option<&str>) {
    p.client()
        .report(&ReportBody {
            instance_id: node.to_string(),
            hostname: Some(node.to_string()),
            zone: zone.map(str::to_string),
            fields: Default::default(),
        })
        .await
        .unwrap();
}

async fn create(c: &mut CsiClients, name: &str, size: i64, params: &[(&str, &str)]) -> Volume {
    c.controller
        .create_volume(create_req(name, size, rwo(), params))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap()
}

fn publish_req(id: &str, node: &str, cap: VolumeCapability) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: id.to_string(),
        node_id: node.to_string(),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

/// The mount source a publish context carries.
fn source(ctx: &HashMap<String, String>) -> serde_json::Value {
    serde_json::from_str(&ctx[polly::csi::PUBLISH_SOURCE_KEY]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_names_polly_and_advertises_what_it_serves() {
    let p = Polly::start_services(&["vfs"], "");
    assert!(p.csi.starts_with("unix://"), "{}", p.csi);
    let c = p.csi().await;
    let info = ten!(c.identity, get_plugin_info, GetPluginInfoRequest {});
    assert_eq!(info.name, "csi.polly.io");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let caps = ten!(
        c.identity,
        get_plugin_capabilities,
        GetPluginCapabilitiesRequest {}
    );
    use plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};
    let svc = |t: service::Type| PluginCapability {
        r#type: Some(Type::Service(Service { r#type: t as i32 })),
    };
    assert_eq!(
        caps.capabilities,
        vec![
            svc(service::Type::ControllerService),
            svc(service::Type::VolumeAccessibilityConstraints),
            PluginCapability {
                r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                    r#type: volume_expansion::Type::Online as i32
                }))
            },
        ]
    );
    let probe = ten!(c.identity, probe, ProbeRequest {});
    assert_eq!(probe.ready, Some(true));
    let caps = ten!(
        c.controller,
        controller_get_capabilities,
        ControllerGetCapabilitiesRequest {}
    );
    let rpcs: Vec<Rpc> = caps
        .capabilities
        .iter()
        .map(|c| match c.r#type {
            Some(controller_service_capability::Type::Rpc(r)) => Rpc::try_from(r.r#type).unwrap(),
            None => panic!("empty capability"),
        })
        .collect();
    assert_eq!(
        rpcs,
        [
            Rpc::CreateDeleteVolume,
            Rpc::PublishUnpublishVolume,
            Rpc::ListVolumes,
            Rpc::GetCapacity,
            Rpc::CreateDeleteSnapshot,
            Rpc::ListSnapshots,
            Rpc::CloneVolume,
            Rpc::ExpandVolume,
            Rpc::ListVolumesPublishedNodes,
            Rpc::GetVolume,
            Rpc::SingleNodeMultiWriter,
        ]
    );
    // Not advertised, not served: UNIMPLEMENTED (here, the Node service of `polly node`).
    let mut node = node_client::NodeClient::new(c.channel.clone());
    assert_code(
        node.node_get_info(NodeGetInfoRequest {}).await,
        Code::Unimplemented,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_is_idempotent_and_refuses_what_it_cannot_serve() {
    let p = Polly::start_config(
        "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\nquota_bytes = 1073741824\n\
         [[services]]\nname = \"other\"\ndriver = \"vfs\"\n",
    );
    let mut c = p.csi().await;
    let req = create_req(
        "pvc-1",
        64 * MIB,
        rwo(),
        &[
            ("service", "vfs"),
            ("labels.team", "a"),
            ("label.tier", "gold"),
        ],
    );
    let resp = ten!(c.controller, create_volume, req.clone());
    let v = resp.volume.unwrap();
    assert!(v.volume_id.starts_with("pv-"), "{v:?}");
    assert_eq!(v.capacity_bytes, 64 * MIB);
    assert_eq!(v.volume_context["service"], "vfs");
    assert_eq!(v.volume_context["name"], "pvc-1");
    assert!(v.accessible_topology.is_empty());

    // The same volume, through `polly volume ls`, labelled.
    let ls = p.cli_json(&["volume", "ls"]);
    let listed = ls
        .as_array()
        .or_else(|| ls["volumes"].as_array())
        .unwrap()
        .iter()
        .find(|x| x["id"] == v.volume_id.as_str())
        .unwrap_or_else(|| panic!("{} not in {ls}", v.volume_id))
        .clone();
    assert_eq!(listed["name"], "pvc-1");
    assert_eq!(listed["labels"]["team"], "a");
    assert_eq!(listed["labels"]["tier"], "gold");

    // A range the existing size fits is the same volume.
    let mut fits = req.clone();
    fits.capacity_range = Some(CapacityRange {
        required_bytes: MIB,
        limit_bytes: 128 * MIB,
    });
    let again = c.controller.create_volume(fits).await.unwrap().into_inner();
    assert_eq!(again.volume.unwrap().volume_id, v.volume_id);
    // Incompatible: another size, another access mode, another label.
    let bigger = create_req("pvc-1", 65 * MIB, rwo(), &[("service", "vfs")]);
    let m = assert_code(
        c.controller.create_volume(bigger).await,
        Code::AlreadyExists,
    );
    assert!(m.contains("pvc-1"), "{m}");
    let shared = create_req(
        "pvc-1",
        64 * MIB,
        mount(Mode::MultiNodeMultiWriter, ""),
        &[("service", "vfs")],
    );
    assert_code(
        c.controller.create_volume(shared).await,
        Code::AlreadyExists,
    );
    let relabelled = create_req(
        "pvc-1",
        64 * MIB,
        rwo(),
        &[("service", "vfs"), ("labels.team", "b")],
    );
    assert_code(
        c.controller.create_volume(relabelled).await,
        Code::AlreadyExists,
    );

    // No range: 1 GiB. Past the service's quota: RESOURCE_EXHAUSTED.
    let d = create(&mut c, "pvc-default", 0, &[("service", "other")]).await;
    assert_eq!(d.capacity_bytes, 1 << 30);
    let huge = create_req("pvc-huge", 2 << 30, rwo(), &[("service", "vfs")]);
    assert_code(
        c.controller.create_volume(huge).await,
        Code::ResourceExhausted,
    );
    // Larger than Polly's largest volume: OUT_OF_RANGE.
    let past = create_req("pvc-past", 1 << 51, rwo(), &[("service", "vfs")]);
    assert_code(c.controller.create_volume(past).await, Code::OutOfRange);

    // INVALID_ARGUMENT: missing and unsupported fields.
    let base = || create_req("pvc-x", MIB, rwo(), &[("service", "vfs")]);
    let mut cases: Vec<(&str, CreateVolumeRequest)> = Vec::new();
    cases.push((
        "no name",
        CreateVolumeRequest {
            name: String::new(),
            ..base()
        },
    ));
    cases.push((
        "no capabilities",
        CreateVolumeRequest {
            volume_capabilities: vec![],
            ..base()
        },
    ));
    let block = VolumeCapability {
        access_type: Some(volume_capability::AccessType::Block(Default::default())),
        ..rwo()
    };
    cases.push((
        "block",
        CreateVolumeRequest {
            volume_capabilities: vec![block],
            ..base()
        },
    ));
    cases.push((
        "no access mode",
        CreateVolumeRequest {
            volume_capabilities: vec![VolumeCapability {
                access_mode: None,
                ..rwo()
            }],
            ..base()
        },
    ));
    cases.push((
        "multi-node single writer",
        CreateVolumeRequest {
            volume_capabilities: vec![mount(Mode::MultiNodeSingleWriter, "")],
            ..base()
        },
    ));
    cases.push((
        "fsType on vfs",
        create_req(
            "pvc-x",
            MIB,
            rwo(),
            &[("service", "vfs"), ("fsType", "ext4")],
        ),
    ));
    cases.push((
        "capability fs on vfs",
        create_req(
            "pvc-x",
            MIB,
            mount(Mode::SingleNodeWriter, "ext4"),
            &[("service", "vfs")],
        ),
    ));
    cases.push((
        "unknown parameter",
        create_req(
            "pvc-x",
            MIB,
            rwo(),
            &[("service", "vfs"), ("colour", "red")],
        ),
    ));
    cases.push((
        "unknown service",
        create_req("pvc-x", MIB, rwo(), &[("service", "nope")]),
    ));
    cases.push(("service needed", create_req("pvc-x", MIB, rwo(), &[])));
    cases.push((
        "bad name",
        create_req("pvc x/..", MIB, rwo(), &[("service", "vfs")]),
    ));
    cases.push((
        "name too long",
        create_req(&"n".repeat(129), MIB, rwo(), &[("service", "vfs")]),
    ));
    cases.push((
        "negative size",
        CreateVolumeRequest {
            capacity_range: Some(CapacityRange {
                required_bytes: -1,
                limit_bytes: 0,
            }),
            ..base()
        },
    ));
    cases.push((
        "required over limit",
        CreateVolumeRequest {
            capacity_range: Some(CapacityRange {
                required_bytes: 10,
                limit_bytes: 5,
            }),
            ..base()
        },
    ));
    cases.push((
        "mutable parameters",
        CreateVolumeRequest {
            mutable_parameters: HashMap::from([("a".into(), "b".into())]),
            ..base()
        },
    ));
    for (what, r) in cases {
        let (got, m) = code(c.controller.create_volume(r).await);
        assert_eq!(got, Code::InvalidArgument, "{what}: {m}");
    }
    // None of the refusals created anything.
    let names: Vec<String> = p
        .volumes()
        .await
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebs_sizes_come_in_gib_and_a_limit_below_is_out_of_range() {
    let p = Polly::start_config(
        "[[services]]\nname = \"ebs\"\ndriver = \"ebs\"\n[services.ebs]\nzones = [\"us-east-1a\"]\n\
         poll_interval_ms = 10\n[services.ebs.fake_cloud]\nzones = [\"us-east-1a\"]\n",
    );
    let mut c = p.csi().await;
    let mut r = create_req("e1", MIB, rwo(), &[]);
    r.capacity_range = Some(CapacityRange {
        required_bytes: MIB,
        limit_bytes: 100 * MIB,
    });
    assert_code(
        c.controller.create_volume(r.clone()).await,
        Code::OutOfRange,
    );
    r.capacity_range = Some(CapacityRange {
        required_bytes: MIB,
        limit_bytes: 0,
    });
    let v = ten!(c.controller, create_volume, r.clone());
    let v = v.volume.unwrap();
    assert_eq!(v.capacity_bytes, 1 << 30);
    assert_eq!(v.accessible_topology.len(), 1);
    assert_eq!(
        v.accessible_topology[0].segments["topology.polly.io/zone"],
        "us-east-1a"
    );
    // fsType: ebs volumes are formatted ext4 by the node, nothing else.
    let xfs = create_req("e2", MIB, rwo(), &[("fsType", "xfs")]);
    assert_code(c.controller.create_volume(xfs).await, Code::InvalidArgument);
    let grown = ten!(
        c.controller,
        controller_expand_volume,
        ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: (1 << 30) + 1,
                limit_bytes: 0,
            }),
            ..Default::default()
        }
    );
    assert_eq!(grown.capacity_bytes, 2 << 30);
    assert!(grown.node_expansion_required);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_is_idempotent_and_refused_while_published() {
    let p = Polly::start_services(&["vfs"], "");
    report(&p, "node-a", None).await;
    let mut c = p.csi().await;
    let v = create(&mut c, "gone", MIB, &[]).await;
    c.controller
        .controller_publish_volume(publish_req(&v.volume_id, "node-a", rwo()))
        .await
        .unwrap();
    let del = DeleteVolumeRequest {
        volume_id: v.volume_id.clone(),
        ..Default::default()
    };
    let m = assert_code(
        c.controller.delete_volume(del.clone()).await,
        Code::FailedPrecondition,
    );
    assert!(m.contains("node-a"), "{m}");
    c.controller
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            node_id: "node-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    ten!(c.controller, delete_volume, del.clone());
    assert!(p.volumes().await.is_empty());
    // Unknown ids are deleted already.
    for id in ["pv-00000000000000000000000000000000", "not-a-polly-id"] {
        c.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert_code(
        c.controller
            .delete_volume(DeleteVolumeRequest::default())
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_and_unpublish_follow_the_single_writer_rule() {
    let p = Polly::start_services(&["vfs"], "");
    report(&p, "node-a", None).await;
    report(&p, "node-b", None).await;
    let mut c = p.csi().await;
    let v = create(&mut c, "data", MIB, &[]).await;
    let id = v.volume_id.clone();

    let published = ten!(
        c.controller,
        controller_publish_volume,
        publish_req(&id, "node-a", rwo())
    );
    let src = source(&published.publish_context);
    assert_eq!(src["kind"], "directory", "{src}");
    assert!(std::path::Path::new(src["path"].as_str().unwrap()).is_dir());

    // Single writer: another node is refused, naming the holder.
    let m = assert_code(
        c.controller
            .controller_publish_volume(publish_req(&id, "node-b", rwo()))
            .await,
        Code::FailedPrecondition,
    );
    assert!(m.contains("node-a"), "{m}");
    // Published to node-a with a capability the volume cannot serve: ALREADY_EXISTS.
    assert_code(
        c.controller
            .controller_publish_volume(publish_req(
                &id,
                "node-a",
                mount(Mode::MultiNodeMultiWriter, ""),
            ))
            .await,
        Code::AlreadyExists,
    );
    // Unknown volume or node: NOT_FOUND; missing fields, readonly: INVALID_ARGUMENT.
    assert_code(
        c.controller
            .controller_publish_volume(publish_req(
                "pv-00000000000000000000000000000000",
                "node-a",
                rwo(),
            ))
            .await,
        Code::NotFound,
    );
    let m = assert_code(
        c.controller
            .controller_publish_volume(publish_req(&id, "node-nobody", rwo()))
            .await,
        Code::NotFound,
    );
    assert!(m.contains("node-nobody"), "{m}");
    for (what, r) in [
        ("no volume id", publish_req("", "node-a", rwo())),
        ("no node id", publish_req(&id, "", rwo())),
        (
            "no capability",
            ControllerPublishVolumeRequest {
                volume_capability: None,
                ..publish_req(&id, "node-a", rwo())
            },
        ),
        (
            "readonly",
            ControllerPublishVolumeRequest {
                readonly: true,
                ..publish_req(&id, "node-a", rwo())
            },
        ),
    ] {
        let (got, m) = code(c.controller.controller_publish_volume(r).await);
        assert_eq!(got, Code::InvalidArgument, "{what}: {m}");
    }

    // Listed and got with the node it is published to.
    let got = ten!(
        c.controller,
        controller_get_volume,
        ControllerGetVolumeRequest {
            volume_id: id.clone()
        }
    );
    assert_eq!(got.status.unwrap().published_node_ids, ["node-a"]);
    assert_code(
        c.controller
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: "pv-00000000000000000000000000000000".into(),
            })
            .await,
        Code::NotFound,
    );

    let unpublish = ControllerUnpublishVolumeRequest {
        volume_id: id.clone(),
        node_id: "node-a".into(),
        ..Default::default()
    };
    ten!(c.controller, controller_unpublish_volume, unpublish.clone());
    // Now node-b gets it.
    c.controller
        .controller_publish_volume(publish_req(&id, "node-b", rwo()))
        .await
        .unwrap();
    // Unknown volume: unpublished already. No volume id: INVALID_ARGUMENT.
    c.controller
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: "pv-00000000000000000000000000000000".into(),
            node_id: "node-a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_code(
        c.controller
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest::default())
            .await,
        Code::InvalidArgument,
    );
    // No node id: unpublished from every node.
    c.controller
        .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
            volume_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(p.volumes().await[0]["attachments"]
        .as_array()
        .unwrap()
        .is_empty());

    // Multi-node volumes publish to both nodes.
    for (name, mode) in [
        ("shared", Mode::MultiNodeMultiWriter),
        ("readers", Mode::MultiNodeReaderOnly),
    ] {
        let v = c
            .controller
            .create_volume(create_req(name, MIB, mount(mode, ""), &[]))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        for node in ["node-a", "node-b"] {
            c.controller
                .controller_publish_volume(publish_req(&v.volume_id, node, mount(mode, "")))
                .await
                .unwrap();
        }
        let got = c
            .controller
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: v.volume_id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        let mut nodes = got.status.unwrap().published_node_ids;
        nodes.sort();
        assert_eq!(nodes, ["node-a", "node-b"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csi_and_libstorage_share_one_store() {
    let p = Polly::start_services(&["vfs"], "");
    report(&p, "node-a", None).await;
    let mut c = p.csi().await;
    // Published through CSI to node-a: a REX-Ray host "vm" is refused through the façade.
    let v = create(&mut c, "shared-store", MIB, &[]).await;
    c.controller
        .controller_publish_volume(publish_req(&v.volume_id, "node-a", rwo()))
        .await
        .unwrap();
    let hv = ls_headers("vfs", "vm");
    let r = p
        .req(
            "POST",
            &format!("/volumes/vfs/{}?attach", v.volume_id),
            &refs(&hv),
            Some(r#"{"nextDeviceName":"/dev/xvda"}"#),
        )
        .await;
    assert!(
        !r.status.is_success(),
        "façade attached a CSI-published volume: {}",
        r.raw
    );
    assert!(r.raw.contains("node-a"), "{}", r.raw);
    // The façade lists the CSI volume like its own.
    let r = p
        .req("GET", "/volumes/vfs?attachments=1", &refs(&hv), None)
        .await;
    assert!(r.raw.contains("shared-store"), "{}", r.raw);

    // Attached through the façade to "vm": a CSI publish to node-a is FAILED_PRECONDITION.
    let r = p
        .req(
            "POST",
            "/volumes/vfs",
            &refs(&hv),
            Some(r#"{"name":"rexray-vol","size":1}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.raw);
    let rid = r.json["id"].as_str().unwrap().to_string();
    let r = p
        .req(
            "POST",
            &format!("/volumes/vfs/{rid}?attach"),
            &refs(&hv),
            Some(r#"{"nextDeviceName":"/dev/xvda"}"#),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.raw);
    let m = assert_code(
        c.controller
            .controller_publish_volume(publish_req(&rid, "node-a", rwo()))
            .await,
        Code::FailedPrecondition,
    );
    assert!(m.contains("vm"), "{m}");
    // Listed through CSI with the façade's holder.
    let got = c
        .controller
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: rid.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.status.unwrap().published_node_ids, ["vm"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_volumes_pages_without_gaps() {
    let p = Polly::start_services(&["vfs"], "");
    report(&p, "node-a", None).await;
    let mut c = p.csi().await;
    let mut made = Vec::new();
    for i in 0..7 {
        made.push(
            create(&mut c, &format!("page-{i}"), MIB, &[])
                .await
                .volume_id,
        );
    }
    let held = made[3].clone();
    c.controller
        .controller_publish_volume(publish_req(&held, "node-a", rwo()))
        .await
        .unwrap();
    made.sort();
    let all = ten!(c.controller, list_volumes, ListVolumesRequest::default());
    assert_eq!(all.entries.len(), 7);
    assert!(all.next_token.is_empty());
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let req = ListVolumesRequest {
            max_entries: 3,
            starting_token: token.clone(),
        };
        let page = ten!(c.controller, list_volumes, req.clone());
        pages += 1;
        assert!(page.entries.len() <= 3);
        for e in &page.entries {
            let v = e.volume.as_ref().unwrap();
            let nodes = &e.status.as_ref().unwrap().published_node_ids;
            if v.volume_id == held {
                assert_eq!(nodes, &["node-a"]);
            } else {
                assert!(nodes.is_empty());
            }
            seen.push(v.volume_id.clone());
        }
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, made);
    assert_code(
        c.controller
            .list_volumes(ListVolumesRequest {
                max_entries: 0,
                starting_token: "invalid-token".into(),
            })
            .await,
        Code::Aborted,
    );
    assert_code(
        c.controller
            .list_volumes(ListVolumesRequest {
                max_entries: -1,
                starting_token: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_clones_and_their_paging() {
    let p = Polly::start_services(&["vfs"], "");
    report(&p, "node-a", None).await;
    let mut c = p.csi().await;
    let v = create(&mut c, "origin", 4 * MIB, &[]).await;
    let pubd = c
        .controller
        .controller_publish_volume(publish_req(&v.volume_id, "node-a", rwo()))
        .await
        .unwrap()
        .into_inner();
    let dir = std::path::PathBuf::from(source(&pubd.publish_context)["path"].as_str().unwrap());
    std::fs::write(dir.join("hello.txt"), "hello polly").unwrap();

    let snap_req = CreateSnapshotRequest {
        source_volume_id: v.volume_id.clone(),
        name: "snap-1".into(),
        ..Default::default()
    };
    let snap = ten!(c.controller, create_snapshot, snap_req.clone())
        .snapshot
        .unwrap();
    assert!(snap.snapshot_id.starts_with("vfs:"), "{snap:?}");
    assert_eq!(snap.source_volume_id, v.volume_id);
    assert_eq!(snap.size_bytes, 4 * MIB);
    assert!(snap.ready_to_use && snap.creation_time.is_some());
    // The name taken by a snapshot of another volume: ALREADY_EXISTS.
    let other = create(&mut c, "other", MIB, &[]).await;
    assert_code(
        c.controller
            .create_snapshot(CreateSnapshotRequest {
                source_volume_id: other.volume_id.clone(),
                ..snap_req.clone()
            })
            .await,
        Code::AlreadyExists,
    );
    assert_code(
        c.controller
            .create_snapshot(CreateSnapshotRequest {
                source_volume_id: "pv-00000000000000000000000000000000".into(),
                name: "snap-x".into(),
                ..Default::default()
            })
            .await,
        Code::NotFound,
    );
    for r in [
        CreateSnapshotRequest {
            name: String::new(),
            ..snap_req.clone()
        },
        CreateSnapshotRequest {
            source_volume_id: String::new(),
            ..snap_req.clone()
        },
    ] {
        assert_code(c.controller.create_snapshot(r).await, Code::InvalidArgument);
    }

    // From the snapshot, and a clone of the volume: both hold the data.
    let from_snap = CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(Src::Snapshot(SnapshotSource {
                snapshot_id: snap.snapshot_id.clone(),
            })),
        }),
        ..create_req("restored", 0, rwo(), &[])
    };
    let restored = ten!(c.controller, create_volume, from_snap.clone())
        .volume
        .unwrap();
    assert_eq!(
        restored.capacity_bytes,
        4 * MIB,
        "a copy starts at its source's size"
    );
    assert_eq!(restored.content_source, from_snap.volume_content_source);
    let clone_req = CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(Src::Volume(VolumeSource {
                volume_id: v.volume_id.clone(),
            })),
        }),
        ..create_req("cloned", 8 * MIB, rwo(), &[])
    };
    let cloned = ten!(c.controller, create_volume, clone_req.clone())
        .volume
        .unwrap();
    assert_eq!(cloned.capacity_bytes, 8 * MIB);
    for made in [&restored, &cloned] {
        let pubd = c
            .controller
            .controller_publish_volume(publish_req(&made.volume_id, "node-a", rwo()))
            .await
            .unwrap()
            .into_inner();
        let dir = std::path::PathBuf::from(source(&pubd.publish_context)["path"].as_str().unwrap());
        assert_eq!(
            std::fs::read_to_string(dir.join("hello.txt")).unwrap(),
            "hello polly"
        );
    }
    // Missing sources: NOT_FOUND; smaller than the source: OUT_OF_RANGE.
    for (what, src) in [
        (
            "snapshot",
            Src::Snapshot(SnapshotSource {
                snapshot_id: "vfs:nope".into(),
            }),
        ),
        (
            "snapshot id",
            Src::Snapshot(SnapshotSource {
                snapshot_id: "garbage".into(),
            }),
        ),
        (
            "volume",
            Src::Volume(VolumeSource {
                volume_id: "pv-00000000000000000000000000000000".into(),
            }),
        ),
    ] {
        let r = CreateVolumeRequest {
            volume_content_source: Some(VolumeContentSource { r#type: Some(src) }),
            ..create_req("from-nothing", 0, rwo(), &[])
        };
        let (got, m) = code(c.controller.create_volume(r).await);
        assert_eq!(got, Code::NotFound, "{what}: {m}");
    }
    let small = CreateVolumeRequest {
        capacity_range: Some(CapacityRange {
            required_bytes: MIB,
            limit_bytes: 2 * MIB,
        }),
        ..clone_req.clone()
    };
    let small = CreateVolumeRequest {
        name: "small".into(),
        ..small
    };
    assert_code(c.controller.create_volume(small).await, Code::OutOfRange);

    // Paging: five snapshots in all, two a page.
    for i in 2..=5 {
        c.controller
            .create_snapshot(CreateSnapshotRequest {
                source_volume_id: other.volume_id.clone(),
                name: format!("snap-{i}"),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let req = ListSnapshotsRequest {
            max_entries: 2,
            starting_token: token.clone(),
            ..Default::default()
        };
        let page = ten!(c.controller, list_snapshots, req.clone());
        assert!(page.entries.len() <= 2);
        seen.extend(
            page.entries
                .into_iter()
                .map(|e| e.snapshot.unwrap().snapshot_id),
        );
        if page.next_token.is_empty() {
            break;
        }
        token = page.next_token;
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), sorted), (5, seen.clone()));
    let by_id = c
        .controller
        .list_snapshots(ListSnapshotsRequest {
            snapshot_id: snap.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_id.entries.len(), 1);
    let by_source = c
        .controller
        .list_snapshots(ListSnapshotsRequest {
            source_volume_id: other.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_source.entries.len(), 4);
    let none = c
        .controller
        .list_snapshots(ListSnapshotsRequest {
            snapshot_id: "vfs:nope".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(none.entries.is_empty());
    assert_code(
        c.controller
            .list_snapshots(ListSnapshotsRequest {
                starting_token: "invalid-token".into(),
                ..Default::default()
            })
            .await,
        Code::Aborted,
    );

    // Deleting is idempotent; unknown ids are deleted already.
    let del = DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    };
    ten!(c.controller, delete_snapshot, del.clone());
    for id in ["vfs:nope", "garbage", "nosuchservice:x"] {
        c.controller
            .delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: id.into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    assert_code(
        c.controller
            .delete_snapshot(DeleteSnapshotRequest::default())
            .await,
        Code::InvalidArgument,
    );
    let left = c
        .controller
        .list_snapshots(ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(left.entries.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expansion_grows_once_and_never_shrinks() {
    let p = Polly::start_config(
        "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\nquota_bytes = 104857600\n",
    );
    let mut c = p.csi().await;
    let v = create(&mut c, "growing", 10 * MIB, &[]).await;
    let grow = |required: i64, limit: i64| ControllerExpandVolumeRequest {
        volume_id: v.volume_id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }),
        ..Default::default()
    };
    let r = ten!(c.controller, controller_expand_volume, grow(20 * MIB, 0));
    assert_eq!(r.capacity_bytes, 20 * MIB);
    assert!(!r.node_expansion_required, "vfs volumes are directories");
    assert_eq!(p.volumes().await[0]["size_bytes"], 20 * MIB);
    // Smaller than it is: already done.
    let r = c
        .controller
        .controller_expand_volume(grow(5 * MIB, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 20 * MIB);
    assert_code(
        c.controller
            .controller_expand_volume(grow(200 * MIB, 0))
            .await,
        Code::ResourceExhausted,
    );
    assert_code(
        c.controller
            .controller_expand_volume(grow(1 << 51, 0))
            .await,
        Code::OutOfRange,
    );
    assert_code(
        c.controller
            .controller_expand_volume(grow(30 * MIB, 10 * MIB))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.controller
            .controller_expand_volume(ControllerExpandVolumeRequest {
                capacity_range: None,
                ..grow(0, 0)
            })
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.controller
            .controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: "pv-00000000000000000000000000000000".into(),
                ..grow(30 * MIB, 0)
            })
            .await,
        Code::NotFound,
    );
    assert_eq!(p.volumes().await[0]["size_bytes"], 20 * MIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_are_topology_and_capacity_comes_from_the_poller() {
    let p = Polly::start_config(
        "[[services]]\nname = \"east\"\ndriver = \"vfs\"\nzone = \"a\"\nquota_bytes = 104857600\n\
         [[services]]\nname = \"west\"\ndriver = \"vfs\"\nzone = \"b\"\nquota_bytes = 52428800\n\
         [offers]\npoll_interval_secs = 0.2\n",
    );
    report(&p, "node-a", Some("a")).await;
    report(&p, "node-b", Some("b")).await;
    let mut c = p.csi().await;
    let zone = |z: &str| Topology {
        segments: HashMap::from([("topology.polly.io/zone".to_string(), z.to_string())]),
    };
    let with = |name: &str, service: &str, requisite: Vec<Topology>, preferred: Vec<Topology>| {
        CreateVolumeRequest {
            accessibility_requirements: Some(TopologyRequirement {
                requisite,
                preferred,
            }),
            ..create_req(name, 10 * MIB, rwo(), &[("service", service)])
        }
    };
    let v = ten!(
        c.controller,
        create_volume,
        with(
            "in-a",
            "east",
            vec![zone("a"), zone("b")],
            vec![zone("b"), zone("a")]
        )
    )
    .volume
    .unwrap();
    assert_eq!(v.accessible_topology, vec![zone("a")]);
    // east serves only zone a.
    assert_code(
        c.controller
            .create_volume(with("in-b", "east", vec![zone("b")], vec![]))
            .await,
        Code::ResourceExhausted,
    );
    // The existing volume asked for in another zone: ALREADY_EXISTS.
    let mut elsewhere = with("in-a", "east", vec![zone("b")], vec![]);
    elsewhere
        .accessibility_requirements
        .as_mut()
        .unwrap()
        .requisite = vec![zone("c")];
    assert_code(
        c.controller.create_volume(elsewhere).await,
        Code::AlreadyExists,
    );
    let other_key = Topology {
        segments: HashMap::from([("kubernetes.io/hostname".to_string(), "h".to_string())]),
    };
    assert_code(
        c.controller
            .create_volume(with("in-x", "east", vec![other_key], vec![]))
            .await,
        Code::InvalidArgument,
    );
    // Published only in its zone.
    let m = assert_code(
        c.controller
            .controller_publish_volume(publish_req(&v.volume_id, "node-b", rwo()))
            .await,
        Code::FailedPrecondition,
    );
    assert!(m.contains("zone"), "{m}");
    c.controller
        .controller_publish_volume(publish_req(&v.volume_id, "node-a", rwo()))
        .await
        .unwrap();

    // Capacity per service and zone, from the poller: east has 100 MiB less the 10 MiB volume.
    let cap = |service: &str, z: Option<&str>, extra: &[(&str, &str)]| {
        let mut parameters: HashMap<String, String> = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        parameters.insert("service".into(), service.into());
        GetCapacityRequest {
            volume_capabilities: vec![rwo()],
            parameters,
            accessible_topology: z.map(zone),
        }
    };
    let want = 90 * MIB;
    let mut read = false;
    for _ in 0..600 {
        let r = c
            .controller
            .get_capacity(cap("east", Some("a"), &[]))
            .await
            .unwrap();
        if r.into_inner().available_capacity == want {
            read = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(read, "east's capacity never read {want}");
    let east = ten!(c.controller, get_capacity, cap("east", Some("a"), &[]));
    assert_eq!(east.available_capacity, want);
    assert_eq!(east.maximum_volume_size, Some(want));
    let east_in_b = c
        .controller
        .get_capacity(cap("east", Some("b"), &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(east_in_b.available_capacity, 0);
    let west = c
        .controller
        .get_capacity(cap("west", None, &[]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(west.available_capacity, 50 * MIB);
    let no_pool = c
        .controller
        .get_capacity(cap("west", None, &[("pool", "gold")]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(no_pool.available_capacity, 0);
    let mut block = cap("west", None, &[]);
    block.volume_capabilities[0].access_type =
        Some(volume_capability::AccessType::Block(Default::default()));
    assert_eq!(
        c.controller
            .get_capacity(block)
            .await
            .unwrap()
            .into_inner()
            .available_capacity,
        0
    );
    assert_code(
        c.controller.get_capacity(cap("nope", None, &[])).await,
        Code::InvalidArgument,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_volumes_carry_their_file_system() {
    if let Err(why) = polly::driver::r#loop::host_supports_loop() {
        assert!(
            std::env::var_os("CI").is_none(),
            "loop volumes need root and loop devices under CI: {why}"
        );
        eprintln!("skipped: loop volumes need root and loop devices ({why})");
        return;
    }
    let p = Polly::start_config("[[services]]\nname = \"loop\"\ndriver = \"loop\"\n");
    report(&p, "node-a", None).await;
    let mut c = p.csi().await;
    let req = create_req("fs3", 32 * MIB, mount(Mode::SingleNodeWriter, "ext3"), &[]);
    let v = ten!(c.controller, create_volume, req.clone())
        .volume
        .unwrap();
    let pubd = ten!(
        c.controller,
        controller_publish_volume,
        publish_req(&v.volume_id, "node-a", rwo())
    );
    let src = source(&pubd.publish_context);
    assert_eq!(
        (src["kind"].as_str(), src["filesystem"].as_str()),
        (Some("image"), Some("ext3")),
        "{src}"
    );
    let image = std::path::PathBuf::from(src["path"].as_str().unwrap());
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 32 << 20);
    // fsType parameter and capability agree, or the request is refused.
    let clash = create_req(
        "fs-clash",
        32 * MIB,
        mount(Mode::SingleNodeWriter, "ext3"),
        &[("fsType", "ext4")],
    );
    assert_code(
        c.controller.create_volume(clash).await,
        Code::InvalidArgument,
    );
    let xfs = create_req("fs-xfs", 32 * MIB, rwo(), &[("fsType", "xfs")]);
    assert_code(c.controller.create_volume(xfs).await, Code::InvalidArgument);
    let ext2 = create(&mut c, "fs2", 32 * MIB, &[("fsType", "ext2")]).await;
    let pubd = c
        .controller
        .controller_publish_volume(publish_req(&ext2.volume_id, "node-a", rwo()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(source(&pubd.publish_context)["filesystem"], "ext2");
    // Grown online: the image and the record.
    let r = c
        .controller
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: 48 * MIB,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.capacity_bytes, 48 * MIB);
    assert!(
        !r.node_expansion_required,
        "central grows a loop volume's file system"
    );
    assert_eq!(std::fs::metadata(&image).unwrap().len(), 48 << 20);
    // A snapshot and a volume from it.
    let snap = c
        .controller
        .create_snapshot(CreateSnapshotRequest {
            source_volume_id: v.volume_id.clone(),
            name: "fs3-snap".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .snapshot
        .unwrap();
    let restored = CreateVolumeRequest {
        volume_content_source: Some(VolumeContentSource {
            r#type: Some(Src::Snapshot(SnapshotSource {
                snapshot_id: snap.snapshot_id,
            })),
        }),
        ..create_req("fs3-restored", 0, rwo(), &[])
    };
    let restored = c
        .controller
        .create_volume(restored)
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(restored.capacity_bytes, 48 * MIB);
    for id in [&v.volume_id, &ext2.volume_id] {
        c.controller
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: id.clone(),
                node_id: "node-a".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    for id in [&v.volume_id, &ext2.volume_id, &restored.volume_id] {
        c.controller
            .delete_volume(DeleteVolumeRequest {
                volume_id: id.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_volume_capabilities_confirms_only_what_the_volume_serves() {
    let p = Polly::start_services(&["vfs"], "");
    let mut c = p.csi().await;
    let v = create(&mut c, "checked", MIB, &[("labels.team", "a")]).await;
    let req =
        |caps: Vec<VolumeCapability>, params: &[(&str, &str)]| ValidateVolumeCapabilitiesRequest {
            volume_id: v.volume_id.clone(),
            volume_capabilities: caps,
            parameters: params
                .iter()
                .map(|(k, x)| (k.to_string(), x.to_string()))
                .collect(),
            ..Default::default()
        };
    let ok = ten!(
        c.controller,
        validate_volume_capabilities,
        req(
            vec![rwo(), mount(Mode::SingleNodeReaderOnly, "")],
            &[("labels.team", "a")]
        )
    );
    assert_eq!(ok.confirmed.unwrap().volume_capabilities.len(), 2);
    for (what, r) in [
        (
            "multi-node",
            req(vec![mount(Mode::MultiNodeMultiWriter, "")], &[]),
        ),
        (
            "fs type",
            req(vec![mount(Mode::SingleNodeWriter, "ext4")], &[]),
        ),
        ("label", req(vec![rwo()], &[("labels.team", "b")])),
        ("service", req(vec![rwo()], &[("service", "nope")])),
    ] {
        let r = c
            .controller
            .validate_volume_capabilities(r)
            .await
            .unwrap()
            .into_inner();
        assert!(r.confirmed.is_none(), "{what}");
        assert!(!r.message.is_empty(), "{what}");
    }
    assert_code(
        c.controller
            .validate_volume_capabilities(req(vec![], &[]))
            .await,
        Code::InvalidArgument,
    );
    let mut unknown = req(vec![rwo()], &[]);
    unknown.volume_id = "pv-00000000000000000000000000000000".into();
    assert_code(
        c.controller.validate_volume_capabilities(unknown).await,
        Code::NotFound,
    );
}

/// The socket's life: a live socket is refused to a second server, a stale one (SIGKILL) is
/// replaced, SIGTERM removes it, and until start-up reconciliation is done the Controller
/// answers UNAVAILABLE while Identity answers not ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_replaced_when_stale_and_refused_when_live() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let p = Polly::start(&data);
    let sock = data.join("csi.sock");
    assert_eq!(p.csi, format!("unix://{}", sock.display()));
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o660
    );
    // A second server on the same socket (another data dir) stops, naming it.
    let other = dir.path().join("other");
    let out = std::process::Command::new(harness::BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(&other)
        .args([
            "--admin-listen",
            "127.0.0.1:0",
            "--libstorage-listen",
            "127.0.0.1:0",
            "--offers-listen",
            "127.0.0.1:0",
        ])
        .args(["--csi-listen", &p.csi])
        .env_remove("POLLY_CONFIG")
        .env("POLLY_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another process is serving") && err.contains("csi.sock"),
        "{err}"
    );
    // The first still serves.
    let mut c = p.csi().await;
    c.identity.probe(ProbeRequest {}).await.unwrap();
    // SIGKILL leaves the socket file; a restart replaces it and serves.
    let v = create(&mut c, "survivor", MIB, &[]).await;
    drop(c);
    p.kill9();
    assert!(sock.exists());
    let mut p = Polly::start(&data);
    let mut c = p.csi().await;
    let got = c
        .controller
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: v.volume_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.volume.unwrap().volume_id, v.volume_id);
    // SIGTERM: a clean stop removes it.
    drop(c);
    p.sigterm();
    let st = p
        .wait_exit(Duration::from_secs(30))
        .expect("stops on SIGTERM");
    assert!(st.success(), "{st:?}");
    assert!(!sock.exists());
    // Something else at the path is never replaced.
    std::fs::create_dir_all(&other).unwrap();
    let plain = other.join("not-a-socket");
    std::fs::write(&plain, "mine").unwrap();
    let out = std::process::Command::new(harness::BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(&other)
        .args([
            "--admin-listen",
            "127.0.0.1:0",
            "--libstorage-listen",
            "127.0.0.1:0",
            "--offers-listen",
            "127.0.0.1:0",
        ])
        .args(["--csi-listen", &format!("unix://{}", plain.display())])
        .env_remove("POLLY_CONFIG")
        .env("POLLY_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(std::fs::read_to_string(&plain).unwrap(), "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_served_before_start_up_reconciliation_ends() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("polly.toml");
    // Every back-end call takes 3 s, so start-up reconciliation takes a while.
    std::fs::write(
        &config,
        "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n[services.fault]\nlatency_ms = 3000\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(harness::BIN)
        .arg("serve")
        .arg("--data-dir")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .args([
            "--admin-listen",
            "127.0.0.1:0",
            "--libstorage-listen",
            "127.0.0.1:0",
            "--offers-listen",
            "127.0.0.1:0",
        ])
        .args(["--csi-listen", &harness::polly::csi_listen(&data)])
        .env_remove("POLLY_CONFIG")
        .env("POLLY_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let endpoint = loop {
        let l = lines.next().unwrap().unwrap();
        if let Some(e) = l.strip_prefix("polly: CSI on ") {
            break e.parse::<polly::csi::CsiEndpoint>().unwrap();
        }
        assert_ne!(l, "polly: ready", "ready before the CSI line");
    };
    let channel = polly::csi::connect(&endpoint).await.unwrap();
    let mut id = identity_client::IdentityClient::new(channel.clone());
    let mut ctl = controller_client::ControllerClient::new(channel);
    assert_eq!(
        id.probe(ProbeRequest {}).await.unwrap().into_inner().ready,
        Some(false)
    );
    let m = assert_code(
        ctl.list_volumes(ListVolumesRequest::default()).await,
        Code::Unavailable,
    );
    assert!(m.contains("starting"), "{m}");
    assert_code(
        ctl.create_volume(create_req("early", MIB, rwo(), &[]))
            .await,
        Code::Unavailable,
    );
    // Identity answers what it is meanwhile.
    id.get_plugin_info(GetPluginInfoRequest {}).await.unwrap();
    loop {
        if lines.next().unwrap().unwrap() == "polly: ready" {
            break;
        }
    }
    assert_eq!(
        id.probe(ProbeRequest {}).await.unwrap().into_inner().ready,
        Some(true)
    );
    ctl.list_volumes(ListVolumesRequest::default())
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
}

/// A codec that sends and receives message bytes as they are, for requests the generated
/// client cannot make.
#[derive(Clone, Copy, Default)]
struct Raw;

impl tonic::codec::Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl tonic::codec::Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(
        &mut self,
        item: Vec<u8>,
        dst: &mut tonic::codec::EncodeBuf<'_>,
    ) -> Result<(), Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n).to_vec()))
    }
}

/// One unary call of `path` with `body` as the request message's bytes.
async fn raw(c: &CsiClients, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let mut g = tonic::client::Grpc::new(c.channel.clone());
    g.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    g.unary(
        tonic::Request::new(body),
        tonic::codegen::http::uri::PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .map(|r| r.into_inner())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_status_or_a_clean_close_and_changes_nothing() {
    use prost::Message;
    let mut p = Polly::start_services(&["vfs"], "");
    let mut c = p.csi().await;
    create(&mut c, "keep", MIB, &[]).await;
    let before = p.admin_get("/admin/store/dump").await;
    let polly::csi::CsiEndpoint::Unix(path) = p.csi_endpoint() else {
        panic!("the harness serves CSI on a unix socket: {}", p.csi);
    };

    // Bytes that are not HTTP/2: each connection is closed, nothing else happens.
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let inputs: [&[u8]; 4] = [
        &garbage,
        b"GET /csi.v1.Identity/Probe HTTP/1.1\r\nHost: polly\r\n\r\n",
        b"PRI * HTTP/2.0\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x04\x99\x99\x99\x99\x99\x99garbage-frame",
    ];
    for input in inputs {
        let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
        s.write_all(input).await.unwrap();
        s.shutdown().await.unwrap();
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            let mut buf = vec![0u8; 8192];
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "connection left open after {:?}",
            String::from_utf8_lossy(&input[..input.len().min(20)])
        );
    }

    // A request message over the limit: refused before it is decoded.
    let oversize = create_req(
        "huge-params",
        MIB,
        rwo(),
        &[("labels.big", &"x".repeat(5 << 20))],
    );
    // (tonic's code for a message over its decoding limit is OUT_OF_RANGE.)
    assert_code(c.controller.create_volume(oversize).await, Code::OutOfRange);
    // Bytes that are no protobuf message: a status.
    let err = raw(
        &c,
        "/csi.v1.Controller/CreateVolume",
        vec![0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f],
    )
    .await
    .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    // Unknown fields are skipped, as protobuf says.
    let mut body = ListVolumesRequest {
        max_entries: 1,
        starting_token: String::new(),
    }
    .encode_to_vec();
    body.extend_from_slice(&[0x98, 0x06, 0x01, 0xa2, 0x06, 0x03, b'a', b'b', b'c']);
    let answer = raw(&c, "/csi.v1.Controller/ListVolumes", body)
        .await
        .unwrap();
    let answer = ListVolumesResponse::decode(answer.as_slice()).unwrap();
    assert_eq!(answer.entries.len(), 1);
    // Calls Polly does not serve: UNIMPLEMENTED.
    for path in [
        "/csi.v1.Controller/ControllerModifyVolume",
        "/csi.v1.Controller/GetSnapshot",
        "/polly.Nothing/Here",
    ] {
        let err = raw(&c, path, vec![]).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented, "{path}: {err}");
    }
    // Empty and malformed names and ids: INVALID_ARGUMENT.
    assert_code(
        c.controller
            .create_volume(create_req("", MIB, rwo(), &[]))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.controller
            .create_volume(create_req("../etc", MIB, rwo(), &[]))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.controller
            .create_snapshot(CreateSnapshotRequest {
                source_volume_id: String::new(),
                name: String::new(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        c.controller
            .controller_get_volume(ControllerGetVolumeRequest {
                volume_id: String::new(),
            })
            .await,
        Code::InvalidArgument,
    );

    // Still serving, and the store is as it was.
    assert!(p.alive());
    c.identity.probe(ProbeRequest {}).await.unwrap();
    let mut fresh = p.csi().await;
    fresh
        .identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap();
    assert_eq!(p.admin_get("/admin/store/dump").await, before);
}

/// kill -9 of `polly serve` while a CSI CreateVolume is between its intent and its record
/// (the back-end call held before or after it created the volume), then the orchestrator's
/// retry with the same name: exactly one volume, no orphan, no intent left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_cut_by_sigkill_and_retried_makes_exactly_one_volume() {
    for phase in ["before", "after"] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let hung = format!(
            "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n[services.fault]\nhang = [\"create\"]\nhang_phase = \"{phase}\"\n"
        );
        let p = Polly::start_with(&data, Some(&hung), None);
        let c = p.csi().await;
        let req = create_req("pvc-crash", MIB, rwo(), &[]);
        let mut ctl = c.controller.clone();
        let r = req.clone();
        let pending = tokio::spawn(async move { ctl.create_volume(r).await });
        let admin = p.client();
        let mut held = false;
        for _ in 0..1500 {
            let intents = admin.operations().await.unwrap().len();
            let backend = harness::vfs_volume_dirs(&data, "vfs").len();
            if intents == 1 && (phase == "before" || backend == 1) {
                held = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(held, "{phase}: the create never reached its hang");
        p.kill9();
        assert!(
            pending.await.unwrap().is_err(),
            "{phase}: answered before the kill"
        );

        let p = Polly::start(&data);
        let mut c = p.csi().await;
        let v = ten!(c.controller, create_volume, req.clone())
            .volume
            .unwrap();
        let admin = p.client();
        assert!(
            admin.operations().await.unwrap().is_empty(),
            "{phase}: intent left"
        );
        let report = admin.orphans().await.unwrap();
        assert!(
            report.orphans.is_empty() && report.missing.is_empty(),
            "{phase}: {:?} {:?}",
            report.orphans,
            report.missing
        );
        let vols = p.volumes().await;
        assert_eq!(vols.len(), 1, "{phase}: {vols:?}");
        assert_eq!(vols[0]["id"], v.volume_id.as_str());
        assert_eq!(harness::vfs_volume_dirs(&data, "vfs").len(), 1, "{phase}");
        let listed = c
            .controller
            .list_volumes(ListVolumesRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.entries.len(), 1, "{phase}");
    }
}
