//! Stand-ins for the parties around Polly that cannot run here: a Mesos master (its v1
//! scheduler and operator APIs) and a consumer framework on Polly's storage-offer endpoint.

pub mod framework;
pub mod master;
