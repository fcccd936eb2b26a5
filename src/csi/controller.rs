//! The Controller service: every call first checks that this instance serves (the leader,
//! past start-up reconciliation), then runs in the file named for it. ControllerGetCapabilities
//! lists exactly the calls implemented here.

use tonic::{Request, Response, Status};

use super::capabilities;
use super::error::Result;
use super::v1;
use super::v1::controller_server::Controller;
use super::Csi;

/// A call's outcome on the wire.
fn answer<T>(r: Result<T>) -> Result<Response<T>, Status> {
    r.map(Response::new).map_err(Status::from)
}

#[tonic::async_trait]
impl Controller for Csi {
    async fn create_volume(
        &self,
        r: Request<v1::CreateVolumeRequest>,
    ) -> Result<Response<v1::CreateVolumeResponse>, Status> {
        self.serving()?;
        answer(Csi::create_volume(self, r.into_inner()).await)
    }

    async fn delete_volume(
        &self,
        r: Request<v1::DeleteVolumeRequest>,
    ) -> Result<Response<v1::DeleteVolumeResponse>, Status> {
        self.serving()?;
        answer(
            Csi::delete_volume(self, r.into_inner())
                .await
                .map(|()| v1::DeleteVolumeResponse {}),
        )
    }

    async fn controller_publish_volume(
        &self,
        r: Request<v1::ControllerPublishVolumeRequest>,
    ) -> Result<Response<v1::ControllerPublishVolumeResponse>, Status> {
        self.serving()?;
        answer(Csi::controller_publish_volume(self, r.into_inner()).await)
    }

    async fn controller_unpublish_volume(
        &self,
        r: Request<v1::ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<v1::ControllerUnpublishVolumeResponse>, Status> {
        self.serving()?;
        answer(
            Csi::controller_unpublish_volume(self, r.into_inner())
                .await
                .map(|()| v1::ControllerUnpublishVolumeResponse {}),
        )
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<v1::ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<v1::ValidateVolumeCapabilitiesResponse>, Status> {
        self.serving()?;
        answer(Csi::validate_volume_capabilities(self, r.into_inner()))
    }

    async fn list_volumes(
        &self,
        r: Request<v1::ListVolumesRequest>,
    ) -> Result<Response<v1::ListVolumesResponse>, Status> {
        self.serving()?;
        answer(Csi::list_volumes(self, r.into_inner()))
    }

    async fn get_capacity(
        &self,
        r: Request<v1::GetCapacityRequest>,
    ) -> Result<Response<v1::GetCapacityResponse>, Status> {
        self.serving()?;
        answer(Csi::get_capacity(self, r.into_inner()))
    }

    async fn controller_get_capabilities(
        &self,
        _: Request<v1::ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<v1::ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(v1::ControllerGetCapabilitiesResponse {
            capabilities: capabilities::controller_capabilities(),
        }))
    }

    async fn create_snapshot(
        &self,
        r: Request<v1::CreateSnapshotRequest>,
    ) -> Result<Response<v1::CreateSnapshotResponse>, Status> {
        self.serving()?;
        answer(Csi::create_snapshot(self, r.into_inner()).await)
    }

    async fn delete_snapshot(
        &self,
        r: Request<v1::DeleteSnapshotRequest>,
    ) -> Result<Response<v1::DeleteSnapshotResponse>, Status> {
        self.serving()?;
        answer(
            Csi::delete_snapshot(self, r.into_inner())
                .await
                .map(|()| v1::DeleteSnapshotResponse {}),
        )
    }

    async fn list_snapshots(
        &self,
        r: Request<v1::ListSnapshotsRequest>,
    ) -> Result<Response<v1::ListSnapshotsResponse>, Status> {
        self.serving()?;
        answer(Csi::list_snapshots(self, r.into_inner()).await)
    }

    async fn controller_expand_volume(
        &self,
        r: Request<v1::ControllerExpandVolumeRequest>,
    ) -> Result<Response<v1::ControllerExpandVolumeResponse>, Status> {
        self.serving()?;
        answer(Csi::controller_expand_volume(self, r.into_inner()).await)
    }

    async fn controller_get_volume(
        &self,
        r: Request<v1::ControllerGetVolumeRequest>,
    ) -> Result<Response<v1::ControllerGetVolumeResponse>, Status> {
        self.serving()?;
        answer(Csi::controller_get_volume(self, r.into_inner()))
    }
}
