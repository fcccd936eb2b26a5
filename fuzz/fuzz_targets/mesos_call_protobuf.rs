//! Fuzz target `mesos_call_protobuf`: the properties are in `polly::fuzzing::mesos_call_protobuf`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| polly::fuzzing::mesos_call_protobuf(data));
