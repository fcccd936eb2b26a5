//! Waiting for a condition the server reaches in the background (a reconciler pass, a
//! restart), without a fixed sleep.

use std::time::Duration;

/// Poll `f` every 20 ms for up to 30 s.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1500 {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for {what}");
}
