//! Polly: a centralized storage scheduler. It polls storage back-ends for capacity, offers it
//! to Mesos frameworks, tracks reservations in an embedded store, and serves the same volumes
//! to REX-Ray agents through a libStorage-compatible façade, to Kubernetes and Nomad over CSI,
//! to Docker and Cloud Foundry cells through `polly node`, and to Cloud Foundry's cloud
//! controller as an Open Service Broker.

pub mod admin;
pub mod broker;
pub mod cli;
pub mod client;
pub mod config;
pub mod csi;
pub mod driver;
pub mod failpoints;
pub mod fencing;
#[doc(hidden)]
pub mod fuzzing;
pub mod ha;
pub mod keyed_lock;
pub mod libstorage;
pub mod listener;
pub mod marathon;
pub mod mesos;
pub mod metrics;
pub mod mount;
pub mod node;
pub mod offer_endpoint;
pub mod offers;
pub mod server;
pub mod store;
pub mod volumes;
