//! Polly: a centralized storage scheduler. It polls storage back-ends for capacity, offers it
//! to Mesos frameworks, tracks reservations in an embedded store, and serves the same volumes
//! to REX-Ray agents through a libStorage-compatible façade.

pub mod driver;
