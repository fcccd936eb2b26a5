//! The CSI endpoint of a running [`Polly`] (or of a `polly node`) as an orchestrator talks
//! to it: the generated tonic clients on its unix socket (or TCP), and builders of the
//! requests tests send.

use std::collections::HashMap;

use polly::csi::v1::controller_client::ControllerClient;
use polly::csi::v1::identity_client::IdentityClient;
use polly::csi::v1::node_client::NodeClient;
use polly::csi::v1::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use polly::csi::v1::{CapacityRange, CreateVolumeRequest, VolumeCapability};
use polly::csi::CsiEndpoint;
use tonic::transport::Channel;

use super::polly::Polly;

/// The Identity and Controller clients of one server.
pub struct CsiClients {
    pub identity: IdentityClient<Channel>,
    pub controller: ControllerClient<Channel>,
    pub channel: Channel,
}

impl Polly {
    /// The CSI endpoint this server printed.
    pub fn csi_endpoint(&self) -> CsiEndpoint {
        self.csi.parse().unwrap()
    }

    /// Clients connected to this server's CSI endpoint.
    pub async fn csi(&self) -> CsiClients {
        let channel = polly::csi::connect(&self.csi_endpoint()).await.unwrap();
        CsiClients {
            identity: IdentityClient::new(channel.clone()),
            controller: ControllerClient::new(channel.clone()),
            channel,
        }
    }
}

/// The clients of a `polly node`'s CSI socket: Identity, Node, and Controller (forwarded to
/// central).
pub struct NodeCsiClients {
    pub identity: IdentityClient<Channel>,
    pub node: NodeClient<Channel>,
    pub controller: ControllerClient<Channel>,
}

/// Clients connected to a node's CSI endpoint (`unix://PATH`).
pub async fn node_csi(endpoint: &str) -> NodeCsiClients {
    let channel = polly::csi::connect(&endpoint.parse().unwrap())
        .await
        .unwrap();
    NodeCsiClients {
        identity: IdentityClient::new(channel.clone()),
        node: NodeClient::new(channel.clone()),
        controller: ControllerClient::new(channel),
    }
}

/// A mount capability with this access mode and file system ("" for none).
pub fn mount(mode: Mode, fs_type: &str) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs_type.to_string(),
            ..Default::default()
        })),
        access_mode: Some(AccessMode { mode: mode as i32 }),
    }
}

/// A single-node-writer mount.
pub fn rwo() -> VolumeCapability {
    mount(Mode::SingleNodeWriter, "")
}

/// A CreateVolume of `name` with exactly `size` bytes (0: no range), one capability and
/// these parameters.
pub fn create_req(
    name: &str,
    size: i64,
    cap: VolumeCapability,
    params: &[(&str, &str)],
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.to_string(),
        capacity_range: (size > 0).then_some(CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![cap],
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}
