//! Fuzz target `marathon`: the properties are in `polly::fuzzing::marathon`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| polly::fuzzing::marathon(data));
