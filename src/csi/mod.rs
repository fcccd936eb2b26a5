//! The CSI (Container Storage Interface) surface of central Polly: Identity and Controller
//! over gRPC.

/// Generated CSI v1 types, servers and clients (package `csi.v1`).
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/csi.v1.rs"));
}
