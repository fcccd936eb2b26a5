//! The `polly` binary.
fn main() {}
