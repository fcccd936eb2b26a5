//! The Identity service: Polly's plugin name and version, what it offers (the Controller
//! service, zones as topology, online expansion), and whether it serves now.

use tonic::{Request, Response, Status};

use super::v1::identity_server::Identity;
use super::v1::plugin_capability::{self as pc, service, volume_expansion};
use super::v1::{self, PluginCapability};
use super::{Csi, PLUGIN_NAME};

#[tonic::async_trait]
impl Identity for Csi {
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
        Ok(Response::new(v1::GetPluginCapabilitiesResponse {
            capabilities: vec![
                svc(service::Type::ControllerService),
                svc(service::Type::VolumeAccessibilityConstraints),
                PluginCapability {
                    r#type: Some(pc::Type::VolumeExpansion(pc::VolumeExpansion {
                        r#type: volume_expansion::Type::Online as i32,
                    })),
                },
            ],
        }))
    }

    /// Ready once start-up reconciliation is done, on the leader (a follower is alive but
    /// not ready: it serves no Controller call).
    async fn probe(
        &self,
        _: Request<v1::ProbeRequest>,
    ) -> Result<Response<v1::ProbeResponse>, Status> {
        Ok(Response::new(v1::ProbeResponse {
            ready: Some(self.serving().is_ok()),
        }))
    }
}
