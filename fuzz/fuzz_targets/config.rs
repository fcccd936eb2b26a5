//! Fuzz target `config`: the properties are in `polly::fuzzing::config`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| polly::fuzzing::config(data));
