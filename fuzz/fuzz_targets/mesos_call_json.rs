//! Fuzz target `mesos_call_json`: the properties are in `polly::fuzzing::mesos_call_json`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| polly::fuzzing::mesos_call_json(data));
