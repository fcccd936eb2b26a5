//! The integration tests' harness: the real `polly serve` on 127.0.0.1:0 with a temp data
//! dir ([`Polly`]), the surfaces the tests talk to it through (admin API and CLI, the
//! libStorage façade as REX-Ray calls it, CSI over gRPC, the Open Service Broker API as
//! Cloud Foundry calls it), what the vfs back-end leaves on disk, a real etcd on loopback, a
//! real Docker daemon, and the fakes for what cannot run here (a Mesos master, a consumer
//! framework). Each test file declares `mod harness;`; the benchmarks include it by path.
// Every test binary compiles the harness on its own and uses only a part of it; the rest
// would be dead code there.
#![allow(dead_code)]

pub mod admin;
pub mod broker;
pub mod csi;
pub mod docker;
pub mod etcd;
pub mod fakes;
pub mod libstorage;
pub mod node;
pub mod polly;
pub mod vfs;
pub mod wait;

// The names most tests use, at the harness root; each binary uses a few of them.
#[allow(unused_imports)]
pub use libstorage::{iid, ls_headers, refs, tx, Reply, IID_META, LD};
#[allow(unused_imports)]
pub use polly::{stderr_log, Polly, BIN};
#[allow(unused_imports)]
pub use vfs::vfs_volume_dirs;
#[allow(unused_imports)]
pub use wait::wait_until;
