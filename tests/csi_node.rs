//! The CSI Node service of `polly node`, driven through the generated tonic client on the
//! node's CSI socket against the real `polly serve` and `polly node` (root: real mounts):
//! CreateVolume → ControllerPublish (forwarded by the node to central) → NodeStage →
//! NodePublish → a file written, unpublished, published again and read back → unpublish,
//! unstage, ControllerUnpublish, DeleteVolume, for vfs and loop volumes, each Node call
//! repeated 10 times; read-only publishing, stats, expansion, NodeGetInfo, missing fields,
//! a node killed with SIGKILL while it holds mounts, and Controller errors forwarded with
//! central's code.

mod harness;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::csi::{create_req, mount, node_csi, rwo, NodeCsiClients};
use harness::node::{can_mount, mounts_under, Node, NodeDirs};
use harness::Polly;
use polly::csi::v1::plugin_capability::{service, Type as PcType};
use polly::csi::v1::volume_capability::access_mode::Mode;
use polly::csi::v1::volume_usage::Unit;
use polly::csi::v1::*;
use tonic::Code;

const SERVICES: &str = "[[services]]\nname = \"vfs\"\ndriver = \"vfs\"\n[[services]]\nname = \"loop\"\ndriver = \"loop\"\n";
const MIB: i64 = 1 << 20;

/// Ten calls of `client.method(request)`: each succeeds with the same answer.
macro_rules! ten {
    ($client:expr, $method:ident, $req:expr) => {{
        let mut first = None;
        for i in 0..10 {
            let got = $client
                .clone()
                .$method($req)
                .await
                .unwrap_or_else(|e| panic!("call {i}: {e:?}"))
                .into_inner();
            match &first {
                None => first = Some(got),
                Some(f) => assert_eq!(&got, f, "call {i} answered differently"),
            }
        }
        first.unwrap()
    }};
}

fn assert_code<T: std::fmt::Debug>(
    r: Result<tonic::Response<T>, tonic::Status>,
    want: Code,
) -> String {
    match r {
        Ok(ok) => panic!("expected {want:?}, got {:?}", ok.into_inner()),
        Err(s) => {
            assert_eq!(s.code(), want, "message: {}", s.message());
            s.message().to_string()
        }
    }
}

/// Central, and one node serving CSI on a socket in `dir` that forwards to central.
struct Setup {
    polly: Polly,
    node: Node,
    csi: String,
}

fn start(dir: &Path, instance: &str, extra: &[&str]) -> Setup {
    let polly = Polly::start_config(SERVICES);
    let node = start_node(&polly, dir, instance, extra, true);
    let csi = format!(
        "unix://{}",
        dir.join(format!("{instance}.csi.sock")).display()
    );
    Setup { polly, node, csi }
}

fn start_node(polly: &Polly, dir: &Path, instance: &str, extra: &[&str], forward: bool) -> Node {
    let dirs = NodeDirs::new(dir, instance, &dir.join(format!("{instance}.sock")));
    let csi = format!(
        "unix://{}",
        dir.join(format!("{instance}.csi.sock")).display()
    );
    let mut args = vec!["--report-interval-secs", "1", "--csi-endpoint", &csi];
    if forward {
        args.extend(["--csi-server", &polly.csi]);
    }
    args.extend(extra);
    Node::start(&polly.admin, &dirs, &args)
}

/// ControllerPublishVolume through the node's socket, retried while central does not know
/// the node yet (it reports itself just after it starts).
async fn controller_publish(
    c: &NodeCsiClients,
    id: &str,
    node: &str,
    cap: VolumeCapability,
) -> ControllerPublishVolumeResponse {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let req = ControllerPublishVolumeRequest {
            volume_id: id.to_string(),
            node_id: node.to_string(),
            volume_capability: Some(cap.clone()),
            ..Default::default()
        };
        match c.controller.clone().controller_publish_volume(req).await {
            Ok(r) => return r.into_inner(),
            Err(s) if s.code() == Code::NotFound && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await
            }
            Err(s) => panic!("ControllerPublishVolume {id} to {node}: {s:?}"),
        }
    }
}

fn stage_req(
    id: &str,
    ctx: &std::collections::HashMap<String, String>,
    staging: &Path,
    cap: VolumeCapability,
) -> NodeStageVolumeRequest {
    NodeStageVolumeRequest {
        volume_id: id.to_string(),
        publish_context: ctx.clone(),
        staging_target_path: staging.display().to_string(),
        volume_capability: Some(cap),
        ..Default::default()
    }
}

fn publish_req(
    id: &str,
    staging: &Path,
    target: &Path,
    readonly: bool,
) -> NodePublishVolumeRequest {
    NodePublishVolumeRequest {
        volume_id: id.to_string(),
        staging_target_path: staging.display().to_string(),
        target_path: target.display().to_string(),
        volume_capability: Some(rwo()),
        readonly,
        ..Default::default()
    }
}

fn unpublish_req(id: &str, target: &Path) -> NodeUnpublishVolumeRequest {
    NodeUnpublishVolumeRequest {
        volume_id: id.to_string(),
        target_path: target.display().to_string(),
    }
}

fn unstage_req(id: &str, staging: &Path) -> NodeUnstageVolumeRequest {
    NodeUnstageVolumeRequest {
        volume_id: id.to_string(),
        staging_target_path: staging.display().to_string(),
    }
}

fn is_mount_point(p: &Path) -> bool {
    mounts_under(p).iter().any(|m| m == p)
}

/// Create a volume of `service` through the node's forwarded Controller and publish it to
/// `node`: its id and publish context.
async fn create_and_publish(
    c: &NodeCsiClients,
    name: &str,
    service: &str,
    node: &str,
) -> (String, std::collections::HashMap<String, String>) {
    let v = c
        .controller
        .clone()
        .create_volume(create_req(name, 32 * MIB, rwo(), &[("service", service)]))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let ctx = controller_publish(c, &v.volume_id, node, rwo())
        .await
        .publish_context;
    (v.volume_id, ctx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stage_publish_write_republish_read_unpublish_unstage_for_vfs_and_loop() {
    if !can_mount("the CSI node flow") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "node-a", &["--zone", "zone-a"]);
    let c = node_csi(&s.csi).await;

    let info = ten!(c.node, node_get_info, NodeGetInfoRequest {});
    assert_eq!(info.node_id, "node-a");
    assert_eq!(info.max_volumes_per_node, 0);
    assert_eq!(
        info.accessible_topology.unwrap().segments,
        [("topology.polly.io/zone".to_string(), "zone-a".to_string())].into()
    );
    let caps = ten!(c.node, node_get_capabilities, NodeGetCapabilitiesRequest {});
    assert_eq!(caps.capabilities.len(), 3, "{caps:?}");
    let plugin = ten!(c.identity, get_plugin_info, GetPluginInfoRequest {});
    assert_eq!(plugin.name, "csi.polly.io");

    for service in ["vfs", "loop"] {
        let name = format!("csi-{service}");
        let (id, ctx) = create_and_publish(&c, &name, service, "node-a").await;
        let staging = dir.path().join(format!("{service}-staging"));
        let target = dir.path().join(format!("{service}-pods/target"));
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        // Central grows the volume while it is published but not yet staged: growing a
        // mounted ext4 online needs CAP_SYS_RESOURCE, which CI's container lacks.
        let grown = c
            .controller
            .clone()
            .controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: id.clone(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 64 * MIB,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(grown.capacity_bytes, 64 * MIB);

        ten!(
            c.node,
            node_stage_volume,
            stage_req(&id, &ctx, &staging, rwo())
        );
        assert!(is_mount_point(&staging), "{service}: staged");
        ten!(
            c.node,
            node_publish_volume,
            publish_req(&id, &staging, &target, false)
        );
        assert!(is_mount_point(&target), "{service}: published");
        std::fs::write(target.join("hello.txt"), b"written through csi").unwrap();

        ten!(c.node, node_unpublish_volume, unpublish_req(&id, &target));
        assert!(!target.exists(), "{service}: the target is removed");
        ten!(
            c.node,
            node_publish_volume,
            publish_req(&id, &staging, &target, false)
        );
        assert_eq!(
            std::fs::read(target.join("hello.txt")).unwrap(),
            b"written through csi"
        );

        // Read-only publish: a second target refuses writes.
        let ro = dir.path().join(format!("{service}-pods/ro"));
        ten!(
            c.node,
            node_publish_volume,
            publish_req(&id, &staging, &ro, true)
        );
        let e = std::fs::write(ro.join("nope"), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        // The same target with a different read-only flag is incompatible.
        assert_code(
            c.node
                .clone()
                .node_publish_volume(publish_req(&id, &staging, &ro, false))
                .await,
            Code::AlreadyExists,
        );
        // Still published: unstaging is refused.
        assert_code(
            c.node
                .clone()
                .node_unstage_volume(unstage_req(&id, &staging))
                .await,
            Code::FailedPrecondition,
        );

        // Stats of the published path, bytes and inodes.
        let stats = ten!(
            c.node,
            node_get_volume_stats,
            NodeGetVolumeStatsRequest {
                volume_id: id.clone(),
                volume_path: target.display().to_string(),
                ..Default::default()
            }
        );
        let units: Vec<i32> = stats.usage.iter().map(|u| u.unit).collect();
        assert_eq!(units, [Unit::Bytes as i32, Unit::Inodes as i32]);
        assert!(
            stats.usage[0].total > 0 && stats.usage[0].used > 0,
            "{stats:?}"
        );
        let gone = NodeGetVolumeStatsRequest {
            volume_id: id.clone(),
            volume_path: dir.path().join("nowhere").display().to_string(),
            ..Default::default()
        };
        assert_code(
            c.node.clone().node_get_volume_stats(gone).await,
            Code::NotFound,
        );

        // The node grows the file system to fill the grown device.
        let expand = || NodeExpandVolumeRequest {
            volume_id: id.clone(),
            volume_path: target.display().to_string(),
            capacity_range: Some(CapacityRange {
                required_bytes: 64 * MIB,
                limit_bytes: 0,
            }),
            staging_target_path: staging.display().to_string(),
            ..Default::default()
        };
        let e = ten!(c.node, node_expand_volume, expand());
        assert_eq!(e.capacity_bytes, 64 * MIB);
        if service == "loop" {
            let total = c
                .node
                .clone()
                .node_get_volume_stats(NodeGetVolumeStatsRequest {
                    volume_id: id.clone(),
                    volume_path: target.display().to_string(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .usage[0]
                .total;
            assert!(total > 40 * MIB, "the file system grew: {total}");
        }

        ten!(c.node, node_unpublish_volume, unpublish_req(&id, &ro));
        ten!(c.node, node_unpublish_volume, unpublish_req(&id, &target));
        ten!(c.node, node_unstage_volume, unstage_req(&id, &staging));
        assert!(!is_mount_point(&staging), "{service}: unstaged");
        ten!(
            c.controller,
            controller_unpublish_volume,
            ControllerUnpublishVolumeRequest {
                volume_id: id.clone(),
                node_id: "node-a".into(),
                secrets: Default::default(),
            }
        );
        ten!(
            c.controller,
            delete_volume,
            DeleteVolumeRequest {
                volume_id: id.clone(),
                secrets: Default::default(),
            }
        );
        assert!(
            mounts_under(dir.path()).is_empty(),
            "{:?}",
            mounts_under(dir.path())
        );
    }
    drop(s.node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_fields_unknown_volumes_and_incompatible_requests_get_the_specs_codes() {
    if !can_mount("CSI node error codes") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "node-b", &[]);
    let c = node_csi(&s.csi).await;
    let (id, ctx) = create_and_publish(&c, "codes", "vfs", "node-b").await;
    let staging = dir.path().join("staging");
    let target = dir.path().join("target");
    let n = || c.node.clone();

    // Missing fields: INVALID_ARGUMENT, nothing mounted.
    let mut r = stage_req(&id, &ctx, &staging, rwo());
    r.volume_id.clear();
    assert_code(n().node_stage_volume(r).await, Code::InvalidArgument);
    let mut r = stage_req(&id, &ctx, &staging, rwo());
    r.staging_target_path.clear();
    assert_code(n().node_stage_volume(r).await, Code::InvalidArgument);
    let mut r = stage_req(&id, &ctx, &staging, rwo());
    r.volume_capability = None;
    assert_code(n().node_stage_volume(r).await, Code::InvalidArgument);
    let r = stage_req(&id, &Default::default(), &staging, rwo());
    let m = assert_code(n().node_stage_volume(r).await, Code::InvalidArgument);
    assert!(m.contains("ControllerPublishVolume"), "{m}");
    let block = VolumeCapability {
        access_type: Some(volume_capability::AccessType::Block(Default::default())),
        access_mode: rwo().access_mode,
    };
    let m = assert_code(
        n().node_stage_volume(stage_req(&id, &ctx, &staging, block))
            .await,
        Code::InvalidArgument,
    );
    assert!(m.contains("block"), "{m}");
    let mut r = publish_req(&id, &staging, &target, false);
    r.target_path.clear();
    assert_code(n().node_publish_volume(r).await, Code::InvalidArgument);
    let mut r = publish_req(&id, &staging, &target, false);
    r.staging_target_path.clear();
    assert_code(n().node_publish_volume(r).await, Code::InvalidArgument);
    assert_code(
        n().node_unpublish_volume(unpublish_req("", &target)).await,
        Code::InvalidArgument,
    );
    assert_code(
        n().node_unstage_volume(unstage_req(&id, Path::new("")))
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        n().node_get_volume_stats(NodeGetVolumeStatsRequest::default())
            .await,
        Code::InvalidArgument,
    );
    assert_code(
        n().node_expand_volume(NodeExpandVolumeRequest::default())
            .await,
        Code::InvalidArgument,
    );
    assert!(mounts_under(dir.path()).is_empty());

    // Publish before stage: FAILED_PRECONDITION.
    assert_code(
        n().node_publish_volume(publish_req(&id, &staging, &target, false))
            .await,
        Code::FailedPrecondition,
    );
    // Unknown paths and volumes: unpublish and unstage are done already.
    ten!(
        c.node,
        node_unpublish_volume,
        unpublish_req("no-such", &target)
    );
    ten!(
        c.node,
        node_unstage_volume,
        unstage_req("no-such", &staging)
    );

    // Staged: another volume at the same path, or the same one read-only, is incompatible.
    n().node_stage_volume(stage_req(&id, &ctx, &staging, rwo()))
        .await
        .unwrap();
    let (other, other_ctx) = create_and_publish(&c, "codes-2", "vfs", "node-b").await;
    assert_code(
        n().node_stage_volume(stage_req(&other, &other_ctx, &staging, rwo()))
            .await,
        Code::AlreadyExists,
    );
    let ro = mount(Mode::SingleNodeReaderOnly, "");
    assert_code(
        n().node_stage_volume(stage_req(&id, &ctx, &staging, ro))
            .await,
        Code::AlreadyExists,
    );
    // Unstaging another volume's staging path: NOT_FOUND, and it stays.
    assert_code(
        n().node_unstage_volume(unstage_req(&other, &staging)).await,
        Code::NotFound,
    );
    assert!(is_mount_point(&staging));
    n().node_unstage_volume(unstage_req(&id, &staging))
        .await
        .unwrap();
    assert!(mounts_under(dir.path()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_it_holds_mounts_unpublishes_and_unstages_after_restart() {
    if !can_mount("CSI node kill -9") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = start(dir.path(), "node-c", &[]);
    let c = node_csi(&s.csi).await;
    let mut held = Vec::new();
    for service in ["vfs", "loop"] {
        let (id, ctx) = create_and_publish(&c, &format!("kill-{service}"), service, "node-c").await;
        let staging = dir.path().join(format!("{service}-staging"));
        let target = dir.path().join(format!("{service}-target"));
        c.node
            .clone()
            .node_stage_volume(stage_req(&id, &ctx, &staging, rwo()))
            .await
            .unwrap();
        c.node
            .clone()
            .node_publish_volume(publish_req(&id, &staging, &target, false))
            .await
            .unwrap();
        std::fs::write(target.join("f"), service).unwrap();
        held.push((id, staging, target));
    }
    drop(c);
    s.node.kill9_and_restart();
    let c = node_csi(&s.csi).await;
    for (id, staging, target) in &held {
        assert!(is_mount_point(target), "kept across the restart");
        // A repeated stage and publish after the restart are still the same mounts.
        c.node
            .clone()
            .node_publish_volume(publish_req(id, staging, target, false))
            .await
            .unwrap();
        ten!(c.node, node_unpublish_volume, unpublish_req(id, target));
        ten!(c.node, node_unstage_volume, unstage_req(id, staging));
        c.controller
            .clone()
            .controller_unpublish_volume(ControllerUnpublishVolumeRequest {
                volume_id: id.clone(),
                node_id: "node-c".into(),
                secrets: Default::default(),
            })
            .await
            .unwrap();
    }
    assert!(
        mounts_under(dir.path()).is_empty(),
        "{:?}",
        mounts_under(dir.path())
    );
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.node.dirs.state_dir.join("csi.json")).unwrap())
            .unwrap();
    assert_eq!(state["staged"], serde_json::json!({}));
    assert_eq!(state["published"], serde_json::json!({}));
    let _ = &s.polly;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_calls_are_forwarded_with_centrals_codes_or_unavailable_without_central() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "node-d", &[]);
    let c = node_csi(&s.csi).await;
    let caps = c
        .identity
        .clone()
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let controller = PluginCapability {
        r#type: Some(PcType::Service(plugin_capability::Service {
            r#type: service::Type::ControllerService as i32,
        })),
    };
    assert!(caps.capabilities.contains(&controller), "{caps:?}");
    // A single-writer volume published to node-d, then to another known node.
    let (id, _) = create_and_publish(&c, "held", "vfs", "node-d").await;
    let other = start_node(&s.polly, dir.path(), "node-e", &[], false);
    let e = PathBuf::from(dir.path()).join("node-e.csi.sock");
    let m = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r = c
                .controller
                .clone()
                .controller_publish_volume(ControllerPublishVolumeRequest {
                    volume_id: id.clone(),
                    node_id: "node-e".into(),
                    volume_capability: Some(rwo()),
                    ..Default::default()
                })
                .await;
            match r {
                Err(s) if s.code() == Code::NotFound && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await
                }
                r => break assert_code(r, Code::FailedPrecondition),
            }
        }
    };
    assert!(m.contains("node-d"), "{m}");
    // Missing fields come back from central as INVALID_ARGUMENT.
    assert_code(
        c.controller
            .clone()
            .create_volume(CreateVolumeRequest::default())
            .await,
        Code::InvalidArgument,
    );

    // A node without --csi-server: no Controller service, and its calls are UNAVAILABLE.
    let c = node_csi(&format!("unix://{}", e.display())).await;
    let caps = c
        .identity
        .clone()
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!caps.capabilities.contains(&controller), "{caps:?}");
    let m = assert_code(
        c.controller
            .clone()
            .create_volume(create_req("x", MIB, rwo(), &[]))
            .await,
        Code::Unavailable,
    );
    assert!(m.contains("--csi-server"), "{m}");
    drop(other);
}
