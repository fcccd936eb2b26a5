//! Fuzz target `mesos_event`: the properties are in `polly::fuzzing::mesos_event`.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| polly::fuzzing::mesos_event(data));
