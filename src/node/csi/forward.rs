//! The Controller service on the node's socket: each call forwarded unchanged to central's
//! CSI endpoint, its answer or gRPC status (code and message) handed back as central gave
//! it. Without `csi_server` every call is UNAVAILABLE, and Identity does not advertise the
//! service.

use tonic::{Request, Response, Status};

use crate::csi::v1;
use crate::csi::v1::controller_client::ControllerClient;
use crate::csi::v1::controller_server::Controller;

use super::NodeCsi;

impl NodeCsi {
    fn central(&self) -> Result<ControllerClient<tonic::transport::Channel>, Status> {
        self.inner.central.clone().ok_or_else(|| {
            Status::unavailable(
                "this polly node forwards CSI Controller calls only when it knows central's CSI endpoint: set --csi-server (or [node] csi_server) to central's [csi] listen address",
            )
        })
    }
}

/// One forwarded call per Controller method: `method(Request) -> Response`.
macro_rules! forward {
    ($($method:ident($req:ident) -> $resp:ident;)*) => {
        #[tonic::async_trait]
        impl Controller for NodeCsi {
            $(
                async fn $method(
                    &self,
                    r: Request<v1::$req>,
                ) -> Result<Response<v1::$resp>, Status> {
                    let mut central = self.central()?;
                    // The orchestrator's deadline travels in the metadata; the body as is.
                    let (meta, _, body) = r.into_parts();
                    let mut fwd = Request::new(body);
                    if let Some(t) = meta.get("grpc-timeout") {
                        fwd.metadata_mut().insert("grpc-timeout", t.clone());
                    }
                    central.$method(fwd).await
                }
            )*
        }
    };
}

forward! {
    create_volume(CreateVolumeRequest) -> CreateVolumeResponse;
    delete_volume(DeleteVolumeRequest) -> DeleteVolumeResponse;
    controller_publish_volume(ControllerPublishVolumeRequest) -> ControllerPublishVolumeResponse;
    controller_unpublish_volume(ControllerUnpublishVolumeRequest) -> ControllerUnpublishVolumeResponse;
    validate_volume_capabilities(ValidateVolumeCapabilitiesRequest) -> ValidateVolumeCapabilitiesResponse;
    list_volumes(ListVolumesRequest) -> ListVolumesResponse;
    get_capacity(GetCapacityRequest) -> GetCapacityResponse;
    controller_get_capabilities(ControllerGetCapabilitiesRequest) -> ControllerGetCapabilitiesResponse;
    create_snapshot(CreateSnapshotRequest) -> CreateSnapshotResponse;
    delete_snapshot(DeleteSnapshotRequest) -> DeleteSnapshotResponse;
    list_snapshots(ListSnapshotsRequest) -> ListSnapshotsResponse;
    controller_expand_volume(ControllerExpandVolumeRequest) -> ControllerExpandVolumeResponse;
    controller_get_volume(ControllerGetVolumeRequest) -> ControllerGetVolumeResponse;
}
