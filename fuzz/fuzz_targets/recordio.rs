//! Fuzz target `recordio`: the properties are in `polly::fuzzing::recordio`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| polly::fuzzing::recordio(data));
