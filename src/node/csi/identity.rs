//! The node's Identity service: the plugin name central uses, and what this socket offers:
//! the Controller service only when it has central's CSI endpoint to forward to.

use tonic::{Request, Response, Status};

use crate::csi::v1::identity_server::Identity;
use crate::csi::v1::plugin_capability::{self as pc, service, volume_expansion};
use crate::csi::v1::{self, PluginCapability};
use crate::csi::PLUGIN_NAME;

use super::NodeCsi;

#[tonic::async_trait]
impl Identity for NodeCsi {
    async fn get_plugin_info(
        &self,
        _: Request<v1::GetPluginInfoRequest>,
    ) -> Result<Response<v1::GetPluginInfoResponse>, Status> {
        Ok(Response::new(v1::GetPluginInfoResponse {
            name: PLUGIN_NAME.to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<v1::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<v1::GetPluginCapabilitiesResponse>, Status> {
        let svc = |t: service::Type| PluginCapability {
            r#type: Some(pc::Type::Service(pc::Service { r#type: t as i32 })),
        };
        let mut capabilities = Vec::new();
        if self.inner.central.is_some() {
            capabilities.push(svc(service::Type::ControllerService));
        }
        capabilities.push(svc(service::Type::VolumeAccessibilityConstraints));
        capabilities.push(PluginCapability {
            r#type: Some(pc::Type::VolumeExpansion(pc::VolumeExpansion {
                r#type: volume_expansion::Type::Online as i32,
            })),
        });
        Ok(Response::new(v1::GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    /// The node serves its Node calls whenever it answers at all.
    async fn probe(
        &self,
        _: Request<v1::ProbeRequest>,
    ) -> Result<Response<v1::ProbeResponse>, Status> {
        Ok(Response::new(v1::ProbeResponse { ready: Some(true) }))
    }
}
