//! Exit codes of the `polly` binary: 1 for any error, unless the error is one that asks for
//! another (a lost leadership, the verdict of `polly marathon check|provision`).

use crate::marathon::CommandError;
use crate::server::LostLeadership;

/// The exit code for an error [`run`](super::run) returned.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.downcast_ref::<LostLeadership>().is_some() {
        crate::ha::EXIT_LOST_LEADERSHIP
    } else if let Some(m) = e.downcast_ref::<CommandError>() {
        m.exit_code()
    } else {
        1
    }
}
